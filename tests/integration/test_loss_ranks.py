"""The chunked answer loss under ZeRO-3 with several ranks whose micro-batches hold different numbers of answer
tokens: every rank must call the LM head (whose weight ZeRO-3 all-gathers on each call, forward and backward)
the same number of times, or the ranks wait on different collectives (gloo: a mismatch error; NCCL: a hang).

Two gloo ranks train a tiny random Qwen3 through `workers.train.trainer.train` in fresh processes with a deadline; the
data is chosen so that the ranks' micro-batches need different numbers of loss chunks, and the update must
equal the same training on one rank.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
from fresh_process import run_in_fresh_process, run_ranks_in_fresh_processes
from tiny_dense import build_tiny_dense

from workers.train.config import unplanned
from workers.train.trainer import TrainSpec

STEPS, BATCH, MICRO, CHUNK, WORLD = 3, 8, 2, 3, 2
DEADLINE_S = 300
# short and long answers (1 to 16 words): ranks' micro-batches hold very different answer-token counts
EXAMPLES = [{"prompt": f"why is the sky blue? ({i})", "completion": " ".join(["light"] * (1 + (i * 5) % 16))}
            for i in range(2 * BATCH)]


def train_rank(spec: TrainSpec, out: str, rank: int = 0) -> None:
    from workers.train.trainer import train

    losses: list[float] = []
    train(spec, EXAMPLES, Path(out), lambda step, adapter, info: losses.extend(info.get("step_losses", [])),
          log=lambda line: None)
    if rank == 0:
        Path(out, "losses.json").write_text(json.dumps(losses))


def chunk_counts_by_rank(spec: TrainSpec) -> list[list[list[int]]]:
    """[step][rank] -> the loss chunks each of that rank's micro-batches needs on its own (computed here from the
    data, independently of the trainer): the precondition that makes this test discriminating."""
    from transformers import AutoTokenizer

    from workers.train.batching import IGNORE, batch_indices
    from workers.train.trainer import encode_labels

    encoded = encode_labels(AutoTokenizer.from_pretrained(spec.model_path), EXAMPLES, {}, spec.max_seq_len)
    batches = batch_indices(len(encoded), BATCH, spec.seed)
    share = BATCH // WORLD
    counts = []
    for _ in range(STEPS):
        batch = [encoded[i] for i in next(batches)]
        per_rank = []
        for rank in range(WORLD):
            mine = sorted(batch[rank * share:(rank + 1) * share], key=lambda e: len(e["input_ids"]))
            tokens = [sum(y != IGNORE for e in mine[k:k + MICRO] for y in e["labels"][1:])
                      for k in range(0, share, MICRO)]
            per_rank.append([max(1, math.ceil(n / CHUNK)) for n in tokens])
        counts.append(per_rank)
    return counts


def test_ranks_with_uneven_answers_train_under_zero3_as_one_rank(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    model = tmp_path / "tiny_dense"
    build_tiny_dense(model)
    spec = TrainSpec(model_path=str(model), dtype="float32", lora_target_modules=["q_proj", "v_proj", "down_proj"],
                     lr=1e-3, seed=0, max_steps=STEPS, checkpoint_steps=[STEPS], max_seq_len=64,
                     train=unplanned(batch_size=BATCH, micro_batch_size=MICRO, zero_stage=3, loss_chunk_tokens=CHUNK))
    counts = chunk_counts_by_rank(spec)
    assert any(len({tuple(c) for c in per_rank}) > 1 for per_rank in counts), counts  # ranks differ somewhere

    run_ranks_in_fresh_processes(train_rank, (spec, str(tmp_path / "two")), WORLD, DEADLINE_S,
                                 "ZeRO-3 training on 2 gloo ranks")
    run_in_fresh_process(train_rank, (replace(spec), str(tmp_path / "one")), DEADLINE_S, "training on one rank")

    two, one = (json.loads((tmp_path / d / "losses.json").read_text()) for d in ("two", "one"))
    assert len(two) == len(one) == STEPS
    assert two == pytest.approx(one, rel=1e-4), (two, one)
    name = f"adapters/step_{STEPS:05d}/adapter_model.safetensors"
    a, b = load_file(tmp_path / "two" / name), load_file(tmp_path / "one" / name)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    moved = [k for k in a if "lora_B" in k and a[k].abs().max() > 0]
    assert moved, "training did not move LoRA B"
