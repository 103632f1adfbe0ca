"""Issue 26 finding 5: every DeepSpeed buffer the memory plan relies on is set explicitly in the trainer's DeepSpeed
config from the plan (DeepSpeed's defaults would gather up to 1e9 parameters and bucket 5e8 gradients), counted in
the plan's memory sum, and the plans stop plan.headroom (8%) short of each card."""

from __future__ import annotations

import pytest

from orchestrator.config import compose_config
from orchestrator.plan.planner import GIB, make_plan

B30 = ["model=qwen3_30b_a3b", "cluster=slurm"]
B235 = ["model=qwen3_235b_a22b", "cluster=slurm", "cluster.nodes=4"]


@pytest.mark.parametrize("overrides", [B30, B235], ids=["30b_a3b_one_node", "235b_four_nodes"])
def test_the_deepspeed_config_carries_the_buffers_the_plan_counted(overrides: list[str]) -> None:
    from orchestrator.run.build import build_train_spec
    from workers.train.trainer import deepspeed_config

    cfg = compose_config(overrides)
    tr = make_plan(cfg).sections["trainer"]
    buffers = tr["zero_buffers"]
    assert set(buffers) >= {"reduce_bucket_size", "stage3_max_live_parameters", "stage3_prefetch_bucket_size",
                            "stage3_param_persistence_threshold", "stage3_model_persistence_threshold",
                            "stage3_max_reuse_distance"}
    # what the sum charges: two gathered layers (max live), one prefetched, the bucket and the persisted norms
    assert buffers["stage3_max_live_parameters"] * 2 == pytest.approx(tr["zero3_gathered_layers_gib"] * GIB, rel=1e-3)
    assert buffers["stage3_prefetch_bucket_size"] * 2 <= buffers["stage3_max_live_parameters"] * 2
    assert tr["zero_buffers_gib"] == pytest.approx(
        (buffers["reduce_bucket_size"] + buffers["stage3_model_persistence_threshold"]) * 2 / GIB, abs=1e-3)
    zero = deepspeed_config(build_train_spec(cfg, "/models/x", 1e-4, 0), world_size=tr["gpus_per_trial"])
    for key, value in buffers.items():
        assert zero["zero_optimization"][key] == value, key


@pytest.mark.parametrize("overrides", [B30, B235], ids=["30b_a3b_one_node", "235b_four_nodes"])
def test_plans_leave_the_headroom_free(overrides: list[str]) -> None:
    """Before: 77.81 (30B-A3B) and 78.71 (235B) of 80 GiB per GPU; now at most 80 x 0.92 = 73.6."""
    plan = make_plan(compose_config(overrides)).sections
    tr = plan["trainer"]
    assert tr["usable_per_gpu_gib"] == pytest.approx(73.6)
    assert tr["memory_per_gpu_gib"] <= 73.6
    edge = make_plan(compose_config([*overrides, "plan.headroom=0"])).sections["trainer"]
    assert edge["usable_per_gpu_gib"] == pytest.approx(80.0)


def test_a_sleeping_sampler_never_wakes_beside_another_packs_peak() -> None:
    """Issue 26 finding 1: `plan model=qwen3_30b_a3b cluster=slurm` ran two packs of 4 GPUs at once with the sampler
    asleep on pack A's GPUs, sized against what trainers hold between steps: pack B's requests woke ~40 GiB beside
    pack A mid-step at ~48 GiB. Only one pack pauses at its checkpoint, so a sleeping sampler now serves one pack at
    a time; with more the plan takes GPUs of its own (or a static share), and an explicit sharing plan is refused."""
    from orchestrator.plan.planner import PlanError

    def overlap_free(plan: dict) -> bool:
        sa, pl = plan["sampler"], plan["placement"]
        return sa["dedicated_gpus"] or not sa["sleep"] or pl["concurrent_trials"] == 1

    plan = make_plan(compose_config(B30)).sections
    assert overlap_free(plan)
    one_at_a_time = make_plan(compose_config([*B30, "sweep.max_concurrent_trials=1"])).sections
    assert one_at_a_time["sampler"]["sleep"] and overlap_free(one_at_a_time)
    with pytest.raises(PlanError, match="wake it while another is mid-step.*sweep.max_concurrent_trials=1"):
        make_plan(compose_config([*B30, "sample.engine.dedicated_gpus=false"]))
