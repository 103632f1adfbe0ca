"""Does a model show a setting's initial behavior? Sample eval and train prompts, grade, and give rates with
Wilson intervals. The probe command (orchestrator/commands/probe.py) asks it of an unmodified model; the organism
step (workers/models/organism.py) asks it of the organism it built, on held-out questions only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eval.analysis import wilson_interval
from eval.graders import ATTACK, DESIRED, OTHER, build_grader
from workers.labels.prompts import Prompt, build_prompts, load_bank, pick, split_bank

Generate = Callable[[list[str]], list[str]]  # user texts -> one answer each (the base model, no adapter)


def probe_prompts(setting: Any, n: int, seed: int, held_out: bool = False) -> tuple[list[Prompt], list[Prompt]]:
    """n eval prompts (eval questions, eval template) and n train prompts (train template): on train questions as
    in a sweep, or with held_out=True on eval questions too, which an organism never saw in its corpus."""
    train_q, eval_q = split_bank(load_bank(setting.questions), setting.eval_fraction)
    evals = pick(build_prompts(eval_q, setting.eval_template, "eval"), n, seed)
    trains = pick(build_prompts(eval_q if held_out else train_q, setting.train_template, "train"), n, seed + 1)
    return evals, trains


def split_rates(grades: list[str], z: float = 1.96) -> dict[str, Any]:
    """Each label's rate, count and Wilson interval."""
    n = len(grades)
    out: dict[str, Any] = {"n": n}
    for label in (DESIRED, ATTACK, OTHER):
        k = sum(g == label for g in grades)
        lo, hi = wilson_interval(k, n, z)
        out[label] = {"rate": k / n if n else 0.0, "count": k, "ci95": [round(lo, 4), round(hi, 4)]}
    return out


def measure(generate: Generate, setting: Any, n: int, seed: int = 0, held_out: bool = False) -> dict[str, Any]:
    """Rates on eval and train prompts, plus a few graded examples of each to read."""
    evals, trains = probe_prompts(setting, n, seed, held_out)
    prompts = evals + trains
    answers = generate([p.text for p in prompts])
    grades = build_grader(setting.grader)(answers, prompts)
    out: dict[str, Any] = {"setting": setting.name, "held_out": held_out}
    for split in ("eval", "train"):
        out[split] = split_rates([g for p, g in zip(prompts, grades, strict=True) if p.split == split])
    out["examples"] = [{"split": p.split, "prompt": p.text, "response": a, "grade": g}
                       for p, a, g in list(zip(prompts, answers, grades, strict=True))[:: max(1, len(prompts) // 6)]]
    return out


def format_rates(result: dict[str, Any]) -> str:
    """The terminal table: per split, desired / attack / other with 95% Wilson intervals."""
    lines = [f"{'prompts':8s} {'n':>4s}  {'desired':>20s}  {'attack':>20s}  {'other':>20s}"]
    for split in ("eval", "train"):
        r = result[split]
        cells = [f"{r[k]['rate']:.3f} [{r[k]['ci95'][0]:.2f},{r[k]['ci95'][1]:.2f}]" for k in (DESIRED, ATTACK, OTHER)]
        lines.append(f"{split:8s} {r['n']:4d}  " + "  ".join(f"{c:>20s}" for c in cells))
    return "\n".join(lines)


def shows_initial_behavior(result: dict[str, Any], threshold: float) -> bool:
    """An organism: attack above the sweep's threshold on eval prompts and mostly desired on train prompts."""
    return result["eval"][ATTACK]["rate"] > threshold and result["train"][DESIRED]["rate"] > threshold
