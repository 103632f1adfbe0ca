"""Real LoRA adapters of the trainer's shape with random nonzero weights, for sampling benchmarks and tests.

A freshly initialised LoRA has B = 0 (it does nothing), so both A and B are drawn from a normal: each adapter
then changes the model's outputs, as a checkpoint partway through a sweep does.
"""

from __future__ import annotations

from pathlib import Path


def random_adapters(model_path: str, target_modules: list[str], rank: int, alpha: int, n: int, out_dir: Path,
                    seed: int = 0, std: float = 0.05, prefix: str = "adapter") -> list[Path]:
    """Save n PEFT adapters under out_dir (prefix_00, prefix_01, ...) and return their folders."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(target_modules),
                                            task_type="CAUSAL_LM"))
    lora = [p for name, p in model.named_parameters() if "lora_" in name]
    paths = []
    for i in range(n):
        gen = torch.Generator().manual_seed(seed * 10_000 + i)
        with torch.no_grad():
            for p in lora:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
        path = Path(out_dir) / f"{prefix}_{i:02d}"
        model.save_pretrained(str(path))
        paths.append(path)
    return paths
