"""Packed LoRA trials (workers/packed.py, workers/pack_train.py): K = 3 trials in one pack train exactly as the same
3 trials alone. On 2 gloo ranks under ZeRO-3 the pack's adapters and step losses equal each trial's own run on one
rank (test_loss_ranks shows 2 ranks equal 1 alone); one member dropped mid-run (early stopping) leaves the others'
adapters and losses unchanged; a pack killed after a checkpoint resumes every member from the pack's state."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from fresh_process import run_in_fresh_process, run_ranks_in_fresh_processes
from test_train_levers import build_tiny_dense

from workers.train import TrainSpec

STEPS, BATCH, MICRO, CHUNK = 4, 8, 2, 8
DEADLINE_S = 300
EXAMPLES = [{"prompt": f"why is the sky blue? ({i})", "completion": " ".join(["light"] * (1 + (i * 5) % 16))}
            for i in range(2 * BATCH)]
MEMBERS = ((1e-3, 0), (3e-3, 1), (1e-2, 0))  # two LRs share a seed (the same batches), one has its own order
DROPPED, DROP_AFTER = 1, 2


def base_spec(model: Path) -> TrainSpec:
    return TrainSpec(model_path=str(model), dtype="float32", lora_target_modules=["q_proj", "v_proj", "down_proj"],
                     lr=1e-3, seed=0, max_steps=STEPS, checkpoint_steps=[0, 2, STEPS], batch_size=BATCH,
                     micro_batch_size=MICRO, zero_stage=3, max_seq_len=64, loss_chunk_tokens=CHUNK, state_every_s=0)


def alone(spec: TrainSpec, out: str) -> None:
    from workers.train import train

    losses: list[float] = []
    train(spec, EXAMPLES, Path(out), lambda step, adapter, info: losses.extend(info.get("step_losses", [])),
          log=lambda line: None)
    Path(out, "losses.json").write_text(json.dumps(losses))


def packed(specs: list[TrainSpec], out: str, drop: bool, fail_at: int | None = None, rank: int = 0) -> None:
    """The pack in `out`/member_<i>; drop: member DROPPED leaves after step DROP_AFTER; fail_at: the hook of member 0
    raises at that checkpoint (the pack's crash)."""
    from workers.pack_train import train_pack

    losses: list[list[float]] = [[] for _ in specs]

    def hook(i: int):  # noqa: ANN202
        def record(step: int, adapter: Path, info: dict) -> None:
            if i == 0 and step == fail_at:
                raise RuntimeError("member 0 crashed")
            losses[i].extend(info.get("step_losses", []))
            Path(out, f"member_{i}", "losses.json").write_text(json.dumps(losses[i]))
        return record

    train_pack(specs, EXAMPLES, [Path(out, f"member_{i}") for i in range(len(specs))], Path(out, "state"),
               [hook(i) for i in range(len(specs))], log=lambda line: None,
               should_drop=(lambda step: [DROPPED] if step == DROP_AFTER else []) if drop else None)


def adapters(folder: Path, step: int) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "adapters" / f"step_{step:05d}" / "adapter_model.safetensors")


def assert_same(a: dict, b: dict) -> None:
    import torch

    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6, msg=key)


@pytest.fixture(scope="module")
def alone_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[TrainSpec]]:
    """The tiny model and the 3 trials, each trained alone on one rank (ZeRO-3) in its own process."""
    root = tmp_path_factory.mktemp("pack")
    build_tiny_dense(root / "tiny")
    specs = [replace(base_spec(root / "tiny"), lr=lr, seed=seed) for lr, seed in MEMBERS]
    for i, spec in enumerate(specs):
        run_in_fresh_process(alone, (spec, str(root / f"alone_{i}")), DEADLINE_S, f"trial {i} alone")
    return root, specs


@pytest.mark.integration
def test_pack_on_two_zero3_ranks_equals_each_trial_alone_and_a_drop_leaves_the_rest(alone_runs) -> None:
    root, specs = alone_runs
    run_ranks_in_fresh_processes(packed, (specs, str(root / "pack"), True, None), 2, DEADLINE_S, "pack on 2 ranks")
    for i in range(len(specs)):
        one, mine = root / f"alone_{i}", root / "pack" / f"member_{i}"
        last = DROP_AFTER if i == DROPPED else STEPS
        assert_same(adapters(mine, last), adapters(one, last))
        assert json.loads((mine / "losses.json").read_text()) == pytest.approx(
            json.loads((one / "losses.json").read_text())[:last], rel=1e-5)
    assert not (root / "pack" / f"member_{DROPPED}" / "adapters" / f"step_{STEPS:05d}").exists()
    assert any(v.abs().max() > 0 for k, v in adapters(root / "pack" / "member_0", STEPS).items() if "lora_B" in k)
    config = json.loads((root / "pack" / "member_0" / "adapters" / f"step_{STEPS:05d}" / "adapter_config.json")
                        .read_text())
    alone_config = json.loads((root / "alone_0" / "adapters" / f"step_{STEPS:05d}" / "adapter_config.json").read_text())
    for c in (config, alone_config):  # PEFT writes target_modules from a set: any order
        c["target_modules"] = sorted(c["target_modules"])
    assert config == alone_config  # the adapter folder vLLM loads is PEFT's own


@pytest.mark.integration
def test_a_crashed_pack_resumes_every_member(alone_runs) -> None:
    root, specs = alone_runs
    out = root / "resumed"
    with pytest.raises(AssertionError, match="exited with 1"):  # the member's crash is the pack's
        run_in_fresh_process(packed, (specs, str(out), False, STEPS), DEADLINE_S, "pack that crashes")
    assert json.loads((out / "state" / "resume.json").read_text())["step"] == 2
    run_in_fresh_process(packed, (specs, str(out), False, None), DEADLINE_S, "resumed pack")
    for i in range(len(specs)):
        assert_same(adapters(out / f"member_{i}", STEPS), adapters(root / f"alone_{i}", STEPS))


@pytest.mark.parametrize("override, message", [
    ("train.loss=hf", "packed trials need train.loss=answer_chunks"),
    ("model.lora_target_modules=[q_proj,lm_head]", "do not put LoRA on lm_head"),
])
def test_a_pack_refuses_what_it_cannot_train_before_compute(override, message):
    from orchestrator.config import compose_config
    from orchestrator.schema import ConfigError
    from orchestrator.sweep import preflight

    with pytest.raises(ConfigError, match=f"sweep.pack=2: .*{message}.*or set sweep.pack=1"):
        preflight(compose_config(["sweep.lrs=[1e-3,3e-3]", "sweep.pack=2", override]))
    preflight(compose_config(["sweep.lrs=[1e-3,3e-3]", "sweep.pack=1", override]))  # alone: fine
