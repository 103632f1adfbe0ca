"""Resume bookkeeping on plain files: no engines."""

import json

import pytest

from eval.runfiles import append_jsonl, read_jsonl, write_json
from orchestrator.cli import load_resumed, resume_argv
from orchestrator.config import compose_config
from orchestrator.schema import ConfigError
from orchestrator.sweep import check_sweep_folder, config_yaml, pending_trials
from orchestrator.trial import reconcile_trial_dir
from workers.train import ResumeError, read_resume_point


def _trial(tmp_path, rows, sample_steps):
    trial = tmp_path / "trial"
    for r in rows:
        append_jsonl(trial / "metrics.jsonl", r)
    for s in sample_steps:
        (trial / "samples").mkdir(parents=True, exist_ok=True)
        (trial / "samples" / f"step_{s:05d}.jsonl").write_text("{}\n")
    return trial


def test_rows_past_the_resume_point_are_dropped_and_duplicates_removed(tmp_path):
    rows = [{"step": 0, "kind": "eval"}, {"step": 1, "kind": "train"}, {"step": 1, "kind": "eval"},
            {"step": 2, "kind": "train"}, {"step": 2, "kind": "train"}, {"step": 3, "kind": "train"},
            {"step": 4, "kind": "train"}, {"step": 4, "kind": "eval"}]
    trial = _trial(tmp_path, rows, [0, 1, 4])
    evaluated = reconcile_trial_dir(trial, resumed_from=2)
    assert evaluated == {0, 1}
    assert [(r["step"], r["kind"]) for r in read_jsonl(trial / "metrics.jsonl")] == [
        (0, "eval"), (1, "train"), (1, "eval"), (2, "train")]
    assert sorted(p.name for p in (trial / "samples").iterdir()) == ["step_00000.jsonl", "step_00001.jsonl"]


def test_no_state_means_a_fresh_start(tmp_path):
    trial = _trial(tmp_path, [{"step": 0, "kind": "eval"}], [0])
    assert reconcile_trial_dir(trial, resumed_from=None) == set()
    assert not (trial / "metrics.jsonl").exists() and not (trial / "samples").exists()


def test_corrupt_resume_point_names_the_fix(tmp_path):
    state = tmp_path / "trial" / "state"
    state.mkdir(parents=True)
    assert read_resume_point(state) is None
    (state / "resume.json").write_text("{not json")
    with pytest.raises(ResumeError, match="delete .*trial"):
        read_resume_point(state)
    write_json(state / "resume.json", {"step": 4, "tag": "step_00004"})
    assert read_resume_point(state) == {"step": 4, "tag": "step_00004"}


def test_a_folder_of_another_sweep_is_refused(tmp_path):
    cfg = compose_config([])
    text = config_yaml(cfg)
    assert check_sweep_folder(tmp_path, text) is False
    (tmp_path / "config.yaml").write_text(text)
    assert check_sweep_folder(tmp_path, text) is True
    other = config_yaml(compose_config(["sweep.max_steps=8"]))
    with pytest.raises(ConfigError, match="sweep.max_steps.*resume="):
        check_sweep_folder(tmp_path, other)


def test_pending_trials_skip_finished_ones(tmp_path):
    cfg = compose_config(["sweep.lrs=[1e-3,3e-3]", "sweep.seeds=[0,1]"])
    write_json(tmp_path / "trials" / "lr0.001_seed1" / "result.json", {"done": True})
    assert pending_trials(cfg, tmp_path) == [{"lr": 1e-3, "seed": 0}, {"lr": 3e-3, "seed": 0},
                                             {"lr": 3e-3, "seed": 1}]


def test_resume_reuses_the_folder_and_refuses_other_overrides(tmp_path):
    argv = resume_argv(["prog", f"resume={tmp_path}"])
    assert f"hydra.run.dir={tmp_path.resolve()}" in argv and "hydra.output_subdir=null" in argv
    with pytest.raises(ConfigError, match="no config.yaml"):
        load_resumed(tmp_path, [f"resume={tmp_path}"])
    (tmp_path / "config.yaml").write_text(config_yaml(compose_config(["sweep.max_steps=8"])))
    assert load_resumed(tmp_path, [f"resume={tmp_path}"]).sweep.max_steps == 8
    with pytest.raises(ConfigError, match="drop the overrides"):
        load_resumed(tmp_path, [f"resume={tmp_path}", "sweep.max_steps=16"])
    assert json.dumps(argv)
