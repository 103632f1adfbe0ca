"""Packed LoRA on MoE experts' 3-D weights (workers/train/packed_experts.py) trained: on 2 gloo ranks under ZeRO-3,
K = 3 packed trials (attention + expert LoRA) on a tiny Qwen3-MoE (tests/support/tiny_moe.py) train to the adapters
and step losses of each trial run alone on one rank (a member dropped after step 1 changes nothing for the others),
and save the keys and adapter_config.json PEFT saves (what vLLM loads: tests/integration/test_vllm_moe_lora.py); the
MoE default as a whole (bf16, ZeRO-3 leaf modules, gradient checkpointing) on two ranks. One pack's slots against
PEFT in one process: tests/unit/test_pack_experts.py."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from expert_pack import ATTENTION, RANK
from fresh_process import run_in_fresh_process, run_ranks_in_fresh_processes
from pack_adapters import adapters
from tiny_moe import EXPERT_PARAMETERS, build_tiny_moe

from workers.train.config import unplanned
from workers.train.trainer import TrainSpec

STEPS, BATCH, MICRO, CHUNK = 3, 8, 2, 8
DEADLINE_S = 300
EXAMPLES = [{"prompt": f"how do clouds form? ({i})", "completion": " ".join(["warm air rises"] * (1 + (i * 3) % 5))}
            for i in range(2 * BATCH)]
MEMBERS = ((1e-3, 0), (3e-3, 1), (1e-2, 0))  # two LRs share a seed (the same batches and A), one has its own
DROPPED = 1  # leaves the pack after step 1 (early stopping): the others train on as slots 0 and 2


@pytest.fixture(scope="module")
def tiny_moe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_moe(tmp_path_factory.mktemp("pack_experts") / "tiny_moe")


def base_spec(model: Path) -> TrainSpec:
    # the MoE models' default LoRA (Tinker's): attention, lm_head and the experts, all in one pack
    return TrainSpec(model_path=str(model), dtype="float32", lora_target_modules=[*ATTENTION, "lm_head"],
                     lora_expert_parameters=EXPERT_PARAMETERS, lr=1e-3, seed=0, max_steps=STEPS,
                     checkpoint_steps=[0, STEPS], max_seq_len=64,
                     train=unplanned(lora_rank=RANK, batch_size=BATCH, micro_batch_size=MICRO, zero_stage=3,
                                     loss_chunk_tokens=CHUNK, state_every_s=0))


def alone(spec: TrainSpec, out: str) -> None:
    from workers.train.trainer import train

    losses: list[float] = []
    train(spec, EXAMPLES, Path(out), lambda step, adapter, info: losses.extend(info.get("step_losses", [])),
          log=lambda line: None)
    Path(out, "losses.json").write_text(json.dumps(losses))


def packed(specs: list[TrainSpec], out: str, drop: int | None = DROPPED, rank: int = 0) -> None:
    from workers.train.pack_train import train_pack

    losses: list[list[float]] = [[] for _ in specs]

    def hook(i: int):  # noqa: ANN202
        def record(step: int, adapter: Path, info: dict) -> None:
            losses[i].extend(info.get("step_losses", []))
            Path(out, f"member_{i}", "losses.json").write_text(json.dumps(losses[i]))
        return record

    train_pack(specs, EXAMPLES, [Path(out, f"member_{i}") for i in range(len(specs))], Path(out, "state"),
               [hook(i) for i in range(len(specs))], log=lambda line: None,
               should_drop=lambda step: [drop] if step == 1 and drop is not None else [])


def assert_same_adapter(got: dict, want: dict) -> None:
    import torch

    assert got.keys() == want.keys()
    assert any(".mlp.experts.base_layer.lora_A" in k for k in got)  # expert LoRA, under PEFT's names
    assert "base_model.model.lm_head.lora_B.weight" in got
    for key in want:
        assert got[key].shape == want[key].shape, key
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-6, msg=key)


def test_packed_expert_lora_on_two_zero3_ranks_equals_each_trial_alone(tiny_moe: Path, tmp_path: Path) -> None:
    """Each member of the pack ends where it ends alone; one dropped after step 1 leaves the others (then slots 0 and
    2 of the pack) as they are alone."""
    specs = [replace(base_spec(tiny_moe), lr=lr, seed=seed) for lr, seed in MEMBERS]
    for i, spec in enumerate(specs):
        run_in_fresh_process(alone, (spec, str(tmp_path / f"alone_{i}")), DEADLINE_S, f"trial {i} alone")
    run_ranks_in_fresh_processes(packed, (specs, str(tmp_path / "pack"), DROPPED), 2, DEADLINE_S, "pack on 2 ranks")
    dropped = tmp_path / "pack" / f"member_{DROPPED}"
    assert_same_adapter(adapters(dropped, 0), adapters(tmp_path / f"alone_{DROPPED}", 0))
    assert not (dropped / "adapters" / f"step_{STEPS:05d}").exists()
    for i in (i for i in range(len(specs)) if i != DROPPED):
        one, mine = tmp_path / f"alone_{i}", tmp_path / "pack" / f"member_{i}"
        for step in (0, STEPS):
            assert_same_adapter(adapters(mine, step), adapters(one, step))
        assert json.loads((mine / "losses.json").read_text()) == pytest.approx(
            json.loads((one / "losses.json").read_text()), rel=1e-5)
        moved = [k for k, v in adapters(mine, STEPS).items() if ".experts" in k and "lora_B" in k and v.abs().max() > 0]
        assert len(moved) == 4, moved  # every expert B trained
        assert adapters(mine, STEPS)["base_model.model.lm_head.lora_B.weight"].abs().max() > 0  # and the head's
    configs = []
    for folder in (tmp_path / "pack" / "member_0", tmp_path / "alone_0"):
        c = json.loads((folder / "adapters" / f"step_{STEPS:05d}" / "adapter_config.json").read_text())
        c["target_modules"], c["target_parameters"] = sorted(c["target_modules"]), sorted(c["target_parameters"])
        configs.append(c)
    assert configs[0] == configs[1]  # the adapter folder vLLM loads is PEFT's own


def test_the_moe_default_as_a_whole_on_two_ranks_equals_each_trial_alone(tiny_moe: Path, tmp_path: Path) -> None:
    """Issue 26 finding 6, the production MoE path at once: two ranks, bf16, ZeRO-3 with each sparse-MoE block a leaf
    module (fetched whole), non-reentrant gradient checkpointing, and a pack of two trials with packed expert LoRA
    (attention, lm_head and experts), against each trial alone on one rank with the same levers. bf16 sums in another
    order on two ranks, so the match is to bf16's precision, not bitwise."""
    import torch

    from bench.gpu_check import compare_adapters

    spec = replace(base_spec(tiny_moe), dtype="bfloat16", gradient_checkpointing=True)
    specs = [replace(spec, lr=lr, seed=seed) for lr, seed in MEMBERS[:2]]
    for i, one in enumerate(specs):
        run_in_fresh_process(alone, (one, str(tmp_path / f"alone_{i}")), DEADLINE_S, f"bf16 trial {i} alone")
    run_ranks_in_fresh_processes(packed, (specs, str(tmp_path / "pack"), None), 2, DEADLINE_S, "bf16 pack on 2 ranks")
    for i in range(len(specs)):
        one, mine = tmp_path / f"alone_{i}", tmp_path / "pack" / f"member_{i}"
        # adapters: relative Frobenius difference per tensor (bench/gpu_check.py ADAPTER_TOLERANCE says why not
        # elementwise); step losses: to bf16's precision (two runs on CPU matched to 1e-4)
        adapter = Path("adapters") / f"step_{STEPS:05d}"
        check = compare_adapters(mine / adapter, one / adapter)
        assert check["ok"] and check["expert_tensors"] > 0, check
        assert adapters(mine, STEPS)["base_model.model.lm_head.lora_B.weight"].dtype == torch.bfloat16
        moved = [k for k, v in adapters(mine, STEPS).items() if "lora_B" in k and v.float().abs().max() > 0]
        assert len(moved) == sum("lora_B" in k for k in adapters(mine, STEPS)), "every B trained"
        assert json.loads((mine / "losses.json").read_text()) == pytest.approx(
            json.loads((one / "losses.json").read_text()), rel=1e-3)
