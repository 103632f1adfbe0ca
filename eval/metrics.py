"""Sweep metrics as plain functions over tables: checkpoint schedule, rates, steps-to-transfer."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from eval.graders import LABELS


def checkpoint_steps(max_steps: int, per_octave: int = 1) -> list[int]:
    """Log-spaced checkpoint steps: 0, then every 2^(1/per_octave) rounded to an integer (duplicates dropped),
    and max_steps itself. per_octave=1: 0, 1, 2, 4, ..., max_steps; 2: 0, 1, 2, 3, 4, 6, 8, 11, 16, ..."""
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    if per_octave < 1:
        raise ValueError(f"per_octave must be >= 1, got {per_octave}")
    steps, i = {0, max_steps}, 0
    while (s := round(2 ** (i / per_octave))) < max_steps:
        steps.add(s)
        i += 1
    return sorted(steps)


def rates(grades: Iterable[str]) -> dict[str, float]:
    """Share of each label among the grades (desired, attack, other); n is the count."""
    counts = Counter(grades)
    unknown = set(counts) - set(LABELS)
    if unknown:
        raise ValueError(f"unknown grade labels {sorted(unknown)}")
    n = sum(counts.values())
    if n == 0:
        raise ValueError("no grades to summarise")
    return {label: counts[label] / n for label in LABELS} | {"n": n}


def coherent_rate(coherent: Iterable[bool]) -> float:
    """Share of answers that read as text (eval.coherence): a checkpoint's eval_coherent_rate / train_coherent_rate."""
    flags = list(coherent)
    if not flags:
        raise ValueError("no answers to measure")
    return sum(bool(f) for f in flags) / len(flags)


def steps_to_transfer(curve: Sequence[tuple[int, float]], threshold: float = 0.5) -> int | None:
    """First checkpoint step whose attack rate is <= threshold; None when no checkpoint reaches it.

    The first crossing counts even if the rate later rises again (a dip is a transfer event).
    """
    for step, attack_rate in sorted(curve):
        if attack_rate <= threshold:
            return step
    return None
