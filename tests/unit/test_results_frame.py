"""Results where researchers work: load_sweep's tidy DataFrame, curves.csv, and plots that leave the caller's
matplotlib alone. Sweep folders are built by hand in the run-file format (tests/support/synthetic_sweep.py)."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from synthetic_sweep import CROSS, LRS, MAX_STEPS, SEEDS, make_sweep

from eval.runfiles import load_sweep, write_curves_csv

REPO = Path(__file__).resolve().parents[2]


def test_load_sweep_is_one_tidy_row_per_trial_step_kind(tmp_path):
    a = make_sweep(tmp_path, "alpha", failed=(1e-3, 2))
    b = make_sweep(tmp_path, "beta")
    df = load_sweep([a, b])
    assert not df.duplicated(["sweep", "trial", "step", "kind"]).any()
    assert set(df.setting) == {"alpha", "beta"} and set(df.kind) == {"eval", "train"}
    alone = load_sweep(a)
    assert len(df) == len(alone) + len(load_sweep(b))  # several sweeps concatenate
    evals = df[df.kind == "eval"]
    n_checkpoints = 6  # 0, 1, 2, 4, 8, 16
    assert len(evals) == n_checkpoints * (2 * len(LRS) * len(SEEDS) - 1)  # alpha's failed trial has no rows
    assert {"eval_attack_rate", "eval_desired_rate", "eval_other_rate", "train_desired_rate", "n_eval",
            "train_loss"} <= set(df.columns)
    # steps-to-transfer per trial comes with every row, as eval.analysis decides it
    per_trial = df[df.setting == "beta"].drop_duplicates("trial").set_index(["lr", "seed"]).steps_to_transfer
    for lr in LRS:
        for seed in SEEDS:
            expected = CROSS[lr][seed]
            assert (pd.isna(per_trial[(lr, seed)]) if expected is None else per_trial[(lr, seed)] == expected)
    curve = evals[(evals.setting == "alpha") & (evals.lr == 1e-2) & (evals.seed == 0)]
    assert list(curve.step) == [0, 1, 2, 4, 8, 16] and curve.eval_attack_rate.iloc[-1] == 0.2
    assert (df[df.kind == "train"].groupby("trial").step.max() == MAX_STEPS).all()


def test_load_sweep_refuses_a_folder_that_is_not_a_sweep(tmp_path):
    with pytest.raises(ValueError, match="not a sweep folder"):
        load_sweep(tmp_path)


def test_curves_csv_round_trips(tmp_path):
    a = make_sweep(tmp_path, "alpha")
    path = write_curves_csv(a)
    assert path == a / "curves.csv"
    back = pd.read_csv(path)
    df = load_sweep(a)
    assert list(back.columns) == list(df.columns) and len(back) == len(df)
    assert back.eval_attack_rate.dropna().tolist() == df.eval_attack_rate.dropna().tolist()


def test_report_leaves_the_callers_backend_and_figures_alone(tmp_path):
    """A notebook user's backend and open figures must survive `report` (plots use the object API)."""
    sweep = make_sweep(tmp_path, "alpha")
    code = f"""
import matplotlib
matplotlib.use("svg")
import matplotlib.pyplot as plt
fig = plt.figure(); fig.gca().plot([1, 2])
from eval.report import write_report
from eval.plots import plot_curves
write_report([{str(sweep)!r}], {str(tmp_path / 'out')!r})
plot_curves([{{"lr": 1e-3, "seed": 0, "eval_curve": [[0, 1.0]], "train_desired_curve": [[0, 1.0]]}}], 0.5,
            __import__("pathlib").Path({str(tmp_path / 'c.png')!r}))
print(matplotlib.get_backend(), plt.get_fignums())
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["svg", "[1]"]
    assert (tmp_path / "out" / "report_attack_rate.png").read_bytes()[:4] == b"\x89PNG"
