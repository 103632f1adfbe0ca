"""Live progress of a sweep: a Ray Tune callback that keeps one row per trial (orchestrator/console/progress_table.py),
from the trial folders' heartbeat and metrics files plus what Tune tells the driver (started, failed)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, TextIO

from ray import tune

from eval.runfiles import SweepDir, trial_name
from orchestrator.console.progress_table import LiveTable, TrialRow, trial_row


class ProgressTable(tune.Callback):
    """`trials`: every trial name of the sweep, in display order (finished ones of a resumed sweep show done)."""

    def __init__(self, sweep_dir: Path, trials: list[str], max_steps: int | dict[str, int], interval_s: float = 60.0,
                 stream: TextIO | None = None, poll_s: float = 1.0, tty: bool | None = None,
                 log_stream: TextIO | None = None) -> None:
        self.sweep_dir, self.trials, self.max_steps = Path(sweep_dir), trials, max_steps
        self.table = LiveTable(stream, interval_s=interval_s, tty=tty)
        # the log's form (whole tables every interval_s, state changes between) for sweep.log, beside the terminal's
        self.tables = [self.table] + ([LiveTable(log_stream, interval_s=interval_s, tty=False)] if log_stream else [])
        self.poll_s = poll_s  # how often the files are read between Tune's events
        self.started = time.time()
        self.running: set[str] = set()  # started by this driver (a folder from an earlier run is not "training")
        self.failed: set[str] = set()
        self.completed: set[str] = set()
        self.last_poll = 0.0

    def rows(self) -> list[TrialRow]:
        rows = []
        for name in self.trials:
            steps = self.max_steps[name] if isinstance(self.max_steps, dict) else self.max_steps  # per-LR budgets
            row = trial_row(SweepDir(self.sweep_dir).named(name).path, steps)
            if name in self.completed and row.state not in ("done", "stopped"):
                row = TrialRow(**{**row.__dict__, "state": "done", "steps_per_s": None, "beat_age_s": None})
            elif name in self.failed:
                row = TrialRow(**{**row.__dict__, "state": "failed", "steps_per_s": None, "beat_age_s": None})
            elif row.state in ("training", "evaluating") and name not in self.running:
                row = TrialRow(**{**row.__dict__, "state": "pending", "steps_per_s": None, "beat_age_s": None})
            rows.append(row)
        return rows

    def refresh(self, force: bool = False) -> None:
        self.last_poll = time.time()
        rows = self.rows()
        for table in self.tables:
            table.update(rows, time.time() - self.started, force=force)

    def _names(self, trial: Any) -> set[str]:
        """The trials a Tune trial runs: its pack's members (orchestrator/run/pack.py)."""
        return {trial_name(float(m["lr"]), int(m["seed"]), self.sweep_dir) for m in trial.config["trial"]["members"]}

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if time.time() - self.last_poll >= self.poll_s:  # Tune calls this every ~0.1 s
            self.refresh()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running |= self._names(trial)
        self.failed -= self._names(trial)
        self.refresh()

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.refresh()  # a retry: Tune starts it again (on_trial_start) from its trainer state

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.refresh()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running -= self._names(trial)
        self.completed |= self._names(trial)
        self.refresh()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running -= self._names(trial)
        self.failed |= self._names(trial)
        self.refresh()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        rows = self.rows()
        for table in self.tables:
            table.close(rows, time.time() - self.started)
