"""Bounded preemption loss, the trainer state's schedule (workers/train/state.py): a save request (the Slurm job's
warning signal touches a file) is answered once, and an interval keeps time. A trainer killed between checkpoints
repeating only the steps since its last state: tests/integration/test_preemption_kill.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

from workers.train.state import SAVE_REQUEST, StateSchedule


def test_state_schedule_answers_each_request_once_and_keeps_time(tmp_path: Path) -> None:
    request = tmp_path / SAVE_REQUEST
    request.touch()  # left by an earlier job: already answered
    schedule = StateSchedule(0.2, str(request))
    assert schedule.active and schedule.due() is None
    os.utime(request, ns=(time.time_ns() + 10**9,) * 2)  # touched again: a new request
    assert schedule.due() == "request" and schedule.due() is None
    time.sleep(0.25)
    assert schedule.due() == "interval"
    schedule.saved()
    assert schedule.due() is None
    off = StateSchedule(0, "")
    assert not off.active and off.due() is None
