"""Early stopping of a trial, as a pure rule over its metrics rows.

A sweep pays for every step a trial trains after its answer is known. Two answers end a trial early:
- transfer: the eval attack rate is at or under the threshold at the last K evaluated checkpoints in a row
  (K >= 1; K > 1 guards against a single noisy dip being taken for transfer);
- capability: at the latest checkpoint with capability rows, some benchmark's relative degradation
  (`rel_degradation`, positive = worse than the base model) is past the limit, so the model is being broken
  rather than taught.
Transfer is checked first: a trial that has transferred has its answer whatever its capability says.
Off by default (full curves); the `fast` sweep preset turns it on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eval.knobs import AT_LEAST_1, POSITIVE, PROBABILITY, knob
from eval.rows import capability_rows, eval_rows


@dataclass
class EarlyStopConfig:
    """Stop a trial once its answer is known (eval/stopping.py); off by default so curves run to max_steps."""

    enabled: bool = False
    # transfer: attack rate <= threshold at k checkpoints in a row; null turns this rule off
    k: int | None = knob(2, within=AT_LEAST_1)
    # capability: stop past this relative drop; null turns it off
    max_rel_degradation: float | None = knob(None, within=POSITIVE)
    # k=1: once the latest eval attack rate is at or under this (the curve has started to fall), the trainer waits
    # for each checkpoint's evaluation before training on, so it stops at the transfer checkpoint instead of
    # running past it while that checkpoint is sampled; null: never wait
    wait_below: float | None = knob(1.0, within=PROBABILITY)


TRANSFER = "transfer"
CAPABILITY = "capability"
STOP_REASONS = (TRANSFER, CAPABILITY)


def transfer_established(rows: Sequence[Mapping[str, Any]], threshold: float, k: int) -> bool:
    """True when the last k evaluated checkpoints all have eval attack rate <= threshold."""
    if k < 1:
        raise ValueError(f"k={k}: the number of consecutive checkpoints must be >= 1")
    evals = eval_rows(rows)
    return len(evals) >= k and all(r["eval_attack_rate"] <= threshold for r in evals[-k:])


def capability_degraded(rows: Sequence[Mapping[str, Any]], max_rel_degradation: float | None) -> bool:
    """True when a benchmark at the latest capability checkpoint degrades by more than the limit."""
    if max_rel_degradation is None:
        return False
    caps = [r for r in capability_rows(rows) if r.get("rel_degradation") is not None]
    if not caps:
        return False
    last = max(int(r["step"]) for r in caps)
    return any(float(r["rel_degradation"]) > max_rel_degradation for r in caps if int(r["step"]) == last)


def should_stop(rows: Sequence[Mapping[str, Any]], threshold: float, k: int | None,
                max_rel_degradation: float | None) -> str | None:
    """Why the trial should stop now ("transfer" or "capability"), or None to keep training.

    `rows` are the trial's metrics rows so far; k=None turns the transfer rule off, max_rel_degradation=None
    the capability rule.
    """
    if k is not None and transfer_established(rows, threshold, k):
        return TRANSFER
    if capability_degraded(rows, max_rel_degradation):
        return CAPABILITY
    return None


class StopState:
    """One trial's early-stopping state, fed its metrics rows as evaluations finish (pure; the trial holds it).

    `update` fires the rule at most once; `wait_for_pending` says whether the trainer should wait for the
    evaluations in flight (when the pending checkpoint could complete the transfer rule); `close` is called
    when training ends: a rule that fires after the last step saved nothing and is dropped.
    """

    def __init__(self, threshold: float, k: int | None, max_rel_degradation: float | None,
                 wait_below: float | None = None) -> None:
        self.threshold, self.k, self.max_rel_degradation = threshold, k, max_rel_degradation
        self.wait_below = wait_below
        self.step: int | None = None
        self.reason: str | None = None
        self.closed = False

    @property
    def fired(self) -> bool:
        return self.step is not None

    def update(self, rows: Sequence[Mapping[str, Any]], step: int) -> None:
        """Rows after checkpoint `step` was evaluated."""
        if self.closed or self.fired:
            return
        reason = should_stop(rows, self.threshold, self.k, self.max_rel_degradation)
        if reason is not None:
            self.step, self.reason = step, reason

    def wait_for_pending(self, rows: Sequence[Mapping[str, Any]]) -> bool:
        """With k > 1, wait once k-1 checkpoints in a row are in. With k=1 every checkpoint could fire, and
        waiting at each would idle the trainer through every evaluation; so wait only once the curve has
        started to move (the latest eval attack rate at or under `wait_below`). Without that wait, a trainer
        faster than its sampler runs past the transfer checkpoint to max_steps before the answer arrives
        (measured on the toy: lr 3e-3 transferred at step 16 and still trained all 64 steps; with
        wait_below=1.0 it stopped at 16)."""
        if self.fired or self.k is None:
            return False
        if self.k > 1:
            return transfer_established(rows, self.threshold, self.k - 1)
        evals = eval_rows(rows)
        return self.wait_below is not None and bool(evals) and evals[-1]["eval_attack_rate"] <= self.wait_below

    def keeps(self, step: int) -> bool:
        """Whether checkpoint `step` belongs to the trial's curve (nothing after the stop does)."""
        return not self.fired or step <= self.step  # type: ignore[operator]

    def close(self, last_step: int, max_steps: int) -> None:
        self.closed = True
        if self.fired and last_step >= max_steps:  # the full curve is already paid for: keep it
            self.step, self.reason = None, None
