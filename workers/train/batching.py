"""Tokenised SFT examples and padded batches, shared by the toy's pretraining and the trainer."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import torch

IGNORE = -100  # label value that cross-entropy skips: prompt and padding positions


def encode_example(tokenizer: Any, prompt_text: str, completion: str, max_len: int) -> dict[str, list[int]]:
    """Prompt + completion + EOS; loss only on the completion and EOS. Truncates the prompt's start."""
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    answer_ids = answer_ids[:max_len]
    prompt_ids = prompt_ids[max(0, len(prompt_ids) + len(answer_ids) - max_len) :]
    return {
        "input_ids": prompt_ids + answer_ids,
        "labels": [IGNORE] * len(prompt_ids) + answer_ids,
    }


def collate(examples: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example of the batch."""
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[row, :n] = torch.tensor(e["input_ids"])
        labels[row, :n] = torch.tensor(e["labels"])
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def micro_batches_by_rank(batch: list[dict[str, list[int]]], world: int, micro: int, accum: int,
                          by_length: bool) -> list[list[list[dict[str, list[int]]]]]:
    """[rank][k]: the k-th micro-batch of each rank's share of the step's batch. Every rank holds the whole batch,
    so each knows every rank's micro-batches (and what their loss will cost) without a collective. by_length:
    a share sorted by length, so micro-batches of similar lengths carry less padding (for an order-free loss)."""
    per_rank = micro * accum
    shares = [batch[r * per_rank:(r + 1) * per_rank] for r in range(world)]
    if by_length:
        shares = [sorted(share, key=lambda e: len(e["input_ids"])) for share in shares]
    return [[share[k * micro:(k + 1) * micro] for k in range(accum)] for share in shares]


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def batch_indices(n: int, batch_size: int, seed: int, start_step: int = 0) -> Iterator[list[int]]:
    """Endless stream of batches of example indices: each epoch a fresh seeded shuffle, batches
    may straddle epochs so every batch is full. Deterministic in (n, batch_size, seed, step)."""
    step = 0
    stream: list[int] = []
    epoch = 0
    while True:
        while len(stream) < batch_size:
            stream.extend(epoch_order(n, seed, epoch))
            epoch += 1
        batch, stream = stream[:batch_size], stream[batch_size:]
        if step >= start_step:
            yield batch
        step += 1
