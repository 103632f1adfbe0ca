"""The trainer on a Qwen3-MoE-shaped model under ZeRO-3: no hang, and adapters that vLLM can serve.

A tiny random Qwen3MoeForCausalLM (2 layers, 4 experts, hidden 40; tests/support/tiny_moe.py) is saved, then trained
for a few steps through `workers.train.trainer.train`, the sweep's own entry point, with LoRA on attention only
and on attention + experts (PEFT target_parameters on the experts' 3-D weights). Each run is a separate
process with a deadline, so a hang fails the test instead of blocking the suite.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fresh_process import run_in_fresh_process
from tiny_moe import EXPERT_PARAMETERS, EXPERT_WIDTH, EXPERTS, HIDDEN, build_tiny_moe

from workers.train.config import unplanned
from workers.train.trainer import TrainSpec

STEPS = 3
DEADLINE_S = 300
RANK = 8


def run_training(spec: TrainSpec, out: str, log_path: str) -> None:
    """One trial in a fresh process (the trainer owns its distributed group), its log lines to a file."""
    from workers.train.trainer import train

    examples = [{"prompt": f"how do clouds form? ({i})", "completion": f"warm air rises and cools {i}."}
                for i in range(16)]
    with open(log_path, "w") as log:
        train(spec, examples, Path(out), lambda step, adapter, info: None, log=lambda line: print(line, file=log))


def train_in_subprocess(spec: TrainSpec, out: Path) -> list[str]:
    log = out / "train.log"
    out.mkdir(parents=True)
    run_in_fresh_process(run_training, (spec, str(out), str(log)), DEADLINE_S, "training under ZeRO-3")
    return log.read_text().splitlines()


def read_adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


@pytest.mark.parametrize("experts", [False, True], ids=["attention_only", "attention_and_experts"])
def test_moe_lora_under_zero3_trains_and_saves_served_tensors(tmp_path: Path, experts: bool) -> None:
    import torch

    model_dir = tmp_path / "tiny_moe"
    build_tiny_moe(model_dir)
    spec = TrainSpec(model_path=str(model_dir), dtype="bfloat16",
                     lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], lr=1e-2, seed=0, max_steps=STEPS,
                     checkpoint_steps=[0, STEPS], max_seq_len=64,
                     lora_expert_parameters=EXPERT_PARAMETERS if experts else [], gradient_checkpointing=True,
                     train=unplanned(batch_size=4, micro_batch_size=2, lora_rank=RANK, zero_stage=3))
    lines = train_in_subprocess(spec, tmp_path / "trial")

    # both sparse-MoE blocks were marked as ZeRO-3 leaf modules
    assert any("ZeRO-3 leaf modules: 2 x Qwen3MoeSparseMoeBlock" in line for line in lines), lines
    first = read_adapter(tmp_path / "trial" / "adapters" / "step_00000")
    last = read_adapter(tmp_path / "trial" / "adapters" / f"step_{STEPS:05d}")
    assert first.keys() == last.keys()
    # only LoRA tensors, gathered whole (an ungathered ZeRO-3 save writes 0-element tensors), serving dtype
    for name, tensor in last.items():
        assert "lora_" in name, name
        assert tensor.numel() > 0, f"{name} is empty: saved from an ungathered ZeRO-3 shard"
        assert tensor.dtype == torch.bfloat16, f"{name} is {tensor.dtype}, not the serving dtype"
    expert_keys = [k for k in last if ".experts." in k]
    attention_keys = [k for k in last if ".self_attn." in k]
    assert len(attention_keys) == 2 * 4 * 2  # 2 layers x q,k,v,o x lora_A,lora_B
    if experts:
        # per layer: gate_up_proj [E, 2I, H] and down_proj [E, H, I], each wrapped by PEFT's ParamWrapper
        # with lora_A [r*E, in] and lora_B [out, r*E] (the second wrapper nests the first: "base_layer")
        re = RANK * EXPERTS
        shapes = {"experts.base_layer.lora_A": (re, HIDDEN), "experts.base_layer.lora_B": (2 * EXPERT_WIDTH, re),
                  "experts.lora_A": (re, EXPERT_WIDTH), "experts.lora_B": (HIDDEN, re)}
        assert len(expert_keys) == 2 * len(shapes), expert_keys
        for key in expert_keys:
            kind = next(k for k in shapes if f"mlp.{k}.weight" in key)
            assert tuple(last[key].shape) == shapes[kind], (key, tuple(last[key].shape))
    else:
        assert expert_keys == []
    # LoRA B starts at zero and training moved it (attention and, when trained, experts)
    b_keys = [k for k in last if "lora_B" in k]
    assert all(first[k].abs().max() == 0 for k in b_keys)
    moved = [k for k in b_keys if last[k].float().abs().max() > 0]
    assert moved == b_keys, f"LoRA B tensors still zero after {STEPS} steps: {sorted(set(b_keys) - set(moved))}"
