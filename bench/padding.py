"""Padding in the trainer's micro-batches, with and without sorting each step's batch by length.

    python bench/padding.py [LABELS_JSONL] [--steps 64] [--out bench/results/padding_toy.json] [hydra overrides]

The trainer sorts each rank's share of a step by length before cutting micro-batches (workers/train/trainer.py:
train_step; the answer-token loss does not depend on order). This counts the pad tokens that saves on a real
label set (default: the setting's labels, made as a sweep makes them), for the sweep's own batches
(workers.train.batching.batch_indices), tokenised with the model's tokenizer and chat template. No training runs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "results" / "padding_toy.json"


def padding_share(lengths: list[list[int]], micro: int, sort: bool) -> float:
    """Pad tokens / all tokens over steps whose example lengths are `lengths`, cut into micro-batches."""
    real = padded = 0
    for step in lengths:
        step = sorted(step) if sort else step
        for k in range(0, len(step), micro):
            part = step[k:k + micro]
            real += sum(part)
            padded += max(part) * len(part)
    return 1 - real / padded


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from orchestrator.config import compose_config
    from orchestrator.run.build import resolve_model
    from workers.labels.teacher import ensure_labels, read_labels
    from workers.train.batching import batch_indices
    from workers.train.trainer import encode_labels

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("labels", nargs="?", type=Path)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--out", type=Path, default=OUT)
    args, overrides = parser.parse_known_args(argv)
    cfg = compose_config(overrides)
    labels = args.labels or ensure_labels(cfg.setting, Path(tempfile.mkdtemp(prefix="lrsweep-padding-")))
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(cfg))
    m = cfg.model
    encoded = encode_labels(tokenizer, read_labels(labels), dict(m.chat_template_kwargs), m.max_model_len)
    lengths_all = [len(e["input_ids"]) for e in encoded]
    batches = batch_indices(len(lengths_all), cfg.train.batch_size, cfg.sweep.seeds[0])
    steps = [[lengths_all[i] for i in next(batches)] for _ in range(args.steps)]
    micro_sizes = [mb for mb in (2, 4, 8, 16) if cfg.train.batch_size % mb == 0 and mb < cfg.train.batch_size]
    result = {"setting": cfg.setting.name, "model": cfg.model.name, "labels": str(labels), "steps": args.steps,
              "batch_size": cfg.train.batch_size, "date": time.strftime("%Y-%m-%d"),
              "padding_share": {str(mb): {"unsorted": round(padding_share(steps, mb, False), 4),
                                          "sorted": round(padding_share(steps, mb, True), 4)} for mb in micro_sizes}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["padding_share"]))
    return result


if __name__ == "__main__":
    main()
