"""The plan's vLLM sampler: tensor-parallel size, memory share, LoRA slots and flags (orchestrator/plan/planner.py
calls it).

Each `sample.engine` field is the user's value when one is set, checked here against the same arithmetic, else the
plan's. What a LoRA slot costs follows vLLM 0.32's buffers: per attention/lm_head linear r x (in + out) (split over
the TP ranks with fully_sharded_loras), and per MoE layer FusedMoEWithLoRA's stacks (vllm/lora/layers/fused_moe.py;
mixed MoE format, which PEFT's fused 3-D adapters need): gate's and up's lora_A apart (2 x E x r x H), gate_up's
lora_B (E x 2I x r), down's lora_A (E x r x I) and lora_B (E x H x r).
"""

from __future__ import annotations

import math
from typing import Any

from orchestrator.plan.model import DTYPE_BYTES, GIB, Plan, PlanError, gib, linear_shape, lora_params
from orchestrator.schema import Config, ConfigError, is_auto
from workers.models.config import ArchConfig
from workers.sample.config import VLLM_LORA_RANKS


def slot_bytes_per_gpu(cfg: Config, a: ArchConfig, rank: int, tp: int, fully_sharded: bool) -> dict[str, float]:
    """One vLLM LoRA slot's buffers on one of `tp` GPUs, at max_lora_rank `rank`."""
    m, wbytes = cfg.model, DTYPE_BYTES[cfg.model.dtype]
    per_layer = sum(rank * sum(linear_shape(a, n)) for n in m.lora_target_modules if n != "lm_head")
    head = rank * sum(linear_shape(a, "lm_head")) if "lm_head" in m.lora_target_modules else 0
    linear_total = per_layer * a.num_layers + head
    out = {"linear": linear_total * wbytes / (tp if fully_sharded else 1), "experts": 0.0}
    if m.lora_experts and a.num_experts:
        h, inter, e = a.hidden_size, a.moe_intermediate_size, a.num_experts
        sharded_h = h / tp if fully_sharded else h  # gate/up lora_A, down lora_B: split only when fully sharded
        per_layer_elems = e * rank * (3 * sharded_h + 3 * inter / tp)  # the intermediate dim is always TP-split
        out["experts"] = per_layer_elems * a.num_layers * wbytes
    out["total"] = out["linear"] + out["experts"]
    return out


def _kv(cfg: Config, a: ArchConfig, counts: dict[str, int], tp: int, util: float, loras: int, rank: int,
        fully: bool, seq_tokens: int) -> dict[str, Any]:
    wbytes, p = DTYPE_BYTES[cfg.model.dtype], cfg.plan
    weights = counts["total"] * wbytes / tp
    slot = slot_bytes_per_gpu(cfg, a, rank, tp, fully)
    kv_token = 2 * a.num_layers * max(1, a.num_kv_heads // tp) * a.head_dim * wbytes
    room = util * cfg.cluster.gpu_memory_gib * GIB - weights - loras * slot["total"] - p.sampler_overhead_gib * GIB
    seqs = int(room // (kv_token * seq_tokens)) if room > 0 else 0
    return {"tp": tp, "util": util, "weights": weights, "slot": slot, "kv_token": kv_token, "room": room, "seqs": seqs}


def awake_bytes(cfg: Config, a: ArchConfig, counts: dict[str, int], loras: int) -> float:
    """The least an awake engine needs per GPU: at the widest TP a node allows (the weights split most), its LoRA
    slots, overhead and one sequence's KV cache. Sharing trainers must leave at least this between steps."""
    per_node, wbytes = cfg.cluster.gpus_per_node, DTYPE_BYTES[cfg.model.dtype]
    tp = max(t for t in range(1, per_node + 1) if per_node % t == 0 and a.num_heads % t == 0)
    rank = next((r for r in VLLM_LORA_RANKS if r >= cfg.train.lora_rank), VLLM_LORA_RANKS[-1])
    slot = slot_bytes_per_gpu(cfg, a, rank, tp, tp > 1 and rank % tp == 0)["total"]
    kv = 2 * a.num_layers * max(1, a.num_kv_heads // tp) * a.head_dim * wbytes * cfg.plan.sampler_prompt_tokens
    return counts["total"] * wbytes / tp + loras * slot + cfg.plan.sampler_overhead_gib * GIB + kv


def _adapter_slots(cfg: Config, a: ArchConfig, plan: Plan) -> tuple[int, bool]:
    """(max_lora_rank, whether expert LoRA is served): vLLM's LoRA slot shape, recorded in the plan."""
    m, e, sec = cfg.model, cfg.sample.engine, "sampler"
    experts_trained = bool(m.lora_experts and a.num_experts)
    if is_auto(e.max_lora_rank):
        rank = next((r for r in VLLM_LORA_RANKS if r >= cfg.train.lora_rank), None)
        if rank is None:
            raise PlanError(f"train.lora_rank={cfg.train.lora_rank} exceeds vLLM's largest max_lora_rank "
                            f"{VLLM_LORA_RANKS[-1]}: lower train.lora_rank")
        plan.put(sec, "max_lora_rank", rank, f"smallest of vLLM's {list(VLLM_LORA_RANKS)} >= train.lora_rank")
    else:
        rank = plan.put(sec, "max_lora_rank", e.max_lora_rank, text=f"{e.max_lora_rank} (sample.engine.max_lora_rank)")
    if not is_auto(e.moe_lora_3d) and experts_trained and not e.moe_lora_3d:
        raise ConfigError("sample.engine.moe_lora_3d=false but model.lora_experts=true: vLLM 0.32 refuses PEFT's "
                          "fused 3-D expert adapters without enable_mixed_moe_lora_format; set "
                          "sample.engine.moe_lora_3d=auto (or true), or model.lora_experts=false")
    moe3d = experts_trained if is_auto(e.moe_lora_3d) else bool(e.moe_lora_3d)
    plan.put(sec, "moe_lora_3d", moe3d, text=f"{moe3d} (vLLM enable_mixed_moe_lora_format; "
             + ("PEFT's fused 3-D expert adapters)" if experts_trained else "no expert LoRA)"))
    targets = list(m.lora_target_modules) + (["experts"] if experts_trained else [])
    plan.put(sec, "lora_target_modules", targets, text=f"{targets} (vLLM allocates LoRA slots only for these)")
    return rank, experts_trained


def _cpu_sampler(cfg: Config, counts: dict[str, int], plan: Plan, n_prompts: int) -> dict[str, Any]:
    """CPU: vLLM's CPU build sizes its KV cache from VLLM_CPU_KVCACHE_SPACE; nothing to fit here."""
    e, p, sec = cfg.sample.engine, cfg.plan, "sampler"
    tp = 1 if is_auto(e.tensor_parallel_size) else e.tensor_parallel_size
    util = p.cpu_gpu_memory_utilization if is_auto(e.gpu_memory_utilization) else e.gpu_memory_utilization
    fully = tp > 1 if is_auto(e.fully_sharded_loras) else e.fully_sharded_loras
    plan.put(sec, "dedicated_gpus", False, text="False (CPU: no GPUs to hold)")
    plan.put(sec, "tensor_parallel_size", tp, text=f"{tp} (CPU)")
    plan.put(sec, "gpu_memory_utilization", util, text=f"{util:g} (CPU: a share of RAM; plan.cpu_gpu_memory_"
             "utilization unless set)")
    plan.put(sec, "fully_sharded_loras", fully)
    weights = counts["total"] * DTYPE_BYTES[cfg.model.dtype] / tp
    return {"tp": tp, "kv_seqs": n_prompts, "weights_per_gpu": weights, "dedicated": False}


def _where(cfg: Config, dedicated: bool, room: float | None) -> str:
    """Where the sampler was to fit, for the refusal."""
    gpu = cfg.cluster.gpu_memory_gib
    if dedicated:
        return f"one node of {cfg.cluster.gpus_per_node} x {gpu:g} GiB"
    return f"a share of a {gpu:g} GiB GPU beside the trainers" + (
        f" (awake, at most {gib(room)} left by what they hold between steps)" if room is not None else "")


def _candidates(cfg: Config, a: ArchConfig, dedicated: bool, room: float | None) -> tuple[list[int], list[float]]:
    """The tensor-parallel sizes and memory shares the sampler may take, smallest first (explicit values: those
    alone); refuses a sampler that cannot wake beside the trainers."""
    e, p, per_node = cfg.sample.engine, cfg.plan, cfg.cluster.gpus_per_node
    if not is_auto(e.tensor_parallel_size):
        tp = e.tensor_parallel_size
        if tp > per_node or a.num_heads % tp:
            raise ConfigError(f"sample.engine.tensor_parallel_size={tp}: one engine spans one node of {per_node} GPUs "
                              f"and vLLM needs it to divide the {a.num_heads} attention heads; set it to auto")
        sizes = [tp]
    else:
        sizes = [t for t in range(1, per_node + 1) if per_node % t == 0 and a.num_heads % t == 0]
    if not is_auto(e.gpu_memory_utilization):
        utils = [float(e.gpu_memory_utilization)]
    elif dedicated:
        utils = [p.sampler_gpu_memory_utilization]
    else:
        utils = [round(0.05 * i, 2) for i in range(1, 19)]  # 0.05 .. 0.9
    if room is not None:
        utils = [u for u in utils if u * cfg.cluster.gpu_memory_gib * GIB <= room]
        if not utils:
            held = gib(cfg.cluster.gpu_memory_gib * GIB - room)
            raise PlanError(f"the sampler cannot wake beside the trainers: they hold {held} per GPU between steps, "
                            "leaving less than 5% of a GPU")
    return sizes, utils


def plan_sampler(cfg: Config, a: ArchConfig, counts: dict[str, int], loras_bound: int, plan: Plan,
                 dedicated: bool, room: float | None = None) -> dict[str, Any]:
    """vLLM's shape. On its own GPUs (`dedicated`): the smallest tensor-parallel size (inside a node; fused-MoE LoRA
    has no expert parallelism in vLLM 0.32 with fully_sharded_loras) whose KV cache holds one checkpoint's prompts
    at plan.sampler_gpu_memory_utilization. Sharing the trainers' GPUs: the smallest share (steps of 0.05) that
    does, so the trainers keep the rest; awake beside sleeping-mode trainers, at most `room` bytes of each GPU (what
    the trainers do not hold between steps)."""
    m, sa, e, p, sec = cfg.model, cfg.sample, cfg.sample.engine, cfg.plan, "sampler"
    per_node = cfg.cluster.gpus_per_node
    rank, experts_trained = _adapter_slots(cfg, a, plan)
    loras = loras_bound if is_auto(e.max_loras) else e.max_loras
    n_prompts = sa.n_eval_prompts + sa.n_train_prompts
    seq_tokens = min(m.max_model_len, p.sampler_prompt_tokens + sa.max_new_tokens)
    if per_node == 0:
        return _cpu_sampler(cfg, counts, plan, n_prompts)
    plan.put(sec, "dedicated_gpus", dedicated, text=f"{dedicated} (" + ("GPUs of its own, tensor_parallel_size of "
             "them)" if dedicated else "shares the trainers' GPUs, gpu_memory_utilization of each)"))
    explicit_tp = not is_auto(e.tensor_parallel_size)
    sizes, utils = _candidates(cfg, a, dedicated, room)
    # fully sharded LoRA splits lora_A's rank dimension over the TP ranks (vLLM divides max_lora_rank by TP)
    fully_of = lambda tp: tp > 1 and rank % tp == 0 if is_auto(e.fully_sharded_loras) else bool(  # noqa: E731
        e.fully_sharded_loras)
    if not is_auto(e.fully_sharded_loras) and e.fully_sharded_loras and explicit_tp and rank % sizes[0]:
        raise ConfigError(f"sample.engine.fully_sharded_loras=true needs max_lora_rank ({rank}) divisible by "
                          f"tensor_parallel_size ({sizes[0]}): set sample.engine.fully_sharded_loras=auto")
    tried, pick = [], None
    for tp in sizes:
        shapes = [_kv(cfg, a, counts, tp, u, loras, rank, fully_of(tp), seq_tokens) for u in utils]
        best = next((s for s in shapes if s["seqs"] >= n_prompts), None)
        tried.append(f"TP{tp}: {shapes[-1]['seqs']} sequences at {utils[-1]:g}")
        if best is not None:
            pick = best
            break
        if tp == sizes[-1] and shapes[-1]["seqs"] >= 1:  # the widest engine holds some: prompts run in waves
            pick = shapes[-1]
    if pick is None:
        fixes = ["lower sample.max_new_tokens or model.max_model_len"]
        if experts_trained:
            fixes.append("set model.lora_experts=false")
        if not is_auto(e.max_loras):
            fixes.insert(0, f"lower sample.engine.max_loras={e.max_loras} (or set it to auto)")
        if explicit_tp or not is_auto(e.gpu_memory_utilization):
            fixes.insert(0, "set sample.engine.tensor_parallel_size=auto and sample.engine.gpu_memory_utilization=auto")
        raise PlanError(f"the sampler does not fit {_where(cfg, dedicated, room)}: {', '.join(tried)} of {seq_tokens} "
                        f"tokens with {loras} LoRA slots at rank {rank}. To fix: " + "; or ".join(fixes))
    return _record(cfg, a, counts, plan, pick, loras, rank, n_prompts, seq_tokens, dedicated, explicit_tp)


def _record(cfg: Config, a: ArchConfig, counts: dict[str, int], plan: Plan, s: dict[str, Any], loras: int, rank: int,
            n_prompts: int, seq_tokens: int, dedicated: bool, explicit_tp: bool) -> dict[str, Any]:
    e, p, sec, per_node = cfg.sample.engine, cfg.plan, "sampler", cfg.cluster.gpus_per_node
    wbytes = DTYPE_BYTES[cfg.model.dtype]
    tp, util = s["tp"], s["util"]
    plan.put(sec, "tensor_parallel_size", tp, "sample.engine.tensor_parallel_size" if explicit_tp else
             f"smallest TP (divides {per_node} GPUs and {a.num_heads} heads) whose KV cache holds {n_prompts} prompts "
             f"x {seq_tokens} tokens, else a full node")
    plan.put(sec, "gpu_memory_utilization", util, "sample.engine.gpu_memory_utilization"
             if not is_auto(e.gpu_memory_utilization) else "plan.sampler_gpu_memory_utilization" if dedicated
             else "smallest share (steps of 0.05) whose KV cache holds a checkpoint's prompts")
    plan.put(sec, "weights_per_gpu_gib", round(s["weights"] / GIB, 2), f"{counts['total'] / 1e9:.2f}B x {wbytes} B "
             f"/ {tp}", gib(s["weights"]))
    experts = list(cfg.model.lora_expert_parameters) if cfg.model.lora_experts and a.num_experts else []
    adapter = lora_params(a, list(cfg.model.lora_target_modules), experts, rank)["total"] * wbytes
    plan.put(sec, "lora_slot_gib", round(adapter / GIB, 3), f"adapter at rank {rank} x {wbytes} B", gib(adapter))
    fully = tp > 1 and rank % tp == 0 if is_auto(e.fully_sharded_loras) else bool(e.fully_sharded_loras)
    plan.put(sec, "fully_sharded_loras", fully, text=f"{fully} (" + ("sample.engine.fully_sharded_loras)" if not
             is_auto(e.fully_sharded_loras) else "both LoRA factors split over the TP ranks)" if fully else
             "one GPU, or max_lora_rank not divisible by TP)"))
    slot = s["slot"]
    plan.put(sec, "vllm_slot_per_gpu_gib", round(slot["total"] / GIB, 3), "linear LoRA buffers "
             f"{gib(slot['linear'])} + MoE LoRA stacks {gib(slot['experts'])} (mixed format: gate and up lora_A apart)",
             gib(slot["total"]))
    plan.put(sec, "lora_slots_per_gpu_gib", round(loras * slot["total"] / GIB, 3), f"{loras} slots x vLLM slot per "
             "GPU", gib(loras * slot["total"]))
    plan.put(sec, "kv_bytes_per_token_per_gpu", s["kv_token"],
             f"2 x {a.num_layers} layers x {max(1, a.num_kv_heads // tp)} kv heads x {a.head_dim} x {wbytes} B")
    plan.put(sec, "kv_cache_gib", round(max(s["room"], 0) / GIB, 2), f"{util:g} x {cfg.cluster.gpu_memory_gib:g} GiB "
             f"- weights - LoRA slots - {p.sampler_overhead_gib:g} GiB overhead", gib(max(s["room"], 0)))
    plan.put(sec, "kv_cache_sequences", s["seqs"], f"KV cache / ({s['kv_token']} B x {seq_tokens} tokens)")
    if s["seqs"] < n_prompts:
        plan.note(sec, f"note: a checkpoint's {n_prompts} prompts run in {math.ceil(n_prompts / s['seqs'])} waves")
    return {"tp": tp, "kv_seqs": s["seqs"], "weights_per_gpu": s["weights"], "dedicated": dedicated, "util": util}
