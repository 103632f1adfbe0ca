"""The report's capability parts, from run files only: per-checkpoint capability, the T rule's input, recovery.

Reads <sweep>/capability/baseline.json (benchmarks, guardrail, limit), the `kind: capability` rows of each
trial's metrics.jsonl and <sweep>/recovery/*/result.json.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.capability.ci import with_intervals
from eval.capability.scoring import capability_table, degradation_by_checkpoint
from eval.runfiles import load_trials


@dataclass(frozen=True)
class SweepCapability:
    """A sweep's capability data: the table, the guardrail benchmark and its limit, the recovery runs."""

    table: list[dict[str, Any]]
    guardrail: str | None
    max_degradation: float
    baseline: dict[str, Any] = field(default_factory=dict)
    recoveries: list[dict[str, Any]] = field(default_factory=list)

    def degradation(self) -> dict[tuple[str, int], float] | None:
        """(trial, step) -> upper end of the relative degradation's interval on the guardrail (the 10% rule reads
        the interval, not the point estimate); None when the sweep measured none."""
        return degradation_by_checkpoint(self.table, self.guardrail, "degradation_high") if self.table else None


def load_sweep_capability(sweep_dir: Path) -> SweepCapability:
    meta_path = sweep_dir / "capability" / "baseline.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    recoveries = [json.loads(p.read_text()) for p in sorted((sweep_dir / "recovery").glob("*/result.json"))]
    return SweepCapability(with_intervals(capability_table(load_trials(sweep_dir)), sweep_dir), meta.get("guardrail"),
                           float(meta.get("max_degradation", 0.1)), meta.get("scores", {}), recoveries)


def _f(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def capability_lines(label: str, cap: SweepCapability) -> list[str]:
    """Markdown: one row per (trial, checkpoint, benchmark)."""
    if not cap.table:
        return []
    lines = [f"### {label}", "", "Source: `kind: capability` rows of `trials/<trial>/metrics.jsonl` (baseline: "
             "`capability/baseline.json`, the model before training), joined with the eval row of the same step. "
             f"Guardrail for T: **{cap.guardrail or 'worst benchmark'}**, limit {cap.max_degradation:.0%} relative "
             "degradation, judged on the upper end of the degradation's 95% interval (within limit only when the "
             "whole interval is). Score: [95% Wilson]; degradation: paired per item against the baseline's samples "
             "(Agresti-Min) where both samples files exist, else the score's Wilson interval with the baseline "
             "as exact (column `interval`).", ""]
    lines += ["| trial | lr | step | benchmark | score | baseline | rel. degradation [95%] | within limit | "
              "interval | eval attack rate |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in cap.table:
        deg, high = r["rel_degradation"], r.get("degradation_high")
        judged = high if high is not None else deg
        ok = "-" if judged is None else ("yes" if judged <= cap.max_degradation else "**no**")
        iv = "" if high is None else f" [{_f(r['degradation_low'], '.1%')}, {_f(high, '.1%')}]"
        lines.append(f"| {r['trial']} | {r['lr']:.3g} | {r['step']} | {r['benchmark']} | {r['score']:.3f} "
                     f"[{_f(r.get('score_low'))}, {_f(r.get('score_high'))}] (n={r['n']}) | {_f(r['baseline'])} | "
                     f"{_f(deg, '.1%')}{iv} | {ok} | {r.get('interval') or '-'} | {_f(r['eval_attack_rate'], '.2f')} |")
    return lines + [""]


def recovery_lines(label: str, recoveries: Sequence[dict[str, Any]]) -> list[str]:
    if not recoveries:
        return []
    lines = [f"### {label}", "", "Source: `recovery/<trial>_step<step>_<benchmark>_<recipe>/result.json` (samples "
             "and labels beside it). Labels: teacher answers to the benchmark's recovery pool (disjoint from the "
             "scored items), kept only when correct.", "",
             "| checkpoint | benchmark | labels (kept / sampled) | training | | score | rel. degradation | "
             "eval attack | eval desired | train desired |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in recoveries:
        for tag in ("before", "after"):
            m = r[tag]
            head = (f"{r['trial']} @ {r['step']} | {r['benchmark']} | {r['n_labels']} / {r['n_sampled']} from "
                    f"{r['teacher']} | {r['steps']} x {r['batch_size']} at lr {r['lr']:.3g}") if tag == "before" \
                else " | | | "
            rates = " | ".join(f"{m[k]:.2f}" for k in ("eval_attack_rate", "eval_desired_rate", "train_desired_rate"))
            lines.append(f"| {head} | {tag} | {m['score']:.3f} | {_f(m['rel_degradation'], '.1%')} | {rates} |")
    return lines + [""]
