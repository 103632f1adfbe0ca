"""The sweep's progress as a table of one row per trial, from the run files alone (no Ray).

`trial_row` reads a trial folder (heartbeat.json, metrics.jsonl, result.json); `format_table` turns rows into
text, a pure function; `LiveTable` draws it: redrawn in place on a terminal, and on any other stream (CI logs,
Slurm .out) a full table every `interval_s` plus one line per trial whose state changed. The live callback
(orchestrator/console/progress.py) and `python -m orchestrator status` both use it.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from eval.heartbeat import read_heartbeat
from eval.rows import eval_rows
from eval.runfiles import TrialDir

STATES = ("pending", "training", "evaluating", "done", "stopped", "failed")
WIDTH = 100  # no line is longer: it fits a log viewer and a split terminal
CURSOR_UP_CLEAR = "\x1b[{n}F\x1b[J"  # to the start of the line n lines up, then clear to the end of the screen


@dataclass(frozen=True)
class TrialRow:
    trial: str
    state: str  # one of STATES
    step: int | None  # latest step trained (heartbeat) or logged (metrics.jsonl)
    max_steps: int
    steps_per_s: float | None = None
    attack_rate: float | None = None  # latest evaluated checkpoint's eval attack rate
    eval_step: int | None = None  # ... and its step
    beat_age_s: float | None = None  # seconds since the trainer's last heartbeat, while training


def trial_row(trial_dir: Path, max_steps: int, now: float | None = None) -> TrialRow:
    """A trial's row from its folder: done / stopped from result.json, evaluating / training from the heartbeat,
    pending when the folder does not exist yet. (Failed is known only to the driver, which overrides it.)"""
    now = time.time() if now is None else now
    metrics = TrialDir(trial_dir).rows()
    evals = eval_rows(metrics)
    beat = read_heartbeat(trial_dir)
    step = max([r["step"] for r in metrics if isinstance(r.get("step"), int)] + ([beat["step"]] if beat else []),
               default=None)
    result = read_json(TrialDir(trial_dir).result)
    if result is not None:
        state = "stopped" if result.get("stopped_early") else "done"
        step = result.get("stop_step") if result.get("stopped_early") else step
    elif beat is not None and beat.get("phase") == "evaluating":
        state = "evaluating"
    elif trial_dir.exists():
        state = "training"
    else:
        state = "pending"
    live = state in ("training", "evaluating") and beat is not None
    return TrialRow(
        trial=trial_dir.name, state=state, step=step, max_steps=max_steps,
        steps_per_s=beat.get("steps_per_s") if live else None,
        attack_rate=evals[-1].get("eval_attack_rate") if evals else None,
        eval_step=evals[-1]["step"] if evals else None,
        beat_age_s=max(0.0, now - float(beat["time"])) if live and state == "training" else None,
    )


def read_json(path: Path) -> dict[str, Any] | None:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _speed(steps_per_s: float | None) -> str:
    if not steps_per_s:
        return "-"
    return f"{steps_per_s:.1f} st/s" if steps_per_s >= 1 else f"{1 / steps_per_s:.0f} s/st"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


def format_row(r: TrialRow) -> str:
    step = "-" if r.step is None else f"{r.step}/{r.max_steps}"
    attack = "-" if r.attack_rate is None else f"{r.attack_rate:.2f} @{r.eval_step}"
    speed, age = _speed(r.steps_per_s), _age(r.beat_age_s)
    line = f"{r.trial[:26]:<26} {r.state:<10} {step:>11} {speed:>10} {attack:>12} {age:>8}"
    return line.rstrip()[:WIDTH]


HEADER = f"{'trial':<26} {'state':<10} {'step':>11} {'speed':>10} {'attack @step':>12} {'beat':>8}"


def counts_line(rows: list[TrialRow]) -> str:
    counts = {s: sum(r.state == s for r in rows) for s in STATES}
    return f"{len(rows)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)


def format_table(rows: list[TrialRow], elapsed_s: float | None = None) -> str:
    """A title line (elapsed time, trials per state), a header and one line per trial; no line over WIDTH."""
    title = counts_line(rows) if elapsed_s is None else f"[sweep {elapsed_s:5.0f}s] {counts_line(rows)}"
    return "\n".join([title[:WIDTH], HEADER] + [format_row(r) for r in rows])


class LiveTable:
    """Draws the table on `stream`: in place on a terminal (ANSI cursor movement, at most every `redraw_s`),
    elsewhere a full table every `interval_s` and, in between, one line per trial whose state changed."""

    def __init__(self, stream: TextIO | None = None, interval_s: float = 60.0, redraw_s: float = 1.0,
                 tty: bool | None = None, clock: Any = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else tty
        self.interval_s, self.redraw_s, self.clock = interval_s, redraw_s, clock
        self.drawn_lines = 0  # terminal: lines of the table now on screen
        self.last_draw: float | None = None
        self.last_text = ""
        self.states: dict[str, str] = {}  # log: each trial's state when last printed

    def update(self, rows: list[TrialRow], elapsed_s: float, force: bool = False) -> None:
        now = self.clock()
        if self.tty:
            text = format_table(rows, elapsed_s)
            due = self.last_draw is None or now - self.last_draw >= self.redraw_s
            if (force or due) and text != self.last_text:
                self._redraw(text, now)
            return
        changed = [r for r in rows if self.states.get(r.trial) != r.state]
        if self.last_draw is None or now - self.last_draw >= self.interval_s or force:
            self._print(format_table(rows, elapsed_s), now)
        elif changed:
            self._write("".join(f"[sweep {elapsed_s:5.0f}s] {format_row(r)}\n" for r in changed))
        self.states.update({r.trial: r.state for r in rows})

    def close(self, rows: list[TrialRow], elapsed_s: float) -> None:
        """The final table: redrawn once more on a terminal, printed whole on a log."""
        if self.tty:
            self._redraw(format_table(rows, elapsed_s), self.clock())
        else:
            self._print(format_table(rows, elapsed_s), self.clock())
            self.states.update({r.trial: r.state for r in rows})

    def _redraw(self, text: str, now: float) -> None:
        width = self._columns() - 1  # a wrapped line would take two rows and break the cursor-up count
        lines = [line[:width] for line in text.splitlines()]
        up = CURSOR_UP_CLEAR.format(n=self.drawn_lines) if self.drawn_lines else ""
        self._write(up + "\n".join(lines) + "\n")
        self.drawn_lines, self.last_draw, self.last_text = len(lines), now, text

    def _columns(self) -> int:
        try:
            return os.get_terminal_size(self.stream.fileno()).columns or WIDTH + 1
        except (AttributeError, OSError, ValueError):
            return shutil.get_terminal_size((WIDTH + 1, 24)).columns

    def _print(self, text: str, now: float) -> None:
        self._write(text + "\n")
        self.last_draw, self.last_text = now, text

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
