"""What packed trials (workers/train/packed.py) cannot train: pure, so the planner reads it without importing torch."""

from __future__ import annotations

from typing import Any


def pack_refusals(train: Any, k: int) -> list[str]:
    """What a pack of k > 1 cannot train with this train block (each names the fix); empty when it can."""
    if k <= 1:
        return []
    problems = []
    fix = "or set sweep.pack=1"
    if train.loss != "answer_chunks":
        problems.append(f"packed trials need train.loss=answer_chunks (got {train.loss}) {fix}")
    if train.lora_dropout:
        problems.append(f"packed trials need train.lora_dropout=0 (got {train.lora_dropout}) {fix}")
    if train.compile:
        problems.append(f"packed trials do not torch.compile layers: set train.compile=false {fix}")
    return problems
