"""The planner's vocabulary: units, the Plan record, and the model arithmetic every planner module reads
(parameter, LoRA, activation and training-memory counts; trials that fit on the nodes). Pure; imports no other
planner module, so the planner's parts import it and not each other in a circle."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from orchestrator.schema import Config, ConfigError
from workers.models.config import ArchConfig

GIB = 1024**3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
EXPERT_SHAPES = {"gate_up_proj": lambda a: (a.hidden_size, 2 * a.moe_intermediate_size),
                 "down_proj": lambda a: (a.moe_intermediate_size, a.hidden_size)}


class PlanError(ConfigError):
    """A sweep that does not fit the cluster; the message names what to change."""


@dataclass
class Plan:
    """Numbers by section (JSON-able) and the arithmetic behind them, one line per number."""

    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    lines: list[tuple[str, str]] = field(default_factory=list)  # (section, "name = formula = value")

    def put(self, section: str, key: str, value: Any, formula: str = "", text: str | None = None) -> Any:
        self.sections.setdefault(section, {})[key] = value
        shown = text if text is not None else _fmt(value)
        self.lines.append((section, f"{key} = {formula} = {shown}" if formula else f"{key} = {shown}"))
        return value

    def note(self, section: str, text: str) -> None:
        self.lines.append((section, text))

    def as_dict(self) -> dict[str, Any]:
        return self.sections | {"arithmetic": [f"[{s}] {t}" for s, t in self.lines]}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def gib(n_bytes: float) -> str:
    return f"{n_bytes / GIB:.2f} GiB"


def arch_of(cfg: Config) -> ArchConfig:
    """The model's shape: its arch block, or the toy's own config."""
    m = cfg.model
    if m.arch is not None:
        return m.arch
    if m.toy is not None:
        t = m.toy
        return ArchConfig(num_layers=t.num_layers, hidden_size=t.hidden_size, num_heads=t.num_heads,
                          num_kv_heads=t.num_heads, head_dim=t.head_dim, intermediate_size=t.intermediate_size,
                          vocab_size=t.vocab_size, tie_word_embeddings=True)
    raise PlanError(f"model {m.name!r} has no arch block: copy num_layers, hidden_size, ... from its config.json "
                    "into conf/model/<name>.yaml (see conf/model/qwen3_235b_a22b.yaml)")


def param_counts(a: ArchConfig) -> dict[str, int]:
    """Parameter counts from the shape (Qwen3 layout: GQA attention with q/k norms, SwiGLU MLP or experts)."""
    q, kv = a.num_heads * a.head_dim, a.num_kv_heads * a.head_dim
    attn = a.hidden_size * q * 2 + a.hidden_size * kv * 2 + 2 * a.hidden_size + 2 * a.head_dim  # + norms
    if a.num_experts:
        expert = 3 * a.hidden_size * a.moe_intermediate_size
        mlp, router, active_mlp = a.num_experts * expert, a.num_experts * a.hidden_size, a.experts_per_token * expert
    else:
        mlp = active_mlp = 3 * a.hidden_size * a.intermediate_size
        router = 0
    embed = a.vocab_size * a.hidden_size * (1 if a.tie_word_embeddings else 2)
    layer = attn + mlp + router
    return {"attention_per_layer": attn, "mlp_per_layer": mlp + router, "layer": layer, "embeddings": embed,
            "total": a.num_layers * layer + embed + a.hidden_size,
            "active": a.num_layers * (attn + router + active_mlp) + embed + a.hidden_size}


def linear_shape(a: ArchConfig, name: str) -> tuple[int, int]:
    """(in, out) of a LoRA-targetable nn.Linear by its suffix (lm_head: the unembedding, once per model)."""
    q, kv, h = a.num_heads * a.head_dim, a.num_kv_heads * a.head_dim, a.hidden_size
    shapes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h), "lm_head": (h, a.vocab_size)}
    if not a.num_experts:
        shapes |= {"gate_proj": (h, a.intermediate_size), "up_proj": (h, a.intermediate_size),
                   "down_proj": (a.intermediate_size, h)}
    if name not in shapes:
        raise PlanError(f"model.lora_target_modules holds {name!r}, which the planner does not know for this "
                        f"model: use some of {sorted(shapes)}")
    return shapes[name]


def lora_params(a: ArchConfig, modules: list[str], expert_params: list[str], rank: int) -> dict[str, int]:
    """LoRA parameters: r*(in+out) per targeted linear; per targeted 3-D expert weight PEFT's ParamWrapper
    holds lora_A [r*E, in] and lora_B [out, r*E], i.e. r*E*(in+out)."""
    attn = sum(rank * sum(linear_shape(a, m)) for m in modules if m != "lm_head") * a.num_layers
    attn += rank * sum(linear_shape(a, "lm_head")) if "lm_head" in modules else 0
    experts = 0
    for p in expert_params:
        kind = p.rsplit(".", 1)[-1]
        if kind not in EXPERT_SHAPES:
            raise PlanError(f"model.lora_expert_parameters holds {p!r}: the planner knows {sorted(EXPERT_SHAPES)}")
        experts += rank * a.num_experts * sum(EXPERT_SHAPES[kind](a)) * a.num_layers
    return {"attention": attn, "experts": experts, "total": attn + experts}


def activation_bytes(a: ArchConfig, seqs: int, seq_len: int, wbytes: int, checkpointing: bool,
                     loss_chunk_tokens: int | None = None, head_lora: bool = False) -> dict[str, float]:
    """Activations of one micro-batch. Per token and layer: attention 2H + 2(nq+2nkv)*hd elements (norm and
    o_proj outputs; q, k, v before and after norm/RoPE; flash attention keeps no seq^2 matrix), MLP
    k*(2H + 3I) (a routed token's copy, gate_up, activation, down; dense: k=1) + 2E for fp32 router logits.
    With checkpointing only each layer's input stays, plus one layer's working set and its gradients."""
    h, hd = a.hidden_size, a.head_dim
    k, inter = (a.experts_per_token, a.moe_intermediate_size) if a.num_experts else (1, a.intermediate_size)
    per_token = 2 * h + 2 * (a.num_heads + 2 * a.num_kv_heads) * hd + k * (2 * h + 3 * inter) + 2 * a.num_experts
    tokens = seqs * seq_len
    layer = tokens * per_token * wbytes
    kept = a.num_layers * tokens * h * wbytes + 2 * layer if checkpointing else a.num_layers * layer
    # logits, their fp32 upcast for the loss, fp32 gradient: at every position (train.loss=hf), or at most one
    # chunk of answer tokens at a time (answer_chunks); LoRA on lm_head adds one more logits-sized tensor (the base
    # head's output plus the low-rank update is a new tensor, not an in-place sum)
    scored = tokens if loss_chunk_tokens is None else min(tokens, loss_chunk_tokens)
    logits = scored * a.vocab_size * (wbytes * (2 if head_lora else 1) + 4 + 4)
    return {"layer_working_set": layer, "layers": kept, "logits": logits}


def train_memory(cfg: Config, a: ArchConfig, counts: dict[str, int], lora: int, shape: Any) -> dict[str, float]:
    """Bytes per training GPU for `shape` (orchestrator/plan/fit.py Shape): a ZeRO `stage` LoRA trial, or a pack of
    K trials (K adapters with their own Adam states, K x micro sequences per forward), over `gpus` GPUs."""
    wbytes, gpus, stage, k = DTYPE_BYTES[cfg.model.dtype], shape.gpus, shape.stage, shape.pack
    shard = lambda s: gpus if stage >= s else 1  # noqa: E731 - ZeRO-1 shards optimizer, -2 grads, -3 params
    master = 4 if wbytes == 2 else 0  # fp32 master copy of 16-bit LoRA weights
    mem = {"base_weights": counts["total"] * wbytes / shard(3),
           # hpZ: a second copy of the weights sharded over the node's GPUs (DeepSpeed ds_secondary_tensor)
           "hpz_secondary_weights": counts["total"] * wbytes / shape.hpz if shape.hpz > 1 and stage == 3 else 0.0,
           "lora_weights_and_grads": k * (lora * wbytes / shard(3) + lora * wbytes / shard(2)),
           "lora_fp32_master_and_adam": k * lora * (master + 8) / shard(1)}
    # ZeRO-3 gathers a whole leaf module (a sparse-MoE block with all its experts) at once: the live layer
    # plus the prefetched next one
    mem["zero3_gathered_layers"] = 2 * max(counts["layer"], counts["embeddings"]) * wbytes if stage == 3 else 0
    act = activation_bytes(a, k * shape.micro, cfg.model.max_model_len, wbytes, cfg.model.gradient_checkpointing,
                           shape.chunk, head_lora="lm_head" in cfg.model.lora_target_modules)
    mem["activations"], mem["logits"] = act["layers"], act["logits"]
    mem["expert_lora_materialized"] = expert_materialization_bytes(cfg, a, k)
    mem["zero_buffers"] = zero_buffer_bytes(zero_buffers(a, counts, k * lora, stage), wbytes, stage)
    p = cfg.plan
    mem["total"] = sum(mem.values()) * p.fragmentation + p.overhead_gib * GIB
    held = ("base_weights", "hpz_secondary_weights", "lora_weights_and_grads", "lora_fp32_master_and_adam")
    mem["resident"] = sum(mem[key] for key in held) * p.fragmentation + p.overhead_gib * GIB
    return mem


# the gradient bucket: at most 2e8 elements (DeepSpeed's default is 5e8; LoRA gradients are reduced once a step, so a
# smaller bucket costs a few more collectives, not time); small parameters kept whole below DeepSpeed's default 1e5
DS_REDUCE_BUCKET_CAP = 200_000_000
DS_PERSISTENCE_THRESHOLD = 100_000


def zero_buffers(a: ArchConfig, counts: dict[str, int], lora: int, stage: int) -> dict[str, int]:
    """Every DeepSpeed ZeRO buffer size the memory plan relies on, in elements, for workers/train/trainer.py's DeepSpeed
    config (DeepSpeed's defaults would hold far more: 1e9 live parameters, 5e8-element buckets). ZeRO-3: at most two
    layers (or the embeddings) gathered at once, the next one prefetched, small parameters (the norms) kept whole up
    to their count; every stage: one gradient bucket of at most the trainable LoRA (`lora`: a pack's K adapters)."""
    bucket = max(1, min(DS_REDUCE_BUCKET_CAP, lora))
    out = {"reduce_bucket_size": bucket, "allgather_bucket_size": bucket}
    if stage == 3:
        unit = max(counts["layer"], counts["embeddings"])
        norms = a.num_layers * (2 * a.hidden_size + 2 * a.head_dim) + a.hidden_size
        out |= {"stage3_max_live_parameters": 2 * unit, "stage3_max_reuse_distance": 2 * unit,
                "stage3_prefetch_bucket_size": unit, "stage3_param_persistence_threshold": DS_PERSISTENCE_THRESHOLD,
                "stage3_model_persistence_threshold": norms}
    return out


def zero_buffer_bytes(buffers: dict[str, int], wbytes: int, stage: int) -> float:
    """Bytes per GPU of the buffers outside the other terms: the gradient bucket (DeepSpeed's flat IPG buffer), and at
    ZeRO-3 the persisted small parameters (the gathered layers are zero3_gathered_layers)."""
    held = buffers["reduce_bucket_size"] * wbytes
    return held + (buffers["stage3_model_persistence_threshold"] * wbytes if stage == 3 else 0)


def expert_materialization_bytes(cfg: Config, a: ArchConfig, members: int = 1) -> float:
    """A trial alone (`members` 1): PEFT's ParamWrapper (target_parameters) folds LoRA into a 3-D expert weight as a
    parametrization: each forward computes W + s*B@A for the whole expert stack (one baddbmm, peft/tuners/lora/
    layer.py _LoraFactorsProxy), a new tensor of the weight's size, held for backward, whose gradient is as large
    again. With checkpointing one layer is live at a time: one folded copy + one gradient of one layer's targeted
    expert weights per GPU (ZeRO-3 gathers the layer whole); without it every layer keeps its folded copy.
    A pack (`members` K > 1, workers/train/packed_experts.py) folds nothing: it adds each member's low-rank term
    s * (x A_e^T) B_e^T to its own routed tokens, r values per routed token more than the base experts' activations."""
    m = cfg.model
    if not (m.lora_experts and a.num_experts) or members > 1:
        return 0.0
    layer = sum(a.num_experts * math.prod(EXPERT_SHAPES[p.rsplit(".", 1)[-1]](a)) for p in m.lora_expert_parameters)
    copies = 2 if m.gradient_checkpointing else a.num_layers + 1
    return copies * layer * DTYPE_BYTES[m.dtype]


def trained_lora_params(cfg: Config, a: ArchConfig) -> int:
    m = cfg.model
    experts = list(m.lora_expert_parameters) if m.lora_experts and a.num_experts else []
    return lora_params(a, list(m.lora_target_modules), experts, cfg.train.lora_rank)["total"]


def trials_that_fit(per_node: int, nodes: int, trial_gpus: int, sampler_gpus: int) -> int:
    """Trials placed at once: the sampler takes the first node's first GPUs; a trial stays inside one node,
    or takes whole free nodes when it needs more than one."""
    free = [per_node - sampler_gpus] + [per_node] * (nodes - 1)
    if trial_gpus <= per_node:
        return sum(max(f, 0) // trial_gpus for f in free)
    return sum(1 for f in free if f == per_node) // (trial_gpus // per_node)
