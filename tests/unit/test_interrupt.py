"""Ctrl-C is a pause, not a failure (issue 28): SIGINT or SIGTERM to the sweep driver ends the sweep as interrupted,
exit 130 / 143, the resume command as the last line, no trial `failed`; `sweep resume=` then finishes it with the
rows an undisturbed run writes. The signal handling is unit-tested here; the real sweep runs in
tests/integration/test_interrupt_sweep.py.
"""

import json
import os
import signal
import threading

import pytest

from orchestrator.console.interrupt import (
    INTERRUPTED_FILE,
    StopOnSignal,
    SweepInterrupted,
    clear_interrupted,
    mark_interrupted,
    resume_line,
    run_stoppable,
    tune_stopper,
)


def test_first_signal_asks_to_stop_the_second_stops_at_once():
    before = signal.getsignal(signal.SIGINT)
    said = []
    with StopOnSignal(said.append) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM and "again to stop at once" in said[0]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before  # the handlers before it are back


class _HandlerWithLock:
    def __init__(self):
        self.lock = threading.Lock()

    def handle(self, signum, frame):
        pass


def test_the_tune_stopper_pickles_whatever_handler_was_there_before():
    """CI defect: Tune pickles its stopper into the experiment state; the stopper's StopOnSignal held the handlers
    it found, and one installed earlier in the process (a bound method of an object holding a lock) made
    `tune.Tuner(...)` raise "cannot pickle '_thread.lock' object" before any trial ran."""
    from ray import cloudpickle

    before = signal.signal(signal.SIGTERM, _HandlerWithLock().handle)
    try:
        with StopOnSignal(lambda _: None) as stop:
            stop.signum = signal.SIGTERM
            copy = cloudpickle.loads(cloudpickle.dumps(tune_stopper(stop)))
        assert copy.stop_all()  # the signal travels; the handlers and the log function do not
    finally:
        signal.signal(signal.SIGTERM, before)


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_marks_the_folder_and_names_the_resume_command(tmp_path, signum, status):
    def run(stop):
        os.kill(os.getpid(), signum)  # a signal while the trials run; the runner then returns (Tune stopped them)
        return []

    with pytest.raises(SweepInterrupted) as caught:
        run_stoppable(run, tmp_path, ["lr0.001_seed0"], 16, 0.0, lambda _: None)
    assert caught.value.exit_status == status
    assert str(caught.value) == resume_line(tmp_path)
    assert json.loads((tmp_path / INTERRUPTED_FILE).read_text())["signal"] == signal.Signals(signum).name
    clear_interrupted(tmp_path)
    assert not (tmp_path / INTERRUPTED_FILE).exists()


def test_status_says_interrupted(tmp_path):
    from eval.runfiles import write_text_atomic
    from orchestrator.commands.status import format_status, sweep_status
    from orchestrator.config import compose_config
    from orchestrator.run.sweep import config_yaml

    write_text_atomic(tmp_path / "config.yaml", config_yaml(compose_config([])))
    assert "interrupted (" not in format_status(sweep_status(tmp_path))
    mark_interrupted(tmp_path, signal.SIGINT)
    text = format_status(sweep_status(tmp_path))
    assert f"interrupted (SIGINT): resume with `python -m orchestrator sweep resume={tmp_path}`" in text
