"""The adapter a trial or a pack member saved at a step, as tensors by PEFT's names."""

from __future__ import annotations

from pathlib import Path


def adapters(folder: Path, step: int) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "adapters" / f"step_{step:05d}" / "adapter_model.safetensors")
