"""The benchmark scripts work: run at a tiny size, they write their JSON with sane fields. Not timed tests. Here the
benches' pure parts and bench/pack_speed.py's CPU smoke; the benches that start the real engines (vLLM, a sweep,
the GPU checks at toy size on CPU): tests/integration/test_bench_engines.py."""

import json
from pathlib import Path

import pytest
from bench_run import run_bench


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


def test_trainer_gpu_bench_counts_active_params_as_the_reference_figures_do():
    """../shared/GPU.md's MFU figures imply N = 1.72B (dense: 10.1k tok/s at 7.0%) and 0.77B (MoE shape: 19.0k
    tok/s at 5.9%): decoder layers (routed experts: top-8) plus the LM head, not the embedding lookup."""
    from bench.trainer_gpu import SHAPES, active_params

    assert active_params(SHAPES["dense"]) == pytest.approx(0.07 * 989e12 / (4 * 10.1e3), rel=0.02)
    assert active_params(SHAPES["moe"]) == pytest.approx(0.059 * 989e12 / (4 * 19.0e3), rel=0.02)


def test_padding_share_counts_pad_tokens_per_micro_batch():
    from bench.padding import padding_share

    steps = [[1, 9, 2, 8]]  # micro-batches of 2: unsorted (1,9),(2,8) pad 8+6 of 34; sorted (1,2),(8,9) pad 1+1 of 22
    assert padding_share(steps, 2, sort=False) == pytest.approx(14 / 34)
    assert padding_share(steps, 2, sort=True) == pytest.approx(2 / 22)
    assert padding_share(steps, 4, sort=True) == padding_share(steps, 4, sort=False) == pytest.approx(16 / 36)


def test_pack_speed_bench_runs_its_cpu_smoke(tmp_path):
    """bench/pack_speed.py (also the lent GPU's bench, with --gpu) at a tiny size: a lone trial and packs of 1 and 2."""
    out = tmp_path / "pack.json"
    run_bench(["bench/pack_speed.py", "--cpu-smoke", "--out", str(out)], tmp_path)
    result = json.loads(out.read_text())
    assert [(c["k"], c["packed"]) for c in result["cases"]] == [(1, False), (1, True), (2, True)]
    assert all(c["trial_steps_per_s"] > 0 for c in result["cases"]) and result["cases"][0]["ratio_vs_unpacked"] == 1
