"""The benchmark scripts that start the real engines work: run at a tiny size (vLLM sampling, a sweep, the trainer
on the GPU's shapes, the one-GPU acceptance check on CPU), they write their JSON with sane fields. Not timed tests.
The benches' pure parts: tests/unit/test_bench_smoke.py."""

import json
import time

import pytest
from bench_run import run_bench


def test_sampling_bench_at_smoke_size(cache_dir, tmp_path):
    out = tmp_path / "sampling.json"
    run_bench(["bench/sampling.py", "--adapters", "2", "--prompts", "8", "--tokens", "4", "--scaling", "1,2",
          "--out", str(out)], cache_dir)
    r = json.loads(out.read_text())
    assert r["vllm_multi_lora_one_batch"]["generated_tokens"] == 2 * 8 * 4
    assert r["hf_generate_per_adapter"]["generated_tokens"] == 2 * 8 * 4
    assert r["vllm_multi_lora_one_batch"]["engine_calls"] == 1 and r["vllm_one_call_per_adapter"]["engine_calls"] == 2
    assert r["speedup_vs_hf"] > 0 and [g["adapters"] for g in r["growth_with_adapters_in_one_engine"]] == [1, 2]
    assert r["vllm_cpu_lora_kernel"] == "grouped" and r["grouped_vs_vllm_ops_one_batch"] > 0  # one engine each
    assert [k["one_batch"]["generated_tokens"] for k in r["cpu_lora_kernels"].values()] == [2 * 8 * 4] * 2


def test_sweep_bench_at_smoke_size_with_early_stopping(cache_dir, tmp_path):
    """The fast preset on a 2-step sweep: the bench writes both files; steps trained never exceed the max."""
    out, trainer_out = tmp_path / "sweep.json", tmp_path / "trainer.json"
    run_bench(["bench/sweep.py", "--runs", "fast-warm", "--overrides", "sweep.max_steps=2,sweep.lrs=[3e-3]",
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


def test_trainer_gpu_bench_at_smoke_size(cache_dir, tmp_path):
    out = tmp_path / "trainer_gpu.json"
    run_bench(["bench/trainer_gpu.py", "--smoke", "--steps", "1", "--warmup", "1", "--levers", "hf_mb16,chunks_mb32",
          "--out", str(out)], cache_dir)
    r = json.loads(out.read_text())
    assert [(row["shape"], row["lever"]) for row in r["rows"]] == [("tiny", "hf_mb16"), ("tiny", "chunks_mb32")]
    for row in r["rows"]:
        assert "error" not in row, row
        assert row["tokens_per_s"] > 0 and row["active_params"] > 0 and row["peak_rss_gib"] > 0
    # same random model, data and seed: the first step's loss does not depend on the loss's implementation
    assert r["rows"][0]["last_loss"] == pytest.approx(r["rows"][1]["last_loss"], rel=1e-3)


def test_gpu_check_runs_its_cpu_smoke(tmp_path):
    """bench/gpu_check.py, the one-GPU acceptance script (docs/gpu.md), at toy size on CPU: every phase runs and
    reports, the pack of two equals its trials alone, and the JSON holds each phase."""
    from bench.gpu_check import ADAPTER_TOLERANCE

    out = tmp_path / "gpu_check.json"
    began = time.time()
    run_bench(["bench/gpu_check.py", "--cpu-smoke", "--work", str(tmp_path / "work"), "--out", str(out)], tmp_path)
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
