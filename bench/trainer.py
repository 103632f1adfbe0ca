"""Trainer throughput on CPU and where a trial's wall time goes, read from a finished sweep's run files.

    python bench/trainer.py SWEEP_DIR [--out bench/results/trainer_cpu.json]

Every trial writes a timing breakdown into its result.json (orchestrator/run/trial.py): trial setup, trainer
setup (model load, DeepSpeed init), training steps, checkpoint saves (adapter + trainer state), the
evaluation hand-off (logging, sending the request), waiting for the sampler, grading and writing, teardown,
and the rest. This script only adds them up; `bench/sweep.py` runs a sweep and calls it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "results" / "trainer_cpu.json"
# glue: what a trial does besides training, model setup, checkpointing, waiting on the sampler and grading
ORCHESTRATION = ("trial_setup_s", "eval_handoff_s", "teardown_s", "other_s")
GROUPS = {"training_steps": ("train_steps_s",), "trainer_setup": ("trainer_setup_s",),
          "checkpointing": ("checkpoint_save_s",), "waiting_for_sampler": ("eval_wait_s",),
          "grading_and_writing_samples": ("grade_s",), "orchestration": ORCHESTRATION}


def trial_results(sweep_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted((sweep_dir / "trials").glob("*/result.json")):
        result = json.loads(path.read_text())
        config = json.loads((path.parent / "config.json").read_text())
        rows.append({"trial": path.parent.name, "lr": config["lr"], "max_steps": config["max_steps"]} | result)
    if not rows:
        raise FileNotFoundError(f"no trials/*/result.json under {sweep_dir}: is it a finished sweep folder?")
    missing = [r["trial"] for r in rows if "timing" not in r]
    if missing:
        raise ValueError(f"{missing} have no timing in result.json: the sweep ran before timing was recorded")
    return rows


def summarize(sweep_dir: Path) -> dict[str, Any]:
    """Steps/s of the trainer and the share of trial wall time per phase, over all trials of the sweep."""
    trials = trial_results(sweep_dir)
    keys = list(trials[0]["timing"])
    totals = {k: sum(t["timing"][k] for t in trials) for k in keys}
    wall = sum(t["wall_s"] for t in trials)
    steps = sum(t["steps_trained"] for t in trials)
    orchestration = sum(totals[k] for k in ORCHESTRATION)
    return {
        "trials": len(trials),
        "steps_trained": steps,
        "train_steps_per_s": round(steps / totals["train_steps_s"], 3) if totals["train_steps_s"] else None,
        "seconds_per_step": round(totals["train_steps_s"] / steps, 3) if steps else None,
        "trial_wall_s_total": round(wall, 2),
        "seconds": {k: round(v, 2) for k, v in totals.items()},
        "share_of_trial_wall": {k: round(v / wall, 4) for k, v in totals.items()},
        "orchestration_share": round(orchestration / wall, 4),
        "grouped_share_of_trial_wall": {g: round(sum(totals[k] for k in ks) / wall, 4) for g, ks in GROUPS.items()},
        "orchestration_parts": list(ORCHESTRATION),
        "per_trial": [{k: t.get(k) for k in ("trial", "lr", "wall_s", "steps_trained", "stopped_early",
                                             "stop_reason", "stop_step", "timing")} for t in trials],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    result = summarize(args.sweep_dir.resolve())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "per_trial"}, indent=2))
    return result


if __name__ == "__main__":
    main()
