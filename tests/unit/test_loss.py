"""The answer-token loss (workers/train/loss.py) against HF's own causal-LM loss: same value, same gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from workers.train.batching import IGNORE
from workers.train.loss import answer_positions, answer_tokens, chunked_cross_entropy, install_answer_loss, loss_chunks


def test_answer_positions_shift_labels_by_one() -> None:
    labels = torch.tensor([[IGNORE, IGNORE, 7, 8, IGNORE],
                           [IGNORE, 5, 6, IGNORE, IGNORE]])
    rows, cols, targets = answer_positions(labels)
    # hidden state at column c predicts the label at c + 1
    assert rows.tolist() == [0, 0, 1, 1]
    assert cols.tolist() == [1, 2, 0, 1]
    assert targets.tolist() == [7, 8, 5, 6]


def test_answer_tokens_counts_what_answer_positions_scores() -> None:
    """The step's normaliser (encoded lists) and the loss's positions (a padded tensor) agree."""
    examples = [{"input_ids": [1, 2, 3, 4], "labels": [IGNORE, IGNORE, 3, 4]},
                {"input_ids": [5, 6, 7], "labels": [5, 6, 7]}]  # prompt truncated away: the first label is unscored
    padded = torch.full((2, 4), IGNORE)
    for row, e in enumerate(examples):
        padded[row, :len(e["labels"])] = torch.tensor(e["labels"])
    assert answer_tokens(examples) == len(answer_positions(padded)[2]) == 4


@pytest.mark.parametrize("chunk", [1, 3, 10, 64])
def test_chunked_cross_entropy_matches_one_pass(chunk: int) -> None:
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(10, 16, requires_grad=True)
    targets = torch.randint(0, 50, (10,))
    ref = F.cross_entropy(head(hidden), targets, reduction="sum")
    ref_grads = torch.autograd.grad(ref, [hidden, head.weight])
    got = chunked_cross_entropy(hidden, head, targets, chunk)
    grads = torch.autograd.grad(got, [hidden, head.weight])
    torch.testing.assert_close(got, ref)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r)


@pytest.mark.parametrize("n", [0, 1, 3, 7, 9])
def test_the_head_is_called_num_chunks_times_whatever_the_answer_length(n: int) -> None:
    """Under ZeRO-3 each head call all-gathers its weight: ranks with 0 to 9 answer tokens (1 to 3 chunks of 3)
    that pass the same num_chunks make the same calls in forward and backward, and padding changes nothing."""
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(n, 16, requires_grad=True)
    targets = torch.randint(0, 50, (n,))
    calls = {"forward": 0, "backward": 0}
    head.register_forward_hook(lambda *_: calls.__setitem__("forward", calls["forward"] + 1))
    head.register_full_backward_hook(lambda *_: calls.__setitem__("backward", calls["backward"] + 1))
    got = chunked_cross_entropy(hidden, head, targets, chunk_tokens=3, num_chunks=4)
    got.backward()
    assert calls == {"forward": 2 * 4, "backward": 4}  # each chunk: forward, recompute in backward, backward
    ref = F.cross_entropy(head(hidden), targets, reduction="sum")
    torch.testing.assert_close(got, ref)
    if n:
        torch.testing.assert_close(hidden.grad, torch.autograd.grad(ref, hidden)[0])
    calls.update(forward=0, backward=0)
    chunked_cross_entropy(hidden, head, targets, chunk_tokens=100, num_chunks=1).backward()
    assert calls == {"forward": 1, "backward": 1}  # one chunk: logits kept, no recompute
    assert loss_chunks(n, 3) == max(1, -(-n // 3))


def test_too_few_chunks_is_refused() -> None:
    head = torch.nn.Linear(4, 5, bias=False)
    with pytest.raises(ValueError, match="need 3 chunks"):
        chunked_cross_entropy(torch.randn(7, 4), head, torch.zeros(7, dtype=torch.long), chunk_tokens=3, num_chunks=2)


def tiny_lora_model() -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=300, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, tie_word_embeddings=True)
    model = get_peft_model(Qwen3ForCausalLM(config), LoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM",
                                                                 target_modules=["q_proj", "v_proj", "down_proj"]))
    for name, p in model.named_parameters():
        if "lora_B" in name:  # non-zero B, so every LoRA tensor gets a gradient
            torch.nn.init.normal_(p, std=0.1)
    return model


def test_installed_loss_equals_hf_loss_and_gradients() -> None:
    """Right-padded rows with prompts of different lengths: the per-token mean and every LoRA gradient match
    HF's forward with labels; parameter names (what the saved adapter holds) do not change."""
    model = tiny_lora_model()
    ids = torch.randint(0, 300, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    labels = ids.clone()
    labels[0, :5], labels[1, :3], labels[2, :8] = IGNORE, IGNORE, IGNORE
    labels[mask == 0] = IGNORE
    names = [n for n, _ in model.named_parameters()]

    ref = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()

    install_answer_loss(model, chunk_tokens=4)  # several chunks: the recomputing path
    count = len(answer_positions(labels)[2])
    loss = model(input_ids=ids, attention_mask=mask, labels=labels, num_items=count)
    loss.backward()
    torch.testing.assert_close(loss, ref)
    assert [n for n, _ in model.named_parameters()] == names
    assert len(ref_grads) == 2 * 3 * 2  # 2 layers x (q, v, down) x (A, B)
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad.abs().max() > 0, name
            torch.testing.assert_close(p.grad, ref_grads[name], msg=name)
