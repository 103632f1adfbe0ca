"""The resource plan of a sweep, from its config alone, before any allocation: pure arithmetic.

    python -m orchestrator plan model=qwen3_235b_a22b cluster=slurm [--json]

What it decides, and what reads it: GPUs (= trainer workers) per trial and the ZeRO stage (the trainer,
`train.zero_stage: auto`), the micro-batch per GPU, the vLLM sampler's shape (tensor parallel size, LoRA
slots, max_lora_rank), how many trials run at once, and the sweep's wall time and GPU-hours.

Every number is recorded with the formula that produced it (`Plan.lines`), so the printed plan can be
checked by hand. Units: bytes, seconds; GiB and hours only in the printed text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from orchestrator.schema import ArchConfig, Config, ConfigError

GIB = 1024**3
# the values vLLM 0.32 accepts for LoRAConfig.max_lora_rank (vllm/config/lora.py, MaxLoRARanks)
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
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
    """(in, out) of a LoRA-targetable nn.Linear by its suffix."""
    q, kv, h = a.num_heads * a.head_dim, a.num_kv_heads * a.head_dim, a.hidden_size
    shapes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h)}
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
    attn = sum(rank * sum(linear_shape(a, m)) for m in modules) * a.num_layers
    experts = 0
    for p in expert_params:
        kind = p.rsplit(".", 1)[-1]
        if kind not in EXPERT_SHAPES:
            raise PlanError(f"model.lora_expert_parameters holds {p!r}: the planner knows {sorted(EXPERT_SHAPES)}")
        experts += rank * a.num_experts * sum(EXPERT_SHAPES[kind](a)) * a.num_layers
    return {"attention": attn, "experts": experts, "total": attn + experts}


def activation_bytes(a: ArchConfig, seqs: int, seq_len: int, wbytes: int, checkpointing: bool,
                     loss_chunk_tokens: int | None = None) -> dict[str, float]:
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
    # chunk of answer tokens at a time (answer_chunks)
    scored = tokens if loss_chunk_tokens is None else min(tokens, loss_chunk_tokens)
    logits = scored * a.vocab_size * (wbytes + 4 + 4)
    return {"layer_working_set": layer, "layers": kept, "logits": logits}


def train_memory(cfg: Config, a: ArchConfig, counts: dict[str, int], lora: int, gpus: int, stage: int,
                 micro: int) -> dict[str, float]:
    """Bytes per training GPU for a ZeRO `stage` LoRA trial over `gpus` GPUs."""
    wbytes = DTYPE_BYTES[cfg.model.dtype]
    shard = lambda s: gpus if stage >= s else 1  # noqa: E731 - ZeRO-1 shards optimizer, -2 grads, -3 params
    master = 4 if wbytes == 2 else 0  # fp32 master copy of 16-bit LoRA weights
    mem = {"base_weights": counts["total"] * wbytes / shard(3),
           "lora_weights_and_grads": lora * wbytes / shard(3) + lora * wbytes / shard(2),
           "lora_fp32_master_and_adam": lora * (master + 8) / shard(1)}
    # ZeRO-3 gathers a whole leaf module (a sparse-MoE block with all its experts) at once: the live layer
    # plus the prefetched next one
    mem["zero3_gathered_layers"] = 2 * max(counts["layer"], counts["embeddings"]) * wbytes if stage == 3 else 0
    chunk = cfg.train.loss_chunk_tokens if cfg.train.loss == "answer_chunks" else None
    act = activation_bytes(a, micro, cfg.model.max_model_len, wbytes, cfg.model.gradient_checkpointing, chunk)
    mem["activations"], mem["logits"] = act["layers"], act["logits"]
    mem["total"] = sum(mem.values()) * cfg.plan.fragmentation + cfg.plan.overhead_gib * GIB
    return mem


def colocated(cfg: Config) -> bool:
    """On one local machine the sampler shares the GPUs with the trainers (sample.engine.gpu_memory_utilization
    of each); on a cluster it has GPUs of its own."""
    return cfg.cluster.kind == "local"


def gpu_counts(cfg: Config) -> list[int]:
    """GPUs a trial may take: divisors of a node, then whole nodes (a trainer never splits a node oddly)."""
    per_node, nodes = cfg.cluster.gpus_per_node, cfg.cluster.nodes
    inside = [g for g in range(1, per_node + 1) if per_node % g == 0]
    return inside + [per_node * n for n in range(2, nodes + 1)]


def plan_trainer(cfg: Config, a: ArchConfig, counts: dict[str, int], lora: int, plan: Plan) -> dict[str, Any]:
    """The fewest GPUs per trial that fit, and the ZeRO stage: 0 (replicated) when the model fits one GPU,
    else 3 (bf16 weights sharded); ZeRO-3 on a model that fits only adds all-gathers."""
    tr, cl, sec = cfg.train, cfg.cluster, "trainer"
    requested, workers = str(tr.zero_stage), tr.num_workers
    if cl.gpus_per_node == 0:  # CPU (the toy): no accelerator memory to fit; one process per worker
        stage = 0 if requested == "auto" else int(requested)
        tries = [(workers, stage)]
    elif requested == "auto":
        tries = [(workers, 0)] + [(g, 3) for g in gpu_counts(cfg) if g >= max(2, workers)]
    else:
        tries = [(g, int(requested)) for g in gpu_counts(cfg) if g >= workers]
    limit = cl.gpu_memory_gib * GIB * (1 - cfg.sample.engine.gpu_memory_utilization if colocated(cfg) else 1)
    smallest: tuple[float, int, int] | None = None
    for gpus, stage in tries:
        if gpus > tr.batch_size or tr.batch_size % gpus:
            continue
        per_rank = tr.batch_size // gpus
        for micro in sorted((d for d in range(1, min(tr.micro_batch_size, per_rank) + 1) if per_rank % d == 0),
                            reverse=True):
            mem = train_memory(cfg, a, counts, lora, gpus, stage, micro)
            if cl.gpus_per_node == 0 or mem["total"] <= limit:
                return _record_trainer(cfg, plan, sec, gpus, stage, micro, per_rank // micro, mem)
            if smallest is None or mem["total"] < smallest[0]:
                smallest = (mem["total"], gpus, stage)
    if smallest is None:
        raise PlanError(f"train.batch_size={tr.batch_size} cannot be split over the {[g for g, _ in tries]} GPUs a "
                        "trial could take: use a batch size that a GPU count divides, or lower train.num_workers")
    total, gpus, stage = smallest
    fixes = ["add nodes (cluster.nodes)", "use GPUs with more memory (cluster.gpu_memory_gib)",
             "shorten model.max_model_len"]
    if stage < 3:
        fixes.insert(0, "set train.zero_stage=auto (or 3) to shard the weights")
    if not cfg.model.gradient_checkpointing:
        fixes.append("set model.gradient_checkpointing=true")
    if cfg.model.lora_experts:
        fixes.append("set model.lora_experts=false")
    room = (f"{limit / GIB:.1f} GiB left beside vLLM (sample.engine.gpu_memory_utilization)" if colocated(cfg)
            else f"cluster.gpu_memory_gib={cl.gpu_memory_gib:g}")
    raise PlanError(f"model {cfg.model.name} does not fit: at best {total / GIB:.1f} GiB per GPU (ZeRO-{stage} over "
                    f"{gpus} GPUs, micro-batch 1) > {room}. To fix: " + "; or ".join(fixes))


def _record_trainer(cfg: Config, plan: Plan, sec: str, gpus: int, stage: int, micro: int, accum: int,
                    mem: dict[str, float]) -> dict[str, Any]:
    plan.put(sec, "gpus_per_trial", gpus, text=f"{gpus} (= trainer workers per trial, one per GPU)")
    plan.put(sec, "zero_stage", stage, text=f"{stage}" + (" (weights sharded)" if stage == 3 else " (replicated)"))
    plan.put(sec, "micro_batch_per_gpu", micro, f"largest divisor of batch {cfg.train.batch_size}/{gpus} GPUs that "
             f"fits and is <= train.micro_batch_size={cfg.train.micro_batch_size}")
    plan.put(sec, "grad_accum_steps", accum, f"{cfg.train.batch_size} / ({gpus} x {micro})")
    for key in ("base_weights", "lora_weights_and_grads", "lora_fp32_master_and_adam", "zero3_gathered_layers",
                "activations", "logits"):
        plan.put(sec, f"{key}_gib", round(mem[key] / GIB, 3), text=gib(mem[key]))
    plan.put(sec, "memory_per_gpu_gib", round(mem["total"] / GIB, 2),
             f"sum x fragmentation {cfg.plan.fragmentation:g} + overhead {cfg.plan.overhead_gib:g} GiB",
             gib(mem["total"]) + (f" of {cfg.cluster.gpu_memory_gib:g} GiB" if cfg.cluster.gpus_per_node else
                                  " (CPU: RAM per trainer process, not checked)"))
    return {"gpus": gpus, "stage": stage, "micro": micro, "accum": accum}


def plan_sampler(cfg: Config, a: ArchConfig, counts: dict[str, int], loras_bound: int, plan: Plan) -> dict[str, Any]:
    """vLLM's shape: the smallest tensor-parallel size (inside a node; vLLM's fused-MoE LoRA has no expert
    parallelism) whose KV cache holds one checkpoint's prompts after the weights and LoRA slots."""
    m, sa, p, sec = cfg.model, cfg.sample, cfg.plan, "sampler"
    wbytes = DTYPE_BYTES[m.dtype]
    rank = next((r for r in VLLM_LORA_RANKS if r >= cfg.train.lora_rank), None)
    if rank is None:
        raise PlanError(f"train.lora_rank={cfg.train.lora_rank} exceeds vLLM's largest max_lora_rank "
                        f"{VLLM_LORA_RANKS[-1]}: lower train.lora_rank")
    experts = list(m.lora_expert_parameters) if m.lora_experts else []
    slot = lora_params(a, list(m.lora_target_modules), experts, rank)["total"] * wbytes
    n_prompts = sa.n_eval_prompts + sa.n_train_prompts
    seq_tokens = min(m.max_model_len, p.sampler_prompt_tokens + sa.max_new_tokens)
    per_node = cfg.cluster.gpus_per_node
    plan.put(sec, "max_lora_rank", rank, f"smallest of vLLM's {list(VLLM_LORA_RANKS)} >= train.lora_rank")
    plan.put(sec, "lora_target_modules", list(m.lora_target_modules) + (["experts"] if experts else []),
             text=f"{list(m.lora_target_modules) + (['experts'] if experts else [])} (vLLM allocates LoRA slots "
             "only for these)")
    if per_node == 0:
        tp = sa.engine.tensor_parallel_size
        plan.put(sec, "tensor_parallel_size", tp, text=f"{tp} (CPU: sample.engine.tensor_parallel_size)")
        return {"tp": tp, "kv_seqs": n_prompts, "weights_per_gpu": counts["total"] * wbytes / tp}
    util = sa.engine.gpu_memory_utilization if colocated(cfg) else p.sampler_gpu_memory_utilization
    budget = util * cfg.cluster.gpu_memory_gib * GIB
    sizes = [t for t in range(1, per_node + 1) if per_node % t == 0 and a.num_heads % t == 0]
    if colocated(cfg):
        sizes = [sa.engine.tensor_parallel_size]
    tried = []
    for tp in sizes:
        weights = counts["total"] * wbytes / tp
        share = 1 / tp if tp > 1 else 1.0  # fully_sharded_loras on: A and B both split over the TP ranks
        slots = loras_bound * slot * share
        kv_token = 2 * a.num_layers * max(1, a.num_kv_heads // tp) * a.head_dim * wbytes
        room = budget - weights - slots - p.sampler_overhead_gib * GIB
        seqs = int(room // (kv_token * seq_tokens)) if room > 0 else 0
        tried.append(f"TP{tp}: {seqs} sequences")
        if seqs >= n_prompts or (tp == sizes[-1] and seqs >= 1):
            break
    else:
        where = (f"sample.engine.gpu_memory_utilization={util:g} of a {cfg.cluster.gpu_memory_gib:g} GiB GPU at "
                 f"tensor_parallel_size={sizes[0]} (raise it, or run on a cluster where the sampler has its own "
                 "GPUs)" if colocated(cfg) else f"one node of {per_node} x {cfg.cluster.gpu_memory_gib:g} GiB "
                 "(use bigger GPUs)")
        raise PlanError(f"the sampler does not fit {where}: {', '.join(tried)} of {seq_tokens} tokens; lowering "
                        "sample.max_new_tokens or model.max_model_len, or model.lora_experts=false, also helps")
    plan.put(sec, "tensor_parallel_size", tp, f"sample.engine.tensor_parallel_size, sharing the trainers' GPUs "
             f"({util:g} of each)" if colocated(cfg) else f"smallest TP (divides {per_node} GPUs and {a.num_heads} "
             f"heads) whose KV cache holds {n_prompts} prompts x {seq_tokens} tokens, else a full node")
    plan.put(sec, "weights_per_gpu_gib", round(weights / GIB, 2), f"{counts['total'] / 1e9:.2f}B x {wbytes} B / {tp}",
             gib(weights))
    plan.put(sec, "lora_slot_gib", round(slot / GIB, 3), f"adapter at rank {rank} x {wbytes} B", gib(slot))
    plan.put(sec, "fully_sharded_loras", tp > 1, text="True (both LoRA factors split over the TP ranks)" if tp > 1
             else "False (one GPU: nothing to shard)")
    plan.put(sec, "lora_slots_per_gpu_gib", round(slots / GIB, 3), f"{loras_bound} slots x slot / {tp}", gib(slots))
    plan.put(sec, "kv_bytes_per_token_per_gpu", kv_token,
             f"2 x {a.num_layers} layers x {max(1, a.num_kv_heads // tp)} kv heads x {a.head_dim} x {wbytes} B")
    plan.put(sec, "kv_cache_gib", round(max(room, 0) / GIB, 2), f"{util:g} x "
             f"{cfg.cluster.gpu_memory_gib:g} GiB - weights - LoRA slots - {p.sampler_overhead_gib:g} GiB overhead",
             gib(max(room, 0)))
    plan.put(sec, "kv_cache_sequences", seqs, f"KV cache / ({kv_token} B x {seq_tokens} tokens)")
    if seqs < n_prompts:
        plan.note(sec, f"note: a checkpoint's {n_prompts} prompts run in {math.ceil(n_prompts / seqs)} waves")
    return {"tp": tp, "kv_seqs": seqs, "weights_per_gpu": weights}


def make_plan(cfg: Config) -> Plan:
    """The whole plan; raises PlanError (naming the fix) when the sweep does not fit the cluster."""
    from orchestrator.plan_time import plan_placement, plan_time

    plan = Plan()
    a, m, sec = arch_of(cfg), cfg.model, "model"
    counts = param_counts(a)
    plan.put(sec, "name", m.name)
    plan.put(sec, "total_params", counts["total"], f"{a.num_layers} layers x {counts['layer'] / 1e9:.4g}B + "
             f"embeddings {counts['embeddings'] / 1e9:.4g}B", f"{counts['total'] / 1e9:.4g}B"
             + (f" (published {a.total_params_b:g}B)" if a.total_params_b else ""))
    plan.put(sec, "active_params", counts["active"], f"per layer attention + router + {a.experts_per_token or 1} "
             "expert MLP(s), + embeddings", f"{counts['active'] / 1e9:.4g}B"
             + (f" (published {a.active_params_b:g}B)" if a.active_params_b else ""))
    rank, experts = cfg.train.lora_rank, list(m.lora_expert_parameters)
    sizes = lora_params(a, list(m.lora_target_modules), experts if a.num_experts else [], rank)
    wbytes = DTYPE_BYTES[m.dtype]
    plan.put("lora", "attention_only_params_m", round(sizes["attention"] / 1e6, 2),
             f"rank {rank} x sum(in+out) of {list(m.lora_target_modules)} x {a.num_layers} layers",
             f"{sizes['attention'] / 1e6:.2f}M ({sizes['attention'] * wbytes / 1e6:.1f} MB in {m.dtype})")
    if a.num_experts and experts:
        plan.put("lora", "attention_and_experts_params_m", round(sizes["total"] / 1e6, 2),
                 f"+ rank {rank} x {a.num_experts} experts x sum(in+out) of {experts} x {a.num_layers} layers",
                 f"{sizes['total'] / 1e6:.2f}M ({sizes['total'] * wbytes / 1e9:.2f} GB, "
                 f"{sizes['total'] / sizes['attention']:.0f}x attention-only)")
    lora = trained_lora_params(cfg, a)
    plan.put("lora", "trained", "attention + experts" if m.lora_experts else "attention only",
             text=("attention + experts" if m.lora_experts else "attention only") + " (model.lora_experts)")
    trainer = plan_trainer(cfg, a, counts, lora, plan)
    bound = min(len(cfg.sweep.lrs) * len(cfg.sweep.seeds), cfg.sweep.max_concurrent_trials)
    sampler = plan_sampler(cfg, a, counts, bound, plan)
    at_once = plan_placement(cfg, trainer, sampler, plan)
    plan_time(cfg, a, counts, lora, trainer, sampler, at_once, plan)
    return plan


def trained_lora_params(cfg: Config, a: ArchConfig) -> int:
    m = cfg.model
    experts = list(m.lora_expert_parameters) if m.lora_experts and a.num_experts else []
    return lora_params(a, list(m.lora_target_modules), experts, cfg.train.lora_rank)["total"]


def trainer_shape(cfg: Config) -> dict[str, Any]:
    """What the trainer needs from the plan: {"gpus", "stage", "micro", "accum"} (a PlanError when it cannot fit)."""
    a = arch_of(cfg)
    return plan_trainer(cfg, a, param_counts(a), trained_lora_params(cfg, a), Plan())


def resolve_zero_stage(cfg: Config) -> int:
    """train.zero_stage as an int: explicit values as given, `auto` from the plan."""
    if str(cfg.train.zero_stage) != "auto":
        return int(cfg.train.zero_stage)
    return int(trainer_shape(cfg)["stage"])
