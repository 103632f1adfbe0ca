"""One resolution of the resource plan, used by `plan`, `sweep` and `submit`: the config the job runs.

`resolve(cfg)` replaces every planner-owned `auto` (train.num_workers, zero_stage, micro_batch_size,
loss_chunk_tokens, hpz_partition_size; sweep.pack; the sample.engine fields, sleep included) with the plan's
number, and checks explicit values against the same arithmetic (orchestrator/plan/planner.py refuses with the fix).
The result holds numbers only, so the sweep folder's config.yaml records what runs; resolving it again changes
nothing (a resumed or requeued job reads it back).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from orchestrator.plan.keep_adapters import resolve_policy
from orchestrator.plan.planner import Plan, check_compile, make_plan
from orchestrator.schema import Config


def resolve_with_plan(cfg: Config) -> tuple[Config, Plan]:
    plan = make_plan(cfg)
    check_compile(cfg, plan.sections["trainer"]["zero_stage"])
    tr, sa, pl = plan.sections["trainer"], plan.sections["sampler"], plan.sections["placement"]
    train = replace(cfg.train, num_workers=tr["gpus_per_trial"], zero_stage=tr["zero_stage"],
                    micro_batch_size=tr["micro_batch_per_gpu"], loss_chunk_tokens=tr["loss_chunk_tokens"],
                    hpz_partition_size=tr["hpz_partition_size"],
                    collective_timeout_s=_collective_timeout(cfg, plan))
    engine = replace(cfg.sample.engine, tensor_parallel_size=sa["tensor_parallel_size"],
                     gpu_memory_utilization=sa["gpu_memory_utilization"], max_loras=pl["max_loras"],
                     max_cpu_loras=pl["max_cpu_loras"], fully_sharded_loras=sa["fully_sharded_loras"],
                     max_lora_rank=sa["max_lora_rank"], moe_lora_3d=sa["moe_lora_3d"],
                     dedicated_gpus=sa["dedicated_gpus"], sleep=sa["sleep"])
    keep = resolve_policy(cfg.sweep.keep_adapters, cfg.cluster.kind)  # auto: the cluster's default
    sweep = replace(cfg.sweep, pack=tr["pack"], keep_adapters=keep)
    return replace(cfg, train=train, sweep=sweep, sample=replace(cfg.sample, engine=engine)), plan


def _collective_timeout(cfg: Config, plan: Plan) -> float:
    """train.collective_timeout_s: the user's, or the plan's (its floor where the plan cannot time the sweep)."""
    from orchestrator.plan.timing import COLLECTIVE_TIMEOUT_FLOOR_S
    from orchestrator.schema import is_auto

    if not is_auto(cfg.train.collective_timeout_s):
        return float(cfg.train.collective_timeout_s)
    return float(plan.sections.get("time", {}).get("collective_timeout_s", COLLECTIVE_TIMEOUT_FLOOR_S))


@dataclass(frozen=True)
class Resolved:
    """What a command runs: its config with the plan's numbers in place of every `auto`, and the plan that gave
    them. A command resolves once (resolve_run); the builders (orchestrator/run/build.py) read both and never plan
    again."""

    config: Config
    plan: Plan


def resolve_run(cfg: Config | Resolved) -> Resolved:
    """The config resolved with its plan; a Resolved is returned as it is. Raises ConfigError/PlanError naming the
    fix."""
    if isinstance(cfg, Resolved):
        return cfg
    return Resolved(*resolve_with_plan(cfg))


def resolve(cfg: Config | Resolved) -> Config:
    """The config with the plan's numbers in place of `auto`; raises ConfigError/PlanError naming the fix."""
    return resolve_run(cfg).config
