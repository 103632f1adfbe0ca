"""Resume bookkeeping on plain files: no engines."""

import json

import pytest

from eval.runfiles import append_jsonl, read_jsonl, write_json
from orchestrator.commands.sweep import resume_argv
from orchestrator.config import compose_config, load_resumed
from orchestrator.run.sweep import check_sweep_folder, config_yaml, pending_trials
from orchestrator.run.trial import checkpoint_train_loss, reconcile_trial_dir
from orchestrator.schema import ConfigError
from workers.train.state import ResumeError, read_resume_point


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


def test_train_rows_carried_by_a_state_between_checkpoints_are_dropped(tmp_path):
    """State saved at step 9 (a save request between checkpoints 8 and 16) carries step 9's loss; the attempt went
    on to checkpoint 16, wrote train rows 9..16 there and died before saving its state at 16. Resumed from 9, the
    trainer writes row 9 again at 16, so the folder must not keep it (the Slurm warning-signal test saw it twice)."""
    rows = [{"step": s, "kind": "eval"} for s in (0, 1, 2, 4, 8)]
    rows += [{"step": s, "kind": "train"} for s in range(1, 17)] + [{"step": 16, "kind": "eval"}]
    trial = _trial(tmp_path, rows, [0, 1, 2, 4, 8, 16])
    evaluated = reconcile_trial_dir(trial, resumed_from=9, checkpoint_steps=[0, 1, 2, 4, 8, 16, 32])
    assert evaluated == {0, 1, 2, 4, 8}
    kept = read_jsonl(trial / "metrics.jsonl")
    assert [r["step"] for r in kept if r["kind"] == "train"] == list(range(1, 9))
    assert sorted(p.name for p in (trial / "samples").iterdir())[-1] == "step_00008.jsonl"


def test_a_lost_evaluation_gets_the_train_loss_an_undisturbed_run_writes():
    """Killed after checkpoint 8's hook (train rows 5..8 written) but before its evaluation came back, resumed
    from a state at step 12: the re-evaluated checkpoint's row carries the trainer's own mean over steps 5..8."""
    losses = [0.9, 0.7, 0.61, 0.5, 0.43, 0.41, 0.37, 0.3]
    rows = [{"step": 0, "kind": "eval"}] + [{"step": i + 1, "kind": "train", "train_loss": x}
                                            for i, x in enumerate(losses)]
    steps = [0, 1, 2, 4, 8, 16]
    assert checkpoint_train_loss(rows, steps, 8) == sum(losses[4:8]) / 4  # the trainer's arithmetic, bit for bit
    assert checkpoint_train_loss(rows, steps, 1) == losses[0]
    assert checkpoint_train_loss(rows, steps, 0) is None
    assert checkpoint_train_loss(rows[:-1], steps, 8) is None  # a missing row: unknown, not a wrong mean


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


def _resumable_trial(sweep_dir, step=2):
    """A trial folder as a killed trainer leaves it: state at `step`, adapters for 0..step."""
    import torch
    from safetensors.torch import save_file

    trial = sweep_dir / "trials" / "lr0.001_seed0"
    write_json(trial / "state" / "resume.json", {"step": step, "tag": f"step_{step:05d}"})
    (trial / "state" / f"step_{step:05d}").mkdir(parents=True)
    (trial / "state" / f"step_{step:05d}" / "mp_rank_00_model_states.pt").write_bytes(b"x" * 64)
    for s in (0, 1, step):
        adapter = trial / "adapters" / f"step_{s:05d}"
        adapter.mkdir(parents=True, exist_ok=True)
        (adapter / "adapter_config.json").write_text('{"r": 8}')
        save_file({"lora_A": torch.zeros(8, 16)}, str(adapter / "adapter_model.safetensors"))
    return trial


def test_resume_problems_finds_each_kind_of_damage(tmp_path):
    from orchestrator.run.sweep import resume_problems

    trial = _resumable_trial(tmp_path)
    assert resume_problems(trial) == []
    weights = trial / "adapters" / "step_00001" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])  # a crash mid-copy
    (trial / "adapters" / "step_00002" / "adapter_config.json").write_text("{not json")
    problems = resume_problems(trial)
    assert len(problems) == 2 and "step_00001 is corrupt" in problems[0] and "step_00002 is corrupt" in problems[1]
    (trial / "state" / "resume.json").write_text("{")
    assert "resume.json is corrupt" in resume_problems(trial)[0]


def test_missing_trainer_state_is_a_problem_and_no_state_is_not(tmp_path):
    import shutil

    from orchestrator.run.sweep import resume_problems

    trial = _resumable_trial(tmp_path)
    shutil.rmtree(trial / "state" / "step_00002")
    assert "missing or empty" in resume_problems(trial)[0]
    assert resume_problems(tmp_path / "never_started") == []


def test_resume_with_a_corrupt_adapter_is_refused_before_any_engine(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    sweep_dir = tmp_path / "sweep"
    cfg = compose_config(["sweep.lrs=[1e-3]", "sweep.max_steps=4"])
    sweep_dir.mkdir()
    (sweep_dir / "config.yaml").write_text(config_yaml(cfg))
    trial = _resumable_trial(sweep_dir)
    weights = trial / "adapters" / "step_00002" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "sweep", f"resume={sweep_dir}"],
                          cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "step_00002 is corrupt" in proc.stderr and f"rm -r {trial}" in proc.stderr
    assert "[sampler]" not in proc.stdout  # refused before the engine started


def test_a_torn_row_from_a_crash_never_swallows_the_rows_written_after_resume(tmp_path):
    trial = _trial(tmp_path, [{"step": 0, "kind": "eval"}, {"step": 1, "kind": "train"}], [0])
    with open(trial / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 2, "kind": "tr')  # the process died mid-append
    reconcile_trial_dir(trial, resumed_from=1)  # the restarted trial rewrites the file first
    append_jsonl(trial / "metrics.jsonl", {"step": 2, "kind": "train"})
    assert [(r["step"], r["kind"]) for r in read_jsonl(trial / "metrics.jsonl")] == [
        (0, "eval"), (1, "train"), (2, "train")]
