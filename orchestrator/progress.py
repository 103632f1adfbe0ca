"""Live progress of a sweep: one line per reported checkpoint, with every trial's latest state."""

from __future__ import annotations

import sys
import time
from typing import Any

from ray import tune


class ProgressTable(tune.Callback):
    def __init__(self, max_steps: int, stream: Any = sys.stdout) -> None:
        self.max_steps = max_steps
        self.stream = stream
        self.state: dict[str, str] = {}
        self.started = time.time()

    @staticmethod
    def _label(trial: Any) -> str:
        cfg = trial.config["trial"]
        return f"lr={cfg['lr']:.3g} s{cfg['seed']}"

    def _emit(self) -> None:
        elapsed = time.time() - self.started
        line = " | ".join(f"{k}: {v}" for k, v in sorted(self.state.items()))
        print(f"[sweep {elapsed:5.0f}s] {line}", file=self.stream, flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.state[self._label(trial)] = "training"
        self._emit()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.state[self._label(trial)] = (
            f"step {result['step']}/{self.max_steps} attack {result['eval_attack_rate']:.2f}"
        )
        self._emit()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.state[self._label(trial)] = self.state.get(self._label(trial), "") + " done"
        self._emit()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        where = getattr(trial, "error_file", None) or getattr(trial, "local_path", None) or "its tune_<date>/ folder"
        self.state[self._label(trial)] = f"FAILED (error: {where})"
        self._emit()
