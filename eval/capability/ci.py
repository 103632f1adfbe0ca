"""Intervals on capability scores and on their relative degradation, so the 10% rule reads an interval.

A checkpoint and the model before training answer the same benchmark items, so the change is measured per item:
of the n items both scored, n10 were right before and wrong now, n01 the reverse; the score fell by
(n10 - n01) / n. Its interval is the Agresti-Min adjusted Wald interval for paired proportions (add 1/2 to each
cell of the 2x2 table; it has width even when no item changed, where the plain paired interval has none). The
relative degradation divides it by the baseline score. Without per-item files (older runs) the interval is the
checkpoint score's Wilson interval with the baseline taken as exact, and the row says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from eval.analysis import wilson_interval
from eval.runfiles import SweepDir, read_jsonl, step_name

PAIRED, UNPAIRED = "paired per item (Agresti-Min)", "Wilson on the score, baseline as exact"


def paired_drop_interval(before: Mapping[str, bool], after: Mapping[str, bool], z: float = 1.96
                         ) -> tuple[float, float, float, int]:
    """(drop, low, high, n): the score's fall from before to after over the items both scored, with its interval."""
    ids = [i for i in before if i in after]
    if not ids:
        raise ValueError("no item scored both before and after: cannot pair")
    n = len(ids)
    n10 = sum(1 for i in ids if before[i] and not after[i])
    n01 = sum(1 for i in ids if after[i] and not before[i])
    p10, p01 = (n10 + 0.5) / (n + 2), (n01 + 0.5) / (n + 2)
    half = z * math.sqrt(max(0.0, (p10 + p01) - (p10 - p01) ** 2) / (n + 2))
    d = p10 - p01
    return (n10 - n01) / n, max(-1.0, d - half), min(1.0, d + half), n


def unpaired_degradation_interval(score: float, n: int, baseline: float, z: float = 1.96) -> tuple[float, float]:
    """Relative degradation interval from the score's Wilson interval, the baseline taken as exact."""
    low, high = wilson_interval(round(score * n), n, z)
    return (baseline - high) / baseline, (baseline - low) / baseline


def read_correct(path: Path) -> dict[str, bool]:
    """item_id -> correct from a capability samples file; unscored items (correct null) are left out."""
    return {str(r["item_id"]): bool(r["correct"]) for r in read_jsonl(path) if r.get("correct") is not None}


def with_intervals(table: Sequence[Mapping[str, Any]], sweep_dir: Path, z: float = 1.96) -> list[dict[str, Any]]:
    """The capability table with score_low/high, degradation_low/high and the interval's method per row, paired
    per item against the baseline's samples where both files exist."""
    out = []
    for r in table:
        row = dict(r)
        n, score, base = int(r.get("n") or 0), float(r["score"]), r.get("baseline")
        row["score_low"], row["score_high"] = wilson_interval(round(score * n), n, z) if n else (0.0, 1.0)
        row["degradation_low"] = row["degradation_high"] = None
        row["interval"] = None
        if base:
            before = read_correct(sweep_dir / "capability" / f"baseline_{r['benchmark']}.jsonl")
            after = read_correct(SweepDir(sweep_dir).named(r["trial"]).path / "capability"
                                 / f"{step_name(int(r['step']))}_{r['benchmark']}.jsonl")
            if before and after and set(before) & set(after):
                _, low, high, _ = paired_drop_interval(before, after, z)
                row["degradation_low"], row["degradation_high"] = low / base, high / base
                row["interval"] = PAIRED
            elif n:
                row["degradation_low"], row["degradation_high"] = unpaired_degradation_interval(score, n, base, z)
                row["interval"] = UNPAIRED
        out.append(row)
    return out
