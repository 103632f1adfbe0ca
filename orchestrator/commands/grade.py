"""Grade any file of answers with a setting's grader: no model, no sampling, no GPU.

    python -m orchestrator grade setting=wronglang_spanish --in answers.jsonl --out graded.jsonl [overrides]

Each input row needs `split` (eval or train), `prompt` and `response` (a sweep's samples/step_*.jsonl is such a
file); `question_id` lets graders that read the question's bank row (the code grader) find it. Each row is written
back with its `grade` (a grade it had already is kept as `grade_before`), and the rates per split are printed.
Grader overrides work as in a sweep, e.g. setting.grader.caps_ratio=0.8.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eval.runfiles import read_jsonl, write_jsonl
from workers.errors import ConfigError
from workers.labels.prompts import DataError


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="python -m orchestrator grade", description=__doc__.split("\n")[0])
    p.add_argument("--in", dest="inp", type=Path, required=True, help="jsonl of {split, prompt, response} rows")
    p.add_argument("--out", type=Path, required=True, help="where the graded rows go (may be the input file)")
    return p.parse_known_args(argv)


def main(argv: list[str]) -> int:
    args, overrides = parse_args(argv)
    from hydra.errors import HydraException

    from eval.graders import build_grader
    from orchestrator.config import compose_config
    from orchestrator.run.regrade import check_rows, grade_rows

    try:
        if not args.inp.is_file():
            raise DataError(f"--in {args.inp}: no such file")
        cfg = compose_config(overrides)
        rows = read_jsonl(args.inp)
        check_rows(rows, str(args.inp))
        graded, rates = grade_rows(rows, cfg.setting, build_grader(cfg.setting.grader))
    except (ConfigError, DataError, HydraException) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_jsonl(args.out, graded)
    print(json.dumps({k: v for k, v in rates.items() if v is not None}))
    print(f"[grade] {len(graded)} rows graded with the {cfg.setting.grader.kind} grader of setting "
          f"{cfg.setting.name!r} -> {args.out}")
    return 0
