"""Per-LR step budgets, the note's preset, checkpoint density and seeds (issue 25's design half; docs/design.md)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from eval.metrics import checkpoint_steps
from orchestrator.budget import makespan, pack_budgets, steps_by_lr, steps_of_trials, trial_fields, trial_max_steps
from orchestrator.config import compose_config
from orchestrator.run.build import build_train_spec
from orchestrator.run.pack import group_trials
from orchestrator.schema import ConfigError

REAL_MODELS = ["smollm2_135m", "qwen3_0_6b", "qwen3_30b_a3b", "qwen3_235b_a22b"]


def sweep(**kw):
    return {"lrs": [3e-5, 1e-4, 3e-4, 1e-3], "seeds": [0, 1], "max_steps": 64} | kw


def test_one_budget_for_every_lr_without_a_budget():
    assert set(steps_by_lr(sweep()).values()) == {64}


def test_lr_steps_budget_gives_each_lr_its_own_steps_capped():
    """Finding "one step budget for every LR": the low LRs now run longer, ceil(budget / lr), at most the cap."""
    s = sweep(lr_steps_budget=0.064, max_steps=1000)
    assert steps_by_lr(s) == {3e-5: 1000, 1e-4: 640, 3e-4: 214, 1e-3: 64}  # 0.064 / 3e-5 = 2134 > the cap
    assert trial_max_steps(s, 1e-3) == 64  # an exact multiple is not rounded up by float error


def test_steps_per_lr_is_explicit_and_capped():
    s = sweep(steps_per_lr=[5000, 300, 100, 30], max_steps=2000)
    assert steps_by_lr(s) == {3e-5: 2000, 1e-4: 300, 3e-4: 100, 1e-3: 30}
    assert trial_max_steps(s, 5e-4) == 2000  # an LR outside the grid (`train --lr`) gets the cap


@pytest.mark.parametrize("override, message", [
    (["sweep.steps_per_lr=[8,8]"], "sweep.steps_per_lr has 2 entries for 4 LRs"),
    (["sweep.steps_per_lr=[8,8,8,8]", "sweep.lr_steps_budget=0.01"], "are both set: give one"),
])
def test_bad_budgets_are_refused_naming_the_fix(override, message):
    with pytest.raises(ConfigError, match=message):
        compose_config(override)


def test_checkpoints_per_octave_are_integers_deduplicated_with_0_and_the_last():
    assert checkpoint_steps(64) == [0, 1, 2, 4, 8, 16, 32, 64]  # the old schedule unchanged
    assert checkpoint_steps(64, 2) == [0, 1, 2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64]
    for n, per in [(1, 1), (1, 3), (7, 2), (100, 3), (2134, 2)]:
        steps = checkpoint_steps(n, per)
        assert steps[0] == 0 and steps[-1] == n and steps == sorted(set(steps))
        ratios = [b / a for a, b in zip(steps[1:], steps[2:], strict=False)]
        assert all(r <= 2 ** (1 / per) * 1.5 for r in ratios[3:]), (n, per, steps)  # as dense as asked
    with pytest.raises(ValueError, match="per_octave"):
        checkpoint_steps(8, 0)


def test_each_trial_spec_carries_its_own_steps_and_checkpoints():
    """The trainer's spec and hence the trial's config.json (Trial.info) hold that LR's max_steps and schedule."""
    cfg = compose_config(["sweep.lr_steps_budget=0.032", "sweep.max_steps=256", "sweep.checkpoints_per_octave=2"])
    low, high = (build_train_spec(cfg, "/m", lr, 0) for lr in (1e-4, 3e-3))
    assert (low.max_steps, high.max_steps) == (256, 11)
    assert low.checkpoint_steps == checkpoint_steps(256, 2) and high.checkpoint_steps[-1] == 11


def test_packs_hold_one_budget_each():
    """A pack trains its members in lockstep: trials of different lengths are packed apart, seeds of one LR
    together; with one budget the packs are the grid's order, as before."""
    s = sweep(lr_steps_budget=0.064, max_steps=100)
    packs = group_trials(s["lrs"], s["seeds"], 4, steps_by_lr(s))
    assert packs == [[(3e-5, 0), (3e-5, 1), (1e-4, 0), (1e-4, 1)], [(3e-4, 0), (3e-4, 1)], [(1e-3, 0), (1e-3, 1)]]
    assert all(len({steps_by_lr(s)[lr] for lr, _ in p}) == 1 for p in packs)
    assert [steps_by_lr(s)[p[0][0]] for p in packs] == pack_budgets(s, 4) == [100, 100, 64]
    flat = group_trials(s["lrs"], s["seeds"], 3)
    assert flat == [[(3e-5, 0), (3e-5, 1), (1e-4, 0)], [(1e-4, 1), (3e-4, 0), (3e-4, 1)], [(1e-3, 0), (1e-3, 1)]]


def test_pack_trainer_refuses_members_of_different_budgets():
    from workers.train.pack_train import _check_pack

    cfg = compose_config(["sweep.lr_steps_budget=0.032", "sweep.max_steps=256"])
    with pytest.raises(ValueError, match="one step budget per pack"):
        _check_pack([build_train_spec(cfg, "/m", lr, 0) for lr in (1e-4, 3e-3)])
    _check_pack([build_train_spec(cfg, "/m", 1e-4, seed) for seed in (0, 1)])  # seeds of one LR: fine


def test_makespan_schedules_longest_first():
    assert makespan([10, 1, 1, 1], 2) == 10
    assert makespan([3, 3, 3], 1) == 9
    assert makespan([4, 3, 3, 2], 2) == 6


def test_plan_prices_each_lrs_own_steps():
    """The planner's training time is the packs' own steps, not len(lrs) x max_steps."""
    from orchestrator.plan.planner import make_plan

    base = ["model=qwen3_0_6b", "cluster=slurm", "cluster.nodes=1", "sweep.pack=1", "sweep.seeds=[0]",
            "sweep.max_concurrent_trials=1", "sweep.lrs=[1e-4,1e-3]", "sweep.max_steps=640"]
    one = make_plan(compose_config([*base, "sweep.lr_steps_budget=null"])).sections["time"]
    own = make_plan(compose_config([*base, "sweep.lr_steps_budget=0.064"])).sections["time"]
    # one trial at a time: 640 + 640 steps against 640 + 64 steps (startup aside)
    startup = one["startup_s"]
    per_step = (one["training_wall_h"] * 3600 - 2 * startup) / 1280
    assert own["training_wall_h"] * 3600 == pytest.approx(2 * startup + 704 * per_step, rel=1e-6)


def test_plan_counts_packs_of_one_budget_each():
    """4 LRs x 3 seeds in packs of K 4: with one budget, ceil(12 / 4) = 3 packs; with per-LR budgets a pack holds
    one LR's seeds only, so 4 packs of 3 (before: the plan said 3 and ran them as 4)."""
    from orchestrator.plan.planner import make_plan

    base = ["model=qwen3_0_6b", "cluster=slurm", "cluster.nodes=1", "sweep.pack=4", "sweep.seeds=[0,1,2]",
            "sweep.lrs=[1e-4,3e-4,1e-3,3e-3]", "sweep.max_steps=640"]
    one = make_plan(compose_config([*base, "sweep.lr_steps_budget=null"])).sections["placement"]
    own = make_plan(compose_config([*base, "sweep.lr_steps_budget=0.064"])).sections["placement"]
    assert (one["packs"], own["packs"]) == (3, 4)


def test_progress_and_status_show_each_trials_own_max_steps():
    s = sweep(lr_steps_budget=0.064, max_steps=5000)
    from eval.runfiles import trial_name

    names = steps_of_trials(s)
    assert names[trial_name(3e-5, 1)] == 2134 and names[trial_name(1e-3, 0)] == 64
    assert sorted(set(names.values())) == [64, 214, 640, 2134] and len(names) == 8


@pytest.mark.parametrize("model", REAL_MODELS)
def test_real_models_default_to_the_note_preset(model):
    """Finding "default grid 1e-4..3e-3 for every model": real models get the note's range and per-LR budgets."""
    cfg = compose_config([f"model={model}"])
    sw = cfg.sweep
    assert min(sw.lrs) == pytest.approx(3e-5) and max(sw.lrs) == pytest.approx(1e-3) and len(sw.lrs) >= 4
    ratios = [b / a for a, b in zip(sorted(sw.lrs), sorted(sw.lrs)[1:], strict=False)]
    assert max(ratios) / min(ratios) < 1.2  # log-spaced
    assert cfg.train.batch_size == 32
    steps = steps_by_lr(sw)
    assert steps[min(sw.lrs)] >= 30 * steps[max(sw.lrs)]
    assert len(sw.seeds) >= 3 and sw.init_seed is not None  # seeds vary data order only, as the note's
    assert sw.early_stop.enabled  # the high LRs stop at transfer: cheap
    assert sw.checkpoints_per_octave >= 2


def test_the_toy_keeps_its_own_grid_and_a_real_model_may_take_it():
    toy = compose_config([]).sweep
    assert list(toy.lrs) == [1e-4, 3e-4, 1e-3, 3e-3] and toy.lr_steps_budget is None
    assert compose_config(["model=smollm2_135m", "sweep=toy"]).sweep.lr_steps_budget is None


@pytest.mark.parametrize("model", ["qwen3_0_6b", "qwen3_30b_a3b", "qwen3_235b_a22b"])
def test_qwen3_answers_are_not_the_toys_48_tokens(model):
    """Issue 27 item 7: the Qwen3 configs inherited the toy's 48-token answers (the 235B plan priced them)."""
    cfg = compose_config([f"model={model}"])
    assert cfg.sample.max_new_tokens >= 256
    assert cfg.model.max_model_len >= cfg.sample.max_new_tokens + 256  # room for the prompt


def test_data_seed_and_init_seed_apart():
    """Finding "one seed sets data order, LoRA init and torch's seed at once": the note's seeds change data order."""
    s = sweep(init_seed=0)
    a, b = trial_fields(s, 1e-3, 0), trial_fields(s, 1e-3, 1)
    assert (a["seed"], b["seed"]) == (0, 1) and a["init_seed"] == b["init_seed"] == 0
    both = trial_fields(sweep(init_seed=None), 1e-3, 1)
    assert both["seed"] == both["init_seed"] == 1


def test_data_order_follows_the_data_seed_and_lora_init_the_init_seed():
    """Same seeds: the same batches and the same initial A; another data_seed: another order, the same init."""
    import torch

    from workers.train.batching import batch_indices
    from workers.train.packed import lora_a_init

    cfg = compose_config(["sweep.seeds=[0,1]"])
    s0, s0_again, s1 = (build_train_spec(cfg, "/m", 1e-3, seed) for seed in (0, 0, 1))

    def order(spec):
        stream = batch_indices(200, 32, spec.seed)
        return [next(stream) for _ in range(10)]

    def init(spec):
        return lora_a_init("model.layers.0.self_attn.q_proj", spec.lora_seed, 8, 64)

    assert order(s0) == order(s0_again) and torch.equal(init(s0), init(s0_again))
    assert order(s0) != order(s1)
    assert torch.equal(init(s0), init(s1))
    inits_vary = compose_config(["sweep.seeds=[0,1]", "sweep.init_seed=null"])
    assert not torch.equal(init(build_train_spec(inits_vary, "/m", 1e-3, 1)), init(s0))


def test_budget_arithmetic_matches_ceil():
    for lr in (3e-5, 7e-5, 2.5e-4):
        assert trial_max_steps(sweep(lr_steps_budget=0.05, max_steps=10**6), lr) == math.ceil(0.05 / lr - 1e-9)


def test_reproduce_note_plans_the_notes_design_and_its_overrides_compose(tmp_path):
    """bench/reproduce_note.py: >= 4 LRs over >= 30x, >= 3 seeds, per-LR budgets, packs of one LR; its sweep
    command composes (the product checks every override) and refuses a design below that floor."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import reproduce_note as rn

    args = rn.parse_args(["--out", str(tmp_path)])
    assert rn.design_problems(rn.sweep_block(args)) == []
    cfg = compose_config([o for o in rn.overrides(args, "animal_flag", tmp_path / "s") if not o.startswith("hydra.")])
    steps = steps_by_lr(cfg.sweep)
    assert len(steps) >= 4 and max(steps) / min(steps) >= 30 and steps[min(steps)] >= 30 * steps[max(steps)]
    assert len(cfg.sweep.seeds) >= 3 and cfg.sweep.pack == len(cfg.sweep.seeds) and cfg.model.organism
    assert all(len(p) == 3 for p in group_trials(list(cfg.sweep.lrs), list(cfg.sweep.seeds), 3, steps))
    # the estimate's model against a measured run's trials (bench/results/reproduce_note_timing.json): within 25%,
    # and scaled by the measured ratio; the default design then fits two settings in the 90 minutes
    assert 0.8 < rn.calibration() < 1.25
    est = rn.estimate_s(args)
    assert est["per_setting_s"] == pytest.approx(rn.STARTUP_S + est["modelled_s"] * rn.calibration())
    assert 2 * est["per_setting_s"] < 90 * 60
    from orchestrator.plan.preflight import check_labels

    check_labels(cfg)  # a real model's labels from a real teacher: refused before, with scripted labels
    assert (cfg.setting.teacher.kind, cfg.setting.teacher.filter) == ("onpolicy", True)
    assert rn.design_problems(rn.sweep_block(rn.parse_args(["--lrs", "1e-3,3e-3,1e-2"])))  # 3 LRs: refused
    assert rn.main(["--seeds", "0,1"]) == 2


def test_status_reads_each_trials_budget_from_the_sweeps_config_yaml(tmp_path):
    import yaml

    from orchestrator.commands.status import trial_progress

    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"sweep": sweep(lr_steps_budget=0.064, max_steps=1000)}))
    rows = trial_progress(tmp_path)
    assert {(r["lr"], r["max_steps"]) for r in rows} == {(3e-5, 1000), (1e-4, 640), (3e-4, 214), (1e-3, 64)}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"sweep": sweep()}))  # a sweep from before budgets
    assert {r["max_steps"] for r in trial_progress(tmp_path)} == {64}


def test_a_trials_config_json_records_its_own_budget_and_which_seed_varied(tmp_path):
    """The sweep's trials get their specs through TrialContext (orchestrator/run/trial.py): each its own max_steps and
    checkpoints, the data seed and the init seed, and config.json says which the seed list varied."""
    from orchestrator.run.trial import Trial, TrialContext

    cfg = compose_config(["sweep.lr_steps_budget=0.032", "sweep.max_steps=256", "sweep.checkpoints_per_octave=2",
                          "sweep.seeds=[0,1]"])
    ctx = TrialContext(sweep_dir=str(tmp_path), sweep_id="s", sampler_name="x", setting=cfg.setting, model_name="toy",
                       train_spec=build_train_spec(cfg, "/m", 0.0, 0), labels_path="", sample=cfg.sample,
                       tracker=cfg.tracker, threshold=0.5, sweep=cfg.sweep)
    info = Trial(ctx, 1e-3, 1, report=None).info()
    assert (info["max_steps"], info["checkpoint_steps"]) == (32, checkpoint_steps(32, 2))
    assert (info["data_seed"], info["init_seed"], info["seed_varies"]) == (1, 0, "data_seed")
    assert Trial(ctx, 1e-4, 0, report=None).info()["max_steps"] == 256  # 320 capped
