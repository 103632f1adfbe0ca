"""A deterministic error ends its trial once: no Ray Tune retry, the error in the trial's files and the sweep's.

A real sweep (Ray Tune, DeepSpeed, vLLM) on the tiny Qwen3-MoE with expert LoRA, whose sampler is started as it
was before vLLM served expert adapters (without vLLM's 3-D MoE LoRA flags), so vLLM refuses every adapter the
trial writes: a bad adapter/config mismatch that a retry would only repeat.
"""

import json
import sys

import pytest
from tiny_moe import build_tiny_moe


def test_a_refused_adapter_fails_its_trial_once_with_the_reason_in_its_files(tmp_path, monkeypatch):
    import orchestrator.run.sweep as sweep
    from orchestrator.config import compose_config

    model = build_tiny_moe(tmp_path / "model")
    cfg = compose_config([
        "setting=wronglang_spanish", "model=qwen3_30b_a3b", f"model.path={model}", "model.lora_experts=true",
        "model.max_model_len=256", "model.gradient_checkpointing=false", "train.lora_dropout=0", "sweep=toy",
        "sweep.lrs=[1e-3]",
        "sweep.max_steps=2", "sweep.max_retries=2", "tracker.mode=disabled", "sample.n_eval_prompts=4",
        "sample.n_train_prompts=4", "sample.max_new_tokens=8", "sample.engine.cpu_kvcache_space_gib=1",
        "setting.teacher.allow_scripted=true",  # a random tiny MoE: the setting's template labels
        f"cache_dir={tmp_path / 'cache'}"])
    real_spec = sweep.sampler_spec
    monkeypatch.setattr(sys, "stdout", sys.__stdout__)  # Ray pickles objects that reach pytest's capture files
    monkeypatch.setattr(sys, "stderr", sys.__stderr__)
    monkeypatch.setattr(sweep, "sampler_spec", lambda c, path: real_spec(c, path).with_engine(moe_lora_3d=False))
    out = tmp_path / "sweep"
    with pytest.raises(RuntimeError, match="1 of 1 trials failed") as raised:
        sweep.run_sweep(cfg, out)
    trial = out / "trials" / "lr0.001000_seed0"
    attempts = (trial / "attempts.jsonl").read_text().splitlines()
    assert len(attempts) == 1, f"the trial ran {len(attempts)} times: a deterministic error was retried"
    failed = json.loads((trial / "failed.json").read_text())
    assert failed["error"] == "AdapterRefused" and failed["deterministic"]
    assert str(trial / "adapters" / "step_00000") in failed["message"]
    assert "enable_mixed_moe_lora_format" in failed["message"]  # vLLM's own reason, word for word
    assert str(trial / "failed.json") in str(raised.value) and "vLLM refused the adapter" in str(raised.value)
    assert not (trial / "result.json").exists()  # so `sweep resume=` runs it again once the cause is fixed
