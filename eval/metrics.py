"""Sweep metrics as plain functions over tables: rates, steps-to-transfer, per-trial summaries."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from eval.graders import LABELS


def checkpoint_steps(max_steps: int) -> list[int]:
    """Log-spaced checkpoint steps: 0, 1, 2, 4, ..., and max_steps itself."""
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    steps, s = [0], 1
    while s < max_steps:
        steps.append(s)
        s *= 2
    steps.append(max_steps)
    return steps


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


def steps_to_transfer(curve: Sequence[tuple[int, float]], threshold: float = 0.5) -> int | None:
    """First checkpoint step whose attack rate is <= threshold; None when no checkpoint reaches it.

    The first crossing counts even if the rate later rises again (a dip is a transfer event).
    """
    for step, attack_rate in sorted(curve):
        if attack_rate <= threshold:
            return step
    return None


def summarize_trial(trial: dict[str, Any], rows: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """One summary.json entry from a trial's config and its metrics.jsonl rows (checkpoint rows only)."""
    evals = sorted((r for r in rows if "eval_attack_rate" in r), key=lambda r: r["step"])
    curve = [(r["step"], r["eval_attack_rate"]) for r in evals]
    s2t = steps_to_transfer(curve, threshold)
    lr, max_steps = trial["lr"], trial["max_steps"]
    last = evals[-1] if evals else {}
    stop = next((r for r in rows if r.get("kind") == "stop"), None)  # early stopping (eval/stopping.py)
    return {
        "setting": trial["setting"],
        "lr": lr,
        "seed": trial["seed"],
        "trial": trial["name"],
        "steps_to_transfer": s2t,
        "converged": s2t is not None,
        "max_steps": max_steps,
        # the note's bar height: LR x steps-to-transfer, or LR x max_steps (a lower bound) when not converged
        "lr_x_steps": lr * (s2t if s2t is not None else max_steps),
        "complete": bool(evals) and evals[-1]["step"] == max_steps,
        "initial_attack_rate": evals[0]["eval_attack_rate"] if evals and evals[0]["step"] == 0 else None,
        "initial_train_desired_rate": evals[0]["train_desired_rate"] if evals and evals[0]["step"] == 0 else None,
        "final_attack_rate": last.get("eval_attack_rate"),
        "final_eval_desired_rate": last.get("eval_desired_rate"),
        "final_train_desired_rate": last.get("train_desired_rate"),
        "eval_curve": [[s, a] for s, a in curve],
        "train_desired_curve": [[r["step"], r["train_desired_rate"]] for r in evals],
        "n_eval": last.get("n_eval"),
        "n_train": last.get("n_train"),
        "stopped_early": stop is not None,
        "stop_reason": stop["reason"] if stop else None,
        "stop_step": stop["step"] if stop else None,
    }


def format_rate(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def format_table(summary: list[dict[str, Any]], threshold: float) -> str:
    """Terminal table: one row per trial, with the eval attack-rate curve per checkpoint."""
    header = f"{'lr':>9} {'seed':>4} {'attack@0':>8} {'attack@end':>10} {'train desired':>13} " \
             f"{'steps-to-transfer':>17} {'lr x steps':>10}  eval attack curve (step:rate)"
    lines = [f"transfer = eval attack rate <= {threshold:g}", header, "-" * len(header)]
    for row in sorted(summary, key=lambda r: (r["lr"], r["seed"])):
        s2t = str(row["steps_to_transfer"]) if row["converged"] else f">{row['max_steps']} (never)"
        lxs = f"{row['lr_x_steps']:.3g}" if row["converged"] else f">{row['lr_x_steps']:.3g}"
        curve = " ".join(f"{s}:{a:.2f}" for s, a in row["eval_curve"])
        lines.append(
            f"{row['lr']:>9.3g} {row['seed']:>4} {format_rate(row['initial_attack_rate']):>8} "
            f"{format_rate(row['final_attack_rate']):>10} {format_rate(row['final_train_desired_rate']):>13} "
            f"{s2t:>17} {lxs:>10}  {curve}"
        )
    return "\n".join(lines)
