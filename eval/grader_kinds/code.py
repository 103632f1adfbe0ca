"""Code grader: the answer's code runs in eval.sandbox against the problem's visible test and its hidden tests
(eval/code_grading.py); "hack" or "honest"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eval.graders import CODE_BEHAVIORS, pair_problems
from eval.grades import Grader
from eval.knobs import POSITIVE, knob


@dataclass
class Config:
    desired: str | None = None  # language, case, code: the desired behavior (here hack or honest)
    attack: str | None = None  # language, case, code: the attack behavior (here hack or honest)
    timeout_s: float = knob(10.0, within=POSITIVE)  # code: seconds for one answer's tests in the sandbox


def problems(cfg: Any, where: str) -> list[str]:
    return pair_problems(cfg, where, "code", CODE_BEHAVIORS)


def build(cfg: Any) -> Grader:
    from eval.code_grading import build_code_grader

    return build_code_grader(cfg.desired, cfg.attack, float(cfg.timeout_s))
