"""The rows of a trial's metrics.jsonl, typed: what each kind of row holds, and the one reader of each kind.

Every row has `step` and `kind`; rows written before `kind` existed are eval rows. A resumed trial may repeat a
checkpoint's row: readers keep the last one of a step. eval.runfiles reads and writes the files themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict


class TrainRow(TypedDict):
    """One optimizer step's loss."""

    step: int
    kind: Literal["train"]
    train_loss: float


class EvalRow(TypedDict, total=False):
    """A checkpoint's rates on eval and train prompts (orchestrator.run.trial.grade_checkpoint), plus grader stats."""

    step: int
    kind: Literal["eval"]
    lr: float
    seed: int
    train_loss: float | None  # mean of the step losses since the previous checkpoint; None at step 0
    eval_latency_s: float
    eval_desired_rate: float
    eval_attack_rate: float
    eval_other_rate: float
    n_eval: int
    train_desired_rate: float
    train_attack_rate: float
    train_other_rate: float
    n_train: int
    eval_coherent_rate: float  # share of answers that read as text (eval.coherence); absent in older runs
    train_coherent_rate: float


class CapabilityRow(TypedDict, total=False):
    """One benchmark's score at a checkpoint (workers.capability.capability_row), plus its own extras."""

    step: int
    kind: Literal["capability"]
    benchmark: str
    score: float
    n: int
    baseline: float
    rel_degradation: float | None


class StopRow(TypedDict, total=False):
    """Early stopping ended the trial at `step` (eval.stopping)."""

    step: int
    kind: Literal["stop"]
    reason: str
    steps_trained: int | None


MetricsRow = TrainRow | EvalRow | CapabilityRow | StopRow


def eval_rows(rows: Sequence[Mapping[str, Any]]) -> list[EvalRow]:
    """Checkpoint rows sorted by step; when a resumed trial wrote a step twice, the last row wins."""
    by_step: dict[int, EvalRow] = {}
    for r in rows:
        if r.get("kind", "eval") == "eval" and r.get("eval_attack_rate") is not None:
            by_step[int(r["step"])] = dict(r)  # type: ignore[assignment]
    return [by_step[s] for s in sorted(by_step)]


def capability_rows(rows: Sequence[Mapping[str, Any]]) -> list[CapabilityRow]:
    """Every benchmark score, in file order."""
    return [dict(r) for r in rows if r.get("kind") == "capability"]  # type: ignore[misc]


def stop_row(rows: Sequence[Mapping[str, Any]]) -> StopRow | None:
    """The trial's early-stop row, if it stopped early."""
    return next((dict(r) for r in rows if r.get("kind") == "stop"), None)  # type: ignore[return-value]
