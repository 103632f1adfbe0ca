"""A trial's training heartbeat: trials/<name>/heartbeat.json holds the latest step, its time and the trainer's
speed, so the live table and `python -m orchestrator status` show progress between checkpoints (at 235B a
checkpoint can be an hour away). Rank 0 writes it after each step, at most every `every_s` seconds, whole
(temporary file, then rename), so a reader never sees half a file.

    {"step": 37, "time": 1764400000.0, "phase": "training", "steps_per_s": 0.031, "max_steps": 256}
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from eval.runfiles import write_json

HEARTBEAT = "heartbeat.json"
PHASES = ("training", "evaluating")  # evaluating: training ended, checkpoints still being sampled and graded

# per trial folder, in this process: (time, step) of the first beat (the speed's origin), the last write and phase
_beats: dict[str, dict[str, Any]] = {}


def write_heartbeat(trial_dir: Path, step: int, phase: str = "training", max_steps: int | None = None,
                    every_s: float = 5.0, now: float | None = None) -> bool:
    """Record that `trial_dir`'s trainer finished `step`; returns whether the file was written. Skipped when the
    last write was under `every_s` ago and the phase is unchanged. The speed is steps per second since this
    process's first beat: a resumed trial measures its own attempt, not the time it lay dead."""
    now = time.time() if now is None else now
    key = str(trial_dir)
    beat = _beats.get(key)
    if beat is None or step < beat["step0"]:  # first beat here, or the trainer restarted in this process
        beat = _beats[key] = {"t0": now, "step0": step, "written": None, "phase": None}
    if beat["written"] is not None and now - beat["written"] < every_s and phase == beat["phase"]:
        return False
    elapsed = now - beat["t0"]
    speed = (step - beat["step0"]) / elapsed if elapsed > 0 and step > beat["step0"] else None
    write_json(Path(trial_dir) / HEARTBEAT, {"step": step, "time": round(now, 3), "phase": phase,
                                             "steps_per_s": speed, "max_steps": max_steps})
    beat["written"], beat["phase"] = now, phase
    return True


def read_heartbeat(trial_dir: Path) -> dict[str, Any] | None:
    """The trial's last heartbeat, or None when it has none (not started, or an older lrsweep)."""
    path = Path(trial_dir) / HEARTBEAT
    try:
        beat = json.loads(path.read_text())
        return beat if isinstance(beat, dict) and isinstance(beat.get("step"), int) else None
    except (OSError, ValueError):
        return None
