"""Issue 25's analysis: the robust crossing and its bracket, the note's headline numbers and verdict, the error
rules (bootstrap refused on few seeds, the empirical seed-study factor, hatched bars with an upward arrow only) and
capability intervals. Every case's answer is known by construction."""

import math

import pytest

from eval.analysis import analyze_trial, summarize_lrs, summarize_seeds
from eval.capability.ci import paired_drop_interval, unpaired_degradation_interval, with_intervals
from eval.crossing import monotone_fit, transfer_crossing
from eval.headline import (
    CONSISTENT,
    FASTER,
    INCONCLUSIVE,
    SLOWER,
    headline,
    headline_text,
    seed_study_factor,
    spread_factor,
    verdict,
)
from eval.runfiles import step_name, write_jsonl

INF = math.inf


def trial(curve, lr=1e-3, seed=0, max_steps=64, steps=None, setting="s"):
    """An analysed trial with the given eval attack-rate curve; steps: its checkpoint schedule (any, not only
    powers of two)."""
    steps = steps or sorted(s for s, _ in curve)
    cfg = {"name": f"lr{lr:.3g}_seed{seed}", "setting": setting, "lr": lr, "seed": seed, "max_steps": max_steps,
           "checkpoint_steps": steps, "threshold": 0.5}
    rows = [{"step": s, "kind": "eval", "eval_attack_rate": a, "eval_desired_rate": 1 - a, "eval_other_rate": 0.0,
             "n_eval": 100, "train_desired_rate": 0.95, "n_train": 50} for s, a in curve]
    return analyze_trial(cfg, rows, 0.5)


# --- the crossing: monotone fit, interpolation, bracket -------------------------------------------------------------


@pytest.mark.parametrize(
    "rates, expected",
    [
        ([0.9, 0.7, 0.3], [0.9, 0.7, 0.3]),  # already non-increasing: its own fit
        ([0.9, 0.45, 0.65, 0.2], [0.9, 0.55, 0.55, 0.2]),  # one dip pooled with its neighbour
        ([0.2, 0.4, 0.6], [0.4, 0.4, 0.4]),  # rising throughout: one block
        ([], []),
    ],
)
def test_monotone_fit(rates, expected):
    assert monotone_fit(rates) == pytest.approx(expected)


def test_one_noisy_checkpoint_does_not_make_the_crossing():
    """Issue 25: the first crossing of a noisy series is biased early (a lone 0.45 among 0.6s read as transfer)."""
    curve = [(0, 1.0), (4, 0.62), (8, 0.45), (16, 0.61), (32, 0.58), (64, 0.2)]
    c = transfer_crossing(curve, 0.5)
    assert (c.below, c.at) == (32, 64)  # the dip at 8 is pooled: 0.45, 0.61, 0.58 -> 0.5467 > 0.5
    assert c.estimate == pytest.approx(32 * 2 ** ((0.5467 - 0.5) / (0.5467 - 0.2)), rel=1e-3)
    t = trial(curve)
    assert t.steps_to_transfer == 64 and t.bracket == (32, 64) and t.interpolated == pytest.approx(c.estimate)
    # a lone dip with nothing after it below the threshold is not a transfer: a lower bound of max_steps
    t = trial([(0, 1.0), (8, 0.45), (16, 0.7), (64, 0.6)])
    assert not t.converged and t.lower_bound == 64 and t.status == "not_transferred"


def test_crossing_is_interpolated_in_log_step_with_its_bracket_on_any_schedule():
    """Issue 25: the bars plotted the first crossing (64) where the interpolation says 35.4."""
    t = trial([(0, 1.0), (32, 0.55), (64, 0.45)])  # halfway in log between 32 and 64: 32 * sqrt(2)
    assert t.steps_to_transfer == 64 and t.interpolated == pytest.approx(32 * math.sqrt(2)) and t.bracket == (32, 64)
    t = trial([(0, 1.0), (3, 0.9), (6, 0.7), (12, 0.3)], max_steps=12)  # checkpoints every 2x from 3
    assert t.bracket == (6, 12) and t.interpolated == pytest.approx(6 * math.sqrt(2))
    s = summarize_seeds([trial([(0, 1.0), (32, 0.55), (64, 0.45)], seed=i) for i in range(3)])
    assert s.bar_steps == pytest.approx(32 * math.sqrt(2)) and (s.bracket_low, s.bracket_high) == (32, 64)
    assert (s.interp_error_low, s.interp_error_high) == pytest.approx((8 * math.sqrt(2), 128 * math.sqrt(2)))


# --- error rules ----------------------------------------------------------------------------------------------------


def test_bootstrap_is_refused_below_eight_seeds_with_the_fix_named():
    """Issue 25: bootstrap with one seed gave a zero-width error bar."""
    ts = [trial([(0, 1.0), (8, 0.2)], seed=i) for i in range(3)]
    with pytest.raises(ValueError, match=r"needs >= 8 seeds.*--error-rule factor"):
        summarize_seeds(ts, error_rule="bootstrap")
    many = [trial([(0, 1.0), (2 ** (i % 4 + 1), 0.2)], seed=i) for i in range(8)]
    s = summarize_seeds(many, error_rule="bootstrap")
    assert s.error_low < s.error_high  # eight seeds that differ: a bar with width


@pytest.mark.parametrize(
    "values, expected",
    [
        ([8, 8, 8], 1.0),  # no spread
        ([2, 8, 16], 4.0),  # median 8: min is 4x below
        ([4, 8, 8, 8, 64], 8.0),  # one slow seed 8x above the median
        ([4, 8, INF], 1.5),  # unconverged seeds carry no value: median 6 of (4, 8)
    ],
)
def test_spread_factor(values, expected):
    assert spread_factor(values) == pytest.approx(expected)


def test_seed_study_factor_takes_the_noisiest_lr_with_enough_seeds_and_refuses_too_few():
    def seeds(crosses, lr):
        return [trial([(0, 1.0), (c // 2, 0.9), (c, 0.1)], lr=lr, seed=i) for i, c in enumerate(crosses)]
    ts = seeds([8, 8, 8, 8, 8], 1e-3) + seeds([4, 8, 8, 16, 32], 1e-2) + seeds([2, 64], 1e-1)  # 1e-1: too few
    f, source = seed_study_factor(ts)
    assert f == pytest.approx(4.0) and "lr 0.01" in source
    with pytest.raises(ValueError, match="seed study.*--seed-study"):
        seed_study_factor(seeds([4, 8], 1e-3))
    s = summarize_seeds(seeds([8, 8, 8, 8, 8], 1e-3), error_rule="empirical", factor=f)
    assert (s.error_low, s.error_high) == pytest.approx((2, 32))


def test_hatched_bars_get_an_upward_arrow_and_no_downward_whisker(tmp_path):
    """Issue 25: hatched bars carried a downward whisker although they mean 'strictly beyond'."""
    from matplotlib.figure import Figure

    from eval.plots import _lr_bar

    s = summarize_seeds([trial([(0, 1.0), (64, 0.9)], seed=i) for i in range(3)])
    assert s.median_is_lower_bound
    ax = Figure().subplots()
    _lr_bar(ax, 0, s, "tab:blue")
    assert not ax.containers[1:] and not ax.collections  # the bar only: no error bar, no bracket band
    arrows = [a for a in ax.texts if getattr(a, "arrow_patch", None) is not None]
    assert len(arrows) == 1 and arrows[0].xy[1] > arrows[0].xyann[1]  # points up
    conv = summarize_seeds([trial([(0, 1.0), (8, 0.9), (16, 0.1)], seed=i) for i in range(3)])
    ax = Figure().subplots()
    _lr_bar(ax, 0, conv, "tab:blue")
    assert len(ax.containers) == 2 and len(ax.collections) == 2  # bar + error bar (+ its line), bracket band


# --- the note's headline numbers and verdict -----------------------------------------------------------------------


def sweep(steps_by_lr, max_steps_by_lr=None):
    """Per LR a list of per-seed crossings (INF: never within that LR's own max_steps) as clean step curves."""
    out = []
    for lr, crosses in steps_by_lr.items():
        top = (max_steps_by_lr or {}).get(lr, 4096)
        for seed, c in enumerate(crosses):
            before = c / 2 if math.isfinite(c) else top
            curve = [(0, 1.0), (int(before), 0.9)] + ([(int(c), 0.1)] if math.isfinite(c) else [])
            out.append(trial(sorted(set(curve)), lr=lr, seed=seed, max_steps=top))
    return out


def head(ts, **kw):
    return headline("s", summarize_lrs(ts), ts, **kw)


@pytest.mark.parametrize(
    "steps_by_lr, max_steps_by_lr, expected_a, lower_bound, expected_verdict",
    [
        # LR x steps constant: 1e-3 x 80 = 1e-4 x 800 (crossings at 2^k interpolate to sqrt(2)x below each)
        ({1e-3: [128, 128, 128], 1e-4: [1024 + 256, 1280, 1280]}, None, None, False, CONSISTENT),
        # strongly superlinear: 10x lower LR needs 400x the steps
        ({1e-3: [64, 64, 64], 1e-4: [25600, 25600, 25600]}, {1e-4: 32768}, 40.0, False, FASTER),
        # the low LR never transferred in 30x the steps x LR of the high LR: a lower bound above 1
        ({1e-3: [64, 64, 64], 1e-4: [INF, INF, INF]}, {1e-4: 20000}, None, True, FASTER),
        # two seeds, wide spread: one says 0.5x, the other 40x
        ({1e-3: [64, 64], 1e-4: [320, 25600]}, {1e-4: 32768}, None, False, INCONCLUSIVE),
        # slower: the low LR needs fewer LR x steps than 1/LR predicts
        ({1e-3: [4096, 4096, 4096], 1e-4: [256, 256, 256]}, None, 1 / 160, False, SLOWER),
    ],
)
def test_headline_verdicts(steps_by_lr, max_steps_by_lr, expected_a, lower_bound, expected_verdict):
    h = head(sweep(steps_by_lr, max_steps_by_lr))
    assert (h.high_lr, h.low_lr, h.lower_bound, h.verdict) == (1e-3, 1e-4, lower_bound, expected_verdict)
    if expected_a is not None:
        assert h.lr_ratio == pytest.approx(expected_a, rel=1e-6)
        assert h.step_ratio_10x == pytest.approx(10 * expected_a)  # one decade apart: b = 10a
    assert h.lr_ratio_low <= h.lr_ratio <= h.lr_ratio_high
    assert h.verdict in headline_text(h)


def test_headline_constant_lr_x_steps_reads_1_and_10():
    h = head(sweep({1e-3: [128] * 3, 1e-4: [1280] * 3, 1e-2: [INF] * 3}, {1e-2: 4096}))
    assert h.high_lr == 1e-3  # 1e-2 never converged: the highest *converged* LR is H
    assert h.lr_ratio == pytest.approx(1.0) and h.step_ratio_10x == pytest.approx(10.0)
    assert (h.lr_ratio_low, h.lr_ratio_high) == pytest.approx((0.25, 4.0)) and h.verdict == CONSISTENT


def test_headline_two_decades_and_no_pair():
    h = head(sweep({1e-2: [16] * 3, 1e-4: [16 * 100 * 16] * 3}))  # 100x LR gap, 1600x steps: a = 16
    assert h.lr_ratio == pytest.approx(16.0) and h.step_ratio_10x == pytest.approx(10 * 16 ** 0.5)
    none = head(sweep({1e-3: [INF] * 2}, {1e-3: 64}))
    assert none.lr_ratio is None and none.verdict == INCONCLUSIVE and "no LR converged" in headline_text(none)


@pytest.mark.parametrize("low, high, expected", [(1.01, 9, FASTER), (0.5, 2, CONSISTENT), (0.25, 4, CONSISTENT),
                                                 (0.2, 4, INCONCLUSIVE), (0.01, 0.99, SLOWER), (2, INF, FASTER),
                                                 (0.5, INF, INCONCLUSIVE)])
def test_verdict_thresholds(low, high, expected):
    assert verdict(low, high) == expected


# --- capability intervals -------------------------------------------------------------------------------------------


def test_paired_drop_interval_by_construction():
    before = {str(i): True for i in range(100)}
    same = paired_drop_interval(before, before)
    assert same[0] == 0 and same[1] < 0 < same[2] and same[3] == 100  # no change still has width
    after = dict(before) | {str(i): False for i in range(20)}  # 20 of 100 lost
    d, low, high, n = paired_drop_interval(before, after)
    assert d == pytest.approx(0.2) and low < 0.2 < high and low > 0.1
    with pytest.raises(ValueError, match="no item"):
        paired_drop_interval({"a": True}, {"b": True})
    low, high = unpaired_degradation_interval(0.5, 200, 0.5)
    assert low < 0 < high


def test_ten_percent_rule_reads_the_interval_not_the_point(tmp_path):
    """Issue 25: the 10% rule read a point estimate. 8% measured degradation on 50 items: the interval reaches
    past 10%, so the checkpoint is not within the limit."""
    from eval.capability.report import load_sweep_capability
    from eval.runfiles import write_json

    sweep_dir = tmp_path / "sw"
    name = "lr0.001_seed0"
    write_json(sweep_dir / "trials" / name / "config.json", {"name": name, "lr": 1e-3, "seed": 0, "max_steps": 4})
    write_jsonl(sweep_dir / "trials" / name / "metrics.jsonl", [
        {"kind": "eval", "step": 4, "eval_attack_rate": 0.1},
        {"kind": "capability", "step": 4, "benchmark": "mmlu", "score": 0.46, "n": 50, "baseline": 0.5,
         "rel_degradation": 0.08}])
    write_json(sweep_dir / "capability" / "baseline.json", {"guardrail": "mmlu", "max_degradation": 0.1})
    write_jsonl(sweep_dir / "capability" / "baseline_mmlu.jsonl",
                [{"item_id": str(i), "correct": i < 25} for i in range(50)])
    write_jsonl(sweep_dir / "trials" / name / "capability" / f"{step_name(4)}_mmlu.jsonl",
                [{"item_id": str(i), "correct": 2 <= i < 25} for i in range(50)])  # lost 2 of 25
    cap = load_sweep_capability(sweep_dir)
    row = cap.table[0]
    assert row["interval"].startswith("paired") and row["degradation_low"] < 0.08 < row["degradation_high"]
    assert row["degradation_high"] > 0.1 and row["score_low"] < 0.46 < row["score_high"]
    assert cap.degradation() == {(name, 4): pytest.approx(row["degradation_high"])}
    rows = with_intervals([dict(row, trial="missing")], sweep_dir)  # no per-item file: the unpaired interval
    assert rows[0]["interval"].startswith("Wilson")


def collapsed_trial(lr, seed, at, max_steps):
    """A trial whose attack rate falls below the threshold at step `at` because its answers broke: there eval
    desired is 0.1 and other 0.8 (the transfer-by-collapse rule's case)."""
    cfg = {"name": f"lr{lr:.3g}_seed{seed}", "setting": "s", "lr": lr, "seed": seed, "max_steps": max_steps,
           "checkpoint_steps": [0, at // 2, at], "threshold": 0.5}
    rows = [{"step": s, "kind": "eval", "eval_attack_rate": a, "eval_desired_rate": d, "eval_other_rate": o,
             "n_eval": 100, "train_desired_rate": 0.95, "n_train": 50}
            for s, a, d, o in ((0, 1.0, 0.0, 0.0), (at // 2, 0.9, 0.1, 0.0), (at, 0.1, 0.1, 0.8))]
    return analyze_trial(cfg, rows, 0.5)


def test_a_transfer_by_collapse_is_not_the_high_lr_of_the_headline():
    """Issue 25's reproduction on SmolLM2: lr 3e-2 "transferred" in one step because its answers broke, and the
    headline took it as the converged high LR. Broken answers are not the desired behavior transferring."""
    broken = [collapsed_trial(1e-2, seed, 4, 4) for seed in range(3)]
    assert all(t.collapse and t.converged for t in broken)
    h = head(broken + sweep({1e-3: [64] * 3, 1e-4: [INF] * 3}, {1e-3: 64, 1e-4: 20000}))
    assert (h.high_lr, h.low_lr, h.collapsed) == (1e-3, 1e-4, 3)  # not lr 1e-2, whose "transfers" were breakage
    assert h.lower_bound and h.verdict == FASTER
    assert "3 transfer(s) by collapse counted as not transferred" in headline_text(h)
    alone = head(broken + sweep({1e-3: [INF] * 3}, {1e-3: 40}))
    assert alone.lr_ratio is None and "no LR converged" in headline_text(alone)


def test_transfers_by_the_first_checkpoint_are_bounds_not_fractions_of_a_step():
    """Issue 25's reproduction on SmolLM2: on animal_flag one step transferred at every LR. Interpolating toward step
    0 gave fractions of a step (0.5 at one LR, 0.8 at another), and the headline read a 30x lower LR needing 1/30
    the LR x steps as "slower than 1/LR". One step is the least a trial can take: those steps are upper bounds."""
    first = [trial([(0, 1.0), (1, t)], lr=lr, seed=s, max_steps=1, steps=[0, 1])
             for lr, t in ((3e-2, 0.0), (1e-3, 0.375)) for s in range(3)]
    h = head(first)
    assert (h.high_lr, h.low_lr, h.lr_ratio, h.verdict) == (3e-2, 1e-3, None, INCONCLUSIVE)
    assert "both transferred by their first checkpoint" in headline_text(h)
    # the high LR by its first checkpoint, the low LR later: (a) is only a lower bound
    mixed = head([trial([(0, 1.0), (1, 0.1)], lr=1e-2, seed=s, max_steps=1, steps=[0, 1]) for s in range(3)]
                 + sweep({1e-4: [64] * 3}, {1e-4: 64}))
    assert mixed.lower_bound and math.isinf(mixed.lr_ratio_high) and mixed.verdict == INCONCLUSIVE
    assert mixed.lr_ratio == pytest.approx(1e-4 * 64 / (1e-2 * 1), rel=0.5)  # the low LR's crossing over 1 step
    assert "lr 0.01 transferred by its first checkpoint" in headline_text(mixed)
    # the low LR by its first checkpoint, the high LR later (a case of "slower"): (a) is only an upper bound
    slow = head(sweep({1e-2: [4096] * 3}) + [trial([(0, 1.0), (4, 0.1)], lr=1e-3, seed=s, max_steps=4, steps=[0, 4])
                                              for s in range(3)])
    assert slow.upper_bound and slow.lr_ratio_low == 0 and slow.verdict == SLOWER


def test_the_bar_chart_title_never_prints_a_missing_ratio():
    from eval.report import bars_title

    first = [trial([(0, 1.0), (1, 0.2)], lr=lr, seed=s, max_steps=1, steps=[0, 1]) for lr in (1e-2, 1e-3)
             for s in range(3)]
    assert bars_title(head(first)) == "(a) not measured, verdict: inconclusive at this many seeds"  # was "(a) -x"
    low = head(sweep({1e-3: [64, 64, 64], 1e-4: [INF, INF, INF]}, {1e-4: 20000}))
    assert bars_title(low).startswith("(a) >= ") and bars_title(low).endswith("verdict: faster than 1/LR")
