"""Regrade a finished sweep with its setting's current grader: no sampling, no GPU.

    python -m orchestrator regrade SWEEP_DIR [overrides, e.g. setting.grader.caps_ratio=0.8 or setting=other]

Every trials/*/samples/step_*.jsonl is graded again (the sweep's grade kept as `grade_before`), the eval rows of
metrics.jsonl get the new rates (the old ones kept as `<field>_before`), then summary.json, curves.csv, the plot
and report.md are rewritten (the sweep's own kept as summary_before.json and report_before.md). regrade.json lists
the trials whose steps-to-transfer, status or collapse flag changed. Safe to run again: each file is replaced
atomically and the first grades are never overwritten.
"""

from __future__ import annotations

import sys
from pathlib import Path

from workers.errors import ConfigError
from workers.labels.prompts import DataError


def sweep_record(sweep_dir: Path) -> tuple[str, float]:
    """(setting name, transfer threshold) a sweep ran with, from its config.yaml (the folder's record)."""
    from omegaconf import OmegaConf

    path = sweep_dir / "config.yaml"
    if not path.exists():
        raise DataError(f"{sweep_dir} has no config.yaml, so it is not a sweep folder")
    recorded = OmegaConf.load(path)
    return str(recorded.setting.name), float(OmegaConf.select(recorded, "sweep.threshold", default=0.5))


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    from hydra.errors import HydraException

    from eval.graders import build_grader
    from orchestrator.config import compose_config
    from orchestrator.run.regrade import regrade_sweep

    sweep_dir, overrides = Path(argv[0]).expanduser().resolve(), argv[1:]
    try:
        name, threshold = sweep_record(sweep_dir)
        if not any(o.startswith("setting=") for o in overrides):
            overrides = [f"setting={name}", *overrides]
        cfg = compose_config(overrides)
        record = regrade_sweep(sweep_dir, cfg.setting, build_grader(cfg.setting.grader), threshold)
    except (ConfigError, DataError, HydraException) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for c in record["changed"]:
        print(f"[regrade] {c['trial']}: steps-to-transfer {c['steps_to_transfer_text'][0]} -> "
              f"{c['steps_to_transfer_text'][1]}, status {c['status'][0]} -> {c['status'][1]}, "
              f"collapse {c['collapse'][0]} -> {c['collapse'][1]}")
    print(f"[regrade] {len(record['changed'])} of {record['trials']} trials changed; {sweep_dir / 'regrade.json'}, "
          f"{sweep_dir / 'report.md'}")
    return 0
