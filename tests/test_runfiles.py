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
    assert len(names) == 6 and trial_name(1e-3, 0) == "lr0.001_seed0"


@pytest.mark.parametrize("umask", [0o022, 0o002], ids=["umask0022", "umask0002"])
def test_every_sweep_file_gets_the_umasks_permissions(tmp_path, umask):
    """Issue 27 item 2: mkstemp's 0600 made summary.json, config.yaml, curves.csv, report.md, report.json
    unreadable to teammates on shared storage; every file the sweep writes now gets 0666 less the umask."""
    from eval.report import write_report
    from orchestrator.config import compose_config
    from orchestrator.sweep import config_yaml, summarize_sweep
    from tests.test_report import make_sweep

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
