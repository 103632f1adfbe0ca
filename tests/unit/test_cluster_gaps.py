"""Issue 27's cluster gaps: refusals give the minimum node count, the plan prices disk, sweep.keep_adapters prunes,
submit asks for the nodes the plan needs and prints the allocation's ceiling, takes hydra.searchpath, and keeps its
dry runs apart from real runs (tests/unit/test_slurm.py: test_a_dry_run_folder_is_apart_from_real_runs)."""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from eval.runfiles import TrialDir, step_name
from orchestrator.config import compose_config, load_resumed, to_typed
from orchestrator.plan.keep_adapters import adapters_to_keep, prune_adapters
from orchestrator.plan.model import PlanError
from orchestrator.plan.planner import make_plan
from orchestrator.plan.resolve import resolve

ROOT = Path(__file__).resolve().parents[2]
BIG = ["model=qwen3_235b_a22b", "cluster=slurm"]
README_235B = BIG + ["sweep.lrs=[3e-5,1e-4,3e-4,1e-3]", "sweep.max_steps=256"]


def test_a_refusal_names_the_minimum_node_count():
    """Was: "To fix: add nodes (cluster.nodes)", without the number."""
    with pytest.raises(PlanError) as err:
        make_plan(compose_config(BIG))  # slurm.yaml: 1 node
    assert "set cluster.nodes=3 or more" in str(err.value) and "add nodes" not in str(err.value)
    make_plan(compose_config(BIG + ["cluster.nodes=3"]))  # the number is the fewest that fit
    with pytest.raises(PlanError, match="set cluster.nodes=3 or more"):
        make_plan(compose_config(BIG + ["cluster.nodes=2"]))


def test_a_refusal_more_nodes_cannot_fix_says_so():
    with pytest.raises(PlanError, match="more nodes do not help"):
        make_plan(compose_config(BIG + ["model.max_model_len=200000"]))


@pytest.mark.parametrize("keep, kept", [("all", 10), ("around_transfer", 3), ("last", 1)])
def test_the_plan_prices_disk(keep, kept):
    """The README's 235B sweep on one step budget (sweep=toy's schedule: 10 checkpoints to 256 steps): a 2.52 GB
    expert adapter x 10 checkpoints x 4 trials, plus each trial's state."""
    cfg = compose_config(README_235B + ["sweep=toy", "cluster.nodes=9", f"sweep.keep_adapters={keep}"])
    disk = make_plan(cfg, price=False).sections["disk"]
    assert disk["adapter_gb"] == pytest.approx(2.52, abs=0.01) and disk["adapters_kept_per_trial"] == kept
    assert disk["trainer_state_gb"] == pytest.approx(disk["adapter_gb"] * 7)  # bf16 weights + 12 bytes of Adam
    assert disk["total_gb"] == pytest.approx(4 * (kept * disk["adapter_gb"] + disk["trainer_state_gb"]))
    assert (disk["total_gb"] > 150) == (keep == "all")  # 171 GB with every adapter, 101 GB around the transfer


def test_the_plan_prices_each_lrs_own_checkpoints():
    """Per-LR budgets (sweep=note): each LR keeps its own checkpoints' adapters, the low LRs' many more."""
    cfg = compose_config(README_235B + ["cluster.nodes=9", "sweep.keep_adapters=all"])
    disk = make_plan(cfg, price=False).sections["disk"]
    from orchestrator.budget import trial_fields

    ckpts = [len(trial_fields(cfg.sweep, lr, 0)["checkpoint_steps"]) for lr in cfg.sweep.lrs]
    assert len(set(ckpts)) > 1 and disk["adapters_kept_per_trial"] == max(ckpts)
    assert disk["total_gb"] == pytest.approx(len(cfg.sweep.seeds) * sum(
        n * disk["adapter_gb"] + disk["trainer_state_gb"] for n in ckpts))


def test_keep_adapters_defaults_by_cluster():
    assert resolve(compose_config(["cluster=slurm"])).sweep.keep_adapters == "around_transfer"
    assert resolve(compose_config([])).sweep.keep_adapters == "all"
    assert resolve(compose_config(["cluster=slurm", "sweep.keep_adapters=all"])).sweep.keep_adapters == "all"
    with pytest.raises(Exception, match="keep_adapters"):
        compose_config(["sweep.keep_adapters=some"])


CURVE = [(0, 1.0), (1, 0.9), (2, 0.8), (4, 0.4), (8, 0.1), (16, 0.0)]


@pytest.mark.parametrize("policy, evaluated, keep", [
    ("all", CURVE, {0, 1, 2, 4, 8, 16}),
    ("last", CURVE, {16}),
    ("around_transfer", CURVE, {2, 4, 16}),           # before the transfer, at it, the latest
    ("around_transfer", CURVE[:3], {1, 2}),            # no transfer yet: the latest two
    ("around_transfer", [(0, 0.2), (1, 0.1)], {0, 1}),  # "transfer" at step 0 (not an organism): nothing before it
    ("around_transfer", [], set()),
])
def test_adapters_to_keep(policy, evaluated, keep):
    assert adapters_to_keep(policy, evaluated, 0.5) == keep


def test_pruning_deletes_only_evaluated_adapters_it_does_not_keep(tmp_path):
    for step in (0, 1, 2, 4, 8, 16, 32):
        (tmp_path / "adapters" / step_name(step)).mkdir(parents=True)
        (tmp_path / "adapters" / step_name(step) / "adapter_config.json").write_text("{}")
    rows = [{"step": s, "eval_attack_rate": r} for s, r in CURVE]  # 32 not evaluated yet
    assert prune_adapters(tmp_path, "around_transfer", 0.5, rows, busy={0}) == [1, 8]
    assert sorted(p.name for p in (tmp_path / "adapters").iterdir()) == [step_name(s) for s in (0, 2, 4, 16, 32)]
    assert prune_adapters(tmp_path, "all", 0.5, rows) == []


@pytest.mark.parametrize("limit, hours", [("30", 0.5), ("90:00", 1.5), ("48:00:00", 48), ("2-00", 48),
                                          ("1-12:30", 36.5), ("1-00:00:36", 24.01)])
def test_time_limit_hours(limit, hours):
    from orchestrator.commands.submit import time_limit_hours

    assert time_limit_hours(limit) == pytest.approx(hours)


def run_submit(*args):
    return subprocess.run([sys.executable, "-m", "orchestrator", "submit", *args, "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_submit_asks_for_the_nodes_the_plan_needs_and_prints_the_ceiling(tmp_path):
    """Was: 4 nodes asked when 3 give the same wall time, and no allocation ceiling printed."""
    args = README_235B[:3] + ["cluster.offline=false", "cluster.nodes=4", "setting.teacher.kind=onpolicy",
                              "setting.teacher.filter=true"]  # a real teacher: scripted labels are the toy's
    proc = run_submit(*args, f"hydra.run.dir={tmp_path}/a")
    assert proc.returncode == 0, proc.stderr
    assert "asking for 3 nodes, not cluster.nodes=4" in proc.stdout
    assert "allocation: 3 nodes x 8 GPUs x 48:00:00 = at most 1,152 GPU-hours" in proc.stdout
    assert "GPU-hours; disk ~" in proc.stdout
    assert "#SBATCH --nodes=3\n" in (tmp_path / "a" / "slurm" / "sweep.sbatch").read_text()
    assert to_typed(load_resumed(tmp_path / "a", [])).cluster.nodes == 3  # the job's config says the same
    pinned = run_submit(*args, f"hydra.run.dir={tmp_path}/b", "--pin-nodes")
    assert pinned.returncode == 0, pinned.stderr
    assert "#SBATCH --nodes=4\n" in (tmp_path / "b" / "slurm" / "sweep.sbatch").read_text()
    assert "cluster.nodes=4 kept (--pin-nodes)" in pinned.stdout and "at most 1,536 GPU-hours" in pinned.stdout


def test_submit_takes_site_configs_from_hydra_searchpath(tmp_path):
    """Was: "submit takes no Hydra settings besides hydra.run.dir". The job runs from config.yaml alone."""
    site = tmp_path / "site"
    (site / "setting").mkdir(parents=True)
    (site / "cluster").mkdir()
    text = (ROOT / "conf" / "setting" / "animal_flag.yaml").read_text()
    (site / "setting" / "my_flag.yaml").write_text(text.replace("  name: animal_flag", "  name: my_flag"))
    cluster = (ROOT / "conf" / "cluster" / "slurm.yaml").read_text().replace("partition: null", "partition: big")
    (site / "cluster" / "mysite.yaml").write_text(cluster)
    proc = run_submit(f"hydra.searchpath=[file://{site}]", "setting=my_flag", "cluster=mysite",
                      f"hydra.run.dir={tmp_path}/sw")
    assert proc.returncode == 0, proc.stderr
    job = to_typed(load_resumed(tmp_path / "sw", []))  # no searchpath: config.yaml is self-contained
    assert job.setting.name == "my_flag" and job.cluster.partition == "big"
    assert "#SBATCH --partition=big" in (tmp_path / "sw" / "slurm" / "sweep.sbatch").read_text()
    bad = run_submit("hydra.job.chdir=true", f"hydra.run.dir={tmp_path}/x")
    assert bad.returncode == 2 and "hydra.searchpath" in bad.stderr


def test_disk_is_priced_for_the_toy_too():
    plan = make_plan(replace(compose_config([]), resume=None), price=False)
    assert plan.sections["disk"]["adapters_kept_per_trial"] == 8  # all 8 checkpoints of 64 steps, locally


def test_a_trial_prunes_after_each_evaluation_but_not_what_is_queued(tmp_path):
    """Trial.prune_adapters (orchestrator/run/trial.py): the policy from its context, the queued steps spared."""
    from collections import deque
    from types import SimpleNamespace

    from eval.runfiles import append_jsonl
    from orchestrator.run.trial import Trial

    for step in (0, 1, 2, 4):
        (tmp_path / "adapters" / step_name(step)).mkdir(parents=True)
        append_jsonl(tmp_path / "metrics.jsonl", {"step": step, "kind": "train", "train_loss": 1.0})
        if step < 4:
            append_jsonl(tmp_path / "metrics.jsonl", {"step": step, "kind": "eval", "eval_attack_rate": 0.9})
    trial = object.__new__(Trial)
    trial.files, trial.dir = TrialDir(tmp_path), tmp_path
    trial.ctx = SimpleNamespace(keep_adapters="last", threshold=0.5)
    trial.pending = deque([(1, None, {}, 0.0)])  # step 1's evaluation of an earlier attempt, still queued
    trial.prune_adapters()
    assert sorted(p.name for p in (tmp_path / "adapters").iterdir()) == [step_name(s) for s in (1, 2, 4)]
