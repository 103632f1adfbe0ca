"""The cluster path, rehearsed end to end at toy size: the README's `submit` of a Qwen3-MoE sweep, then the job's
own launch line (`sweep resume=<sweep_dir>`, as slurm/sweep.sbatch runs it) on a Ray cluster of three raylets.

What is scaled down, and nothing else: the model is a tiny random Qwen3-MoE written in the hub's layout (per-expert
tensors, several safetensors shards); its `arch` block comes from that checkpoint's config.json; the "GPUs" are
Ray's logical GPUs of 4 MiB each (`cluster.gpu_memory_gib`), so the plan needs two of them per trial (ZeRO-3) as it
needs sixteen for Qwen3-235B-A22B on 80 GB GPUs; training runs on CPU over gloo. The same code runs: the plan is
resolved into the job's config.yaml, the trainer loads the checkpoint sharded under ZeRO-3 on two ranks on two
nodes, trains attention + lm_head + expert LoRA, saves adapters in PEFT's fused 3-D format, and the vLLM sampler
(its own "GPU" on the head node) serves them with the MoE LoRA flags; then summary, report and plots.
One host cannot give two Slurm nodes, so the job's Ray cluster is built here
(tests/integration/test_slurm_integration.py runs the sbatch script itself on a one-node Slurm).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors import safe_open
from tiny_moe import build_tiny_moe

from orchestrator.placement import SAMPLER_RESOURCE

ROOT = Path(__file__).resolve().parents[2]

STEPS = 4
# the plan needs two of these per trial for the checkpoint below (4.5 MiB and less: none fits once the plan leaves
# plan.headroom free and counts ZeRO-3's buffers; 6 MiB and more: one holds a trial)
LOGICAL_GPU_GIB = 5 / 1024


def arch_overrides(folder: Path) -> list[str]:
    """`model.arch.*` from a Qwen3-MoE checkpoint's config.json: the numbers the planner computes with."""
    c = json.loads((folder / "config.json").read_text())
    arch = {"num_layers": c["num_hidden_layers"], "hidden_size": c["hidden_size"],
            "num_heads": c["num_attention_heads"], "num_kv_heads": c["num_key_value_heads"],
            "head_dim": c["head_dim"], "intermediate_size": c["intermediate_size"],
            "moe_intermediate_size": c["moe_intermediate_size"], "num_experts": c["num_local_experts"],
            "experts_per_token": c["num_experts_per_tok"], "vocab_size": c["vocab_size"],
            "tie_word_embeddings": str(c["tie_word_embeddings"]).lower(), "total_params_b": 0, "active_params_b": 0}
    return [f"model.arch.{k}={v}" for k, v in arch.items()]


@pytest.fixture
def ray_cluster():
    import ray
    from ray.cluster_utils import Cluster

    # the head node is the sampler's (its marker resource and one logical GPU); two trainer nodes, one GPU each
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "num_gpus": 1, "resources": {SAMPLER_RESOURCE: 1}, "include_dashboard": False})
    c.add_node(num_cpus=1, num_gpus=1)
    c.add_node(num_cpus=1, num_gpus=1)
    c.wait_for_nodes()
    yield c
    ray.shutdown()
    c.shutdown()


def test_readme_cluster_command_runs_a_moe_sweep_end_to_end(ray_cluster, cache_dir, tmp_path):
    model = build_tiny_moe(tmp_path / "Qwen3-MoE-tiny", shard_bytes=200_000, layers=4, hidden=64, expert_width=32,
                           experts=16)
    assert len(list(model.glob("model-*.safetensors"))) >= 3  # the hub's multi-shard layout
    sweep_dir = tmp_path / "sweep"
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "RAY_ADDRESS")}
    env |= {"LRSWEEP_CACHE": str(cache_dir)}
    # README, Cluster (Slurm), step 4, with the model and the cluster scaled down
    submit = [sys.executable, "-m", "orchestrator", "submit", "setting=wronglang_spanish", "model=qwen3_30b_a3b",
              "cluster=slurm", f"model.path={model}", *arch_overrides(model), "cluster.nodes=3",
              "cluster.gpus_per_node=1", f"cluster.gpu_memory_gib={LOGICAL_GPU_GIB}", "train.dist_backend=gloo",
              "plan.overhead_gib=0", "plan.sampler_overhead_gib=0", "plan.fragmentation=1.0",
              "model.max_model_len=384", "train.loss_chunk_tokens=64", "sweep=toy", "sweep.lrs=[1e-2]",
              f"sweep.max_steps={STEPS}",
              "sample.n_eval_prompts=16", "sample.n_train_prompts=16", "sample.max_new_tokens=16",
              "tracker.mode=disabled", f"hydra.run.dir={sweep_dir}", "--dry-run",
              "setting.teacher.allow_scripted=true"]  # the README's on-policy teacher needs a model that answers
    proc = subprocess.run(submit, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # the job's config holds the plan's numbers, never `auto`
    cfg = yaml.safe_load((sweep_dir / "config.yaml").read_text())
    train, engine = cfg["train"], cfg["sample"]["engine"]
    assert (train["num_workers"], train["zero_stage"], train["micro_batch_size"]) == (2, 3, 1)
    assert engine["moe_lora_3d"] is True and engine["dedicated_gpus"] is True and engine["tensor_parallel_size"] == 1
    assert cfg["model"]["lora_experts"] is True and "lm_head" in cfg["model"]["lora_target_modules"]
    assert "auto" not in json.dumps({k: cfg[k] for k in ("train", "sample")})
    assert "sweep resume=" in (sweep_dir / "slurm" / "sweep.sbatch").read_text()

    # the sbatch script's launch line, on the job's Ray cluster (RAY_ADDRESS, as the script exports it)
    log = tmp_path / "job.log"
    with open(log, "w") as out:
        rc = subprocess.run([sys.executable, "-m", "orchestrator", "sweep", f"resume={sweep_dir}"], cwd=ROOT,
                            env=env | {"RAY_ADDRESS": ray_cluster.address}, stdout=out, stderr=subprocess.STDOUT,
                            timeout=1500).returncode
    assert rc == 0, log.read_text()[-6000:]

    trial = sweep_dir / "trials" / "lr0.010000_seed0"
    result = json.loads((trial / "result.json").read_text())
    where = result["placement"]
    assert len(set(where["bundle_nodes"])) == 2 and sorted(where["rank_nodes"]) == sorted(where["bundle_nodes"])
    placement = json.loads((sweep_dir / "placement.json").read_text())
    assert placement["sampler"]["node_id"] == ray_cluster.head_node.node_id  # the sampler has its own "GPU"

    rows = [json.loads(line) for line in (trial / "metrics.jsonl").open()]
    assert sorted(r["step"] for r in rows if r["kind"] == "eval") == [0, 1, 2, 4]
    for step in (0, 1, 2, 4):  # every checkpoint's adapter was served by vLLM and graded
        samples = [json.loads(line) for line in (trial / "samples" / f"step_{step:05d}.jsonl").open()]
        assert len(samples) == 32 and all(s["grade"] in ("desired", "attack", "other") for s in samples)
    with safe_open(trial / "adapters" / f"step_{STEPS:05d}" / "adapter_model.safetensors", "pt") as f:
        keys = list(f.keys())
        experts = [k for k in keys if ".experts." in k and "lora_B" in k]
        assert experts and all(f.get_tensor(k).abs().sum() > 0 for k in experts)  # expert LoRA trained, gathered
        assert any("lm_head" in k for k in keys)
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert len(summary) == 1 and summary[0]["status"]
    report = (sweep_dir / "report.md").read_text()
    assert "**LR parametrization**" in report and "alpha 32" in report
    print(f"rehearsal: {result['wall_s']:.0f}s trial; bundles on {len(set(where['bundle_nodes']))} nodes")
