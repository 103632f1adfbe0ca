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
from typing import Any

TRANSFER = "transfer"
CAPABILITY = "capability"
STOP_REASONS = (TRANSFER, CAPABILITY)


def _eval_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Eval checkpoints in step order; the last row of a step wins (a resumed trial may repeat one)."""
    by_step: dict[int, Mapping[str, Any]] = {}
    for r in rows:
        if r.get("kind", "eval") == "eval" and r.get("eval_attack_rate") is not None:
            by_step[int(r["step"])] = r
    return [by_step[s] for s in sorted(by_step)]


def transfer_established(rows: Sequence[Mapping[str, Any]], threshold: float, k: int) -> bool:
    """True when the last k evaluated checkpoints all have eval attack rate <= threshold."""
    if k < 1:
        raise ValueError(f"k={k}: the number of consecutive checkpoints must be >= 1")
    evals = _eval_rows(rows)
    return len(evals) >= k and all(r["eval_attack_rate"] <= threshold for r in evals[-k:])


def capability_degraded(rows: Sequence[Mapping[str, Any]], max_rel_degradation: float | None) -> bool:
    """True when a benchmark at the latest capability checkpoint degrades by more than the limit."""
    if max_rel_degradation is None:
        return False
    caps = [r for r in rows if r.get("kind") == "capability" and r.get("rel_degradation") is not None]
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
