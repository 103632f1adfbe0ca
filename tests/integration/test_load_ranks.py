"""The ZeRO-3 load (workers/train/load.py) on gloo ranks: each rank holds little beyond its own partitions while
loading, and the weights it loads are the checkpoint's, fused exactly as transformers fuses the hub's per-expert
layout.

transformers' own ZeRO-3 route (`from_pretrained` under `HfDeepSpeedConfig`) merges every shard and fuses the
experts in host RAM on every rank: on the ~190 MiB MoE below it holds ~550-650 MiB per rank beyond its
partitions (bench/results/load_memory.json), ~450 GB per rank at Qwen3-235B. The trainer's route stays under
one shard. Ranks are fresh gloo processes (bench/load_memory.py launches them and measures VmHWM). Also
bench/gpu_moe_check.py's CPU smoke. The load's plan alone: tests/unit/test_load.py.
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


def test_dense_model_with_tied_embeddings_loads_under_zero3(tmp_path: Path) -> None:
    import torch
    from tiny_dense import build_tiny_dense

    from bench.load_memory import measure

    path = tmp_path / "dense"
    build_tiny_dense(path)  # tie_word_embeddings: the checkpoint has no lm_head.weight
    measure(path, "build_model", tmp_path / "ranks", world=2, dtype="float32", gather=True, deadline_s=300)
    got = torch.load(tmp_path / "ranks" / "weights.pt")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    want = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    assert_same_weights(got, want)


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
