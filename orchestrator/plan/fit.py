"""The trainer's shape (orchestrator/plan/planner.py calls it): fit before adding GPUs, then the cheapest shape that
fits.

For each GPU count a trial (or a pack of K trials) may take, the search tries every lever that changes the fit
(the micro-batch, the loss chunk, the ZeRO++ hpZ group, the pack size K) and keeps the shapes that fit. Of those it
takes the one that costs the fewest GPU-seconds per trial-step (`gpus x step_s / K`); a shape with more GPUs wins
only when it is at least 2% cheaper. An explicit value of a lever's field is the only candidate tried for it.

Step time: max(compute, communication), overlapped. Compute scales with K (each member's sequences go through the
base); ZeRO-3's all-gathers of the frozen base are paid once per micro-batch for all K (a packed micro-batch holds
every member's sequences), 3 per micro-batch with recomputation (forward, recompute, backward), else 2.

hpZ (DeepSpeed ZeRO++ `zero_hpz_partition_size` = GPUs per node) keeps a second copy of every weight sharded inside
the node (DeepSpeed `_partition_param_sec`); a frozen weight's copy never expires (stage3 `invalidate_secondary_
tensor` drops only trainable ones), so after the first step every gather of the base runs over the node's links
(`plan.intranode_gb_s`) instead of between nodes (`plan.internode_gb_s`), for W/hpz more bytes per GPU. Weights
and gradients stay exact (no quantized communication).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from orchestrator.budget import makespan, pack_budgets
from orchestrator.plan.model import (
    DTYPE_BYTES,
    GIB,
    Plan,
    PlanError,
    arch_of,
    gib,
    param_counts,
    train_memory,
    trained_lora_params,
    trials_that_fit,
    zero_buffers,
)
from orchestrator.schema import Config, is_auto
from workers.models.config import ArchConfig
from workers.train.pack_rules import pack_refusals

PLANNED_LOSS_CHUNKS = (4096, 2048, 1024, 512, 256)  # train.loss_chunk_tokens=auto: the largest that fits
CHEAPER = 0.98  # a shape with more GPUs replaces a smaller one only when this much cheaper per trial-step


@dataclass(frozen=True)
class Shape:
    """One trainer shape: GPUs, ZeRO stage, sequences per forward per GPU (all members), accumulation, loss chunk
    (None: logits at every position, train.loss=hf), hpZ group (1: off) and pack size K."""

    gpus: int
    stage: int
    micro: int
    accum: int
    chunk: int | None
    hpz: int
    pack: int

    def as_dict(self) -> dict[str, Any]:
        return {"gpus": self.gpus, "stage": self.stage, "micro": self.micro, "accum": self.accum,
                "chunk": self.chunk, "hpz": self.hpz, "pack": self.pack}


def trials_per_setting(cfg: Config) -> int:
    return len(cfg.sweep.lrs) * len(cfg.sweep.seeds)


def step_seconds(cfg: Config, counts: dict[str, int], lora: int, s: Shape) -> dict[str, Any]:
    """One (packed) step's compute and communication, with the formula of each. Needs GPUs (cluster.gpus_per_node)."""
    m, p, tr, per_node = cfg.model, cfg.plan, cfg.train, cfg.cluster.gpus_per_node
    wbytes = DTYPE_BYTES[m.dtype]
    tokens = tr.batch_size * (p.tokens_per_example or m.max_model_len) * s.pack
    passes = 6 if m.gradient_checkpointing else 4
    compute = passes * counts["active"] * tokens / (s.gpus * p.gpu_peak_tflops * 1e12 * p.mfu)
    members = f"{s.pack} trials x " if s.pack > 1 else ""
    compute_f = (f"{passes} x {counts['active'] / 1e9:.2f}B active x {members}tokens / ({s.gpus} GPUs x "
                 f"{p.gpu_peak_tflops:g} TFLOP/s x MFU {p.mfu:g})")
    inside = s.gpus <= per_node or s.hpz > 1
    bw = p.intranode_gb_s if inside else p.internode_gb_s
    if s.stage == 3:
        group = s.hpz if s.hpz > 1 else s.gpus
        spread = (group - 1) / group
        gathers = 3 if m.gradient_checkpointing else 2
        moved = gathers * s.accum * counts["total"] * wbytes * spread
        comm_f = (f"{gathers} gathers x {s.accum} micro-batches x weights x {spread:.3f} / {bw:g} GB/s"
                  + (f" (hpZ: inside groups of {s.hpz} GPUs)" if s.hpz > 1 else ""))
    else:  # all-reduce of the LoRA gradients only
        spread = (s.gpus - 1) / s.gpus
        moved = 2 * lora * s.pack * wbytes * spread
        comm_f = f"2 x {members}LoRA grads x {spread:.3f} / {bw:g} GB/s"
    comm = moved / (bw * 1e9)
    return {"compute_s": compute, "compute_f": compute_f, "communication_s": comm, "communication_f": comm_f,
            "step_s": max(compute, comm), "tokens": tokens}


def _candidates(cfg: Config, per_node: int) -> list[tuple[int, int]]:
    """(GPUs, ZeRO stage) pairs a trial may take: divisors of a node, then whole nodes."""
    tr, cl = cfg.train, cfg.cluster
    auto_workers, auto_stage = is_auto(tr.num_workers), is_auto(tr.zero_stage)
    if per_node == 0:  # CPU (the toy): no accelerator memory to fit; one process per worker
        return [(1 if auto_workers else tr.num_workers, 0 if auto_stage else tr.zero_stage)]
    if not auto_workers:
        return [(tr.num_workers, s) for s in ([0, 3] if auto_stage else [tr.zero_stage])]
    counts = [g for g in range(1, per_node + 1) if per_node % g == 0] + [per_node * n for n in range(2, cl.nodes + 1)]
    return ([(1, 0)] if auto_stage else []) + [(g, 3 if auto_stage else tr.zero_stage) for g in counts
                                                if g >= (2 if auto_stage else 1)]


def pack_blockers(cfg: Config) -> list[str]:
    """What keeps this sweep's trials from training in packs (workers/train/pack_rules.py): the train block is the
    one the trainer's spec will hold (orchestrator/run/build.py)."""
    return pack_refusals(cfg.train, 2)


def auto_pack_note(cfg: Config) -> str | None:
    """Why sweep.pack=auto stays at 1 without a search, or None when the planner searches K."""
    if blockers := pack_blockers(cfg):
        return "1: each trial alone, as " + "; ".join(blockers)
    if cfg.cluster.gpus_per_node == 0:
        return ("1 on CPU: each trial alone, as tested end to end; set sweep.pack=K to pack (bench/pack_speed.py "
                "measures it)")
    return None


def _packs(cfg: Config) -> list[int]:
    if not is_auto(cfg.sweep.pack):
        if cfg.sweep.pack > 1 and (blockers := pack_blockers(cfg)):
            raise PlanError(f"sweep.pack={cfg.sweep.pack}: " + "; ".join(blockers))
        return [cfg.sweep.pack]
    if auto_pack_note(cfg) is not None:
        return [1]
    return list(range(1, trials_per_setting(cfg) + 1))


def _hpz_groups(cfg: Config, gpus: int, stage: int) -> list[int]:
    per_node, h = cfg.cluster.gpus_per_node, cfg.train.hpz_partition_size
    if not is_auto(h):
        return [h]
    if stage == 3 and per_node and gpus > per_node and gpus % per_node == 0:
        return [per_node, 1]  # gathers in the node first; without hpZ where its second copy does not fit
    return [1]


def _chunks(cfg: Config) -> list[int | None]:
    if cfg.train.loss != "answer_chunks":
        return [None]
    c = cfg.train.loss_chunk_tokens
    return list(PLANNED_LOSS_CHUNKS) if is_auto(c) else [c]


def search(cfg: Config, a: ArchConfig, counts: dict[str, int], lora: int, limit: float, sampler_gpus: int = 0,
           held_limit: float | None = None) -> tuple[tuple[Shape, dict[str, float]] | None, tuple[float, Shape] | None]:
    """((the chosen shape, its memory), None) or (None, the smallest shape that did not fit). `sampler_gpus`: GPUs
    the sampler holds on node 0 (placement: a shape that cannot be placed beside it is not a candidate);
    `held_limit`: what a shape may hold between steps (a sleeping sampler must wake beside it)."""
    tr, per_node = cfg.train, cfg.cluster.gpus_per_node
    fits: list[tuple[Shape, dict[str, float]]] = []
    smallest: tuple[float, Shape] | None = None
    for gpus, stage in _candidates(cfg, per_node):
        if gpus > tr.batch_size or tr.batch_size % gpus:
            continue
        share = tr.batch_size // gpus  # each trial's sequences per GPU per step
        micros = ([min(tr.micro_batch_size, share)] if not is_auto(tr.micro_batch_size) else
                  sorted((d for d in range(1, share + 1) if share % d == 0), reverse=True))
        for pack in _packs(cfg):
            for micro in micros:
                if share % micro:
                    continue  # an explicit micro-batch that does not divide this GPU count's share
                for hpz in _hpz_groups(cfg, gpus, stage):
                    for chunk in _chunks(cfg):
                        shape = Shape(gpus, stage, micro, share // micro, chunk, hpz, pack)
                        mem = train_memory(cfg, a, counts, lora, shape)
                        if per_node == 0:
                            return (shape, mem), None
                        if mem["total"] > limit:
                            if smallest is None or mem["total"] < smallest[0]:
                                smallest = (mem["total"], shape)
                            continue
                        fits.append((shape, mem))
                        break  # the largest chunk that fits
    if held_limit is not None:  # fall back to all fits: the sampler's own plan then names what does not fit
        fits = [f for f in fits if f[1]["resident"] <= held_limit] or fits
    placed = [f for f in fits if trials_that_fit(per_node, cfg.cluster.nodes, f[0].gpus, sampler_gpus) > 0]
    if not fits:
        return None, smallest
    if not placed:  # the fewest GPUs that fit: placement (plan_time.plan_placement) names the nodes it needs
        placed = fits[:1]
    best = _cheapest(cfg, counts, lora, placed, sampler_gpus)
    return _balanced(cfg, a, counts, lora, *best), None


def sweep_cost(cfg: Config, counts: dict[str, int], lora: int, s: Shape, sampler_gpus: int) -> tuple[float, float]:
    """(the sweep's training wall seconds, trainer GPU-seconds per trial-step) for shape `s`, placed beside the
    sampler: packs at once = min(packs that fit, packs, sweep.max_concurrent_trials)."""
    cl, p = cfg.cluster, cfg.plan
    step = step_seconds(cfg, counts, lora, s)["step_s"]
    budgets = pack_budgets(cfg.sweep, s.pack)  # each pack's own steps (orchestrator/budget.py)
    at_once = max(1, min(trials_that_fit(cl.gpus_per_node, cl.nodes, s.gpus, sampler_gpus), len(budgets),
                         cfg.sweep.max_concurrent_trials))
    startup = counts["total"] * DTYPE_BYTES[cfg.model.dtype] / (p.storage_read_gb_s * 1e9)
    return makespan([startup + n * step for n in budgets], at_once), s.gpus * step / s.pack


def _cheapest(cfg: Config, counts: dict[str, int], lora: int, fits: list[tuple[Shape, dict[str, float]]],
              sampler_gpus: int) -> tuple[Shape, dict[str, float]]:
    """The shortest sweep (the allocation is charged by wall time); within 2% of it the fewest trainer GPU-seconds
    per trial-step; within 2% of that the fewest GPUs; then the search's order (largest micro-batch first)."""
    costs = [sweep_cost(cfg, counts, lora, f[0], sampler_gpus) for f in fits]
    wall = min(c[0] for c in costs)
    near = [(c, f) for c, f in zip(costs, fits, strict=True) if c[0] <= wall / CHEAPER]
    per_step = min(c[1] for c, _ in near)
    near = [(c, f) for c, f in near if c[1] <= per_step / CHEAPER]
    return min(near, key=lambda cf: cf[1][0].gpus)[1]


def _balanced(cfg: Config, a: ArchConfig, counts: dict[str, int], lora: int, s: Shape,
              mem: dict[str, float]) -> tuple[Shape, dict[str, float]]:
    """Auto K spread evenly over the packs the trials need: 4 trials with room for 3 run as 2 + 2, not 3 + 1
    (fewer members need less memory, so the even K fits too)."""
    n = trials_per_setting(cfg)
    if not is_auto(cfg.sweep.pack) or s.pack <= 1:
        return s, mem
    even = math.ceil(n / math.ceil(n / s.pack))
    t = replace(s, pack=even)
    return t, train_memory(cfg, a, counts, lora, t)


def plan_trainer(cfg: Config, a: ArchConfig, counts: dict[str, int], lora: int, plan: Plan,
                 limit: float, sampler_gpus: int = 0, held_limit: float | None = None) -> dict[str, Any]:
    """The cheapest shape that fits `limit` bytes per GPU (see the module docstring), recorded in the plan; refuses
    naming the fix when none does."""
    found, smallest = search(cfg, a, counts, lora, limit, sampler_gpus, held_limit)
    if found is not None:
        shape, mem = found
        return _record(cfg, plan, shape, mem, limit)
    tr, cl = cfg.train, cfg.cluster
    if smallest is None:
        raise PlanError(f"train.batch_size={tr.batch_size} cannot be split over the "
                        f"{[g for g, _ in _candidates(cfg, cl.gpus_per_node)]} GPUs a trial could take with "
                        f"train.micro_batch_size={tr.micro_batch_size}: use a batch size that a GPU count divides, "
                        "or set train.num_workers and train.micro_batch_size to auto")
    total, s = smallest
    fixes = ["add nodes (cluster.nodes)", "use GPUs with more memory (cluster.gpu_memory_gib)",
             "shorten model.max_model_len"]
    if s.stage < 3:
        fixes.insert(0, "set train.zero_stage=auto (or 3) to shard the weights")
    if not cfg.model.gradient_checkpointing:
        fixes.append("set model.gradient_checkpointing=true")
    if cfg.model.lora_experts:
        fixes.append("set model.lora_experts=false")
    explicit = [f"train.{k}={getattr(tr, k)}" for k in ("num_workers", "zero_stage", "micro_batch_size",
                                                        "loss_chunk_tokens", "hpz_partition_size")
                if not is_auto(getattr(tr, k))] + ([f"sweep.pack={cfg.sweep.pack}"] if cfg.sweep.pack != 1
                                                   and not is_auto(cfg.sweep.pack) else [])
    if explicit:
        fixes.insert(0, f"set {' and '.join(e.split('=')[0] + '=auto' for e in explicit)}{_auto_shape(cfg, limit)}")
    room = (f"{limit / GIB:.1f} GiB left beside vLLM" if limit < cl.gpu_memory_gib * GIB
            else f"cluster.gpu_memory_gib={cl.gpu_memory_gib:g}")
    given = f" with {', '.join(explicit)}" if explicit else ""
    levers = f", loss chunk {s.chunk}" if s.chunk else ""
    raise PlanError(f"model {cfg.model.name} does not fit{given}: at best {total / GIB:.1f} GiB per GPU (ZeRO-"
                    f"{s.stage} over {s.gpus} GPUs, micro-batch {s.micro}{levers}) > {room}. To fix: "
                    + "; or ".join(fixes))


def _auto_shape(cfg: Config, limit: float) -> str:
    """What the plan would choose with the trainer's fields on auto, for a refusal's message."""
    auto = replace(cfg, train=replace(cfg.train, num_workers="auto", zero_stage="auto", micro_batch_size="auto",
                                      loss_chunk_tokens="auto", hpz_partition_size="auto"))
    a = arch_of(auto)
    found, _ = search(auto, a, param_counts(a), trained_lora_params(auto, a), limit)
    if found is None:
        return ""
    s = found[0]
    return f" (the plan: {s.gpus} GPUs per trial, ZeRO-{s.stage}, micro-batch {s.micro})"


def _record(cfg: Config, plan: Plan, s: Shape, mem: dict[str, float], limit: float) -> dict[str, Any]:
    tr, sec = cfg.train, "trainer"
    plan.put(sec, "gpus_per_trial", s.gpus, text=f"{s.gpus} (= trainer workers per trial, one per GPU"
             + (f"; a pack of {s.pack} trials shares them)" if s.pack > 1 else ")"))
    plan.put(sec, "zero_stage", s.stage, text=f"{s.stage}" + (" (weights sharded)" if s.stage == 3
                                                            else " (replicated)"))
    note = auto_pack_note(cfg) if is_auto(cfg.sweep.pack) else None
    plan.put(sec, "pack", s.pack, "largest K (trials per setting at most) whose shape costs the fewest GPU-seconds "
             "per trial-step, spread evenly over the packs" if is_auto(cfg.sweep.pack) else "sweep.pack",
             text=note)
    plan.put(sec, "micro_batch_per_gpu", s.micro, f"largest divisor of batch {tr.batch_size}/{s.gpus} GPUs that "
             "fits" if is_auto(tr.micro_batch_size) else f"train.micro_batch_size={tr.micro_batch_size}")
    if s.pack > 1:
        plan.put(sec, "sequences_per_forward", s.pack * s.micro, f"{s.pack} trials x micro-batch (each member's "
                 "sequences through its own adapter, the base gathered once for all)")
    plan.put(sec, "grad_accum_steps", s.accum, f"{tr.batch_size} / ({s.gpus} x {s.micro})")
    plan.put(sec, "loss_chunk_tokens", s.chunk if s.chunk else tr.loss_chunk_tokens,
             ("largest of " + str(list(PLANNED_LOSS_CHUNKS)) + " that fits") if is_auto(tr.loss_chunk_tokens)
             and s.chunk else "train.loss_chunk_tokens" if s.chunk else "train.loss=hf: logits at every position")
    plan.put(sec, "hpz_partition_size", s.hpz, text=f"{s.hpz} (" + (
        f"ZeRO++ hpZ: a second copy of the base sharded over each node's {s.hpz} GPUs; gathers stay in the node)"
        if s.hpz > 1 else "off: " + ("the trial is inside one node" if s.gpus <= max(cfg.cluster.gpus_per_node, 1)
                                     else "the second copy does not fit" if s.stage == 3 else "no ZeRO-3") + ")"))
    for key in ("base_weights", "hpz_secondary_weights", "lora_weights_and_grads", "lora_fp32_master_and_adam",
                "zero3_gathered_layers", "activations", "logits", "expert_lora_materialized", "zero_buffers"):
        plan.put(sec, f"{key}_gib", round(mem[key] / GIB, 3), text=gib(mem[key]))
    a = arch_of(cfg)
    buffers = zero_buffers(a, param_counts(a), s.pack * trained_lora_params(cfg, a), s.stage)
    plan.put(sec, "zero_buffers", buffers, text="elements, set in the DeepSpeed config (workers/train/trainer.py): "
             + ", ".join(f"{k}={v:.3g}" for k, v in buffers.items()))
    plan.put(sec, "memory_per_gpu_gib", round(mem["total"] / GIB, 2),
             f"sum x fragmentation {cfg.plan.fragmentation:g} + overhead {cfg.plan.overhead_gib:g} GiB",
             gib(mem["total"]) + (f" of {limit / GIB:.4g} GiB" if cfg.cluster.gpus_per_node else
                                  " (CPU: RAM per trainer process, not checked)"))
    plan.put(sec, "resident_per_gpu_gib", round(mem["resident"] / GIB, 2), "(base weights + hpZ copy + LoRA states) "
             "x fragmentation + overhead: held between steps", gib(mem["resident"]))
    return s.as_dict() | {"resident": mem["resident"]}
