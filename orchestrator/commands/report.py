"""`python -m orchestrator report`: argparse glue around eval.report.write_report, plus optional W&B logging.

    python -m orchestrator report sweeps/wronglang_spanish/2026-01-01_12-00-00
    python -m orchestrator report SWEEP_A SWEEP_B --out reports/compare --error-rule bootstrap --wandb
    python -m orchestrator report SWEEP --error-rule empirical --seed-study SEED_STUDY_SWEEP --ref-lr 1e-3 --ref-step 32

argparse, not Hydra: the report reads finished run folders and takes no config tree.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

from eval.analysis import ERROR_RULES, MIN_BOOTSTRAP_SEEDS
from eval.report import NotASweepError, check_sweep_dir, load_capability, write_report
from workers.tracking import log_to_wandb


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m orchestrator report",
                                description="Write report.md (+ PNGs, report.json) for one or more sweep folders.")
    p.add_argument("sweep_dirs", nargs="+", type=Path, help="sweep folders (each has trials/*/config.json)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: the sweep folder for one sweep, ./report_<timestamp> for several)")
    p.add_argument("--threshold", type=float, default=None, help="attack-rate threshold (default: the recorded one)")
    p.add_argument("--error-rule", choices=list(ERROR_RULES), default="factor",
                   help="seed error bars: the note's tentative 4x factor, a factor measured by a seed study "
                        f"(empirical), or a seeded bootstrap of the median (>= {MIN_BOOTSTRAP_SEEDS} seeds)")
    p.add_argument("--seed-study", type=Path, nargs="+", default=[],
                   help="sweep folder(s) of many seeds at one LR that --error-rule empirical measures its factor on "
                        "(default: the reported sweeps' own seeds)")
    p.add_argument("--ref-lr", type=float, default=None, help="paired comparison: the reference (high) LR")
    p.add_argument("--ref-step", type=int, default=None, help="paired comparison: T, a checkpoint of the reference LR")
    p.add_argument("--capability", type=Path, default=None,
                   help='JSON list of {"trial", "step", "degradation"}: restricts the paired comparison\'s T')
    p.add_argument("--max-degradation", type=float, default=0.1, help="capability limit for T (relative)")
    p.add_argument("--wandb", action="store_true", help="log tables and PNGs to one W&B report run per sweep")
    return p.parse_args(argv)


def per_lr_table(report_md: str) -> str:
    """The report's per-LR table (steps-to-transfer across seeds), as the terminal shows it after `report`."""
    section = report_md.partition("## Per LR across seeds")[2].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|") and not line.startswith("|---")]
    if not rows:
        return "steps-to-transfer per LR: no table (no trial has an eval row yet)"
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    return "\n".join(["steps-to-transfer per LR (report.md, \"Per LR across seeds\"):"] +
                     ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        for d in args.sweep_dirs:
            check_sweep_dir(d)
    except NotASweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = args.out
    if out is None:
        out = args.sweep_dirs[0] if len(args.sweep_dirs) == 1 else Path(f"report_{datetime.now():%Y%m%d_%H%M%S}")
    capability = load_capability(args.capability) if args.capability else None
    try:
        path = write_report(list(args.sweep_dirs), out, args.threshold, args.error_rule, capability=capability,
                            max_degradation=args.max_degradation, ref_lr=args.ref_lr, ref_step=args.ref_step,
                            seed_study=args.seed_study)
    except ValueError as err:  # bad input named with its fix (bootstrap on few seeds, no seed study, ...)
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(per_lr_table(path.read_text(encoding="utf-8")))
    for row in json.loads((Path(out) / "report.json").read_text()).get("headline", []):
        print(f"[report] {row['text']}")
    print(f"[report] {path}")
    if args.wandb:
        logged = log_to_wandb(out)
        print(f"[report] W&B report runs for: {', '.join(logged)}" if logged else
              "[report] --wandb: no sweep has trials/*/wandb, nothing logged")
    return 0
