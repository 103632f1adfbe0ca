"""Where an attack-rate curve crosses the threshold, read so one noisy checkpoint cannot move it.

A checkpoint's attack rate is a share of ~100 sampled answers: at a true rate of 0.55 a single checkpoint reads
<= 0.5 about one time in five, so the first raw crossing is biased early. The crossing is read instead on the
monotone (non-increasing) fit of attack rate against log(step): isotonic regression by pool-adjacent-violators,
each checkpoint weighted by its number of answers. A lone dip below the threshold is pooled with its neighbours;
a curve that really falls stays as it is (a non-increasing curve is its own fit, so every clean case reads as
before). The crossing is then interpolated linearly in log(step) between the two bracketing checkpoints of the fit
(interpolated_transfer), and the bracket is kept beside it: (last checkpoint above, first at/below).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def interpolated_transfer(curve: Sequence[tuple[int, float]], threshold: float = 0.5) -> float | None:
    """Where the curve first reaches the threshold, interpolated between the two bracketing checkpoints.

    Checkpoints are log-spaced, so the step is interpolated linearly in log(step); step 0 has no log, so a
    bracket starting at step 0 is interpolated linearly in step. The crossing is the same one steps_to_transfer
    finds (the first), so the estimate lies in (previous checkpoint, steps_to_transfer]. None if never reached.
    """
    pts = sorted(curve)
    for i, (step, rate) in enumerate(pts):
        if rate > threshold:
            continue
        if i == 0:
            return float(step)  # transferred at the first checkpoint: nothing to bracket with
        s0, a0 = pts[i - 1]
        frac = (a0 - threshold) / (a0 - rate)
        if s0 == 0:
            return s0 + frac * (step - s0)
        return math.exp(math.log(s0) + frac * (math.log(step) - math.log(s0)))
    return None


@dataclass(frozen=True)
class Crossing:
    """The interpolated crossing and its bracket: below is the last checkpoint whose fitted rate is above the
    threshold (None when the first checkpoint is already at/below), at is the first one at/below it."""

    estimate: float
    below: int | None
    at: int


def monotone_fit(rates: Sequence[float], weights: Sequence[float] | None = None) -> list[float]:
    """Weighted least-squares non-increasing fit of rates in the given order (pool adjacent violators)."""
    w = [1.0] * len(rates) if weights is None else [max(float(x), 1e-12) for x in weights]
    blocks: list[list[float]] = []  # [mean, weight, count]
    for r, wi in zip(rates, w, strict=True):
        blocks.append([float(r), wi, 1])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:  # a rise: pool the two blocks
            m2, w2, c2 = blocks.pop()
            m1, w1, c1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    out: list[float] = []
    for mean, _, count in blocks:
        out += [mean] * int(count)
    return out


def fitted_curve(curve: Sequence[tuple[int, float]], weights: Sequence[float] | None = None
                 ) -> list[tuple[int, float]]:
    """(step, fitted rate) sorted by step; weights follow the curve's order."""
    order = sorted(range(len(curve)), key=lambda i: curve[i][0])
    steps = [curve[i][0] for i in order]
    fit = monotone_fit([curve[i][1] for i in order], None if weights is None else [weights[i] for i in order])
    return list(zip(steps, fit, strict=True))


def transfer_crossing(curve: Sequence[tuple[int, float]], threshold: float = 0.5,
                      weights: Sequence[float] | None = None) -> Crossing | None:
    """The crossing of the monotone fit, interpolated in log(step), with its bracket; None if the fit never
    reaches the threshold (the raw curve may still dip below it once: that is read as noise)."""
    fit = fitted_curve(curve, weights)
    at = next((i for i, (_, rate) in enumerate(fit) if rate <= threshold), None)
    if at is None:
        return None
    estimate = interpolated_transfer(fit, threshold)
    assert estimate is not None  # the fit reaches the threshold at `at`
    return Crossing(estimate, fit[at - 1][0] if at else None, fit[at][0])
