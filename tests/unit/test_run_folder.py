"""The sweep folder as a type (eval/runfiles.py SweepDir, TrialDir): every path of the run-folder contract is spelled
once, trial names keep an older sweep's form, and step numbers are read from file names in one place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.runfiles import SweepDir, TrialDir, load_trial_records, step_of, write_json


def test_a_trials_paths_are_those_of_the_run_folder_contract(tmp_path: Path) -> None:
    trial = SweepDir(tmp_path).trial(1e-3, 2)
    assert trial.path == tmp_path / "trials" / "lr0.001000_seed2" and trial.name == "lr0.001000_seed2"
    assert (trial.config.name, trial.metrics.name, trial.result.name, trial.error.name, trial.failed.name) == \
        ("config.json", "metrics.jsonl", "result.json", "error.json", "failed.json")
    assert trial.adapter(8) == trial.path / "adapters" / "step_00008"
    assert trial.samples(8) == trial.path / "samples" / "step_00008.jsonl"
    assert trial.state == trial.path / "state" and trial.attempts == trial.path / "attempts.jsonl"


def test_an_older_sweeps_trial_keeps_its_name(tmp_path: Path) -> None:
    (tmp_path / "trials" / "lr0.001_seed0").mkdir(parents=True)  # written before names sorted by LR
    assert SweepDir(tmp_path).trial(1e-3, 0).name == "lr0.001_seed0"
    assert SweepDir(tmp_path).trial(3e-3, 0).name == "lr0.003_seed0"  # its siblings follow the folder's form


def test_trials_lists_only_folders_with_a_config_in_name_order(tmp_path: Path) -> None:
    sweep = SweepDir(tmp_path)
    for lr in (3e-3, 1e-3):
        write_json(sweep.trial(lr, 0).config, {"name": sweep.trial(lr, 0).name})
    sweep.trial(1e-2, 0).path.mkdir(parents=True)  # pending: no config yet
    assert [t.name for t in sweep.trials()] == ["lr0.001000_seed0", "lr0.003000_seed0"]


def test_record_error_is_what_the_analysis_reads_as_failed(tmp_path: Path) -> None:
    trial = SweepDir(tmp_path).trial(1e-3, 0)
    write_json(trial.config, {"name": trial.name, "setting": "s", "lr": 1e-3, "seed": 0, "max_steps": 4})
    err = trial.record_error("RuntimeError: boom", "/x/error.txt")
    assert json.loads(trial.error.read_text()) == err and err["error"] == "RuntimeError: boom"
    [record] = load_trial_records(tmp_path)
    assert record["error"]["error_file"] == "/x/error.txt" and not record["finished"]
    write_json(trial.result, {})
    assert trial.finished() and load_trial_records(tmp_path)[0]["finished"]


@pytest.mark.parametrize("name, step", [("step_00008", 8), ("step_00016.jsonl", 16), ("step_01000", 1000)])
def test_step_of_reads_a_checkpoints_file_name(name: str, step: int) -> None:
    assert step_of(Path("/a") / name) == step and step_of(TrialDir(Path("/t")).adapter(step)) == step


def test_step_of_refuses_a_name_without_a_step() -> None:
    with pytest.raises(ValueError, match="not named for a step"):
        step_of("baseline_mmlu.jsonl")
