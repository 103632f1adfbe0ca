"""The ZeRO-3 load (workers/load.py): each rank holds little beyond its own partitions while loading, and the
weights it loads are the checkpoint's, fused exactly as transformers fuses the hub's per-expert layout.

transformers' own ZeRO-3 route (`from_pretrained` under `HfDeepSpeedConfig`) merges every shard and fuses the
experts in host RAM on every rank: on the ~190 MiB MoE below it holds ~550-650 MiB per rank beyond its
partitions (bench/results/load_memory.json), ~450 GB per rank at Qwen3-235B. The trainer's route stays under
one shard. Ranks are fresh gloo processes (bench/load_memory.py launches them and measures VmHWM).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tiny_moe import build_tiny_moe

SHARD = 48 * 2**20


def fused_reference(path: Path) -> dict:
    """The checkpoint's tensors by the model's names, as transformers (no ZeRO) loads them."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def assert_same_weights(got: dict, want: dict) -> None:
    import torch

    assert set(got) == set(want), (set(got) ^ set(want))
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype, (name, got[name].dtype, tensor.dtype)
        assert torch.equal(got[name], tensor), name


def test_plan_fuses_the_per_expert_tensors_in_transformers_order(tmp_path: Path) -> None:
    """Without ZeRO: every parameter read through its blocks equals what transformers' conversion built."""
    import torch
    from transformers import AutoModelForCausalLM

    from workers.load import CheckpointIndex, plan_sources, read_flat

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

    from workers.load import CheckpointIndex, plan_sources

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


@pytest.mark.integration
def test_two_zero3_ranks_load_a_sharded_moe_within_one_shard_of_host_memory(tmp_path: Path) -> None:
    import torch

    from bench.load_memory import checkpoint_bytes, measure

    # ~190 MiB: 8 layers of 32 experts (hidden 512, expert width 256), in 48 MiB shards
    path = build_tiny_moe(tmp_path / "moe", shard_bytes=SHARD, layers=8, hidden=512, expert_width=256, experts=32)
    size = checkpoint_bytes(path)
    assert size > 3 * SHARD and len(list(path.glob("*.safetensors"))) >= 4
    ranks = measure(path, "build_model", tmp_path / "ranks", world=2, gather=True, deadline_s=300)
    print({r["rank"]: {k: round(r[k] / 2**20, 1) for k in ("increase", "partitions", "transient")} for r in ranks})
    for r in ranks:
        # each rank's own partitions: half the model (CPU ZeRO-3 keeps them in host memory)
        assert r["partitions"] == pytest.approx(size / 2, rel=0.05), r
        # beyond them, a rank holds less than one shard while loading (the whole-model route: ~3x the model)
        assert r["transient"] < SHARD, (f"rank {r['rank']} held {r['transient'] / 2**20:.0f} MiB beyond its "
                                            f"partitions while loading a {size / 2**20:.0f} MiB checkpoint", r)
    got = torch.load(tmp_path / "ranks" / "weights.pt")
    assert_same_weights(got, fused_reference(path))
    shutil.rmtree(tmp_path / "ranks")


@pytest.mark.integration
def test_dense_model_with_tied_embeddings_loads_under_zero3(tmp_path: Path) -> None:
    import torch
    from test_train_levers import build_tiny_dense

    from bench.load_memory import measure

    path = tmp_path / "dense"
    build_tiny_dense(path)  # tie_word_embeddings: the checkpoint has no lm_head.weight
    measure(path, "build_model", tmp_path / "ranks", world=2, dtype="float32", gather=True, deadline_s=300)
    got = torch.load(tmp_path / "ranks" / "weights.pt")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    want = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    assert_same_weights(got, want)


@pytest.mark.integration
def test_gpu_moe_check_runs_its_cpu_smoke(tmp_path: Path) -> None:
    """bench/gpu_moe_check.py (the one-GPU check) at toy size on CPU: every stage runs and reports."""
    from bench.gpu_moe_check import main

    out = main(["--cpu-smoke", "--compare-old", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "c.json")])
    assert out["checkpoint"]["files"] > 1
    for mode in ("build_model", "from_pretrained"):
        assert "error" not in out["load"][mode], out["load"][mode]
        assert out["load"][mode]["host_mib"]["peak"] > 0
    train = out["train"]
    assert "error" not in train, train
    assert train["expert_adapter_tensors"] == 2 * 4  # 2 layers x gate_up/down x lora_A/B
    moved, total = map(int, train["lora_B_moved"].split("/"))
    assert moved == total > 0
    assert train["tokens_per_s"] > 0 and train["steady_step_s"] > 0
