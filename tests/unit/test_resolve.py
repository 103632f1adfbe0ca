"""The plan drives the job: the README's commands write a config.yaml, a TrainSpec and a SamplerSpec equal to
their plan; explicit values that cannot fit are refused with the fix; the CPU toy keeps its values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.config import compose_config
from orchestrator.placement import trial_placement
from orchestrator.plan.planner import GIB, PlanError, make_plan
from orchestrator.plan.resolve import resolve
from orchestrator.run.build import build_train_spec, sampler_spec
from orchestrator.run.sweep import check_sweep_folder, config_yaml
from orchestrator.schema import ConfigError

ROOT = Path(__file__).resolve().parents[2]
LRS = "sweep.lrs=[3e-5,1e-4,3e-4,1e-3]"


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    """A local model folder (submit refuses hub ids on offline clusters); the plan reads only the arch block."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


def readme_commands(model_dir: Path) -> dict[str, list[str]]:
    return {
        # README "A cluster (Slurm)"
        "235b": ["setting=wronglang_spanish", "model=qwen3_235b_a22b", "cluster=slurm", f"model.path={model_dir}",
                 "cluster.nodes=4", LRS, "setting.teacher.kind=onpolicy", "setting.teacher.filter=true"],
        # docs/cluster.md "Planning a cluster sweep": the note's inoculation model (rank 32, batch 4 as in the note)
        "30b": ["model=qwen3_30b_a3b", "cluster=slurm", f"model.path={model_dir}", "cluster.nodes=1",
                "train.lora_rank=32", "train.batch_size=4", LRS],
        # conf/model/qwen3_0_6b.yaml: the single-GPU smoke test, sampler and trainer sharing the GPU
        "0.6b": ["model=qwen3_0_6b", f"model.path={model_dir}", "cluster.gpus_per_node=1"],
    }


def planned(plan: dict) -> dict:
    """The fields the job reads, as the plan states them."""
    tr, sa, pl = plan["trainer"], plan["sampler"], plan["placement"]
    return {"num_workers": tr["gpus_per_trial"], "zero_stage": tr["zero_stage"],
            "micro_batch_size": tr["micro_batch_per_gpu"], "tensor_parallel_size": sa["tensor_parallel_size"],
            "gpu_memory_utilization": sa["gpu_memory_utilization"], "max_loras": pl["max_loras"],
            "max_cpu_loras": pl["max_cpu_loras"], "fully_sharded_loras": sa["fully_sharded_loras"],
            "max_lora_rank": sa["max_lora_rank"], "moe_lora_3d": sa["moe_lora_3d"],
            "dedicated_gpus": sa["dedicated_gpus"], "loss_chunk_tokens": tr["loss_chunk_tokens"],
            "hpz_partition_size": tr["hpz_partition_size"], "pack": tr["pack"], "sleep": sa["sleep"]}


def recorded(config: dict) -> dict:
    """The same fields as a config.yaml records them."""
    t, e = config["train"], config["sample"]["engine"]
    return {k: t[k] for k in ("num_workers", "zero_stage", "micro_batch_size", "loss_chunk_tokens",
                              "hpz_partition_size")} | {
        k: e[k] for k in ("tensor_parallel_size", "gpu_memory_utilization", "max_loras", "max_cpu_loras",
                          "fully_sharded_loras", "max_lora_rank", "moe_lora_3d", "dedicated_gpus", "sleep")} | {
        "pack": config["sweep"]["pack"]}


def test_submit_dry_run_writes_the_plan_for_the_readme_235b_command(model_dir, tmp_path):
    """Before: config.yaml said num_workers 1, zero_stage auto, micro 32, TP 1 at 0.1, max_loras 4 (plan: 16 GPUs,
    ZeRO-3, micro 2, TP 8 at 0.9; a pack of the 4 trials, so 4 adapters at once)."""
    cmd = readme_commands(model_dir)["235b"]
    out = tmp_path / "sw"
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "submit", *cmd, f"hydra.run.dir={out}", "--dry-run"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    written = recorded(yaml.safe_load((out / "config.yaml").read_text()))
    plan = json.loads(subprocess.run([sys.executable, "-m", "orchestrator", "plan", *cmd, "--json"], cwd=ROOT,
                                     capture_output=True, text=True, timeout=300).stdout)
    assert written == planned(plan)
    assert written == {"num_workers": 16, "zero_stage": 3, "micro_batch_size": 2, "tensor_parallel_size": 8,
                       "gpu_memory_utilization": 0.9, "max_loras": 4, "max_cpu_loras": 8, "fully_sharded_loras": True,
                       # 1024: the note preset's per-LR budgets (2134 steps at 3e-5) make the packs' lengths differ,
                       # and issue 26's headroom (8% of each GPU left free) leaves less for the loss chunk
                       "max_lora_rank": 8, "moe_lora_3d": True, "dedicated_gpus": True, "loss_chunk_tokens": 1024,
                       "hpz_partition_size": 1, "pack": 4, "sleep": False}
    assert "auto" not in written.values()


@pytest.mark.parametrize("name", ["235b", "30b", "0.6b"])
def test_readme_commands_run_what_their_plan_says(name, model_dir, tmp_path):
    """config.yaml (what sweep and submit write), the trainer's spec, its placement and the engine's spec all equal
    the plan; resolving the written config again (a resume, a requeue) changes nothing."""
    cfg = compose_config(readme_commands(model_dir)[name])
    plan = planned(make_plan(cfg).sections)
    text = config_yaml(resolve(cfg))
    assert recorded(yaml.safe_load(text)) == plan
    spec = build_train_spec(cfg, str(model_dir), 1e-4, 0)
    assert (spec.train.zero_stage, spec.train.micro_batch_size) == (plan["zero_stage"], plan["micro_batch_size"])
    place = trial_placement(resolve(cfg).train.num_workers, cfg.sweep.cpus_per_trial, cfg.cluster.gpus_per_node,
                            nodes=cfg.cluster.nodes)
    assert place.num_workers == plan["num_workers"]
    s = sampler_spec(cfg, str(model_dir))
    assert {k: getattr(s.engine, k) for k in ("tensor_parallel_size", "gpu_memory_utilization", "max_loras",
                                       "max_cpu_loras", "fully_sharded_loras", "max_lora_rank")} == {
        k: plan[k] for k in ("tensor_parallel_size", "gpu_memory_utilization", "max_loras", "max_cpu_loras",
                             "fully_sharded_loras", "max_lora_rank")}
    assert config_yaml(resolve(resolve(cfg))) == text
    (tmp_path / "config.yaml").write_text(text)
    assert check_sweep_folder(tmp_path, text)


def test_the_readme_plans_by_kind():
    """What each README command resolves to (numbers in the README's Planning section)."""
    cmds = readme_commands(Path("/m"))
    big = planned(make_plan(compose_config(cmds["235b"][:3] + cmds["235b"][4:])).sections)
    assert (big["num_workers"], big["zero_stage"], big["tensor_parallel_size"], big["moe_lora_3d"]) == (16, 3, 8, True)
    small = planned(make_plan(compose_config(cmds["0.6b"][:1] + cmds["0.6b"][2:])).sections)
    # one GPU: no room for a sampler GPU of its own, so it shares; the smallest share that holds 200 prompts
    assert (small["num_workers"], small["zero_stage"], small["dedicated_gpus"], small["tensor_parallel_size"]) == (
        1, 0, False, 1)
    assert 0 < small["gpu_memory_utilization"] < 0.5 and small["moe_lora_3d"] is False


H100 = ["model=qwen3_235b_a22b", "cluster=slurm", "cluster.nodes=4", LRS]


@pytest.mark.parametrize(
    "override, message",
    [
        # ZeRO-3 over one 80 GB GPU: 470 GB of weights
        ("train.num_workers=1", r"does not fit with train.num_workers=1.*set train.num_workers=auto \(the plan: 16 "
                                r"GPUs per trial, ZeRO-3, micro-batch 2\)"),
        ("train.zero_stage=0", r"set train.zero_stage=auto"),
        ("train.num_workers=8", r"ZeRO-3 over 8 GPUs.*set train.num_workers=auto \(the plan: 16 GPUs per trial"),
        # the 470 GB of weights on one sampler GPU
        ("sample.engine.tensor_parallel_size=1", r"sampler does not fit.*TP1.*set sample.engine.tensor_parallel_"
                                                 r"size=auto"),
        ("sample.engine.gpu_memory_utilization=0.5", r"sampler does not fit.*gpu_memory_utilization=auto"),
        ("sample.engine.moe_lora_3d=false", r"refuses PEFT's fused 3-D expert adapters.*moe_lora_3d=auto"),
        ("sample.engine.max_lora_rank=16", None),  # fits: kept
        ("sample.engine.tensor_parallel_size=3", r"divide the 64 attention heads"),
    ],
)
def test_explicit_values_are_checked_against_the_plan(override, message):
    cfg = compose_config([*H100, override])
    if message is None:
        assert resolve(cfg).sample.engine.max_lora_rank == 16
        return
    with pytest.raises(ConfigError, match=message):
        resolve(cfg)


def test_submit_refuses_a_contradictory_override_before_writing(model_dir, tmp_path):
    out = tmp_path / "sw"
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "submit", *readme_commands(model_dir)["235b"],
                           "train.num_workers=1", f"hydra.run.dir={out}", "--dry-run"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "set train.num_workers=auto" in proc.stderr, proc.stderr
    assert not out.exists()


def test_explicit_values_that_fit_win():
    cfg = resolve(compose_config([*H100, "train.micro_batch_size=1", "sample.engine.max_loras=2"]))
    assert (cfg.train.num_workers, cfg.train.micro_batch_size, cfg.sample.engine.max_loras) == (16, 1, 2)
    # a micro-batch above a GPU's share of the batch (32 / 16 GPUs = 2) is one pass of that share
    assert resolve(compose_config([*H100, "train.micro_batch_size=16"])).train.micro_batch_size == 2
    assert cfg.sample.engine.max_cpu_loras == 4  # 2 x max_loras
    with pytest.raises(ConfigError, match="max_cpu_loras"):
        compose_config([*H100, "sample.engine.max_loras=4", "sample.engine.max_cpu_loras=2"])
    with pytest.raises(ConfigError, match=r"train.num_workers='two': must be auto \(the plan's\) or an integer >= 1"):
        compose_config(["train.num_workers=two"])


def test_cpu_toy_keeps_its_values():
    """cluster=local without GPUs: one in-process trainer, the engine values the toy suite was tuned with."""
    cfg = resolve(compose_config([]))
    e = cfg.sample.engine
    assert (cfg.train.num_workers, cfg.train.zero_stage, cfg.train.micro_batch_size) == (1, 0, 32)
    assert (e.tensor_parallel_size, e.gpu_memory_utilization, e.max_loras, e.max_cpu_loras) == (1, 0.1, 4, 16)
    assert (e.fully_sharded_loras, e.max_lora_rank, e.moe_lora_3d, e.dedicated_gpus) == (False, 8, False, False)
    two = resolve(compose_config(["train.num_workers=2"]))
    assert (two.train.num_workers, two.train.micro_batch_size) == (2, 16)


def test_expert_lora_memory_by_hand():
    """PEFT folds W + s*B@A for a layer's whole expert stack (held for backward, and its gradient); vLLM holds per
    slot and GPU E*r*(3H + 3I)/TP per layer (mixed MoE format: gate's and up's lora_A apart)."""
    plan = make_plan(compose_config([*H100, "sweep.pack=1"])).sections  # a trial alone folds (a pack does not)
    # 2 x 128 experts x (4096*3072 + 1536*4096) x 2 B = 9,663,676,416 B
    assert plan["trainer"]["expert_lora_materialized_gib"] == pytest.approx(9_663_676_416 / GIB, abs=1e-3)
    # experts: 128*8*(3*4096 + 3*1536)/8 * 94 layers * 2 B = 406,585,344; linear: (94*270,336 + 8*(4096+151,936))
    # * 2 B / 8 = 6,664,960 -> 413,250,304 B
    assert plan["sampler"]["vllm_slot_per_gpu_gib"] == pytest.approx(413_250_304 / GIB, abs=1e-3)
    # on the same 16 GPUs (without expert LoRA the plan fits the trial in one node instead: tests/unit/test_planner.py)
    off = make_plan(compose_config([*H100, "model.lora_experts=false", "train.num_workers=16", "sweep.pack=1",
                                    "train.loss_chunk_tokens=4096"])).sections
    assert off["trainer"]["expert_lora_materialized_gib"] == 0
    assert off["trainer"]["memory_per_gpu_gib"] < plan["trainer"]["memory_per_gpu_gib"] - 9


def test_moe_models_train_as_the_notes_platform():
    for model in ("qwen3_235b_a22b", "qwen3_30b_a3b"):
        cfg = compose_config([f"model={model}"])
        assert cfg.model.lora_experts and "lm_head" in cfg.model.lora_target_modules
        assert cfg.train.lora_alpha == 32
    assert compose_config(["model=qwen3_0_6b"]).train.lora_alpha == 32


def test_a_local_machine_with_room_gives_the_sampler_its_own_gpu():
    cfg = resolve(compose_config(["model=qwen3_0_6b", "cluster.gpus_per_node=2"]))
    assert cfg.sample.engine.dedicated_gpus and cfg.sample.engine.gpu_memory_utilization == 0.9
    with pytest.raises(PlanError, match="no trial fits beside the sampler"):
        resolve(compose_config(["model=qwen3_0_6b", "cluster.gpus_per_node=1",
                                "sample.engine.dedicated_gpus=true"]))


def test_fully_sharded_loras_needs_the_rank_to_split_over_tp():
    """vLLM splits lora_A's rank dimension over the TP ranks (max_lora_rank / TP)."""
    assert resolve(compose_config(H100)).sample.engine.fully_sharded_loras  # rank 8 over TP 8
    assert not resolve(compose_config([*H100, "train.lora_rank=1"])).sample.engine.fully_sharded_loras
    with pytest.raises(ConfigError, match="fully_sharded_loras=auto"):
        resolve(compose_config([*H100, "train.lora_rank=1", "sample.engine.fully_sharded_loras=true",
                                "sample.engine.tensor_parallel_size=8"]))


def test_a_folder_written_before_resolution_still_resumes(tmp_path):
    """A toy sweep's config.yaml from before this change (zero_stage auto, no new engine keys) is the same sweep
    once resolved, so `sweep resume=` accepts it; another sweep's folder is still refused."""
    from omegaconf import OmegaConf

    from orchestrator.config import to_typed
    from orchestrator.schema import Config

    data = yaml.safe_load(config_yaml(resolve(compose_config(["train.lora_alpha=16"]))))
    data["train"]["zero_stage"] = "auto"
    for key in ("fully_sharded_loras", "max_lora_rank", "moe_lora_3d", "dedicated_gpus", "sleep"):
        del data["sample"]["engine"][key]
    del data["train"]["hpz_partition_size"], data["sweep"]["pack"]  # before issue 16's planner fields
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    loaded = to_typed(OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(tmp_path / "config.yaml")))
    assert check_sweep_folder(tmp_path, config_yaml(resolve(loaded)))
    with pytest.raises(ConfigError, match="already holds a different sweep"):
        check_sweep_folder(tmp_path, config_yaml(resolve(compose_config([]))))  # alpha 32: another sweep


def test_a_command_plans_once_and_its_builders_never_again(monkeypatch):
    """resolve_run plans once; the trainer's and the engine's specs and the sweep's checks read that Resolved."""
    import orchestrator.plan.resolve as resolve_module
    from orchestrator.plan.resolve import Resolved, resolve_run
    from orchestrator.run.sweep import check_before_compute

    real, calls = resolve_module.make_plan, []
    monkeypatch.setattr(resolve_module, "make_plan", lambda cfg: calls.append(1) or real(cfg))
    run = resolve_run(compose_config([]))
    assert isinstance(run, Resolved) and resolve_run(run) is run and len(calls) == 1
    spec, engine = build_train_spec(run, "/m", 1e-3, 0), sampler_spec(run, "/m").engine
    check_before_compute(run)
    assert len(calls) == 1
    assert spec.zero_buffers == dict(run.plan.sections["trainer"]["zero_buffers"])
    assert engine == run.config.sample.engine
    build_train_spec(compose_config([]), "/m", 1e-3, 0)  # a Config (tests, tools): resolved there, once
    assert len(calls) == 2
