"""eval.analysis on synthetic curves whose answers are known by construction (hand-computed where stated)."""

import math

import pytest

from eval.analysis import (
    analyze_trial,
    bootstrap_median_interval,
    interpolated_transfer,
    rate_interval,
    summarize_lrs,
    summarize_seeds,
    wilson_interval,
)
from eval.metrics import checkpoint_steps
from eval.paired import T_GIVEN, T_GUARDRAIL, T_UNCHECKED, first_step_at_or_after, paired_comparison

# --- Wilson interval ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "count, n, expected",
    [
        # z = 1.96: denom = 1 + z^2/n, center = (p + z^2/2n)/denom, half = z/denom * sqrt(p(1-p)/n + z^2/4n^2)
        (0, 10, (0.0, 0.27754)),  # center = half = 0.19208/1.38416 = 0.13877
        (5, 10, (0.23659, 0.76341)),  # center 0.5, half = 1.41602 * sqrt(0.034604) = 0.26341
        (10, 10, (0.72246, 1.0)),
        (50, 100, (0.40383, 0.59617)),  # half = 1.88749 * sqrt(0.00259604) = 0.09617
        (0, 0, (0.0, 1.0)),  # no samples: no information
    ],
)
def test_wilson_interval_matches_hand_computation(count, n, expected):
    low, high = wilson_interval(count, n)
    assert low == pytest.approx(expected[0], abs=1e-5) and high == pytest.approx(expected[1], abs=1e-5)


def test_rate_interval_recovers_the_count_from_rate_and_n():
    assert rate_interval(0.5, 100) == pytest.approx(wilson_interval(50, 100))
    assert rate_interval(0.29, 100) == pytest.approx(wilson_interval(29, 100))  # 0.29 * 100 = 28.999...
    assert rate_interval(0.5, None) == (0.0, 1.0)


# --- interpolated steps-to-transfer ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "curve, expected",
    [
        ([(0, 1.0), (1, 0.9), (2, 0.7), (4, 0.3)], 2 * math.sqrt(2)),  # halfway from 2 to 4 in log: 2 * 2^0.5
        ([(0, 1.0), (2, 0.8), (4, 0.5)], 4.0),  # exactly at the threshold: the checkpoint itself
        ([(0, 0.9), (1, 0.1)], 0.5),  # bracket starts at step 0: linear in step
        ([(0, 1.0), (2, 0.0)], 1.0),  # step 1 missing, still linear from 0
        ([(0, 1.0), (1, 0.9), (8, 0.2)], 8 ** (4 / 7)),  # steps 2, 4 missing: frac = 0.4/0.7 in log from 1 to 8
        ([(0, 1.0), (1, 0.4), (2, 0.8), (4, 0.2)], 5 / 6),  # dips below then back up: first crossing, 0.5/0.6
        ([(0, 1.0), (1, 0.51), (2, 0.5000001)], None),  # approaches but never reaches
        ([(0, 1.0), (1, 0.5), (2, 0.9)], 1.0),  # touches the threshold once: <= counts
        ([(0, 0.3), (1, 0.1)], 0.0),  # already transferred before training
        ([(1, 0.4), (2, 0.1)], 1.0),  # first checkpoint already below: nothing to bracket
        ([(4, 0.3), (0, 1.0), (2, 0.7)], 2 * math.sqrt(2)),  # row order does not matter
        ([], None),
    ],
)
def test_interpolated_transfer(curve, expected):
    got = interpolated_transfer(curve, 0.5)
    assert got == (None if expected is None else pytest.approx(expected))


# --- per-trial analysis ---------------------------------------------------------------------------------------------


def trial(curve, lr=1e-3, seed=0, max_steps=8, setting="s", train=None):
    """(config.json dict, metrics.jsonl rows) for an attack-rate curve; desired = 1 - attack on eval prompts."""
    cfg = {"name": f"lr{lr:.3g}_seed{seed}", "setting": setting, "lr": lr, "seed": seed, "model": "toy",
           "max_steps": max_steps, "checkpoint_steps": checkpoint_steps(max_steps), "threshold": 0.5, "sweep_id": "x"}
    rows = [{"step": s, "kind": "train", "train_loss": 1.0} for s in range(1, max_steps + 1)]
    for s, a in curve:
        rows.append({"step": s, "kind": "eval", "lr": lr, "seed": seed, "train_loss": 1.0, "eval_latency_s": 1.0,
                     "eval_desired_rate": round(1 - a, 4), "eval_attack_rate": a, "eval_other_rate": 0.0,
                     "n_eval": 100, "train_desired_rate": (train or {}).get(s, 0.95), "train_attack_rate": 0.0,
                     "train_other_rate": 0.05, "n_train": 50})
    return cfg, rows


def analyzed(curve, **kw):
    cfg, rows = trial(curve, **kw)
    return analyze_trial(cfg, rows, 0.5)


FULL = [0, 1, 2, 4, 8]


@pytest.mark.parametrize(
    "curve, s2t, lower, lxs, complete, missing",
    [
        (list(zip(FULL, [1.0, 0.9, 0.7, 0.3, 0.1], strict=True)), 4, None, 4e-3, True, []),
        (list(zip(FULL, [1.0, 0.9, 0.8, 0.7, 0.6], strict=True)), None, 8, 8e-3, True, []),  # lower bound max_steps
        ([(0, 1.0), (1, 0.9), (2, 0.8)], None, 2, 2e-3, False, [4, 8]),  # stopped early: bound = last step
        ([(0, 1.0), (1, 0.9), (2, 0.4)], 2, None, 2e-3, False, [4, 8]),  # converged, then stopped
        ([(0, 1.0), (4, 0.2), (8, 0.1)], 4, None, 4e-3, False, [1, 2]),  # checkpoints missing in the middle
    ],
)
def test_analyze_trial_values_and_bounds(curve, s2t, lower, lxs, complete, missing):
    t = analyzed(curve)
    assert t.steps_to_transfer == s2t and t.lower_bound == lower and t.converged == (s2t is not None)
    assert t.lr_x_steps == pytest.approx(lxs)
    assert t.complete == complete and t.missing_steps == missing and not t.failed


def test_failed_trial_has_no_value_and_no_bound():
    t = analyzed([])
    assert t.failed and not t.converged and t.lower_bound is None and t.lr_x_steps is None
    assert t.missing_steps == FULL and t.initial_attack is None and t.min_train_desired is None


def test_analyze_trial_attack_ci_and_train_desired_check():
    t = analyzed([(0, 0.5), (1, 0.4), (2, 0.3)], max_steps=2, train={0: 0.9, 1: 0.7, 2: 0.8})
    assert t.initial_attack == pytest.approx((0.5, 0.40383, 0.59617), abs=1e-5)
    assert t.final_attack[0] == 0.3 and t.n_eval == 100 and t.n_train == 50
    assert t.min_train_desired == (1, 0.7) and t.final_train_desired == (2, 0.8)


def test_duplicate_checkpoint_rows_last_one_wins():
    cfg, rows = trial([(0, 1.0), (1, 0.9), (1, 0.2)], max_steps=1)
    t = analyze_trial(cfg, rows, 0.5)
    assert t.steps == [0, 1] and t.steps_to_transfer == 1 and t.curve[-1]["rate"] == 0.2


# --- across seeds ---------------------------------------------------------------------------------------------------

INF = math.inf


def seeds_at(values, max_steps=64, lr=1e-3):
    """One analysed trial per seed: transfers exactly at `value` (a checkpoint), or never when value is INF."""
    out = []
    for seed, v in enumerate(values):
        steps = checkpoint_steps(max_steps)
        curve = [(s, 0.1 if s >= v else 0.9) for s in steps]
        out.append(analyzed(curve, lr=lr, seed=seed, max_steps=max_steps))
    return out


@pytest.mark.parametrize(
    "values, median, lower_bound, factor_bar, n_conv",
    [
        ([8], 8, False, (2, 32), 1),  # one seed
        ([1, 2, 4, 4, 8, 8, 8, 16, 32, 64], 8, False, (2, 32), 10),  # ten seeds
        ([1, 2, 4, 8, 16, 32, INF, INF, INF, INF], 24, False, (6, 96), 6),  # (16+32)/2: the infs miss the middle
        ([2, 4, 8, 16, 32, INF, INF, INF, INF, INF], 48, True, (12, INF), 5),  # (32+inf)/2 = inf -> (32+64)/2, bound
        ([INF], 64, True, (16, INF), 0),  # never converged: > max_steps
        ([INF, INF, 4], 64, True, (16, INF), 1),
    ],
)
def test_summarize_seeds_median_and_factor_rule(values, median, lower_bound, factor_bar, n_conv):
    s = summarize_seeds(seeds_at(values), error_rule="factor")
    assert s.median == median and s.median_is_lower_bound == lower_bound
    assert (s.error_low, s.error_high) == factor_bar
    assert s.n_converged == n_conv and s.frac_converged == pytest.approx(n_conv / len(values))
    assert s.lr_x_median == pytest.approx(1e-3 * median)


def test_seeds_that_stopped_early_without_converging_are_left_out():
    ts = seeds_at([4, 8]) + [analyzed([(0, 1.0), (1, 0.9)], seed=7, max_steps=64),  # stopped early
                             analyzed([], seed=8, max_steps=64)]  # failed outright
    s = summarize_seeds(ts)
    assert s.seeds == [0, 1] and s.failed_seeds == [7, 8] and s.median == 6


def test_lr_whose_trials_all_fail_has_no_median():
    s = summarize_seeds([analyzed([], seed=i) for i in range(3)])
    assert s.median is None and s.seeds == [] and s.failed_seeds == [0, 1, 2] and s.frac_converged is None


def test_bootstrap_is_deterministic_given_a_seed_and_brackets_the_median():
    vals = [1, 2, 4, 8, 8, 16, 32, 64, 128, 256]
    a, b = bootstrap_median_interval(vals, seed=3), bootstrap_median_interval(vals, seed=3)
    assert a == b and a[0] <= 12 <= a[1]
    vals8 = [2, 4, 8, 16, 16, 32, 32, INF]
    s = summarize_seeds(seeds_at(vals8, max_steps=64), error_rule="bootstrap", boot_seed=1)
    assert s == summarize_seeds(seeds_at(vals8, max_steps=64), error_rule="bootstrap", boot_seed=1)
    assert s.error_low <= s.median <= s.error_high



def test_bootstrap_keeps_infinity_without_nan():
    low, high = bootstrap_median_interval([4, INF, INF], seed=0)
    assert low == 4 and high == INF


def test_summarize_seeds_rejects_unknown_rule_and_mixed_groups():
    with pytest.raises(ValueError, match="error_rule"):
        summarize_seeds(seeds_at([4]), error_rule="sd")
    with pytest.raises(ValueError, match="one"):
        summarize_seeds(seeds_at([4], lr=1e-3) + seeds_at([4], lr=1e-2))


def test_summarize_lrs_groups_by_setting_and_lr():
    out = summarize_lrs(seeds_at([4, 8], lr=1e-2) + seeds_at([16], lr=1e-3))
    assert [(s.lr, s.median) for s in out] == [(1e-3, 16), (1e-2, 6)]


# --- paired comparison ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "steps, target, expected",
    [
        ([0, 1, 2, 4, 8, 16, 32, 64], 40, 64),  # never before k*T: 32 would give the low LR 0.8 of its LR x steps
        ([0, 1, 2, 4, 8], 3, 4),
        ([0, 1, 2, 4, 8], 4, 4),  # exactly at k*T
        ([0, 1, 2, 4, 8], 4 * (1 - 1e-12), 4),  # k*T's float error does not skip the checkpoint
        ([0, 1, 2, 4, 8, 16], 100, 16),  # beyond the last checkpoint: the last one (the row says so)
        ([0, 1, 2, 4], 0, 0),  # T = 0: step 0
        ([0, 3, 6, 12, 24], 7, 12),  # any schedule, not only powers of two
    ],
)
def test_first_step_at_or_after(steps, target, expected):
    assert first_step_at_or_after(steps, target) == expected


def sweep_trials(seed=0):
    """lr 3e-2 never transfers; 1e-2 transfers at 4 (and stays); 1e-3 at 32; 1e-4 never, 64 steps."""
    def curve(cross):
        return [(s, 0.1 if s >= cross else 0.9) for s in checkpoint_steps(64)]
    return [analyzed(curve(c), lr=lr, seed=seed, max_steps=64)
            for lr, c in ((3e-2, INF), (1e-2, 4), (1e-3, 32), (1e-4, INF))]


def test_paired_comparison_without_capability_uses_latest_transfer_of_highest_lr_that_transferred():
    rows = paired_comparison(sweep_trials(), 0.5)
    got = [(r.lr, r.k, r.target_step, r.step, r.beyond_max_steps, r.desired_rate) for r in rows]
    assert got == [  # T = 64, the latest transferred checkpoint of lr 1e-2 (not its first, step 4)
        (1e-2, 1.0, 64, 64, False, 0.9),
        (1e-3, pytest.approx(10), pytest.approx(640), 64, True, 0.9),  # k*T = 640 > 64: read at 64, flagged
        (1e-4, pytest.approx(100), pytest.approx(6400), 64, True, 0.1),
    ]
    assert rows[0].desired_low == pytest.approx(wilson_interval(90, 100)[0])
    assert {r.t_choice for r in rows} == {T_UNCHECKED} and rows[1].ratio == pytest.approx(0.1)


def test_paired_comparison_reads_the_low_lr_at_or_after_kT_and_T_is_the_latest_checkpoint():
    """Issue 25: T was the first transferred checkpoint, and k*T = 40 was read at step 32 (closest in log-step)."""
    def curve(cross, max_steps):
        return [(s, 0.1 if s >= cross else 0.9) for s in checkpoint_steps(max_steps)]
    ts = [analyzed(curve(2, 4), lr=1e-2, max_steps=4), analyzed(curve(INF, 64), lr=1e-3, max_steps=64)]
    rows = paired_comparison(ts, 0.5)
    assert [(r.lr, r.step) for r in rows] == [(1e-2, 4), (1e-3, 64)]  # T = 4 (not 2); k*T = 40 read at 64 (not 32)
    assert rows[1].ratio == pytest.approx(64 / 40) and not rows[1].beyond_last_checkpoint


def test_paired_comparison_with_capability_picks_first_checkpoint_within_limit():
    cap = {("lr0.01_seed0", 4): 0.3, ("lr0.01_seed0", 8): 0.05, ("lr0.03_seed0", 64): 0.0}
    rows = paired_comparison(sweep_trials(), 0.5, capability=cap, max_degradation=0.1)
    assert [(r.lr, r.step) for r in rows] == [(1e-2, 8), (1e-3, 64), (1e-4, 64)]  # T = 8, k*T = 80 -> 64
    # the highest LR that transferred is too damaged everywhere: the next LR becomes the reference
    rows = paired_comparison(sweep_trials(), 0.5, capability={("lr0.001_seed0", 32): 0.0}, max_degradation=0.1)
    assert [(r.lr, r.k, r.step) for r in rows] == [(1e-3, 1.0, 32), (1e-4, pytest.approx(10), 64)]
    assert paired_comparison(sweep_trials(), 0.5, capability={}) == []  # no eligible checkpoint anywhere


def test_paired_comparison_explicit_reference_and_per_seed_pairs():
    rows = paired_comparison(sweep_trials(0) + sweep_trials(1), 0.5, ref_lr=1e-2, ref_step=8)
    assert [(r.seed, r.lr, r.step) for r in rows] == [(seed, lr, step) for seed in (0, 1)
                                                      for lr, step in ((1e-2, 8), (1e-3, 64), (1e-4, 64))]
    assert {r.t_choice for r in rows} == {T_GIVEN}
    assert {r.t_choice for r in paired_comparison(sweep_trials(), 0.5, capability={("lr0.01_seed0", 8): 0.0})} == {
        T_GUARDRAIL}
    assert all(r.trial.endswith(f"seed{r.seed}") for r in rows)
