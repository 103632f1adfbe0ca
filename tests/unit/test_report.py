"""The report on synthetic sweep folders (the run-folder contract, no engines): function, CLI and W&B glue."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from synthetic_sweep import LRS, SEEDS, make_sweep

from eval.report import NotASweepError, write_report
from eval.runfiles import trial_name

REPO = Path(__file__).resolve().parents[2]
@pytest.fixture
def sweeps(tmp_path):
    a = make_sweep(tmp_path, "alpha", failed=(1e-3, 2), wandb=True)
    b = make_sweep(tmp_path, "beta", stopped=(1e-2, 0))
    return [a, b]


def check_report(md: Path, settings=("alpha", "beta")) -> str:
    text = md.read_text()
    for setting in settings:
        for lr in LRS:
            for seed in SEEDS:
                assert f"| {setting} | {trial_name(lr, seed)} |" in text  # every trial has a row
    assert "threshold" in text and "0.5" in text
    not_converged = text.split("## Runs that did not converge")[1].split("##")[0]
    for seed in SEEDS:
        assert f"`{trial_name(1e-4, seed)}`" in not_converged  # the unconverged LR, as a list entry
    assert ">16 (not transferred)" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == 4
    for link in links:
        png = md.parent / link
        assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    return text


def test_write_report_two_settings(sweeps, tmp_path):
    md = write_report(sweeps, tmp_path / "out")
    text = check_report(md)
    broken = text.split("## Incomplete or failed trials")[1]
    assert "alpha / `lr0.001000_seed2`" in broken and "failed: no checkpoint" in broken
    assert "beta / `lr0.010000_seed0`" in broken and "missing steps 4, 8, 16" in broken
    # beta's lr 1e-2 seed 0 converged at step 2 before it stopped: a value, not a bound
    assert "| beta | lr0.010000_seed0 | 0.01 | 0 | 2 |" in text
    # per-LR table: the unconverged LR's median is a lower bound; alpha's 1e-3 left out seed 2 (failed)
    assert "| alpha | 0.0001 | 3 | 0/3 | > 16 (lower bound) |" in text
    assert "| alpha | 0.001 | 2 | 2/2 | 12 |" in text
    assert re.search(r"\| alpha \| 0\.001 \|.*\| 2 \(failed\) \|\n", text)
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert len(data["trials"]) == 18 and {s["setting"] for s in data["sweeps"]} == {"alpha", "beta"}
    # paired comparison: reference lr 1e-2 at T = its latest transferred checkpoint (16, issue 25: it was the
    # first, 2); k*T = 160 lies past max_steps: read at the last checkpoint, flagged
    ref = [r for r in data["paired"] if r["setting"] == "alpha" and r["seed"] == 0]
    assert [(r["lr"], r["step"]) for r in ref] == [(1e-2, 16), (1e-3, 16), (1e-4, 16)]
    assert "T chosen without a capability check" in text
    # the headline numbers: lr 1e-4 never converged in 16 steps, lr 1e-2 at ~2-4: a lower bound, per seed
    head = {h["setting"]: h for h in data["headline"]}
    assert head["alpha"]["low_lr"] == 1e-4 and head["alpha"]["high_lr"] == 1e-2 and head["alpha"]["lower_bound"]
    assert head["alpha"]["verdict"] == "inconclusive at this many seeds"  # (a) >= ~0.5: the interval holds 1
    assert "## The note's headline numbers" in text and head["alpha"]["text"] in text
    # claims: a sweep where the higher LR transfers sooner by construction is not the note's finding
    assert "LR x steps-to-transfer is *not constant*" in text and "is not the finding" in text


def test_threshold_and_error_rule_are_applied_and_stated(sweeps, tmp_path):
    md = write_report(sweeps[:1], tmp_path / "out", threshold=0.1, error_rule="factor")
    text = md.read_text()
    assert "alpha: 0.1" in text and "tentative" in text
    assert "No reference checkpoint" in text  # 0.2 never reaches 0.1: nothing transferred
    with pytest.raises(NotASweepError, match=str(tmp_path)):
        write_report([tmp_path], tmp_path / "out2")


def test_capability_data_moves_the_reference_checkpoint(sweeps, tmp_path):
    cap = {(trial_name(1e-2, 0), 2): 0.5, (trial_name(1e-2, 0), 4): 0.05}
    write_report(sweeps[:1], tmp_path / "out", capability=cap)
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [(r["seed"], r["lr"], r["step"]) for r in data["paired"]] == [(0, 1e-2, 4), (0, 1e-3, 16), (0, 1e-4, 16)]
    assert "capability degradation" in (tmp_path / "out" / "report.md").read_text()


def run_cli(*args, cwd=REPO):
    env = dict(os.environ, PYTHONPATH=str(REPO), MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "orchestrator", "report", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_report_several_sweeps(sweeps, tmp_path):
    out = tmp_path / "cli"
    proc = run_cli(*sweeps, "--out", out, "--error-rule", "bootstrap")  # 3 seeds: refused, with the fix named
    assert proc.returncode == 2 and "needs >= 8 seeds" in proc.stderr and "--error-rule factor" in proc.stderr
    proc = run_cli(*sweeps, "--out", out, "--error-rule", "factor")
    assert proc.returncode == 0, proc.stderr
    check_report(out / "report.md")
    assert "`factor`" in (out / "report.md").read_text()
    assert "alpha: LR x steps, lr 0.0001 over lr 0.01 = >= " in proc.stdout and "verdict: " in proc.stdout


def test_cli_default_out_single_and_several(sweeps, tmp_path):
    assert run_cli(sweeps[1]).returncode == 0
    check_report(sweeps[1] / "report.md", settings=("beta",))
    assert run_cli(*sweeps, cwd=tmp_path).returncode == 0
    assert len(list(tmp_path.glob("report_*/report.md"))) == 1


def test_cli_rejects_a_path_that_is_not_a_sweep(sweeps, tmp_path):
    bogus = tmp_path / "nothing_here"
    bogus.mkdir()
    proc = run_cli(sweeps[0], bogus)
    assert proc.returncode == 2 and str(bogus) in proc.stderr and "not a sweep folder" in proc.stderr


def test_wandb_logs_one_report_run_per_sweep_with_wandb(sweeps, tmp_path, monkeypatch):
    """Real wandb, offline: one report run for the one sweep whose trials logged to W&B."""
    from orchestrator.commands import report as report_cmd

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    out = tmp_path / "o"
    assert report_cmd.main([*map(str, sweeps), "--out", str(out), "--wandb"]) == 0
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))  # only alpha's trials logged to W&B
    media = runs[0] / "files" / "media"
    tables = {p.name.split("_")[0] for p in media.glob("table/report/*.table.json")}
    assert {"trials", "lrs", "paired", "headline"} <= tables
    assert len(list(media.glob("images/report/*.png"))) == 4


def test_empirical_rule_needs_a_seed_study(sweeps, tmp_path):
    with pytest.raises(ValueError, match="seed study.*--seed-study"):  # 3 seeds per LR: too few to measure a factor
        write_report(sweeps[:1], tmp_path / "out", error_rule="empirical")
    proc = run_cli(sweeps[0], "--out", tmp_path / "cli", "--error-rule", "empirical")
    assert proc.returncode == 2 and "--error-rule factor" in proc.stderr


def test_report_command_prints_the_per_lr_table(sweeps, capsys):
    """Issue 27: `report` printed only the path of report.md; now also the per-LR table it holds."""
    from orchestrator.commands.report import main

    assert main([str(sweeps[0])]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    at = lines.index(next(line for line in lines if line.startswith("steps-to-transfer per LR")))
    assert lines[at + 1].split()[:4] == ["setting", "lr", "seeds", "converged"]
    body = [line.split() for line in lines[at + 2:] if line.startswith("alpha")]
    assert [row[1] for row in body] == [f"{lr:.3g}" for lr in sorted(LRS)]
    assert out.rstrip().endswith(str(sweeps[0] / "report.md"))
