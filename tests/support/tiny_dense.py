"""A tiny random fp32 Qwen3 (dense, tied embeddings as SmolLM2's) with the toy's BPE tokenizer: what the trainer's
multi-rank and packing tests train."""

from __future__ import annotations

from pathlib import Path


def build_tiny_dense(path: Path) -> None:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from workers.models.toy import train_tokenizer

    texts = [f"question {i}: why is the sky blue? answer {i}: light scatters off air." for i in range(64)]
    tokenizer = train_tokenizer(texts, vocab_size=320)
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=12, max_position_embeddings=128,
                         tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    Qwen3ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
