"""Metrics on curves whose answers are known by construction."""

import pytest

from eval.analysis import analyze_trial
from eval.metrics import checkpoint_steps, rates, steps_to_transfer
from eval.summary import format_table, summarize_trial


@pytest.mark.parametrize(
    "max_steps, expected",
    [(1, [0, 1]), (2, [0, 1, 2]), (8, [0, 1, 2, 4, 8]), (10, [0, 1, 2, 4, 8, 10]), (64, [0, 1, 2, 4, 8, 16, 32, 64])],
)
def test_checkpoint_steps_are_log_spaced_and_end_at_max(max_steps, expected):
    assert checkpoint_steps(max_steps) == expected


def test_checkpoint_steps_rejects_zero():
    with pytest.raises(ValueError, match="max_steps"):
        checkpoint_steps(0)


@pytest.mark.parametrize(
    "curve, threshold, expected",
    [
        ([(0, 1.0), (1, 0.9), (2, 0.5), (4, 0.1)], 0.5, 2),  # exactly at the threshold counts
        ([(0, 1.0), (1, 0.9), (2, 0.51), (4, 0.1)], 0.5, 4),  # crossing between checkpoints: next checkpoint
        ([(0, 1.0), (1, 0.6), (2, 0.51)], 0.5, None),  # approaches but never reaches
        ([(0, 1.0), (2, 0.4), (4, 0.8)], 0.5, 2),  # dips below then rises: the first crossing counts
        ([(4, 0.2), (0, 1.0), (2, 0.7)], 0.5, 4),  # order of rows does not matter
        ([(0, 0.3), (1, 0.2)], 0.5, 0),  # already transferred before training
        ([], 0.5, None),
        ([(0, 1.0), (8, 0.25)], 0.25, 8),
    ],
)
def test_steps_to_transfer(curve, threshold, expected):
    assert steps_to_transfer(curve, threshold) == expected


def test_rates_counts_each_label():
    r = rates(["desired", "attack", "attack", "other"])
    assert r == {"desired": 0.25, "attack": 0.5, "other": 0.25, "n": 4}


@pytest.mark.parametrize("grades, error", [([], "no grades"), (["desired", "maybe"], "unknown grade")])
def test_rates_rejects_bad_input(grades, error):
    with pytest.raises(ValueError, match=error):
        rates(grades)


def _rows(curve):
    return [
        {"step": s, "kind": "eval", "eval_attack_rate": a, "eval_desired_rate": 1 - a, "train_desired_rate": 0.95,
         "n_eval": 100, "n_train": 100}
        for s, a in curve
    ] + [{"step": 1, "kind": "train", "train_loss": 2.0}]


TRIAL = {"setting": "wronglang_spanish", "lr": 1e-3, "seed": 0, "name": "lr0.001_seed0", "max_steps": 8}


def test_summarize_converged_trial():
    s = summarize_trial(TRIAL, _rows([(0, 0.98), (1, 0.9), (2, 0.7), (4, 0.3), (8, 0.1)]), 0.5)
    assert s["steps_to_transfer"] == 4 and s["converged"]
    assert s["lr_x_steps"] == pytest.approx(4e-3)
    assert s["initial_attack_rate"] == 0.98 and s["final_attack_rate"] == 0.1
    assert s["complete"] and s["eval_curve"] == [[0, 0.98], [1, 0.9], [2, 0.7], [4, 0.3], [8, 0.1]]


def test_summarize_unconverged_trial_carries_max_steps_as_lower_bound():
    s = summarize_trial(TRIAL, _rows([(0, 1.0), (8, 0.9)]), 0.5)
    assert s["steps_to_transfer"] is None and not s["converged"]
    assert s["lr_x_steps"] == pytest.approx(8e-3) and s["lr_x_steps_is_lower_bound"]
    assert s["steps_to_transfer_text"] == ">8 (not transferred)"
    assert ">8 (not transferred)" in format_table([analyze_trial(TRIAL, _rows([(0, 1.0), (8, 0.9)]), 0.5)], 0.5)


def test_summarize_incomplete_trial_is_flagged():
    s = summarize_trial(TRIAL, _rows([(0, 1.0), (2, 0.9)]), 0.5)
    assert not s["complete"] and s["final_attack_rate"] == 0.9
