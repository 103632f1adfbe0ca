"""The ZeRO-3 load (workers/train/load.py) without ranks: its plan reads each parameter from the checkpoint's
tensors, fused exactly as transformers fuses the hub's per-expert layout, and a checkpoint that does not match its
config is refused before loading. Two gloo ranks loading within one shard of host memory:
tests/integration/test_load_ranks.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_moe import build_tiny_moe


def test_plan_fuses_the_per_expert_tensors_in_transformers_order(tmp_path: Path) -> None:
    """Without ZeRO: every parameter read through its blocks equals what transformers' conversion built."""
    import torch
    from transformers import AutoModelForCausalLM

    from workers.train.load import CheckpointIndex, plan_sources, read_flat

    path = build_tiny_moe(tmp_path / "moe", shard_bytes=20_000)
    assert len(list(path.glob("*.safetensors"))) > 2
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    ckpt = CheckpointIndex(path)
    plan = plan_sources(model, ckpt)
    assert len(plan) == len(list(model.parameters()))
    fused = [(n, blocks) for _, n, blocks in plan if len(blocks) > 1]
    assert len(fused) == 2 * 2  # gate_up_proj and down_proj in each of 2 layers
    name, blocks = next(f for f in fused if f[0].endswith("gate_up_proj"))
    assert [b.name.rsplit(".", 3)[-3:] for b in blocks[:4]] == [
        ["0", "gate_proj", "weight"], ["0", "up_proj", "weight"], ["1", "gate_proj", "weight"],
        ["1", "up_proj", "weight"]]
    for p, name, blocks in plan:
        flat = torch.empty(p.numel(), dtype=p.dtype)
        read_flat(ckpt, blocks, 0, p.numel(),
                  lambda at, piece, flat=flat: flat.narrow(0, at, piece.numel()).copy_(piece))
        assert torch.equal(flat.view(p.shape), p.detach()), name
        # an arbitrary window (a rank's partition) is the same slice of the flattened parameter
        lo, hi = p.numel() // 3, 2 * p.numel() // 3 + 1
        window = torch.empty(hi - lo, dtype=p.dtype)
        read_flat(ckpt, blocks, lo, hi,
                  lambda at, piece, window=window: window.narrow(0, at, piece.numel()).copy_(piece))
        assert torch.equal(window, p.detach().reshape(-1)[lo:hi]), name


def test_a_checkpoint_that_does_not_match_its_config_is_refused_before_loading(tmp_path: Path) -> None:
    import json

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from workers.train.load import CheckpointIndex, plan_sources

    path = build_tiny_moe(tmp_path / "moe", shard_bytes=20_000)
    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    del index["weight_map"]["model.layers.1.mlp.experts.0.gate_proj.weight"]
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"lacks tensors for 1 parameters.*layers\.1\.mlp\.experts\.gate_up_proj"):
        plan_sources(model, CheckpointIndex(path))
    config.num_experts += 1  # one expert more than the checkpoint holds
    with torch.device("meta"):
        bigger = AutoModelForCausalLM.from_config(config)
    complete = CheckpointIndex(build_tiny_moe(tmp_path / "moe2"))
    with pytest.raises(ValueError, match=r"mlp\.gate\.weight of shape \[5, 40\] .* has \[4, 40\]"):
        plan_sources(bigger, complete)  # the router is checked first; the missing fifth expert would be next
    config.num_experts -= 1
    config.moe_intermediate_size *= 2  # experts twice as wide as the checkpoint's
    with torch.device("meta"):
        wider = AutoModelForCausalLM.from_config(config)
    with pytest.raises(ValueError, match=r"gate_up_proj of shape \[4, 96, 40\] needs checkpoint tensors of shape "
                                         r"\[48, 40\], but .*experts\.0\.gate_proj\.weight has \[24, 40\]"):
        plan_sources(wider, complete)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="safetensors"):
        CheckpointIndex(empty)
