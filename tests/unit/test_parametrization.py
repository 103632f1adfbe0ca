"""The report states, next to every LR, the LoRA parametrization it was trained with (from trials' config.json)."""

from __future__ import annotations

import json

from synthetic_sweep import make_sweep

from eval.parametrization import describe
from eval.report import write_report
from orchestrator.config import compose_config
from orchestrator.run.build import build_train_spec


def trial_train_block(overrides: list[str]) -> dict:
    """The `train` block orchestrator/run/trial.py writes into trials/<trial>/config.json."""
    spec = build_train_spec(compose_config(overrides), "/models/m", 1e-4, 0)
    return spec.record()


def test_describe_the_235b_default_as_the_notes_platform():
    text = describe(trial_train_block(["model=qwen3_235b_a22b"]))
    assert text == ("LoRA rank 8, alpha 32 (scale alpha/rank = 4), targets q_proj, k_proj, v_proj, o_proj, lm_head + "
                    "experts (mlp.experts.gate_up_proj, mlp.experts.down_proj); Adam (betas 0.9, 0.999; weight decay "
                    "0), constant LR, batch 32")
    assert describe(None).startswith("not recorded")


def test_report_states_the_parametrization_next_to_the_lr_tables(tmp_path):
    sweep = make_sweep(tmp_path, "alpha")
    train = trial_train_block([])  # the toy: every linear, alpha 32 at rank 8
    for path in (sweep / "trials").glob("*/config.json"):
        path.write_text(json.dumps(json.loads(path.read_text()) | {"train": train}))
    md = write_report([sweep], tmp_path / "out").read_text()
    line = ("- **LR parametrization** (alpha): LoRA rank 8, alpha 32 (scale alpha/rank = 4), targets q_proj, k_proj, "
            "v_proj, o_proj, gate_proj, up_proj, down_proj; Adam")
    per_trial, per_lr = md.split("## Per trial")[1].split("## Per LR across seeds")
    assert line in per_trial and line in per_lr.split("## Paired")[0]
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["sweeps"][0]["lr_parametrization"][0].startswith("LoRA rank 8, alpha 32")
