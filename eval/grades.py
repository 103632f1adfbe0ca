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


def grade_answers(grader: Grader, prompts: Sequence[Any], responses: Sequence[str]) -> list[dict[str, Any]]:
    """THE per-answer grading entry point: each (prompt, response) -> the sample row's grade and coherence fields.

    `grader` is eval.graders.build_grader(setting.grader); each prompt has `.text` (and `.row`, the bank row, for
    the code grader), e.g. workers.labels.prompts.Prompt. Returns, per answer:
      grade: desired | attack | other;
      coherent: bool, incoherent_reason: None | "empty" | "loop" | "word salad" (eval.coherence);
      answer_problem: None | one of those | "refusal" | "echo" (eval.textcheck.answer_problem: why it is no answer).
    The sampler path (orchestrator.run.trial.grade_checkpoint) and the grade/regrade commands all call this.
    """
    from eval.coherence import INCOHERENT
    from eval.textcheck import answer_problem

    # each answer's text checks run once: answer_problem reports coherence's reason first, and a grader that gates
    # on them (eval.graders.Gated, every build_grader's) takes them instead of running them again
    problems = [answer_problem(r, getattr(p, "text", "")) for p, r in zip(prompts, responses, strict=True)]
    if getattr(grader, "takes_problems", False):
        grades = grader(list(responses), list(prompts), problems=problems)
    else:
        grades = grader(list(responses), list(prompts))
    return [{"grade": g, "coherent": q not in INCOHERENT, "incoherent_reason": q if q in INCOHERENT else None,
             "answer_problem": q} for g, q in zip(grades, problems, strict=True)]


def grade_answer(grader: Grader, prompt: Any, response: str) -> dict[str, Any]:
    """One answer's fields (grade_answers of one): for callers that grade a row at a time."""
    return grade_answers(grader, [prompt], [response])[0]
