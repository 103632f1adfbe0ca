"""The planner's GPU-hours before and after issue 16 (levers, hpZ, packing, sampler sharing), side by side.

    python bench/plan_cost.py [--out bench/results/plan_cost.json]

Two reference sweeps of Qwen3-235B-A22B on 4 nodes of 8 x 80 GB:
  (a) the README's command: 4 LRs x 1 seed x 64 steps;
  (b) the note's size: 8 settings x 5 LRs x 10 seeds x 256 steps (one sweep per setting, so 8 x one plan).
each with the model's default LoRA (attention + lm_head + experts, Tinker's; the packed trainer takes all of it:
workers/train/packed.py, workers/train/packed_experts.py), with attention + lm_head (model.lora_experts=false), with
attention + experts (no lm_head) and with attention-only LoRA (q, k, v, o). Both on one step budget for every LR
(sweep=toy's schedule), as the old planner priced them; a real model's default is now sweep=note (per-LR budgets).

"before" is the planner with the issue's levers held where the old planner held them (sweep.pack=1,
train.loss_chunk_tokens=4096, train.hpz_partition_size=1, sample.engine.dedicated_gpus=true); the old planner
(commit 08b67a6) gives the same figures: 83.589 allocation GPU-h for (a) and 3865.984 per setting for (b), either
LoRA. "after" is the default plan with sweep.pack=auto. "at nodes": each plan on the fewest nodes that run the
same waves (`time.nodes_needed`), its ratio after vs before at their own node counts. Pure arithmetic: no GPU,
a second or two.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "plan_cost.json"
BASE = ["model=qwen3_235b_a22b", "cluster=slurm", "cluster.nodes=4", "sweep=toy"]
SWEEPS = {"a": (["sweep.lrs=[3e-5,1e-4,3e-4,1e-3]"], 1),
          "b": (["sweep.lrs=[1e-5,3e-5,1e-4,3e-4,1e-3]", "sweep.seeds=[0,1,2,3,4,5,6,7,8,9]",
                 "sweep.max_steps=256"], 8)}
# every LoRA here packs (workers/train/pack_rules.py); the rows show what each part costs
LORA = {"default": [],
        "attention_lm_head": ["model.lora_experts=false"],
        "attention_experts": ["model.lora_target_modules=[q_proj,k_proj,v_proj,o_proj]"],
        "attention_only": ["model.lora_experts=false", "model.lora_target_modules=[q_proj,k_proj,v_proj,o_proj]"]}
BEFORE = ["sweep.pack=1", "train.loss_chunk_tokens=4096", "train.hpz_partition_size=1",
          "sample.engine.dedicated_gpus=true"]
AFTER = ["sweep.pack=auto"]
OLD_PLANNER = {"a": 83.589, "b": 3865.984}  # allocation GPU-h per setting from commit 08b67a6, either LoRA


def figures(overrides: list[str], settings: int) -> dict[str, Any]:
    from orchestrator.config import compose_config
    from orchestrator.plan.planner import make_plan

    p = make_plan(compose_config(overrides), price=False).sections
    tr, t, pl = p["trainer"], p["time"], p["placement"]
    alloc = t["allocation_gpu_h"] * settings
    return {
        "gpus_per_trial": tr["gpus_per_trial"], "pack": tr["pack"], "micro_batch": tr["micro_batch_per_gpu"],
        "grad_accum": tr["grad_accum_steps"], "loss_chunk_tokens": tr["loss_chunk_tokens"],
        "hpz": tr["hpz_partition_size"], "memory_per_gpu_gib": tr["memory_per_gpu_gib"],
        "sampler": "dedicated" if p["sampler"]["dedicated_gpus"] else "shared",
        "concurrent": pl["concurrent_trials"], "compute_s": round(t["compute_s"], 3),
        "communication_s": round(t["communication_s"], 3), "step_s": round(t["step_s"], 3),
        "wall_h": round(t["wall_h"], 4), "trainer_gpu_h_per_trial": round(t["trainer_gpu_h_per_trial"], 4),
        "allocation_gpu_h": round(alloc, 3),
        "nodes_needed": t.get("nodes_needed", 4),
        "allocation_gpu_h_at_nodes_needed": round(t.get("allocation_gpu_h_at_nodes_needed", t["allocation_gpu_h"])
                                                  * settings, 3),
        "arithmetic": [f"[{s}] {line}" for s, line in make_plan(compose_config(overrides), price=False).lines
                       if s in ("trainer", "time") and any(k in line for k in (
                           "gpus_per_trial", "pack =", "step_s", "communication_s", "compute_s", "waves", "wall_h",
                           "allocation_gpu_h", "nodes_needed", "packs ="))],
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    rows: dict[str, Any] = {}
    print(f"{'sweep':<22}{'':8}{'GPUs':>5}{'K':>4}{'chunk':>7}{'hpZ':>5}{'sampler':>11}{'step s':>9}{'wall h':>9}"
          f"{'alloc GPU-h':>13}{'ratio':>7}{'at nodes':>10}{'ratio':>7}")
    for sweep, (over, settings) in SWEEPS.items():
        for lora, lo in LORA.items():
            before = figures([*BASE, *over, *lo, *BEFORE], settings)
            after = figures([*BASE, *over, *lo, *AFTER], settings)
            old = OLD_PLANNER[sweep] * settings
            ratio = old / after["allocation_gpu_h"]
            # fair at fewer nodes too: each plan on the fewest nodes that run its own waves
            ratio_nodes = before["allocation_gpu_h_at_nodes_needed"] / after["allocation_gpu_h_at_nodes_needed"]
            key = f"{sweep}_{lora}"
            rows[key] = {"settings": settings, "old_planner_allocation_gpu_h": round(old, 3), "before": before,
                         "after": after, "saving": round(ratio, 3), "saving_at_nodes_needed": round(ratio_nodes, 3)}
            for name, f in (("before", before), ("after", after)):
                mine = name == "after"
                tail = (f"{ratio:>7.2f}" if mine else " " * 7) + f"{f['allocation_gpu_h_at_nodes_needed']:>10.1f}" + (
                    f"{ratio_nodes:>7.2f}" if mine else " " * 7) + f" ({f['nodes_needed']} nodes)"
                print(f"{key:<22}{name:<8}{f['gpus_per_trial']:>5}{f['pack']:>4}{f['loss_chunk_tokens']:>7}"
                      f"{f['hpz']:>5}{f['sampler']:>11}{f['step_s']:>9.2f}{f['wall_h']:>9.3f}"
                      f"{f['allocation_gpu_h']:>13.1f}{tail}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "python bench/plan_cost.py", "base": BASE, "before": BEFORE,
                                    "after": AFTER, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
