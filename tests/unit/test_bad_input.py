"""Bad input through the real command line: a clear error naming the problem, a non-zero exit, before any
compute, and nothing left in the sweep folder that would need cleaning by hand.

Each case runs `python -m orchestrator sweep ...` in a subprocess (a few seconds each; no engine starts).
Config values refused by the schema alone are also table-tested in-process in test_config.py.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# (case id, overrides, text the error must contain)
CASES = [
    ("unknown setting", ["setting=no_such_setting"], "wronglang_spanish"),
    ("unknown model", ["model=no_such_model"], "there is no model named 'no_such_model'"),
    ("unknown config group", ["optimiser=adamw"], "unknown config key optimiser"),
    ("misspelt key", ["sweep.lr=[1e-3]"], "unknown config key sweep.lr (did you mean sweep.lrs?)"),
    ("misspelt key added with +", ["+sweep.lr=[1e-3]"], "unknown config key sweep.lr (did you mean sweep.lrs?)"),
    ("misspelt setting name", ["setting=wronglang_spansh"], "did you mean wronglang_spanish?"),
    ("empty LR grid", ["sweep.lrs=[]"], "sweep.lrs is empty"),
    ("negative LR", ["sweep.lrs=[1e-3,-1e-4]"], "positive finite"),
    ("zero LR", ["sweep.lrs=[0]"], "positive finite"),
    ("non-numeric LR", ["sweep.lrs=[fast]"], "fast"),
    ("repeated LR", ["sweep.lrs=[1e-3,1e-3]"], "repeats"),
    ("negative seed", ["sweep.seeds=[-1]"], "sweep.seeds[0]=-1: must be >= 0"),
    ("batch size 0", ["train.batch_size=0"], "train.batch_size=0"),
    ("micro-batch not dividing", ["train.micro_batch_size=5"], "divide train.batch_size"),
    ("LoRA rank 0", ["train.lora_rank=0"], "train.lora_rank=0"),
    ("max_steps below the first checkpoint", ["sweep.max_steps=0"], "sweep.max_steps=0"),
    ("threshold out of range", ["sweep.threshold=1.5"], "sweep.threshold"),
    ("unknown grader", ["setting.grader.kind=regex"], "setting.grader.kind='regex': must be one of language"),
    ("template without question", ["setting.eval_template=hello"], "{question}"),
    ("model path that does not exist", ["model.path=/nonexistent/model"], "not a model folder"),
    ("question bank that does not exist", ["setting.questions=/nonexistent/bank.jsonl"], "does not exist"),
    ("tracker mode unknown", ["tracker.mode=sometimes"], "tracker.mode"),
    # every numeric and enumerated field carries its rule (tests/unit/test_ranges.py lists them all); a few end to end
    ("LoRA dropout out of range", ["train.lora_dropout=1.5"], "train.lora_dropout=1.5: must be in [0, 1)"),
    ("top_p out of range", ["sample.top_p=0"], "sample.top_p=0.0: must be in (0, 1]"),
    ("unknown dtype", ["model.dtype=fp8"], "model.dtype='fp8': must be one of float32, bfloat16, float16"),
    ("NaN threshold", ["sweep.threshold=nan"], "sweep.threshold=nan: must be in (0, 1)"),
]


def run_cli(args, env=None):
    base = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "WANDB_MODE")}
    return subprocess.run([sys.executable, "-m", "orchestrator", "sweep", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=base | (env or {}))


def assert_refused(proc, message, run_dir):
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]  # a message, not a crash
    assert not run_dir.exists(), f"a refused run left {sorted(p.name for p in run_dir.iterdir())}"


@pytest.mark.parametrize("case, overrides, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_before_work(case, overrides, message, tmp_path):
    run_dir = tmp_path / "run"
    assert_refused(run_cli([*overrides, f"hydra.run.dir={run_dir}"]), message, run_dir)


@pytest.mark.parametrize("lines, message", [
    (['{"id": "a", "question": "Why?"}', "not json"], ":2: not valid JSON"),
    (['{"id": "a"}'], ":1: field 'question' is missing or empty"),
    (['{"id": "a", "question": "Why?"}', '{"id": "a", "question": "How?"}'], ":2: duplicate id 'a'"),
])
def test_malformed_question_bank_names_the_line(lines, message, tmp_path):
    bank = tmp_path / "bank.jsonl"
    bank.write_text("\n".join(lines) + "\n")
    run_dir = tmp_path / "run"
    assert_refused(run_cli([f"setting.questions={bank}", f"hydra.run.dir={run_dir}"]), message, run_dir)


def test_wandb_online_without_a_key_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(["tracker.mode=online", f"hydra.run.dir={run_dir}"])
    assert_refused(proc, "WANDB_API_KEY is not set", run_dir)
    assert "tracker.mode=offline" in proc.stderr  # the fix is named


def test_a_folder_holding_another_sweep_is_refused_and_left_as_it_was(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("sweep:\n  lrs: [0.5]\n")
    before = sorted(p.name for p in run_dir.iterdir())
    proc = run_cli([f"hydra.run.dir={run_dir}"])
    assert proc.returncode != 0 and "already holds a different sweep" in proc.stderr
    assert f"resume={run_dir}" in proc.stderr
    assert (run_dir / "config.yaml").read_text() == "sweep:\n  lrs: [0.5]\n"
    assert sorted(p.name for p in run_dir.iterdir() if p.name not in (".hydra", "sweep.log")) == before


@pytest.mark.parametrize("args, message", [
    (["resume={dir}"], "no config.yaml there"),
    (["resume={dir}", "sweep.max_steps=8"], "drop the overrides"),
])
def test_bad_resume_is_refused(args, message, tmp_path):
    folder = tmp_path / "not_a_sweep"
    folder.mkdir()
    if "drop" in message:
        (folder / "config.yaml").write_text("{}\n")
    proc = run_cli([a.format(dir=folder) for a in args])
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]
