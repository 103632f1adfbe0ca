"""The plan's disk price: what a sweep leaves on the sweep folder's filesystem (adapters and trainer state).

Per trial: `sweep.keep_adapters` of its checkpoint adapters (orchestrator/plan/keep_adapters.py) of the trained LoRA in
the
model's dtype (what PEFT saves), and the latest trainer state (LoRA weights, fp32 master copy and Adam's two moments).
Samples and metrics (a few MB a trial) are left out. An upper bound: early stopping saves fewer checkpoints.
"""

from __future__ import annotations

from orchestrator.plan.keep_adapters import KEPT_AT_MOST, resolve_policy
from orchestrator.plan.model import DTYPE_BYTES, Plan, arch_of, trained_lora_params
from orchestrator.schema import Config

OPTIMIZER_BYTES = 12  # per trained parameter: fp32 master + Adam exp_avg + exp_avg_sq


def plan_disk(cfg: Config, plan: Plan) -> None:
    from orchestrator.budget import trial_fields

    sec, m = "disk", cfg.model
    lora, wbytes = trained_lora_params(cfg, arch_of(cfg)), DTYPE_BYTES[m.dtype]
    seeds = len(cfg.sweep.seeds)
    # each LR's own checkpoints (per-LR budgets, sweep.checkpoints_per_octave: orchestrator/budget.py)
    n_ckpt = {lr: len(trial_fields(cfg.sweep, lr, 0)["checkpoint_steps"]) for lr in cfg.sweep.lrs}
    policy = resolve_policy(cfg.sweep.keep_adapters, cfg.cluster.kind)
    kept = {lr: n if policy == "all" else min(n, KEPT_AT_MOST[policy]) for lr, n in n_ckpt.items()}
    most = max(n_ckpt.values())
    adapter = plan.put(sec, "adapter_gb", lora * wbytes / 1e9, f"{lora / 1e6:.4g}M trained LoRA params x {wbytes} "
                       f"bytes ({m.dtype})", f"{lora * wbytes / 1e9:.3g} GB")
    plan.put(sec, "adapters_kept_per_trial", max(kept.values()),
             f"sweep.keep_adapters={policy} of at most {most} checkpoints (the LR with the most)")
    state = plan.put(sec, "trainer_state_gb", lora * (wbytes + OPTIMIZER_BYTES) / 1e9, f"params x ({wbytes} + "
                     f"{OPTIMIZER_BYTES} bytes: fp32 master, Adam moments), the latest only",
                     f"{lora * (wbytes + OPTIMIZER_BYTES) / 1e9:.3g} GB")
    total = seeds * sum(k * adapter + state for k in kept.values())
    every = seeds * sum(n * adapter + state for n in n_ckpt.values())
    plan.put(sec, "total_gb", total, f"{len(kept) * seeds} trials x (each LR's adapters kept x adapter_gb + "
             f"trainer_state_gb)", f"{total:.3g} GB" + ("" if policy == "all" else f" (all adapters: {every:.3g} GB)"))
