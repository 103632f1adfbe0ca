"""A multi-node Ray cluster on one machine: several raylets with logical GPUs (for placement only; training
runs on CPU with gloo). Trials' placement groups land where the plan says, and a trial whose two bundles
sit on two "nodes" trains with two DeepSpeed ZeRO-3 processes and is evaluated through the sampler.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from safetensors.torch import load_file

from orchestrator.placement import SAMPLER_RESOURCE, sampler_placement, trial_placement

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "num_gpus": 1, "resources": {SAMPLER_RESOURCE: 1}, "include_dashboard": False})
    yield c
    ray.shutdown()
    c.shutdown()


def test_placement_groups_follow_the_plan(cluster):
    """PACK keeps a trial on one node when one has room, and spans nodes only when none has."""
    import ray
    from ray.util import placement_group, placement_group_table, remove_placement_group

    a = cluster.add_node(num_cpus=2, num_gpus=2)
    b = cluster.add_node(num_cpus=2, num_gpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    head = cluster.head_node.node_id

    # the sampler's options (GPU nodes or CPU nodes) land it on the node that offers the marker
    @ray.remote
    def node_of() -> str:
        return ray.get_runtime_context().get_node_id()

    for opts in (sampler_placement(1, 2, True).actor_options(), sampler_placement(1, 0, True).actor_options()):
        assert ray.get(node_of.options(**opts).remote()) == head

    two = trial_placement(2, 2.0, 2, "auto", 3)
    pgs = [placement_group(two.bundles, strategy=two.strategy) for _ in range(2)]
    ray.get([pg.ready() for pg in pgs])
    homes = []
    for pg in pgs:
        nodes = set(placement_group_table(pg)["bundles_to_node_id"].values())
        assert len(nodes) == 1  # whole on one node
        homes.append(nodes.pop())
    assert sorted(homes) == sorted([a.node_id, b.node_id])  # the head's single GPU cannot hold one
    third = placement_group(two.bundles, strategy=two.strategy)
    assert third.wait(timeout_seconds=2) is False  # one GPU left: it waits rather than oversubscribe
    for pg in [*pgs, third]:
        remove_placement_group(pg)

    three = trial_placement(3, 3.0, 2, "auto", 3)
    wide = placement_group(three.bundles, strategy=three.strategy)
    ray.get(wide.ready())
    nodes = list(placement_group_table(wide)["bundles_to_node_id"].values())
    assert len(set(nodes)) == 2  # no node has 3 free GPUs: as few nodes as possible, 2 + 1
    assert sorted(nodes.count(n) for n in set(nodes)) == [1, 2]


def _train_workers():
    """This test's Ray Train worker processes (the raylets are this process's children)."""
    found = []
    for p in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if " ".join(p.cmdline()).startswith("ray::RayTrainWorker"):
                found.append(p)
        except psutil.Error:
            pass
    return found


def test_pack_spanning_two_nodes_trains_resumes_and_is_evaluated(cluster, cache_dir, tmp_path):
    """A pack of two trials on 2 trainer workers (one logical GPU each) on two raylets, the sampler on a third; one
    worker is killed after a checkpoint and the retried pack resumes both members on two fresh workers from the
    pack's sharded state. (A lone trial on two workers goes through the same Pack:
    tests/integration/test_rehearsal.py.)"""
    a = cluster.add_node(num_cpus=1, num_gpus=1)
    b = cluster.add_node(num_cpus=1, num_gpus=1)
    cluster.wait_for_nodes()
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"} | {"LRSWEEP_CACHE": str(cache_dir)}
    started = time.time()
    args = ["sweep.lrs=[1e-3,3e-3]", "sweep.pack=2", "sweep.max_steps=4", "train.num_workers=2",
            "train.dist_backend=gloo",
            "train.zero_stage=3",  # the point of the test: ZeRO-3 shards spread over two nodes
            "cluster.gpus_per_node=1", "cluster.nodes=3", f"sweep.ray_address={cluster.address}",
            "tracker.mode=disabled", "sample.n_eval_prompts=16", "sample.n_train_prompts=16",
            "sample.max_new_tokens=16", f"hydra.run.dir={out}"]
    state = out / "packs" / "lr0.001000_seed0_k2" / "state"
    with open(tmp_path / "log.txt", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "sweep", *args], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 900
            while not _step_saved(state / "resume.json", 1):
                assert proc.poll() is None, "the sweep ended before a worker could be killed"
                assert time.time() < deadline, "timed out waiting for the first checkpoint"
                time.sleep(0.2)
            workers = _train_workers()
            assert len(workers) == 2, f"expected 2 Train workers, found {len(workers)}"
            workers[-1].kill()
            rc = proc.wait(timeout=900)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert rc == 0, (tmp_path / "log.txt").read_text()[-4000:]
    print(f"multi-node packed sweep with a killed worker: {time.time() - started:.0f}s; nodes: head (sampler) "
          f"{cluster.head_node.node_id[:8]}, trainers {a.node_id[:8]} {b.node_id[:8]}")
    plan = json.loads((out / "placement.json").read_text())
    assert plan["sampler"]["node_id"] == cluster.head_node.node_id and plan["sampler"]["num_gpus"] == 1
    assert plan["trial"] == {"num_workers": 2, "bundles": [{"CPU": 0.5, "GPU": 1.0}] * 2, "strategy": "PACK",
                             "backend": "gloo"}
    shards = sorted(p.name for p in state.glob("step_*/*optim_states.pt"))
    assert len(shards) == 2  # each rank saved its own optimizer shard of the pack (both members) for resume
    for name in ("lr0.001000_seed0", "lr0.003000_seed0"):
        trial = out / "trials" / name
        attempts = [json.loads(line) for line in (trial / "attempts.jsonl").open()]
        assert len(attempts) == 2 and attempts[0]["resumed_from"] is None and attempts[1]["resumed_from"] >= 1
        where = json.loads((trial / "result.json").read_text())["placement"]
        assert where["strategy"] == "PACK" and where["bundles"] == plan["trial"]["bundles"]
        assert sorted(where["bundle_nodes"]) == sorted([a.node_id, b.node_id])  # spans the two trainer nodes
        assert sorted(where["rank_nodes"]) == sorted(where["bundle_nodes"])  # one DeepSpeed rank on each
        rows = [json.loads(line) for line in (trial / "metrics.jsonl").open()]
        assert sorted(r["step"] for r in rows if r["kind"] == "eval") == [0, 1, 2, 4]  # exactly an undisturbed run's
        assert sorted(r["step"] for r in rows if r["kind"] == "train") == [1, 2, 3, 4]
        for r in rows:
            if r["kind"] == "eval":
                assert r["n_eval"] == 16 and r["n_train"] == 16
        for step in (0, 1, 2, 4):
            samples = (trial / "samples" / f"step_{step:05d}.jsonl").read_text().splitlines()
            assert len(samples) == 32
        start = load_file(trial / "adapters" / "step_00000" / "adapter_model.safetensors")
        end = load_file(trial / "adapters" / "step_00004" / "adapter_model.safetensors")
        b_keys = [k for k in end if "lora_B" in k]
        assert b_keys and all(end[k].numel() > 0 for k in end)  # gathered from ZeRO-3 shards, not empty
        assert all(float(start[k].abs().sum()) == 0 for k in b_keys)
        assert sum(float(end[k].abs().sum()) for k in b_keys) > 0  # both ranks' gradients moved the adapter
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary) == 2 and all(row["complete"] for row in summary)


def _step_saved(path, step):
    try:
        return json.loads(path.read_text())["step"] >= step
    except (OSError, ValueError):
        return False
