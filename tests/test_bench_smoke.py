"""The benchmark scripts work: run at a tiny size, they write their JSON with sane fields. Not timed tests."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _trial(root: Path, name: str, lr: float, steps: int, timing: dict) -> None:
    trial = root / "trials" / name
    trial.mkdir(parents=True)
    (trial / "config.json").write_text(json.dumps({"lr": lr, "max_steps": 8}))
    wall = sum(timing.values())
    (trial / "result.json").write_text(json.dumps({"done": True, "wall_s": wall, "steps_trained": steps,
                                                   "stopped_early": steps < 8, "timing": timing}))


def test_trainer_bench_adds_up_the_trials_timings(tmp_path):
    from bench.trainer import main

    base = {"trial_setup_s": 1.0, "trainer_setup_s": 4.0, "train_steps_s": 80.0, "checkpoint_save_s": 5.0,
            "eval_handoff_s": 1.0, "eval_wait_s": 6.0, "grade_s": 2.0, "teardown_s": 0.5, "other_s": 0.5}
    _trial(tmp_path, "lr0.001_seed0", 1e-3, 8, base)
    _trial(tmp_path, "lr0.003_seed0", 3e-3, 4, base | {"train_steps_s": 40.0})
    out = main([str(tmp_path), "--out", str(tmp_path / "trainer.json")])
    assert json.loads((tmp_path / "trainer.json").read_text()) == out
    assert out["steps_trained"] == 12 and out["train_steps_per_s"] == pytest.approx(12 / 120, abs=1e-3)
    assert sum(out["share_of_trial_wall"].values()) == pytest.approx(1.0, abs=1e-3)
    assert out["orchestration_share"] == pytest.approx(2 * 3.0 / (100 + 60), abs=1e-3)
    assert sum(out["grouped_share_of_trial_wall"].values()) == pytest.approx(1.0, abs=1e-3)


def test_trainer_bench_refuses_a_folder_without_results(tmp_path):
    from bench.trainer import summarize

    with pytest.raises(FileNotFoundError, match="result.json"):
        summarize(tmp_path)


def _run(args, cache_dir, timeout=900):
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"} | {"LRSWEEP_CACHE": str(cache_dir),
                                                                          "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.integration
def test_sampling_bench_at_smoke_size(cache_dir, tmp_path):
    out = tmp_path / "sampling.json"
    _run(["bench/sampling.py", "--adapters", "2", "--prompts", "8", "--tokens", "4", "--scaling", "1,2",
          "--out", str(out)], cache_dir)
    r = json.loads(out.read_text())
    assert r["vllm_multi_lora_one_batch"]["generated_tokens"] == 2 * 8 * 4
    assert r["hf_generate_per_adapter"]["generated_tokens"] == 2 * 8 * 4
    assert r["vllm_multi_lora_one_batch"]["engine_calls"] == 1 and r["vllm_one_call_per_adapter"]["engine_calls"] == 2
    assert r["speedup_vs_hf"] > 0 and [g["adapters"] for g in r["growth_with_adapters_in_one_engine"]] == [1, 2]
    assert r["vllm_cpu_lora_kernel"] == "grouped" and r["grouped_vs_vllm_ops_one_batch"] > 0  # one engine each
    assert [k["one_batch"]["generated_tokens"] for k in r["cpu_lora_kernels"].values()] == [2 * 8 * 4] * 2


@pytest.mark.integration
def test_sweep_bench_at_smoke_size_with_early_stopping(cache_dir, tmp_path):
    """The fast preset on a 2-step sweep: the bench writes both files; steps trained never exceed the max."""
    out, trainer_out = tmp_path / "sweep.json", tmp_path / "trainer.json"
    _run(["bench/sweep.py", "--runs", "fast-warm", "--overrides", "sweep.max_steps=2,sweep.lrs=[3e-3]",
          "--out", str(out), "--trainer-out", str(trainer_out)], cache_dir)
    run = json.loads(out.read_text())["runs"]["fast-warm"]
    assert run["steps_max"] == 2 and 0 <= run["steps_trained"] <= 2 and run["wall_s"] > 0
    assert run["toy_key"] and len(run["trials"]) == 1
    for t in run["trials"]:  # a stopped trial's curve ends where it stopped, at its (k=1) transfer step
        if t["stopped_early"]:
            assert t["stop_reason"] == "transfer" and t["stop_step"] == t["steps_to_transfer"] < 2
            assert t["eval_curve"][-1][0] == t["stop_step"] and t["steps_trained"] >= t["stop_step"]
    trainer = json.loads(trainer_out.read_text())["runs"]["fast-warm"]
    assert 0 < trainer["orchestration_share"] < 1 and trainer["train_steps_per_s"] > 0


def test_trainer_gpu_bench_counts_active_params_as_the_reference_figures_do():
    """../shared/GPU.md's MFU figures imply N = 1.72B (dense: 10.1k tok/s at 7.0%) and 0.77B (MoE shape: 19.0k
    tok/s at 5.9%): decoder layers (routed experts: top-8) plus the LM head, not the embedding lookup."""
    from bench.trainer_gpu import SHAPES, active_params

    assert active_params(SHAPES["dense"]) == pytest.approx(0.07 * 989e12 / (4 * 10.1e3), rel=0.02)
    assert active_params(SHAPES["moe"]) == pytest.approx(0.059 * 989e12 / (4 * 19.0e3), rel=0.02)


@pytest.mark.integration
def test_trainer_gpu_bench_at_smoke_size(cache_dir, tmp_path):
    out = tmp_path / "trainer_gpu.json"
    _run(["bench/trainer_gpu.py", "--smoke", "--steps", "1", "--warmup", "1", "--levers", "hf_mb16,chunks_mb32",
          "--out", str(out)], cache_dir)
    r = json.loads(out.read_text())
    assert [(row["shape"], row["lever"]) for row in r["rows"]] == [("tiny", "hf_mb16"), ("tiny", "chunks_mb32")]
    for row in r["rows"]:
        assert "error" not in row, row
        assert row["tokens_per_s"] > 0 and row["active_params"] > 0 and row["peak_rss_gib"] > 0
    # same random model, data and seed: the first step's loss does not depend on the loss's implementation
    assert r["rows"][0]["last_loss"] == pytest.approx(r["rows"][1]["last_loss"], rel=1e-3)


def test_padding_share_counts_pad_tokens_per_micro_batch():
    from bench.padding import padding_share

    steps = [[1, 9, 2, 8]]  # micro-batches of 2: unsorted (1,9),(2,8) pad 8+6 of 34; sorted (1,2),(8,9) pad 1+1 of 22
    assert padding_share(steps, 2, sort=False) == pytest.approx(14 / 34)
    assert padding_share(steps, 2, sort=True) == pytest.approx(2 / 22)
    assert padding_share(steps, 4, sort=True) == padding_share(steps, 4, sort=False) == pytest.approx(16 / 36)


def test_pack_speed_bench_runs_its_cpu_smoke(tmp_path):
    """bench/pack_speed.py (also the lent GPU's bench, with --gpu) at a tiny size: a lone trial and packs of 1 and 2."""
    out = tmp_path / "pack.json"
    _run(["bench/pack_speed.py", "--cpu-smoke", "--out", str(out)], tmp_path)
    result = json.loads(out.read_text())
    assert [(c["k"], c["packed"]) for c in result["cases"]] == [(1, False), (1, True), (2, True)]
    assert all(c["trial_steps_per_s"] > 0 for c in result["cases"]) and result["cases"][0]["ratio_vs_unpacked"] == 1


@pytest.mark.integration
def test_gpu_check_runs_its_cpu_smoke(tmp_path):
    """bench/gpu_check.py, the one-GPU acceptance script (docs/gpu.md), at toy size on CPU: every phase runs and
    reports, the pack of two equals its trials alone, and the JSON holds each phase."""
    from bench.gpu_check import ADAPTER_TOLERANCE

    out = tmp_path / "gpu_check.json"
    began = time.time()
    _run(["bench/gpu_check.py", "--cpu-smoke", "--work", str(tmp_path / "work"), "--out", str(out)], tmp_path)
    result = json.loads(out.read_text())
    for phase in ("moe_pack", "dense_mfu", "memory_vs_plan", "load_rss"):
        assert "error" not in result[phase], (phase, result[phase])
    pack = result["moe_pack"]
    assert pack["ok"] and len(pack["members_match"]) == 2, pack
    assert all(m["expert_tensors"] > 0 and m["max_rel_diff"] <= ADAPTER_TOLERANCE for m in pack["members_match"])
    assert result["dense_mfu"]["tokens_per_s"] > 0
    assert result["memory_vs_plan"]["planned"]["total_gib"] > 0
    assert result["load_rss"]["host_mib"]["peak"] > 0
    print(f"gpu_check --cpu-smoke: {time.time() - began:.0f} s")
