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
from dataclasses import replace
from typing import Any

from orchestrator.plan.disk import plan_disk
from orchestrator.plan.fit import plan_trainer
from orchestrator.plan.model import (
    DTYPE_BYTES,
    GIB,
    Plan,
    PlanError,
    arch_of,
    lora_params,
    param_counts,
    train_memory,
    trained_lora_params,
)
from orchestrator.plan.sampler import awake_bytes, plan_sampler
from orchestrator.plan.timing import plan_placement, plan_time
from orchestrator.schema import Config, ConfigError, is_auto
from workers.models.config import ArchConfig
from workers.sample.config import VLLM_LORA_RANKS

__all__ = ["GIB", "PlanError", "Plan", "VLLM_LORA_RANKS", "make_plan", "trainer_shape", "resolve_zero_stage",
           "train_memory", "lora_params", "param_counts"]


ADD_NODES = "add nodes (cluster.nodes)"  # plan_fit's refusal; make_plan replaces it with the count
MAX_NODES = 64  # how far a refusal's search for the minimum node count goes


def make_plan(cfg: Config, price: bool = True) -> Plan:
    """The whole plan; raises PlanError (naming the fix) when the sweep does not fit the cluster. Explicit values
    of the planner-owned fields are the plan's own, checked; `auto` ones are chosen (orchestrator/plan/resolve.py).
    A refusal that more nodes would fix says how many: the fewest that fit (min_nodes)."""
    try:
        return _make_plan(cfg, price)
    except PlanError as err:
        if ADD_NODES not in str(err) or cfg.cluster.kind == "local":
            raise
        need = min_nodes(cfg)
        fix = (f"set cluster.nodes={need} or more (the fewest nodes this sweep fits on)" if need else
               f"more nodes do not help (none up to {MAX_NODES} fits)")
        raise PlanError(str(err).replace(ADD_NODES, fix)) from None


def min_nodes(cfg: Config) -> int | None:
    """The fewest cluster.nodes above cfg's on which the plan fits, or None up to MAX_NODES."""
    for nodes in range(cfg.cluster.nodes + 1, MAX_NODES + 1):
        try:
            _make_plan(replace(cfg, cluster=replace(cfg.cluster, nodes=nodes)), price=False)
            return nodes
        except PlanError:
            continue
    return None


def _make_plan(cfg: Config, price: bool = True) -> Plan:
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
    plan_disk(cfg, plan)
    if price:  # the same sweep packed and unpacked, side by side
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


def usable_gpu_bytes(cfg: Config, plan: Plan) -> float:
    """What the trainers and the sampler may use of each GPU: the card less plan.headroom (printed once)."""
    c, h = cfg.cluster, cfg.plan.headroom
    usable = c.gpu_memory_gib * GIB * (1 - h)
    if c.gpus_per_node:
        plan.put("trainer", "usable_per_gpu_gib", round(usable / GIB, 2), f"{c.gpu_memory_gib:g} GiB x (1 - headroom "
                 f"{h:g})", f"{usable / GIB:.2f} GiB ({h * c.gpu_memory_gib:.2f} GiB of each GPU left free)")
    return usable


def _plan_jobs(cfg: Config, a: ArchConfig, counts: dict[str, int], lora: int, plan: Plan, dedicated: bool) -> Plan:
    """Trainer, sampler, placement and time, with the sampler on GPUs of its own (`dedicated`) or sharing: a static
    share of each GPU (without sleep), or asleep beside the trainers' peak and awake beside what they hold between
    steps (with sleep: the trainers on its GPUs wait while it samples)."""
    bound = min(len(cfg.sweep.lrs) * len(cfg.sweep.seeds), cfg.sweep.max_concurrent_trials)
    gpu = usable_gpu_bytes(cfg, plan)
    sleep, why = sleep_mode(cfg, dedicated)
    if dedicated or cfg.cluster.gpus_per_node == 0:  # the sampler's GPUs first: the trials are placed beside them
        sampler = plan_sampler(cfg, a, counts, bound, plan, dedicated)
        trainer = plan_trainer(cfg, a, counts, lora, plan, gpu, sampler["tp"] if dedicated else 0)
    elif not sleep:  # the sampler's share first: the trainers get what it leaves
        sampler = plan_sampler(cfg, a, counts, bound, plan, dedicated)
        trainer = plan_trainer(cfg, a, counts, lora, plan, gpu * (1 - sampler["util"]))
    else:
        # trainers that leave room between steps for the engine to wake: their held memory is a limit too
        held = gpu - awake_bytes(cfg, a, counts, bound)
        trainer = plan_trainer(cfg, a, counts, lora, plan, gpu - cfg.plan.sampler_sleep_gib * GIB, held_limit=held)
        sampler = plan_sampler(cfg, a, counts, bound, plan, dedicated, room=gpu - trainer["resident"])
    sampler["sleep"] = plan.put("sampler", "sleep", sleep, text=f"{sleep} ({why})")
    at_once = plan_placement(cfg, trainer, sampler, plan)
    if sleep and not dedicated and at_once > 1:
        raise PlanError(sleep_overlap(at_once))
    plan_time(cfg, a, counts, lora, trainer, sampler, at_once, plan)
    return plan


def sleep_overlap(at_once: int) -> str:
    """Why a sampler asleep on the trainers' GPUs cannot serve several packs at once: each pack pauses only at its
    own checkpoint (orchestrator/run/pack.py), so one pack's requests wake the engine on GPUs where another is mid-step
    at its peak, which the awake engine was not sized beside (nothing makes every trainer there pause first)."""
    return (f"{at_once} packs would run at once beside a sampler asleep on their GPUs: one pack's requests wake it "
            "while another is mid-step on the same GPUs (its peak plus the awake engine is more than a GPU holds); "
            "set sweep.max_concurrent_trials=1, or sample.engine.sleep=false (a static share), or "
            "sample.engine.dedicated_gpus=true")


def check_compile(cfg: Config, stage: int) -> None:
    if cfg.train.compile and stage == 3:
        raise ConfigError(f"train.compile=true but the plan shards {cfg.model.name} with ZeRO-3, whose per-module "
                          "parameter gathers are not compiled here: set train.compile=false (or give the trial more "
                          "memory)")


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


def price_packing(cfg: Config, plan: Plan) -> None:
    """The same sweep unpacked (sweep.pack=1) and packed (sweep.pack=auto), priced side by side: per-trial and
    per-sweep GPU-hours (section `pricing`)."""
    rows = {}
    for name, pack in (("unpacked", 1), ("packed", "auto")):
        if cfg.sweep.pack == pack:
            other = plan
        else:
            try:
                other = make_plan(replace(cfg, sweep=replace(cfg.sweep, pack=pack)), price=False)
            except PlanError as err:
                plan.put("pricing", name, None, text=f"does not fit: {err}")
                continue
        t, tr = other.sections.get("time", {}), other.sections["trainer"]
        if "allocation_gpu_h" not in t:
            continue
        rows[name] = plan.put("pricing", name, {
            "pack": tr["pack"], "gpus_per_trial": tr["gpus_per_trial"], "step_s": round(t["step_s"], 3),
            "trainer_gpu_h_per_trial": round(t["trainer_gpu_h_per_trial"], 4),
            "trainer_gpu_h": round(t["trainer_gpu_h"], 3), "allocation_gpu_h": round(t["allocation_gpu_h"], 3),
            "allocation_gpu_h_per_trial": round(t["allocation_gpu_h_per_trial"], 4), "wall_h": round(t["wall_h"], 4),
            "sampler_dedicated": other.sections["sampler"]["dedicated_gpus"]},
            text=f"K {tr['pack']} on {tr['gpus_per_trial']} GPUs: step {t['step_s']:.3g} s, "
            f"{t['trainer_gpu_h_per_trial']:.4g} trainer GPU-h per trial, allocation {t['allocation_gpu_h']:.4g} "
            f"GPU-h ({t['allocation_gpu_h_per_trial']:.4g} per trial), sampler "
            + ("dedicated" if other.sections["sampler"]["dedicated_gpus"] else "shared"))
    if len(rows) == 2:
        plan.put("pricing", "packing_saves", round(rows["unpacked"]["allocation_gpu_h"] /
                                                    rows["packed"]["allocation_gpu_h"], 3),
                 "unpacked allocation_gpu_h / packed allocation_gpu_h")
