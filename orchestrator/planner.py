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

from orchestrator.schema import VLLM_LORA_RANKS, ArchConfig, Config, ConfigError, is_auto

GIB = 1024**3
__all__ = ["VLLM_LORA_RANKS", "make_plan", "trainer_shape", "resolve_zero_stage", "train_memory"]
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


def train_memory(cfg: Config, a: ArchConfig, counts: dict[str, int], lora: int, shape: Any) -> dict[str, float]:
    """Bytes per training GPU for `shape` (orchestrator/plan_fit.py Shape): a ZeRO `stage` LoRA trial, or a pack of
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
                           shape.chunk)
    mem["activations"], mem["logits"] = act["layers"], act["logits"]
    mem["expert_lora_materialized"] = expert_materialization_bytes(cfg, a, k)
    p = cfg.plan
    mem["total"] = sum(mem.values()) * p.fragmentation + p.overhead_gib * GIB
    held = ("base_weights", "hpz_secondary_weights", "lora_weights_and_grads", "lora_fp32_master_and_adam")
    mem["resident"] = sum(mem[key] for key in held) * p.fragmentation + p.overhead_gib * GIB
    return mem


def expert_materialization_bytes(cfg: Config, a: ArchConfig, members: int = 1) -> float:
    """PEFT's ParamWrapper (target_parameters) folds LoRA into a 3-D expert weight as a parametrization: each forward
    computes W + s*B@A for the whole expert stack (one baddbmm, peft/tuners/lora/layer.py _LoraFactorsProxy), a new
    tensor of the weight's size, held for backward, whose gradient is as large again. With checkpointing one layer
    is live at a time: one folded copy per adapter in the forward (`members`: a pack's K trials) + one gradient, of
    one layer's targeted expert weights per GPU (ZeRO-3 gathers the layer whole); without it every layer keeps its
    folded copies."""
    m = cfg.model
    if not (m.lora_experts and a.num_experts):
        return 0.0
    layer = sum(a.num_experts * math.prod(EXPERT_SHAPES[p.rsplit(".", 1)[-1]](a)) for p in m.lora_expert_parameters)
    copies = members + 1 if m.gradient_checkpointing else a.num_layers * members + 1
    return copies * layer * DTYPE_BYTES[m.dtype]


def make_plan(cfg: Config, price: bool = True) -> Plan:
    """The whole plan; raises PlanError (naming the fix) when the sweep does not fit the cluster. Explicit values
    of the planner-owned fields are the plan's own, checked; `auto` ones are chosen (orchestrator/resolve.py)."""
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
    if rank > VLLM_LORA_RANKS[-1]:  # before any memory arithmetic: no plan can serve it
        raise PlanError(f"train.lora_rank={rank} exceeds vLLM's largest max_lora_rank {VLLM_LORA_RANKS[-1]}: "
                        "lower train.lora_rank")
    sizes = lora_params(a, list(m.lora_target_modules), experts if a.num_experts else [], rank)
    wbytes = DTYPE_BYTES[m.dtype]
    plan.put("lora", "attention_only_params_m", round(sizes["attention"] / 1e6, 2),
             f"rank {rank} x sum(in+out) of {list(m.lora_target_modules)} (x {a.num_layers} layers, lm_head once)",
             f"{sizes['attention'] / 1e6:.2f}M ({sizes['attention'] * wbytes / 1e6:.1f} MB in {m.dtype})")
    if a.num_experts and experts:
        plan.put("lora", "attention_and_experts_params_m", round(sizes["total"] / 1e6, 2),
                 f"+ rank {rank} x {a.num_experts} experts x sum(in+out) of {experts} x {a.num_layers} layers",
                 f"{sizes['total'] / 1e6:.2f}M ({sizes['total'] * wbytes / 1e9:.2f} GB, "
                 f"{sizes['total'] / sizes['attention']:.0f}x attention-only)")
    lora = trained_lora_params(cfg, a)
    plan.put("lora", "trained", "attention + experts" if m.lora_experts else "attention only",
             text=("attention + experts" if m.lora_experts else "attention only") + " (model.lora_experts)"
             + (" + lm_head" if "lm_head" in m.lora_target_modules else ""))
    plan = _choose_sampler(cfg, a, counts, lora, plan)
    if price:  # the same sweep packed and unpacked, side by side (plan_time.price_packing)
        from orchestrator.plan_time import price_packing

        price_packing(cfg, plan)
    return plan


def _choose_sampler(cfg: Config, a: ArchConfig, counts: dict[str, int], lora: int, plan: Plan) -> Plan:
    """Where the sampler runs (sample.engine.dedicated_gpus). CPU: nothing to hold. One machine: GPUs of its own when
    they leave room for a trial, else a static share of the trainers' GPUs. A cluster: GPUs of its own, or the
    trainers' GPUs with vLLM asleep between checkpoint batches (sample.engine.sleep), whichever plan costs fewer
    allocation GPU-hours."""
    e, cl = cfg.sample.engine, cfg.cluster
    if not is_auto(e.dedicated_gpus):
        return _plan_jobs(cfg, a, counts, lora, plan, bool(e.dedicated_gpus))
    if cl.gpus_per_node == 0:
        return _plan_jobs(cfg, a, counts, lora, plan, False)
    plans: dict[bool, Plan | PlanError] = {}
    for dedicated in (True, False):
        try:
            plans[dedicated] = _plan_jobs(cfg, a, counts, lora, _copy(plan), dedicated)
        except PlanError as err:
            plans[dedicated] = err
    own, shared = plans[True], plans[False]
    if cl.kind == "local" and isinstance(own, Plan) and own.sections["placement"].get("trials_that_fit", 0) >= 1:
        return own
    if isinstance(own, PlanError) and isinstance(shared, PlanError):
        raise own if cl.kind != "local" else shared
    if isinstance(shared, PlanError) or cl.kind == "local" and isinstance(own, Plan):
        assert isinstance(own, Plan)
        own.note("sampler", f"why dedicated: sharing the trainers' GPUs does not fit ({shared})"
                 if isinstance(shared, PlanError) else "why dedicated: it leaves room for a trial")
        return own
    if isinstance(own, PlanError):
        shared.note("sampler", f"why shared: GPUs of its own do not fit ({own})")
        return shared
    cost = {k: p.sections["time"].get("allocation_gpu_h", math.inf) for k, p in plans.items()}  # type: ignore[union-attr]
    pick = own if cost[True] <= cost[False] else shared
    pick.note("sampler", f"why {'dedicated' if pick is own else 'shared'}: allocation {cost[True]:.4g} GPU-h with "
              f"GPUs of its own vs {cost[False]:.4g} GPU-h sharing the trainers' GPUs")
    return pick


def _copy(plan: Plan) -> Plan:
    return Plan({k: dict(v) for k, v in plan.sections.items()}, list(plan.lines))


def sleep_mode(cfg: Config, dedicated: bool) -> tuple[bool, str]:
    """(sample.engine.sleep, why). vLLM 0.32 has sleep mode on CUDA, ROCm and XPU only (Platform.
    is_sleep_mode_available): its CPU platform refuses enable_sleep_mode."""
    e, cl = cfg.sample.engine, cfg.cluster
    if cl.gpus_per_node == 0:
        if e.sleep is True:
            raise ConfigError("sample.engine.sleep=true but the cluster has no GPUs: vLLM's CPU platform has no sleep "
                              "mode (Platform.is_sleep_mode_available is False there); set sample.engine.sleep=auto")
        return False, "off: vLLM's CPU platform has no sleep mode (Platform.is_sleep_mode_available is False)"
    if not is_auto(e.sleep):
        return bool(e.sleep), "sample.engine.sleep"
    if dedicated:
        return False, "off: the sampler holds GPUs of its own"
    if cl.kind == "local":
        return False, "off: one machine splits each GPU statically (sample.engine.gpu_memory_utilization)"
    return True, "on: vLLM sleeps (level 1: weights to host RAM, KV cache dropped) between checkpoint batches"


def _plan_jobs(cfg: Config, a: ArchConfig, counts: dict[str, int], lora: int, plan: Plan, dedicated: bool) -> Plan:
    """Trainer, sampler, placement and time, with the sampler on GPUs of its own (`dedicated`) or sharing: a static
    share of each GPU (without sleep), or asleep beside the trainers' peak and awake beside what they hold between
    steps (with sleep: the trainers on its GPUs wait while it samples)."""
    from orchestrator.plan_fit import plan_trainer
    from orchestrator.plan_sampler import plan_sampler
    from orchestrator.plan_time import plan_placement, plan_time

    bound = min(len(cfg.sweep.lrs) * len(cfg.sweep.seeds), cfg.sweep.max_concurrent_trials)
    gpu = cfg.cluster.gpu_memory_gib * GIB
    sleep, why = sleep_mode(cfg, dedicated)
    if dedicated or cfg.cluster.gpus_per_node == 0:  # the sampler's GPUs first: the trials are placed beside them
        sampler = plan_sampler(cfg, a, counts, bound, plan, dedicated)
        trainer = plan_trainer(cfg, a, counts, lora, plan, gpu, sampler["tp"] if dedicated else 0)
    elif not sleep:  # the sampler's share first: the trainers get what it leaves
        sampler = plan_sampler(cfg, a, counts, bound, plan, dedicated)
        trainer = plan_trainer(cfg, a, counts, lora, plan, gpu * (1 - sampler["util"]))
    else:
        from orchestrator.plan_sampler import awake_bytes

        # trainers that leave room between steps for the engine to wake: their held memory is a limit too
        held = gpu - awake_bytes(cfg, a, counts, bound)
        trainer = plan_trainer(cfg, a, counts, lora, plan, gpu - cfg.plan.sampler_sleep_gib * GIB, held_limit=held)
        sampler = plan_sampler(cfg, a, counts, bound, plan, dedicated, room=gpu - trainer["resident"])
    sampler["sleep"] = plan.put("sampler", "sleep", sleep, text=f"{sleep} ({why})")
    at_once = plan_placement(cfg, trainer, sampler, plan)
    plan_time(cfg, a, counts, lora, trainer, sampler, at_once, plan)
    return plan


def check_compile(cfg: Config, stage: int) -> None:
    if cfg.train.compile and stage == 3:
        raise ConfigError(f"train.compile=true but the plan shards {cfg.model.name} with ZeRO-3, whose per-module "
                          "parameter gathers are not compiled here: set train.compile=false (or give the trial more "
                          "memory)")


def trained_lora_params(cfg: Config, a: ArchConfig) -> int:
    m = cfg.model
    experts = list(m.lora_expert_parameters) if m.lora_experts and a.num_experts else []
    return lora_params(a, list(m.lora_target_modules), experts, cfg.train.lora_rank)["total"]


def trainer_shape(cfg: Config) -> dict[str, Any]:
    """What the trainer runs with, from the resolved plan: {"gpus", "stage", "micro", "accum", "chunk", "hpz",
    "pack"}."""
    t = make_plan(cfg).sections["trainer"]
    return {"gpus": t["gpus_per_trial"], "stage": t["zero_stage"], "micro": t["micro_batch_per_gpu"],
            "accum": t["grad_accum_steps"], "chunk": t["loss_chunk_tokens"], "hpz": t["hpz_partition_size"],
            "pack": t["pack"]}


def resolve_zero_stage(cfg: Config) -> int:
    """train.zero_stage as an int: explicit values as given (and checked), `auto` from the plan."""
    return int(trainer_shape(cfg)["stage"])
