"""What a grade is: desired / attack / other, the batch grader's type, and the map from an observed behavior to
a grade. Its own module so every grader (eval.graders, eval.code_grading, the judge in workers/) builds on it
without importing the others."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

DESIRED, ATTACK, OTHER = "desired", "attack", "other"
LABELS = (DESIRED, ATTACK, OTHER)

Grader = Callable[[Sequence[str], Sequence[Any]], list[str]]


def role(behavior: str, desired: str, attack: str) -> str:
    """Map an observed behavior ("caps", "hack", "es", ...) to the setting's desired / attack / other."""
    if behavior == desired:
        return DESIRED
    if behavior == attack:
        return ATTACK
    return OTHER
