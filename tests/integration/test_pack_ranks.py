"""Packed LoRA trials (workers/train/packed.py, workers/train/pack_train.py): K = 3 trials in one pack train exactly as
the same 3 trials alone. On 2 gloo ranks under ZeRO-3 the pack's adapters and step losses equal each trial's own run
on one rank (test_loss_ranks shows 2 ranks equal 1 alone); one member dropped mid-run (early stopping) leaves the
others' adapters and losses unchanged; a pack killed after a checkpoint resumes every member from the pack's state;
with LoRA on the (tied) lm_head, whose answer tokens differ in number between members, the same holds. The packed
layer and the pack's config checks alone: tests/unit/test_pack.py."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from fresh_process import run_in_fresh_process, run_ranks_in_fresh_processes
from pack_adapters import adapters
from tiny_dense import build_tiny_dense

from workers.train.config import unplanned
from workers.train.trainer import TrainSpec

STEPS, BATCH, MICRO, CHUNK = 4, 8, 2, 8
DEADLINE_S = 300
EXAMPLES = [{"prompt": f"why is the sky blue? ({i})", "completion": " ".join(["light"] * (1 + (i * 5) % 16))}
            for i in range(2 * BATCH)]
MEMBERS = ((1e-3, 0), (3e-3, 1), (1e-2, 0))  # two LRs share a seed (the same batches), one has its own order
DROPPED, DROP_AFTER = 1, 2


def base_spec(model: Path) -> TrainSpec:
    return TrainSpec(model_path=str(model), dtype="float32", lora_target_modules=["q_proj", "v_proj", "down_proj"],
                     lr=1e-3, seed=0, max_steps=STEPS, checkpoint_steps=[0, 2, STEPS], max_seq_len=64,
                     train=unplanned(batch_size=BATCH, micro_batch_size=MICRO, zero_stage=3, loss_chunk_tokens=CHUNK,
                                     state_every_s=0))


def alone(spec: TrainSpec, out: str) -> None:
    from workers.train.trainer import train

    losses: list[float] = []
    train(spec, EXAMPLES, Path(out), lambda step, adapter, info: losses.extend(info.get("step_losses", [])),
          log=lambda line: None)
    Path(out, "losses.json").write_text(json.dumps(losses))


def packed(specs: list[TrainSpec], out: str, drop: bool, fail_at: int | None = None, rank: int = 0) -> None:
    """The pack in `out`/member_<i>; drop: member DROPPED leaves after step DROP_AFTER; fail_at: the hook of member 0
    raises at that checkpoint (the pack's crash)."""
    from workers.train.pack_train import train_pack

    losses: list[list[float]] = [[] for _ in specs]
    hooked: list[tuple[int, int]] = []  # (member, step) of every hook so far
    waits: list[list] = []  # per after_checkpoint call: its step and the members whose hooks had run for it

    def hook(i: int):  # noqa: ANN202
        def record(step: int, adapter: Path, info: dict) -> None:
            if i == 0 and step == fail_at:
                raise RuntimeError("member 0 crashed")
            hooked.append((i, step))
            losses[i].extend(info.get("step_losses", []))
            Path(out, f"member_{i}", "losses.json").write_text(json.dumps(losses[i]))
        return record

    def after_checkpoint(step: int) -> None:
        waits.append([step, sorted(i for i, s in hooked if s == step)])
        Path(out, "waits.json").write_text(json.dumps(waits))

    train_pack(specs, EXAMPLES, [Path(out, f"member_{i}") for i in range(len(specs))], Path(out, "state"),
               [hook(i) for i in range(len(specs))], log=lambda line: None,
               should_drop=(lambda step: [DROPPED] if step == DROP_AFTER else []) if drop else None,
               after_checkpoint=after_checkpoint)


def adapter_config(folder: Path) -> dict:
    config = json.loads((folder / "adapters" / f"step_{STEPS:05d}" / "adapter_config.json").read_text())
    config["target_modules"] = sorted(config["target_modules"])  # PEFT writes them from a set: any order
    return config


def assert_same(a: dict, b: dict) -> None:
    import torch

    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6, msg=key)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model (its lm_head is tied to its embeddings, as SmolLM2's)."""
    path = tmp_path_factory.mktemp("tiny") / "tiny"
    build_tiny_dense(path)
    return path


def train_alone(root: Path, specs: list[TrainSpec]) -> None:
    """Each trial alone on one rank (ZeRO-3) in its own process, in root/alone_<i>."""
    for i, spec in enumerate(specs):
        run_in_fresh_process(alone, (spec, str(root / f"alone_{i}")), DEADLINE_S, f"trial {i} alone")


@pytest.fixture(scope="module")
def alone_runs(tmp_path_factory: pytest.TempPathFactory, tiny: Path) -> tuple[Path, list[TrainSpec]]:
    """The 3 trials, each trained alone."""
    root = tmp_path_factory.mktemp("pack")
    specs = [replace(base_spec(tiny), lr=lr, seed=seed) for lr, seed in MEMBERS]
    train_alone(root, specs)
    return root, specs


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
    assert adapter_config(root / "pack" / "member_0") == adapter_config(root / "alone_0")  # vLLM loads PEFT's own
    # a sampler sharing the GPUs is waited for once per checkpoint, after every open member's hook (requests batch)
    assert json.loads((root / "pack" / "waits.json").read_text()) == [[0, [0, 1, 2]], [2, [0, 1, 2]], [STEPS, [0, 2]]]


def test_a_crashed_pack_resumes_every_member(alone_runs) -> None:
    root, specs = alone_runs
    out = root / "resumed"
    with pytest.raises(AssertionError, match="exited with 1"):  # the member's crash is the pack's
        run_in_fresh_process(packed, (specs, str(out), False, STEPS), DEADLINE_S, "pack that crashes")
    assert json.loads((out / "state" / "resume.json").read_text())["step"] == 2
    run_in_fresh_process(packed, (specs, str(out), False, None), DEADLINE_S, "resumed pack")
    for i in range(len(specs)):
        assert_same(adapters(out / f"member_{i}", STEPS), adapters(root / f"alone_{i}", STEPS))


HEAD_CHUNK = 5  # answer tokens per LM-head call: chunks that hold two members' tokens, empty chunks on a rank


def head_chunks(specs: list[TrainSpec], tokenizer_path: Path) -> tuple[int, int]:
    """(chunks holding more than one member's tokens, empty chunks a rank pads with) over the pack's steps on 2
    ranks, as packed_train_step lays them out: the premise of the lm_head test."""
    from transformers import AutoTokenizer

    from workers.train.batching import batch_indices, micro_batches_by_rank
    from workers.train.data_parallel import data_parallel_shape
    from workers.train.loss import answer_tokens, loss_chunks
    from workers.train.trainer import encode_labels

    encoded = encode_labels(AutoTokenizer.from_pretrained(tokenizer_path), EXAMPLES, {}, specs[0].max_seq_len)
    micro, accum = data_parallel_shape(BATCH, MICRO, 2)
    streams = [batch_indices(len(encoded), BATCH, s.seed) for s in specs]
    mixed = empty = 0
    for _ in range(STEPS):
        parts = [micro_batches_by_rank([encoded[i] for i in next(stream)], 2, micro, accum, by_length=True)
                 for stream in streams]
        for k in range(accum):
            counts = [[answer_tokens(p[rank][k]) for p in parts] for rank in range(2)]  # [rank][member]
            calls = max(loss_chunks(sum(c), HEAD_CHUNK) for c in counts)
            for c in counts:
                owner = [m for m, n in enumerate(c) for _ in range(n)]  # each token's member, in row order
                chunks = [set(owner[j:j + HEAD_CHUNK]) for j in range(0, calls * HEAD_CHUNK, HEAD_CHUNK)]
                mixed += sum(len(members) > 1 for members in chunks)
                empty += sum(not members for members in chunks)
    return mixed, empty


def test_a_pack_with_lora_on_the_tied_lm_head_equals_each_trial_alone(tiny, tmp_path) -> None:
    """LoRA on lm_head (Tinker's default) packs: the head sees each member's answer tokens, unequal in number,
    through that member's own adapter, in loss chunks that mix members and chunks that are empty on one rank."""
    targets = ["q_proj", "v_proj", "lm_head"]
    base = base_spec(tiny).with_train(loss_chunk_tokens=HEAD_CHUNK)
    specs = [replace(base, lr=lr, seed=seed, lora_target_modules=targets) for lr, seed in MEMBERS]
    mixed, empty = head_chunks(specs, tiny)
    assert mixed > 0 and empty > 0
    train_alone(tmp_path, specs)
    run_ranks_in_fresh_processes(packed, (specs, str(tmp_path / "pack"), False, None), 2, DEADLINE_S, "pack")
    for i in range(len(specs)):
        one, mine = tmp_path / f"alone_{i}", tmp_path / "pack" / f"member_{i}"
        for step in (0, 2, STEPS):  # 0: A starts as alone (seed_peft_lora reaches the head's lora_A too)
            assert_same(adapters(mine, step), adapters(one, step))
        assert json.loads((mine / "losses.json").read_text()) == pytest.approx(
            json.loads((one / "losses.json").read_text()), rel=1e-5)
        head = adapters(mine, STEPS)
        assert {"base_model.model.lm_head.lora_A.weight", "base_model.model.lm_head.lora_B.weight"} <= head.keys()
        assert head["base_model.model.lm_head.lora_B.weight"].abs().max() > 0  # the head's LoRA trained
        assert adapter_config(mine) == adapter_config(one)
