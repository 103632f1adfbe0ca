"""Run-folder files: atomic writes and torn-line tolerance."""

import os
import stat

import pytest

from eval.runfiles import append_jsonl, read_jsonl, trial_name, write_json, write_text_atomic


def test_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"step": 0})
    append_jsonl(path, {"step": 1})
    with open(path, "a") as fh:
        fh.write('{"step": 2, "eval_att')  # a crash mid-append
    assert read_jsonl(path) == [{"step": 0}, {"step": 1}]


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    write_json(tmp_path / "a.json", {"x": 1})
    write_json(tmp_path / "a.json", {"x": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    assert (tmp_path / "a.json").read_text().strip().endswith("}")


def test_trial_names_are_distinct_per_lr_and_seed():
    names = {trial_name(lr, s) for lr in (1e-4, 3e-4, 1e-3) for s in (0, 1)}
    assert len(names) == 6 and trial_name(1e-3, 0) == "lr0.001000_seed0"


def test_trial_names_sort_by_lr():
    """Issue 27: lr3e-05_seed0 sorted after lr0.001_seed0, so a listing of trials/ was out of LR order."""
    lrs = [3e-5, 1e-4, 1.5e-4, 3e-4, 1e-3, 2.5e-3, 1e-2, 0.1, 1.0, 2.5e-7, 1e-7]
    names = [trial_name(lr, 0) for lr in lrs]
    assert sorted(names) == [trial_name(lr, 0) for lr in sorted(lrs)]
    assert sorted(names + [trial_name(1e-3, 1)])[:3] == [trial_name(lr, 0) for lr in (1e-7, 2.5e-7, 3e-5)]
    assert trial_name(3e-5, 0) == "lr0.000030_seed0" and trial_name(2.5e-7, 2) == "lr0.000000250_seed2"


def test_an_older_sweep_keeps_its_trial_names(tmp_path):
    """A sweep folder written before the sortable names (lr3e-05_seed0) is resumed under the names it has, the
    trials that never started included; a new folder gets the sortable names."""
    (tmp_path / "old" / "trials" / "lr3e-05_seed0").mkdir(parents=True)
    assert trial_name(3e-5, 0, tmp_path / "old") == "lr3e-05_seed0"
    assert trial_name(1e-3, 0, tmp_path / "old") == "lr0.001_seed0"  # not started yet: the folder's form
    (tmp_path / "new" / "trials" / "lr0.000030_seed0").mkdir(parents=True)
    assert trial_name(1e-3, 0, tmp_path / "new") == "lr0.001000_seed0"
    assert trial_name(1e-3, 0, tmp_path / "empty") == "lr0.001000_seed0"


def test_latest_points_at_the_newest_sweep_of_a_setting(tmp_path):
    """Issue 27: no `latest` link; now sweeps/<setting>/latest follows the newest sweep folder, swapped atomically."""
    from eval.runfiles import link_latest

    sweeps = tmp_path / "sweeps" / "animal_flag"
    first, second = sweeps / "2026-01-01_12-00-00", sweeps / "2026-01-02_12-00-00"
    for d in (first, second):
        d.mkdir(parents=True)
    assert link_latest(first, "animal_flag") == sweeps / "latest"
    assert (sweeps / "latest").resolve() == first and os.readlink(sweeps / "latest") == first.name  # relative
    link_latest(second, "animal_flag")
    assert (sweeps / "latest").resolve() == second
    assert sorted(p.name for p in sweeps.iterdir()) == [first.name, second.name, "latest"]  # no temporary left
    assert link_latest(tmp_path / "elsewhere", "animal_flag") is None  # hydra.run.dir outside the layout
    (tmp_path / "sweeps" / "allcaps_refusal" / "latest").mkdir(parents=True)  # a user's own folder: untouched
    assert link_latest(tmp_path / "sweeps" / "allcaps_refusal" / "x", "allcaps_refusal") is None


@pytest.mark.parametrize("umask", [0o022, 0o002], ids=["umask0022", "umask0002"])
def test_every_sweep_file_gets_the_umasks_permissions(tmp_path, umask):
    """Issue 27 item 2: mkstemp's 0600 made summary.json, config.yaml, curves.csv, report.md, report.json
    unreadable to teammates on shared storage; every file the sweep writes now gets 0666 less the umask."""
    from synthetic_sweep import make_sweep

    from eval.report import write_report
    from orchestrator.config import compose_config
    from orchestrator.run.sweep import config_yaml, summarize_sweep

    old = os.umask(umask)
    try:
        sweep = make_sweep(tmp_path, "alpha")
        write_text_atomic(sweep / "config.yaml", config_yaml(compose_config([])))
        summarize_sweep(sweep, 0.5)
        write_report([sweep], sweep)
    finally:
        os.umask(old)
    written = ["config.yaml", "summary.json", "curves.csv", "report.md", "report.json", "attack_rate_vs_step.png",
               f"trials/{trial_name(1e-3, 0)}/metrics.jsonl", f"trials/{trial_name(1e-3, 0)}/config.json"]
    modes = {name: stat.S_IMODE((sweep / name).stat().st_mode) for name in written}
    assert modes == {name: 0o666 & ~umask for name in written}


BUILDER = """
import sys, time
from pathlib import Path
from eval.runfiles import build_lock
final = Path(sys.argv[1])
waited = final.parent / "waited"
with build_lock(final, log=lambda msg: waited.write_text(msg)):
    if not (final / "done").exists():
        with open(final.parent / "builds", "a") as fh:
            fh.write("built\\n")
        deadline = time.time() + 60
        while not waited.exists() and time.time() < deadline:  # the other process is blocked on the lock
            time.sleep(0.05)
        final.mkdir()
        (final / "done").write_text("")
"""


def test_two_processes_sharing_a_cache_build_it_once_and_the_second_waits(tmp_path):
    import subprocess
    import sys

    final = tmp_path / "toy" / "key"
    final.parent.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", BUILDER, str(final)]) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert (final.parent / "builds").read_text() == "built\n"
    assert "another process is building" in (final.parent / "waited").read_text()
    assert (final / "done").exists()
