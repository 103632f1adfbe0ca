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

Under ZeRO-3 every call of the LM head all-gathers its weight (in forward, in the recompute, in backward), so
all ranks must call it equally often, whatever their answer lengths: the trainer passes `num_chunks`, the
most chunks any rank's micro-batch needs, and a rank with fewer answer tokens pads with empty chunks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from workers.train.batching import IGNORE


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


def loss_chunks(n_tokens: int, chunk_tokens: int) -> int:
    """LM-head calls for n_tokens answer tokens, `chunk_tokens` at a time (one even for none)."""
    return max(1, -(-n_tokens // chunk_tokens))


def chunked_cross_entropy(hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor,
                          chunk_tokens: int, num_chunks: int | None = None) -> torch.Tensor:
    """Summed cross-entropy of head(hidden) [N, vocab] against targets [N], `chunk_tokens` rows at a time.

    The head is called exactly `num_chunks` times (default: as many as N needs), chunks past the data being
    empty, and the path depends on `num_chunks` only, never on N: one chunk keeps its logits for backward
    (they are no larger than a chunk); several are each recomputed in backward, so only one chunk's logits
    are alive at any time. Ranks that pass the same `num_chunks` thus issue the same collectives."""
    n = targets.shape[0]
    needed = loss_chunks(n, chunk_tokens)
    num_chunks = needed if num_chunks is None else num_chunks
    if num_chunks < needed:
        raise ValueError(f"{n} answer tokens need {needed} chunks of {chunk_tokens}, got num_chunks={num_chunks}")
    if num_chunks == 1:
        return _chunk_loss(head, hidden, targets)
    total = hidden[:0].float().sum()  # zero that keeps the graph
    for start in range(0, num_chunks * chunk_tokens, chunk_tokens):
        part = slice(start, start + chunk_tokens)  # past N: an empty chunk, a head call that scores nothing
        total = total + checkpoint(_chunk_loss, head, hidden[part], targets[part], use_reentrant=False)
    return total


def install_answer_loss(peft_model: Any, chunk_tokens: int) -> None:
    """Make `peft_model(input_ids, attention_mask, labels, num_items, num_chunks)` return the chunked
    answer-token loss (summed, divided by num_items; `num_chunks` LM-head calls, see chunked_cross_entropy).
    The call still goes through the module, so DeepSpeed's engine and its ZeRO-3 parameter hooks see it as
    before; the LoRA layers sit inside the decoder and the head, and the module's parameters, names and saved
    adapters do not change."""
    base = peft_model.get_base_model()
    decoder, head = base.get_decoder(), base.get_output_embeddings()

    def forward(input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                num_items: float, num_chunks: int | None = None) -> torch.Tensor:
        hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        rows, cols, targets = answer_positions(labels)
        return chunked_cross_entropy(hidden[rows, cols], head, targets, chunk_tokens, num_chunks) / num_items

    peft_model.forward = forward  # an instance attribute: nn.Module.__call__ (and its hooks) calls it
