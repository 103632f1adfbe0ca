"""Ctrl-C is a pause, not a failure: SIGINT or SIGTERM to the sweep driver ends the sweep as *interrupted*.

The first signal asks Ray Tune to stop every trial (a Tune Stopper, so Tune's own SIGINT handler and its
`Tuner.restore(...)` hint stay out of it): a running trial keeps what its trainer already saved (its trainer state and
checkpoints, written atomically) and is `incomplete`, never `failed`. A second signal stops the driver at once
(KeyboardInterrupt; Ray is shut down on the way out). Either way the sweep folder gets `interrupted.json`, no
summary or report is written, and the driver exits 128 + the signal's number (130 for SIGINT, 143 for SIGTERM)
with the resume command as its last line. `sweep resume=<dir>` clears the mark and finishes what is missing.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from eval.runfiles import SweepDir, read_json, write_json

INTERRUPTED_FILE = "interrupted.json"
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SweepInterrupted(Exception):
    """The sweep was stopped by a signal; its folder holds what the trials saved, ready for `sweep resume=`."""

    def __init__(self, sweep_dir: Path, signum: int) -> None:
        super().__init__(resume_line(sweep_dir))
        self.sweep_dir, self.signum = sweep_dir, signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def resume_line(sweep_dir: Path) -> str:
    return f"interrupted: resume with `python -m orchestrator sweep resume={sweep_dir}`"


class StopOnSignal:
    """While active (a `with` block in the main thread), SIGINT and SIGTERM set `signum` and say what happens; a
    second one raises KeyboardInterrupt to stop at once. The handlers before it are put back on exit."""

    def __init__(self, log: Any = print) -> None:
        self.signum: int | None = None
        self.log = log
        self._before: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt  # the second signal: no waiting for the trials to stop
        self.signum = signum
        self.log(f"\n[sweep] {signal.Signals(signum).name}: stopping the trials; what they saved is kept "
                 "(press Ctrl-C again to stop at once)")

    def __enter__(self) -> StopOnSignal:
        for s in SIGNALS:
            self._before[s] = signal.signal(s, self._handle)
        return self

    def claim(self) -> None:
        """Install the handlers again: ray.init puts its own SIGTERM handler (sys.exit) in place."""
        for s in SIGNALS:
            signal.signal(s, self._handle)

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._before.items():
            signal.signal(s, handler)

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its stopper into the experiment state: only the signal goes, not the handlers found before
        (whatever was installed, a bound method holding a lock, say) nor the log function."""
        return {"signum": self.signum}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]
        self.signum = state["signum"]


def tune_stopper(stop: StopOnSignal) -> Any:
    """A Ray Tune Stopper that ends the whole experiment once a signal came (Tune checks it every loop). Tune's own
    SIGINT handler is turned off: it would stop the experiment too, then print a `Tuner.restore(...)` hint."""
    from ray import tune

    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"

    class _Stopper(tune.Stopper):
        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            return False

        def stop_all(self) -> bool:
            return stop.signum is not None

    return _Stopper()


def run_stoppable(run: Callable[[StopOnSignal], list[Any]], sweep_dir: Path, names: list[str],
                  max_steps: int | dict[str, int], started: float, log: Any = print) -> list[Any]:
    """run(stop) under StopOnSignal; its results when no signal came, else SweepInterrupted after saying where each
    trial stands (a second signal ends `run` at once by KeyboardInterrupt)."""
    with StopOnSignal(log) as stop:
        try:
            results = run(stop)
        except KeyboardInterrupt:
            stop.signum = stop.signum or signal.SIGINT
            results = []
    if stop.signum is None:
        return results
    log(interrupted_summary(sweep_dir, names, max_steps, started))
    raise mark_interrupted(sweep_dir, stop.signum)


def interrupted_summary(sweep_dir: Path, names: list[str], max_steps: int | dict[str, int], started: float) -> str:
    """One line: how many trials finished, and each other one as incomplete at its last step (never failed).
    `max_steps`: one budget, or each trial's own (per-LR budgets, orchestrator/budget.py)."""
    from orchestrator.console.progress_table import trial_row

    steps = {n: max_steps[n] if isinstance(max_steps, dict) else max_steps for n in names}
    rows = [trial_row(SweepDir(sweep_dir).named(name).path, steps[name]) for name in names]
    finished = [r for r in rows if r.state in ("done", "stopped")]
    rest = [f"{r.trial} (step {r.step or 0}/{steps[r.trial]})" for r in rows if r not in finished]
    return (f"\n[sweep] interrupted after {time.time() - started:.0f}s: {len(finished)} of {len(rows)} trials "
            f"finished" + (f"; incomplete: {', '.join(rest)}" if rest else "") +
            "; no summary or report is written until the sweep is complete")


def mark_interrupted(sweep_dir: Path, signum: int) -> SweepInterrupted:
    """interrupted.json in the sweep folder (what `status` reads), and the exception the command ends on."""
    write_json(sweep_dir / INTERRUPTED_FILE, {"signal": signal.Signals(signum).name, "time": time.time(),
                                              "resume": f"python -m orchestrator sweep resume={sweep_dir}"})
    return SweepInterrupted(sweep_dir, signum)


def clear_interrupted(sweep_dir: Path) -> None:
    (sweep_dir / INTERRUPTED_FILE).unlink(missing_ok=True)


def read_interrupted(sweep_dir: Path) -> dict[str, Any] | None:
    return read_json(sweep_dir / INTERRUPTED_FILE)


def end_interrupted(err: SweepInterrupted) -> None:
    """The command's end: the resume command as the last line, exit status 128 + the signal."""
    sys.stdout.flush()
    print(str(err), file=sys.stderr, flush=True)
    sys.exit(err.exit_status)
