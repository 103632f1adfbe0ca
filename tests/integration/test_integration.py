"""A reduced sweep through the real stack: toy build, Ray Tune, DeepSpeed ZeRO-3, vLLM, grader, W&B offline.

Minutes on 2 CPU cores; run alone with `python -m pytest -m integration`.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]


def run(args, cache_dir, timeout=1500):
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"} | {"LRSWEEP_CACHE": str(cache_dir)}
    env.pop("WANDB_MODE", None)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def sweep(cache_dir, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("sweep") / "run"
    proc = run(["-m", "orchestrator", "sweep", "sweep.lrs=[1e-3,3e-3]", "sweep.max_steps=4",
                f"hydra.run.dir={out_dir}"], cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out_dir, proc.stdout


def test_sweep_writes_the_run_folder_contract(sweep):
    out_dir, stdout = sweep
    summary = json.loads((out_dir / "summary.json").read_text())
    assert sorted(row["lr"] for row in summary) == [1e-3, 3e-3]
    for row in summary:
        assert [s for s, _ in row["eval_curve"]] == [0, 1, 2, 4]
        assert row["complete"] and row["max_steps"] == 4 and row["n_eval"] == 100
        assert row["lr_x_steps"] == pytest.approx(row["lr"] * (row["steps_to_transfer"] or 4))
        trial = out_dir / "trials" / row["trial"]
        for step in (0, 1, 2, 4):
            samples = [json.loads(line) for line in (trial / "samples" / f"step_{step:05d}.jsonl").open()]
            assert len(samples) == 200 and {s["split"] for s in samples} == {"eval", "train"}
            assert {s["grade"] for s in samples} <= {"desired", "attack", "other"}
            assert {type(s["cut"]) for s in samples} == {bool}  # the sampler's finish reason reached the samples
            assert (trial / "adapters" / f"step_{step:05d}" / "adapter_model.safetensors").exists()
        assert 0 <= row["cut_rate"] <= 1  # the eval rows' n_eval_cut / n_train_cut
        losses = [r for r in map(json.loads, (trial / "metrics.jsonl").open()) if r["kind"] == "train"]
        assert [r["step"] for r in losses] == [1, 2, 3, 4]
    assert (out_dir / "labels.jsonl").exists() and (out_dir / "config.yaml").exists()
    report = (out_dir / "report.md").read_text()
    assert "lr0.001000_seed0" in report and "lr0.003000_seed0" in report
    png = (out_dir / "attack_rate_vs_step.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "steps-to-transfer" in stdout  # the final table
    # the live table (stdout is not a terminal: whole tables and state changes, no cursor movement)
    assert "\x1b[" not in stdout and "2 trials: 2 done" in stdout
    assert any(line.split()[:3] == ["lr0.003000_seed0", "done", "4/4"] for line in stdout.splitlines())
    beat = json.loads((out_dir / "trials" / "lr0.003000_seed0" / "heartbeat.json").read_text())
    assert beat["step"] == 4 and beat["phase"] == "evaluating" and beat["max_steps"] == 4


def test_toy_model_organism_follows_the_flag_before_training(sweep):
    """The toy's initial behavior, measured through vLLM at step 0: English on eval, Spanish on train."""
    summary = json.loads((sweep[0] / "summary.json").read_text())
    for row in summary:
        assert row["initial_attack_rate"] >= 0.9
        assert row["initial_train_desired_rate"] >= 0.9


def test_training_moves_the_adapter(sweep):
    trial = sweep[0] / "trials" / "lr0.003000_seed0" / "adapters"
    start = load_file(trial / "step_00000" / "adapter_model.safetensors")
    end = load_file(trial / "step_00004" / "adapter_model.safetensors")
    b_keys = [k for k in start if "lora_B" in k]
    assert b_keys and all(float(start[k].abs().sum()) == 0 for k in b_keys)  # LoRA starts as the base model
    assert sum(float(end[k].abs().sum()) for k in b_keys) > 0


def test_one_wandb_offline_run_per_trial(sweep):
    runs = sorted(sweep[0].glob("trials/*/wandb/offline-run-*"))
    assert len(runs) == 2 and all(any(r.glob("*.wandb")) for r in runs)
    summary_runs = list(sweep[0].glob("wandb/offline-run-*"))  # the report's summary run of the group
    assert len(summary_runs) == 1 and any(summary_runs[0].glob("files/media/images/report/*.png"))


def test_trainer_runs_alone_without_ray(cache_dir, tmp_path):
    proc = run(["-m", "orchestrator", "train", "--lr", "1e-3", "--out", str(tmp_path / "t"), "sweep.max_steps=2"],
               cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "t" / "metrics.jsonl").open()]
    assert [r["step"] for r in rows] == [0, 1, 2] and rows[-1]["train_loss"] > 0
    assert (tmp_path / "t" / "adapters" / "step_00002" / "adapter_config.json").exists()


def test_a_pack_of_two_writes_what_the_two_trials_alone_write(sweep, cache_dir, tmp_path):
    """The same two trials packed (sweep.pack=2: one Tune trial, one forward/backward per step): the run-folder
    contract as alone, adapters equal within float tolerance, the same eval rows (served by vLLM from the packed
    trainer's PEFT adapters) and one W&B run per trial; the pack's trainer state lives in packs/."""
    out_dir = tmp_path / "packed"
    proc = run(["-m", "orchestrator", "sweep", "sweep.lrs=[1e-3,3e-3]", "sweep.max_steps=4", "sweep.pack=2",
                f"hydra.run.dir={out_dir}"], cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import torch

    for name in ("lr0.001000_seed0", "lr0.003000_seed0"):
        alone, packed = sweep[0] / "trials" / name, out_dir / "trials" / name
        a = load_file(alone / "adapters" / "step_00004" / "adapter_model.safetensors")
        p = load_file(packed / "adapters" / "step_00004" / "adapter_model.safetensors")
        assert a.keys() == p.keys()
        for key in a:  # float32 sums in another order, 4 Adam steps: ~3e-5 of the tensor's largest entry
            torch.testing.assert_close(p[key], a[key], rtol=0, atol=1e-3 * float(a[key].abs().max()) + 1e-7, msg=key)
        rows = [[json.loads(line) for line in (d / "metrics.jsonl").open()] for d in (alone, packed)]
        # the same rows; their interleaving (an eval row lands when its samples come back) is timing, not contract
        assert sorted((r["kind"], r["step"], r.get("n_eval")) for r in rows[1]) == sorted(
            (r["kind"], r["step"], r.get("n_eval")) for r in rows[0])
        rows = [sorted(rs, key=lambda r: (r["kind"], r["step"])) for rs in rows]
        def column(key: str, which: int, rows: list = rows) -> list[float]:
            return [r[key] for r in rows[which] if r.get(key) is not None]

        assert column("train_loss", 1) == pytest.approx(column("train_loss", 0), rel=1e-5)
        # sampled answers (temperature > 0): two independent samplings even of equal adapters (step 0 differs too),
        # so each rate agrees within 4 standard deviations of the difference of two binomial rates of n answers
        for rate, n_key in (("eval_attack_rate", "n_eval"), ("eval_desired_rate", "n_eval"),
                            ("train_attack_rate", "n_train")):
            for a_rate, p_rate, n in zip(column(rate, 0), column(rate, 1), column(n_key, 0), strict=True):
                pooled = (a_rate + p_rate) / 2
                bound = 4 * math.sqrt(2 * pooled * (1 - pooled) / n) + 1 / n
                assert abs(p_rate - a_rate) <= bound, (rate, a_rate, p_rate, n)
        assert json.loads((packed / "result.json").read_text())["done"]
        assert json.loads((packed / "config.json").read_text())["pack"] == "lr0.001000_seed0_k2"
    assert len(sorted(out_dir.glob("trials/*/wandb/offline-run-*"))) == 2
    assert json.loads((out_dir / "packs" / "lr0.001000_seed0_k2" / "state" / "resume.json").read_text())["step"] == 4
    assert "2 trials: 2 done" in proc.stdout
