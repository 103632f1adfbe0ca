"""The plan's second half: how many trials run at once, and the sweep's wall time and GPU-hours."""

from __future__ import annotations

import math
from typing import Any

from orchestrator.budget import makespan, pack_budgets, trial_fields
from orchestrator.plan.fit import Shape, step_seconds
from orchestrator.plan.model import DTYPE_BYTES, Plan, PlanError, trials_that_fit
from orchestrator.schema import Config, is_auto
from workers.models.config import ArchConfig


def plan_placement(cfg: Config, trainer: dict[str, Any], sampler: dict[str, Any], plan: Plan) -> int:
    cl, sw, sec = cfg.cluster, cfg.sweep, "placement"
    n_trials = len(sw.lrs) * len(sw.seeds)
    plan.put(sec, "trials", n_trials, f"{len(sw.lrs)} LRs x {len(sw.seeds)} seeds")
    if cl.gpus_per_node == 0:
        fit = n_trials
        plan.note(sec, "CPU cluster: trials are limited by sweep.max_concurrent_trials and cores only")
    else:
        own = sampler["tp"] if sampler["dedicated"] else 0
        fit = trials_that_fit(cl.gpus_per_node, cl.nodes, trainer["gpus"], own)
        plan.put(sec, "trials_that_fit", fit, f"{cl.nodes} nodes x {cl.gpus_per_node} GPUs, minus {own} "
                 f"sampler GPUs on node 0, in blocks of {trainer['gpus']} GPUs")
        if fit == 0:
            nodes = next(n for n in range(cl.nodes + 1, cl.nodes + 10_000)
                         if trials_that_fit(cl.gpus_per_node, n, trainer["gpus"], own) > 0)
            raise PlanError(f"no trial fits beside the sampler: a trial needs {trainer['gpus']} GPUs and the "
                            f"sampler {sampler['tp']}, but the cluster has {cl.nodes} x {cl.gpus_per_node}: "
                            f"set cluster.nodes={nodes} or more")
    k = trainer["pack"]
    jobs = len(pack_budgets(sw, k))  # a pack holds trials of one step budget (orchestrator/run/pack.py)
    if k > 1:
        plan.put(sec, "packs", jobs, f"{n_trials} trials in packs of at most K {k}, one step budget a pack")
    at_once = plan.put(sec, "concurrent_trials", min(fit, jobs, sw.max_concurrent_trials),
                       f"min(fit {fit}, {'packs' if k > 1 else 'trials'} {jobs}, sweep.max_concurrent_trials "
                       f"{sw.max_concurrent_trials})" + (" packs" if k > 1 else ""))
    if at_once < min(fit, jobs):
        plan.note(sec, f"note: raise sweep.max_concurrent_trials to {min(fit, jobs)} to use every free GPU")
    e, p = cfg.sample.engine, cfg.plan
    if not is_auto(e.max_loras):
        loras = plan.put(sec, "max_loras", e.max_loras, text=f"{e.max_loras} (sample.engine.max_loras)")
    elif cl.gpus_per_node == 0:
        loras = plan.put(sec, "max_loras", p.cpu_max_loras, text=f"{p.cpu_max_loras} (CPU: plan.cpu_max_loras)")
    else:
        loras = plan.put(sec, "max_loras", min(at_once * k, n_trials), text=f"{min(at_once * k, n_trials)} (one "
                         "adapter per running trial in a vLLM batch)")
    if not is_auto(e.max_cpu_loras):
        plan.put(sec, "max_cpu_loras", e.max_cpu_loras, text=f"{e.max_cpu_loras} (sample.engine.max_cpu_loras)")
    elif cl.gpus_per_node == 0:
        plan.put(sec, "max_cpu_loras", p.cpu_max_cpu_loras, text=f"{p.cpu_max_cpu_loras} (CPU: plan.cpu_max_cpu_loras)")
    else:
        plan.put(sec, "max_cpu_loras", 2 * loras, "2 x max_loras (a trial may have its next checkpoint queued)")
    return at_once


def _step_s(cfg: Config, counts: dict[str, int], lora: int, trainer: dict[str, Any], tokens_step: float,
            plan: Plan) -> float | None:
    """One training step's seconds (a pack's step trains K trials): measured throughput if given, else the
    planner's max(compute, communication); None on a CPU cluster without a measurement."""
    p, sec, k = cfg.plan, "time", trainer["pack"]
    if p.train_tokens_per_s:  # measured for one trial alone: a pack is priced as no faster per trial
        return plan.put(sec, "step_s", tokens_step / p.train_tokens_per_s, f"measured {p.train_tokens_per_s:g} tok/s")
    if cfg.cluster.gpus_per_node == 0:
        plan.note(sec, "CPU cluster: set plan.train_tokens_per_s (measured) for a time estimate")
        return None
    st = step_seconds(cfg, counts, lora, Shape(**{f: trainer[f] for f in ("gpus", "stage", "micro", "accum", "chunk",
                                                                           "hpz", "pack")}))
    plan.put(sec, "compute_s", st["compute_s"], st["compute_f"])
    plan.put(sec, "communication_s", st["communication_s"], st["communication_f"])
    if trainer["hpz"] > 1:
        plan.note(sec, "hpZ: the first step gathers between nodes and fills each node's copy; later steps "
                  "gather inside the node")
    step_s = plan.put(sec, "step_s", st["step_s"], "max(compute, communication)")
    plan.put(sec, "train_tokens_per_s", tokens_step / step_s, "tokens per step / step_s" + (
        f" (a pack of {k})" if k > 1 else " (per trial)"))
    return step_s


# the process-group timeout: Ray Train's default (1800 s) at least, else 3x the longest checkpoint wait
COLLECTIVE_TIMEOUT_FLOOR_S = 1800.0
COLLECTIVE_TIMEOUT_MARGIN = 3.0


def plan_time(cfg: Config, a: ArchConfig, counts: dict[str, int], lora: int, trainer: dict[str, Any],
              sampler: dict[str, Any], at_once: int, plan: Plan) -> None:
    """Wall time and GPU-hours. A training step takes max(compute, communication), overlapped (plan_fit.step_seconds;
    a pack's step trains K trials); sampling is asynchronous, so a dedicated sampler only lengthens the sweep when it
    is busier than the trainers; one asleep on the trainers' GPUs makes them wait while it samples."""
    m, p, tr, cl, sec = cfg.model, cfg.plan, cfg.train, cfg.cluster, "time"
    wbytes, gpus, k = DTYPE_BYTES[m.dtype], trainer["gpus"], trainer["pack"]
    tokens_example = p.tokens_per_example or m.max_model_len
    tokens_step = plan.put(sec, "tokens_per_step", tr.batch_size * tokens_example * k,
                           f"{k} trials x " * (k > 1) + f"batch {tr.batch_size} x {tokens_example} tokens")
    step_s = _step_s(cfg, counts, lora, trainer, tokens_step, plan)
    if step_s is None:
        return
    startup = plan.put(sec, "startup_s", counts["total"] * wbytes / (p.storage_read_gb_s * 1e9),
                       f"weights / {p.storage_read_gb_s:g} GB/s")
    # each pack trains its own LR's steps (orchestrator/budget.py); without early stopping, so an upper bound
    budgets = pack_budgets(cfg.sweep, k)
    jobs_s = [startup + n * step_s for n in budgets]
    trial_s = 3600 * plan.put(sec, "trial_h", max(jobs_s) / 3600, f"(startup + {max(budgets)} steps x step_s) / 3600"
                              + " (a pack)" * (k > 1) + ", the longest" * (len(set(budgets)) > 1))
    n_trials = len(cfg.sweep.lrs) * len(cfg.sweep.seeds)
    n_jobs = len(budgets)
    waves = math.ceil(n_jobs / at_once)
    train_wall = plan.put(sec, "training_wall_h", makespan(jobs_s, at_once) / 3600,
                          f"{n_jobs} {'packs' if k > 1 else 'trials'} of {sorted(set(budgets))} steps, "
                          f"{at_once} at once (longest first)") * 3600
    trial_s = sum(jobs_s) / n_jobs  # the mean: GPU-hours are n_jobs x this
    n_ckpt = sum(len(trial_fields(cfg.sweep, lr, 0)["checkpoint_steps"]) for lr in cfg.sweep.lrs) / len(cfg.sweep.lrs)
    n_prompts = cfg.sample.n_eval_prompts + cfg.sample.n_train_prompts
    sampled = n_trials * n_ckpt * n_prompts * cfg.sample.max_new_tokens
    plan.put(sec, "sampled_tokens", sampled, f"{n_trials} trials x {n_ckpt:.3g} checkpoints x {n_prompts} prompts x "
             f"{cfg.sample.max_new_tokens} new tokens")
    if p.sampler_tokens_per_s:
        decode = plan.put(sec, "sampler_tokens_per_s", p.sampler_tokens_per_s, "measured")
    elif cl.gpus_per_node:  # memory-bound decode: a step reads each GPU's weight shard once (all experts hit)
        seqs = min(n_prompts * at_once * k, sampler["kv_seqs"])
        read = sampler["weights_per_gpu"] / (p.hbm_gb_s * 1e9 * p.hbm_efficiency)
        step = max(read, p.decode_step_floor_ms / 1e3)
        decode = plan.put(sec, "sampler_tokens_per_s", seqs / step, f"{seqs} sequences / max(weights per GPU / "
                          f"({p.hbm_gb_s:g} GB/s x {p.hbm_efficiency:g}) = {read * 1e3:.1f} ms, floor "
                          f"{p.decode_step_floor_ms:g} ms) per step")
    else:
        return
    busy = plan.put(sec, "sampler_busy_h", sampled / decode / 3600, "sampled_tokens / sampler_tokens_per_s") * 3600
    if sampler.get("sleep"):
        wake = 2 * n_ckpt * waves * sampler["weights_per_gpu"] / (p.host_copy_gb_s * 1e9)
        wall = plan.put(sec, "wall_h", (train_wall + busy + wake) / 3600, "training_wall_h + sampler_busy_h + "
                        f"sleep/wake {wake / 3600:.3g} h (2 x {n_ckpt} checkpoints x {waves} waves x weights per GPU "
                        f"/ {p.host_copy_gb_s:g} GB/s; the trainers on its GPUs wait while it samples)") * 3600
    else:
        wall = plan.put(sec, "wall_h", max(train_wall, busy) / 3600, "max(training_wall_h, sampler_busy_h)") * 3600
    if cl.gpus_per_node:
        _gpu_hours(cfg, plan, sampler, gpus, k, n_jobs, trial_s, wall, at_once)
    _checkpoint_wait(cfg, plan, sampler, decode, at_once * k, startup)


def collective_timeout_s(checkpoint_wait_s: float) -> float:
    """The trainers' process-group timeout: the longest wait of rank 0 at a checkpoint (while the other ranks sit in
    a collective) with a margin, never below Ray Train's own default (which a slow checkpoint would outlast)."""
    return max(COLLECTIVE_TIMEOUT_FLOOR_S, COLLECTIVE_TIMEOUT_MARGIN * checkpoint_wait_s)


def _checkpoint_wait(cfg: Config, plan: Plan, sampler: dict[str, Any], decode: float, trials: int,
                     startup_s: float) -> None:
    """Rank 0's longest wait at a checkpoint: every trial running at once sampled in one go, the sampler's wake and
    one restart (its weights read again), and an LLM judge's calls at their per-request timeout."""
    s, sec = cfg.sample, "time"
    n_prompts = s.n_eval_prompts + s.n_train_prompts
    sample_s = trials * n_prompts * s.max_new_tokens / decode
    wake_s = 2 * sampler["weights_per_gpu"] / (cfg.plan.host_copy_gb_s * 1e9) if sampler.get("sleep") else 0.0
    grader = cfg.setting.grader
    judge_s = (math.ceil(trials * n_prompts / grader.endpoint.max_concurrency) * grader.endpoint.timeout_s
               if grader.kind == "judge" else 0.0)
    wait = plan.put(sec, "checkpoint_wait_s", sample_s + wake_s + startup_s + judge_s,
                    f"sampling {trials} trials {sample_s:.0f} s + wake {wake_s:.0f} s + a sampler restart "
                    f"{startup_s:.0f} s + judge {judge_s:.0f} s")
    plan.put(sec, "collective_timeout_s", collective_timeout_s(wait),
             f"max({COLLECTIVE_TIMEOUT_FLOOR_S:g}, {COLLECTIVE_TIMEOUT_MARGIN:g} x checkpoint_wait_s): the trainers' "
             "process-group timeout (rank 0 waits that long at most)")


def _gpu_hours(cfg: Config, plan: Plan, sampler: dict[str, Any], gpus: int, k: int, n_jobs: int, trial_s: float,
               wall: float, at_once: int) -> None:
    """Trainer, sampler and allocation GPU-hours, and the fewest nodes that run the same waves."""
    cl, sec = cfg.cluster, "time"
    n_trials = len(cfg.sweep.lrs) * len(cfg.sweep.seeds)
    plan.put(sec, "trainer_gpu_h", n_jobs * gpus * trial_s / 3600, f"{n_jobs} {'packs' if k > 1 else 'trials'} x "
             f"{gpus} GPUs x trial_h")
    plan.put(sec, "trainer_gpu_h_per_trial", gpus * trial_s / k / 3600, f"{gpus} GPUs x trial_h / K {k}")
    if sampler["dedicated"]:
        plan.put(sec, "sampler_gpu_h", sampler["tp"] * wall / 3600, f"{sampler['tp']} GPUs x wall_h")
    alloc = plan.put(sec, "allocation_gpu_h", cl.nodes * cl.gpus_per_node * wall / 3600,
                     f"{cl.nodes} nodes x {cl.gpus_per_node} GPUs x wall_h (what the allocation is charged)")
    plan.put(sec, "allocation_gpu_h_per_trial", alloc / n_trials, f"allocation_gpu_h / {n_trials} trials")
    own = sampler["tp"] if sampler["dedicated"] else 0
    need = next(n for n in range(1, cl.nodes + 1) if trials_that_fit(cl.gpus_per_node, n, gpus, own) >= at_once)
    if need < cl.nodes:  # the same waves on fewer nodes: the rest would idle
        plan.put(sec, "nodes_needed", need, f"fewest nodes that place {at_once} {'packs' if k > 1 else 'trials'} "
                 f"of {gpus} GPUs beside {own} sampler GPUs")
        plan.put(sec, "allocation_gpu_h_at_nodes_needed", need * cl.gpus_per_node * wall / 3600,
                 f"{need} nodes x {cl.gpus_per_node} GPUs x wall_h (set cluster.nodes={need}: the same wall time)")
