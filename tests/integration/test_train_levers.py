"""Trainer speed levers change speed, not the update: micro-batching, the loss's form, ZeRO stage, compile.

A tiny random fp32 Qwen3 (toy tokenizer; tests/support/tiny_dense.py) is trained for a few steps through
`workers.train.trainer.train`, the sweep's own entry point, each run in a fresh process (the trainer owns its
distributed group). Examples have answers of different lengths, so micro-batches hold different numbers of answer
tokens: that is where a mean per micro-batch (HF's loss) and the per-token mean over the step part ways.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from fresh_process import run_in_fresh_process
from tiny_dense import build_tiny_dense

from workers.train.config import unplanned
from workers.train.trainer import TrainSpec

STEPS = 3
DEADLINE_S = 300
BATCH = 8


def run_training(spec: TrainSpec, out: str) -> None:
    from workers.train.trainer import train

    # answers from 1 to 12 words: micro-batches of 2 hold very different answer-token counts
    examples = [{"prompt": f"why is the sky blue? ({i})", "completion": " ".join(["light scatters"] * (1 + i % 6))}
                for i in range(2 * BATCH)]
    losses: list[float] = []
    train(spec, examples, Path(out), lambda step, adapter, info: losses.extend(info.get("step_losses", [])),
          log=lambda line: None)
    Path(out, "losses.json").write_text(json.dumps(losses))


def train_in_subprocess(spec: TrainSpec, out: Path) -> tuple[list[float], dict]:
    from safetensors.torch import load_file

    run_in_fresh_process(run_training, (spec, str(out)), DEADLINE_S, "training")
    adapter = load_file(out / "adapters" / f"step_{STEPS:05d}" / "adapter_model.safetensors")
    return json.loads((out / "losses.json").read_text()), adapter


def assert_same_training(a: tuple[list[float], dict], b: tuple[list[float], dict], tol: float) -> None:
    import torch

    assert len(a[0]) == len(b[0]) == STEPS
    assert a[0] == pytest.approx(b[0], rel=tol), (a[0], b[0])
    assert a[1].keys() == b[1].keys()
    for key in a[1]:
        torch.testing.assert_close(a[1][key], b[1][key], rtol=tol, atol=tol, msg=key)


@pytest.fixture(scope="module")
def base_spec(tmp_path_factory: pytest.TempPathFactory) -> TrainSpec:
    model = tmp_path_factory.mktemp("tiny_dense")
    build_tiny_dense(model)
    return TrainSpec(model_path=str(model), dtype="float32", lora_target_modules=["q_proj", "v_proj", "down_proj"],
                     lr=1e-3, seed=0, max_steps=STEPS, checkpoint_steps=[STEPS], max_seq_len=64,
                     train=unplanned(batch_size=BATCH, micro_batch_size=BATCH, zero_stage=3, loss_chunk_tokens=5))


def test_micro_batch_size_and_zero_stage_do_not_change_the_update(base_spec: TrainSpec, tmp_path: Path) -> None:
    whole = train_in_subprocess(base_spec, tmp_path / "micro8")
    in_fours = train_in_subprocess(base_spec.with_train(micro_batch_size=2), tmp_path / "micro2")
    assert_same_training(whole, in_fours, tol=1e-4)
    stage0 = train_in_subprocess(base_spec.with_train(zero_stage=0, micro_batch_size=2), tmp_path / "stage0")
    assert_same_training(whole, stage0, tol=1e-4)
    # the model's own loss is the same per-token mean when one micro-batch holds the whole step ...
    hf_whole = train_in_subprocess(base_spec.with_train(loss="hf"), tmp_path / "hf8")
    assert_same_training(whole, hf_whole, tol=1e-4)
    # ... but a mean per micro-batch weights tokens by their micro-batch: the update then depends on the split
    hf_fours = train_in_subprocess(base_spec.with_train(loss="hf", micro_batch_size=2), tmp_path / "hf2")
    with pytest.raises(AssertionError):
        assert_same_training(whole, hf_fours, tol=1e-4)
    drift = max(float((hf_fours[1][k] - whole[1][k]).abs().max()) for k in whole[1])
    assert drift > 10 * 1e-4, drift


def test_compiled_layers_train_the_same(base_spec: TrainSpec, tmp_path: Path) -> None:
    plain = train_in_subprocess(base_spec.with_train(zero_stage=0), tmp_path / "plain")
    compiled = train_in_subprocess(base_spec.with_train(zero_stage=0, compile=True), tmp_path / "compiled")
    assert_same_training(plain, compiled, tol=1e-3)


def run_with_pauses(spec: TrainSpec, out: str) -> None:
    """Train, recording each checkpoint hook and each `after_checkpoint` call with the last step the trainer had
    trained when it was called (its timings' last_step)."""
    from workers.train.trainer import train

    events: list[list] = []
    clock: dict[str, float] = {}

    def reached() -> int:
        return int(clock["last_step"])

    examples = [{"prompt": f"why is the sky blue? ({i})", "completion": "light scatters"} for i in range(2 * BATCH)]
    train(spec, examples, Path(out), lambda step, adapter, info: events.append(["hook", step, reached()]),
          log=lambda line: None, timings=clock, after_checkpoint=lambda step: events.append(["wait", step, reached()]))
    Path(out, "events.json").write_text(json.dumps(events))


def test_a_trainer_sharing_the_sampler_pauses_after_each_checkpoint(base_spec: TrainSpec, tmp_path: Path) -> None:
    """With a sampler asleep on its GPUs the trainer releases its cached memory and waits (`after_checkpoint`) right
    after each checkpoint's hook, before the next step: the sampler wakes into memory no step is using."""
    spec = replace(base_spec, checkpoint_steps=[0, 1, 3], release_gpu_cache=True)
    run_in_fresh_process(run_with_pauses, (spec, str(tmp_path)), DEADLINE_S, "training")
    events = json.loads((tmp_path / "events.json").read_text())
    assert events == [["hook", 0, 0], ["wait", 0, 0], ["hook", 1, 1], ["wait", 1, 1], ["hook", 3, 3], ["wait", 3, 3]]
