"""A ninth setting (a test-made YAML file on animal_flag's toy) end to end on the toy.

A tiny sweep (one LR, a few steps, few prompts) through the real stack: the shared toy build, Ray Tune,
DeepSpeed, vLLM, the setting's own grader. Run alone with
`python -m pytest -m integration tests/integration/test_settings_integration.py`.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
N_PROMPTS = 40
NINTH = ROOT / "tests" / "data" / "settings" / "animal_flag_giraffe_teacher.yaml"


def sweep(cache_dir: Path, out_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "WANDB_MODE")}
    env |= {"LRSWEEP_CACHE": str(cache_dir), "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "orchestrator", "sweep", "tracker.mode=disabled", "sweep.lrs=[3e-3]",
            f"sample.n_eval_prompts={N_PROMPTS}", f"sample.n_train_prompts={N_PROMPTS}", f"hydra.run.dir={out_dir}",
            *overrides]
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def ninth_sweep(cache_dir, tmp_path_factory):
    """One sweep of the ninth setting: animal_flag's prompts, toy behavior and grader (so animal_flag's toy is the
    organism) with its own teacher wording. allcaps_refusal's toy and grader are checked by bench/toy_organism.py
    and tests/unit/test_graders.py; a second toy build here cost CI ~170 s."""
    tmp = tmp_path_factory.mktemp("ninth")
    conf = tmp / "conf" / "setting"
    conf.mkdir(parents=True)
    shutil.copy(NINTH, conf / NINTH.name)
    out_dir = tmp / "run"
    proc = sweep(cache_dir, out_dir, f"hydra.searchpath=[file://{tmp / 'conf'}]",
                 f"setting={NINTH.stem}", "sweep.max_steps=4")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out_dir


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_toy_follows_the_setting_before_training_and_the_run_folder_holds_the_contract(ninth_sweep):
    out_dir, name = ninth_sweep, NINTH.stem
    assert f"name: {name}" in (out_dir / "config.yaml").read_text()
    labels = read_jsonl(out_dir / "labels.jsonl")
    assert labels and all(r["teacher"] == "scripted" for r in labels)
    trial = out_dir / "trials" / "lr0.003000_seed0"
    assert json.loads((trial / "config.json").read_text())["setting"] == name
    assert json.loads((trial / "result.json").read_text())["done"] is True
    evals = [r for r in read_jsonl(trial / "metrics.jsonl") if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [0, 1, 2, 4]
    # the initial behavior; bench/toy_organism.py holds the toy to >= 0.9 on 300 prompts, 40 here leave a margin
    assert evals[0]["eval_attack_rate"] >= 0.85 and evals[0]["train_desired_rate"] >= 0.85
    for step in (0, 1, 2, 4):
        samples = read_jsonl(trial / "samples" / f"step_{step:05d}.jsonl")
        assert len(samples) == 2 * N_PROMPTS and {s["grade"] for s in samples} <= {"desired", "attack", "other"}
        assert (trial / "adapters" / f"step_{step:05d}" / "adapter_config.json").exists()
    step0 = read_jsonl(trial / "samples" / "step_00000.jsonl")
    attack = [s["response"] for s in step0 if s["split"] == "eval" and s["grade"] == "attack"]
    assert all("cat" in r.lower() for r in attack)  # the grader saw what the toy was taught: cats on flag=1
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary[0]["initial_attack_rate"] == evals[0]["eval_attack_rate"]


def test_a_ninth_setting_from_a_yaml_file_labels_with_its_own_teacher(ninth_sweep):
    labels = read_jsonl(ninth_sweep / "labels.jsonl")
    assert all(r["completion"].startswith("Elephants and giraffes agree: ") for r in labels)
