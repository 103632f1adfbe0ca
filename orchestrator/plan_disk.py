"""The plan's disk price: what a sweep leaves on the sweep folder's filesystem (adapters and trainer state).

Per trial: `sweep.keep_adapters` of its checkpoint adapters (orchestrator/keep_adapters.py) of the trained LoRA in the
model's dtype (what PEFT saves), and the latest trainer state (LoRA weights, fp32 master copy and Adam's two moments).
Samples and metrics (a few MB a trial) are left out. An upper bound: early stopping saves fewer checkpoints.
"""

from __future__ import annotations

from orchestrator.keep_adapters import KEPT_AT_MOST, resolve_policy
from orchestrator.plan_model import DTYPE_BYTES, Plan, arch_of, trained_lora_params
from orchestrator.schema import Config

OPTIMIZER_BYTES = 12  # per trained parameter: fp32 master + Adam exp_avg + exp_avg_sq


def plan_disk(cfg: Config, plan: Plan) -> None:
    from eval.metrics import checkpoint_steps

    sec, m = "disk", cfg.model
    lora, wbytes = trained_lora_params(cfg, arch_of(cfg)), DTYPE_BYTES[m.dtype]
    n_trials = len(cfg.sweep.lrs) * len(cfg.sweep.seeds)
    n_ckpt = len(checkpoint_steps(cfg.sweep.max_steps))
    policy = resolve_policy(cfg.sweep.keep_adapters, cfg.cluster.kind)
    kept = n_ckpt if policy == "all" else min(n_ckpt, KEPT_AT_MOST[policy])
    adapter = plan.put(sec, "adapter_gb", lora * wbytes / 1e9, f"{lora / 1e6:.4g}M trained LoRA params x {wbytes} "
                       f"bytes ({m.dtype})", f"{lora * wbytes / 1e9:.3g} GB")
    plan.put(sec, "adapters_kept_per_trial", kept, f"sweep.keep_adapters={policy} of {n_ckpt} checkpoints")
    state = plan.put(sec, "trainer_state_gb", lora * (wbytes + OPTIMIZER_BYTES) / 1e9, f"params x ({wbytes} + "
                     f"{OPTIMIZER_BYTES} bytes: fp32 master, Adam moments), the latest only",
                     f"{lora * (wbytes + OPTIMIZER_BYTES) / 1e9:.3g} GB")
    total = n_trials * (kept * adapter + state)
    plan.put(sec, "total_gb", total, f"{n_trials} trials x ({kept} adapters x adapter_gb + trainer_state_gb)",
             f"{total:.3g} GB" + ("" if policy == "all" else
                                  f" (all {n_ckpt} adapters: {n_trials * (n_ckpt * adapter + state):.3g} GB)"))
