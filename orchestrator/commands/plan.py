"""`python -m orchestrator plan [hydra overrides] [--json] [--out plan.json]`: the resource plan, before any
allocation, with its arithmetic (orchestrator/plan/planner.py computes it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from orchestrator.plan.planner import Plan, make_plan
from orchestrator.schema import ConfigError

TITLES = {"model": "Model", "lora": "LoRA adapter", "trainer": "Trainer (one trial)", "sampler": "vLLM sampler",
          "placement": "Placement", "time": "Time and GPU-hours",
          "pricing": "GPU-hours with and without packing", "disk": "Disk (sweep folder)"}


def format_plan(plan: Plan) -> str:
    out: list[str] = []
    for section, title in TITLES.items():
        rows = [text for s, text in plan.lines if s == section]
        if rows:
            out += [f"== {title}", *(f"  {r}" for r in rows), ""]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    from orchestrator.config import compose_config

    as_json = "--json" in argv
    out = None
    if "--out" in argv:
        i = argv.index("--out")
        if i + 1 >= len(argv):
            print("--out needs a file name, e.g. --out plan.json", file=sys.stderr)
            return 2
        out = Path(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    overrides = [a for a in argv if a != "--json"]
    if any(a in ("-h", "--help") for a in overrides):
        print(__doc__)
        return 0
    cfg = compose_config(overrides)  # a misspelt or mistyped override: ConfigError, exit 2 (orchestrator/__main__.py)
    try:
        plan = make_plan(cfg)
    except ConfigError as err:  # PlanError included: the message names the fix
        print(f"plan refused: {err}", file=sys.stderr)
        return 1
    text = json.dumps(plan.as_dict(), indent=2)
    if out is not None:
        from eval.runfiles import write_text_atomic

        write_text_atomic(out, text + "\n")
    print(text if as_json else format_plan(plan))
    return 0
