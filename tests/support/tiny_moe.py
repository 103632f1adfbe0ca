"""A tiny random Qwen3-MoE checkpoint in the hub's layout: per-expert weights, several safetensors shards.

transformers v5 fuses each layer's experts into two 3-D parameters when it loads, and writes them back per
expert (`mlp.experts.<e>.gate_proj.weight`, ...) when it saves, as Qwen/Qwen3-235B-A22B is published. A small
`shard_bytes` splits the file into many shards and an index, so loaders meet the real model's layout at toy size.
"""

from __future__ import annotations

from pathlib import Path

HIDDEN, EXPERT_WIDTH, EXPERTS, LAYERS = 40, 24, 4, 2  # distinct sizes, so every LoRA shape is checked;
# bf16 rows of HIDDEN and EXPERT_WIDTH are multiples of 16 bytes, as torch grouped_mm (v5 experts) requires
EXPERT_PARAMETERS = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]
HEAD_DIM = 32  # the smallest head size vLLM's CPU attention runs (16 is refused when the engine first attends)


def build_tiny_moe(path: Path, shard_bytes: int | None = None, layers: int = LAYERS, hidden: int = HIDDEN,
                   expert_width: int = EXPERT_WIDTH, experts: int = EXPERTS, seed: int = 0,
                   head_dim: int = HEAD_DIM) -> Path:
    """Qwen3MoeForCausalLM at toy size with random bf16 weights and the toy's BPE tokenizer, saved to `path`
    in `shard_bytes` shards (None: one file)."""
    import torch
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    from workers.models.toy import train_tokenizer

    texts = [f"question {i}: how do clouds form? answer {i}: warm air rises and cools." for i in range(64)]
    tokenizer = train_tokenizer(texts, vocab_size=320)
    config = Qwen3MoeConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=64, moe_intermediate_size=expert_width,
        num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1, head_dim=head_dim, num_experts=experts,
        num_experts_per_tok=2, max_position_embeddings=512, tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen3MoeForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(path, **({"max_shard_size": shard_bytes} if shard_bytes else {}))
    tokenizer.save_pretrained(path)
    return path
