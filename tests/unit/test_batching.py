"""Tokenised examples: loss on the answer only, padding, deterministic data order."""

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from workers.train.batching import IGNORE, batch_indices, collate, encode_example


def tiny_tokenizer():
    vocab = {"<pad>": 0, "<eos>": 1, "a": 2, "b": 3, "c": 4, "d": 5}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def test_loss_only_on_answer_and_eos():
    e = encode_example(tiny_tokenizer(), "a b", "c d", max_len=16)
    assert e["input_ids"] == [2, 3, 4, 5, 1]
    assert e["labels"] == [IGNORE, IGNORE, 4, 5, 1]


def test_truncation_keeps_the_answer_and_drops_the_prompt_start():
    e = encode_example(tiny_tokenizer(), "a b a b", "c d", max_len=4)
    assert e["input_ids"] == [3, 4, 5, 1]
    assert e["labels"] == [IGNORE, 4, 5, 1]


def test_collate_pads_right_and_masks():
    batch = collate([{"input_ids": [2, 3], "labels": [IGNORE, 3]}, {"input_ids": [4], "labels": [4]}], pad_id=0)
    assert batch["input_ids"].tolist() == [[2, 3], [4, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 3], [4, IGNORE]]
    assert batch["attention_mask"].tolist() == [[1, 1], [1, 0]]


def test_batch_order_is_seeded_full_and_covers_every_example():
    a, b = batch_indices(10, 4, seed=3), batch_indices(10, 4, seed=3)
    first = [next(a) for _ in range(5)]
    assert first == [next(b) for _ in range(5)]
    assert all(len(x) == 4 for x in first)
    assert sorted(sum(first, [])[:10]) == list(range(10))  # the first epoch is a permutation
    assert [next(batch_indices(10, 4, seed=4)) for _ in range(1)] != first[:1]
    resumed = batch_indices(10, 4, seed=3, start_step=2)
    assert next(resumed) == first[2]


def test_micro_batches_by_rank_split_the_batch_into_equal_shares():
    """Every rank computes every rank's micro-batches from the batch they all hold (train_step sizes the loss's
    LM-head calls from them): disjoint shares in batch order, each sorted by length when asked."""
    from workers.train.batching import micro_batches_by_rank

    batch = [{"input_ids": [0] * n} for n in (5, 1, 4, 2, 8, 3, 7, 6)]
    parts = micro_batches_by_rank(batch, world=2, micro=2, accum=2, by_length=True)
    assert [[[len(e["input_ids"]) for e in mb] for mb in rank] for rank in parts] == [[[1, 2], [4, 5]],
                                                                                        [[3, 6], [7, 8]]]
    plain = micro_batches_by_rank(batch, world=2, micro=2, accum=2, by_length=False)
    assert [e for rank in plain for mb in rank for e in mb] == batch
