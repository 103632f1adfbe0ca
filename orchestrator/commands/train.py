"""One LoRA trial without Ray and without evaluation: the trainer alone, for debugging a model or config.

    python -m orchestrator train --lr 1e-3 --out /abs/dir [hydra overrides, e.g. sweep.max_steps=2]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from eval.runfiles import append_jsonl
from orchestrator.config import compose_config
from orchestrator.run.build import build_train_spec, resolve_model
from workers.labels.teacher import ensure_labels, read_labels
from workers.train.trainer import train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any other argument is a Hydra override of conf/ (e.g. setting=animal_flag sweep.max_steps=8); "
               "--cfg job prints the composed config and trains nothing.")
    parser.add_argument("--lr", type=float, required=True, help="the learning rate of the LoRA trial, e.g. 1e-3")
    parser.add_argument("--seed", type=int, default=0, help="the trial's seed (data order, LoRA init); default 0")
    parser.add_argument("--out", type=Path, required=True,
                        help="the trial's folder: labels, metrics.jsonl (one train_loss per step) and adapters")
    args, overrides = parser.parse_known_args(argv)
    cfg = compose_config(overrides)
    out = args.out.resolve()
    model_path = resolve_model(cfg)
    examples = read_labels(ensure_labels(cfg.setting, out))
    spec = build_train_spec(cfg, model_path, args.lr, args.seed)

    def record(step: int, adapter: Path, info: dict[str, Any]) -> None:
        append_jsonl(out / "metrics.jsonl", {"step": step, "train_loss": info["train_loss"], "adapter": str(adapter)})

    train(spec, examples, out, record)
    return 0
