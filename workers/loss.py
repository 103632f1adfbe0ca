"""The SFT loss on answer tokens only, through the LM head in chunks: full-vocab logits never exist at once.

HF's causal-LM forward computes logits at every position (micro-batch x sequence x vocab: 16 x 512 x 151,936
for Qwen3 is 2.5 GB in bf16, 5 GB more for the fp32 copy the loss makes, and the same again for its gradient),
although prompts and padding carry no loss. Here the decoder's last hidden states are taken at the answer
positions only, and each chunk of `chunk_tokens` of them goes through the LM head and cross-entropy under
activation checkpointing: a chunk's logits live only while it is computed, and again while it is recomputed
in backward. The cost is one more LM-head matmul over answer tokens.

The loss is a sum over answer tokens divided by `num_items`, which the trainer sets from the whole step's
answer-token count, so the update is the per-token mean over the step's batch however the batch is split
into micro-batches and ranks (HF's loss is a mean per micro-batch, which weights a token by its micro-batch).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from workers.batching import IGNORE


def answer_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, columns, targets) of every scored token: the hidden state at [row, column] predicts target
    (the label one position later; prompt and padding labels are IGNORE)."""
    shifted = labels[:, 1:]
    rows, cols = (shifted != IGNORE).nonzero(as_tuple=True)
    return rows, cols, shifted[rows, cols]


def answer_tokens(examples: list[dict[str, list[int]]]) -> int:
    """How many tokens of encoded examples carry loss: the labels `answer_positions` scores."""
    return sum(sum(1 for y in e["labels"][1:] if y != IGNORE) for e in examples)


def _chunk_loss(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")


def chunked_cross_entropy(hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor,
                          chunk_tokens: int) -> torch.Tensor:
    """Summed cross-entropy of head(hidden) [N, vocab] against targets [N], `chunk_tokens` rows at a time.
    A single chunk keeps its logits for backward (they are no larger than a chunk); with several, each chunk
    is recomputed in backward so only one chunk's logits are alive at any time."""
    n = targets.shape[0]
    if n <= chunk_tokens:
        return _chunk_loss(head, hidden, targets)
    total = hidden[:0].float().sum()  # zero that keeps the graph
    for start in range(0, n, chunk_tokens):
        part = slice(start, start + chunk_tokens)
        total = total + checkpoint(_chunk_loss, head, hidden[part], targets[part], use_reentrant=False)
    return total


def install_answer_loss(peft_model: Any, chunk_tokens: int) -> None:
    """Make `peft_model(input_ids, attention_mask, labels, num_items)` return the chunked answer-token loss
    (summed, divided by num_items). The call still goes through the module, so DeepSpeed's engine and its
    ZeRO-3 parameter hooks see it as before; the LoRA layers sit inside the decoder and the head, and the
    module's parameters, names and saved adapters do not change."""
    base = peft_model.get_base_model()
    decoder, head = base.get_decoder(), base.get_output_embeddings()

    def forward(input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                num_items: float) -> torch.Tensor:
        hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        rows, cols, targets = answer_positions(labels)
        return chunked_cross_entropy(hidden[rows, cols], head, targets, chunk_tokens) / num_items

    peft_model.forward = forward  # an instance attribute: nn.Module.__call__ (and its hooks) calls it
