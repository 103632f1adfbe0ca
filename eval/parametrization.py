"""What an LR means: the LoRA parametrization a sweep trained with, from its trials' config.json.

Under Adam the LoRA update scales with alpha / rank, and which weights carry LoRA changes what an LR does, so an LR
compares across tools (the note's platform, Tinker, uses alpha 32 at any rank, on attention, MLP/experts and the
unembedding) only when this line matches. Pure: reads the dicts the report already loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def describe(train: dict[str, Any] | None) -> str:
    """One trial's parametrization in words; `train` is the "train" block of trials/<trial>/config.json."""
    if not train or "lora_rank" not in train:
        return "not recorded in trials/*/config.json (a sweep from before lrsweep recorded it)"
    rank, alpha = train["lora_rank"], train.get("lora_alpha")
    targets = ", ".join(train.get("lora_target_modules", [])) or "-"
    experts = train.get("lora_expert_parameters") or []
    if experts:
        targets += f" + experts ({', '.join(experts)})"
    scale = f"{alpha / rank:g}" if alpha is not None else "?"
    optimizer = str(train.get("optimizer", "?")).replace("adam", "Adam")
    betas = ", ".join(f"{b:g}" for b in train.get("betas", []))
    return (f"LoRA rank {rank}, alpha {alpha} (scale alpha/rank = {scale}), targets {targets}; {optimizer} "
            f"(betas {betas}; weight decay {train.get('weight_decay', 0):g}), {train.get('lr_schedule', '?')} LR, "
            f"batch {train.get('batch_size', '?')}")


def parametrization_lines(sweeps: Sequence[tuple[str, Sequence[dict[str, Any]]]]) -> list[str]:
    """One markdown line per (sweep, distinct parametrization): `sweeps` holds (setting label, trial configs)."""
    lines = []
    for label, configs in sweeps:
        seen: dict[str, list[str]] = {}
        for c in configs:
            seen.setdefault(describe(c.get("train")), []).append(str(c.get("name", "?")))
        for text, names in seen.items():
            which = "" if len(seen) == 1 else f" (trials {', '.join(sorted(names))})"
            lines.append(f"- **LR parametrization** ({label}{which}): {text}.")
    return lines
