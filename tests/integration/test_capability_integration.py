"""The toy's capability loop on the real engines: a tiny high-LR sweep with the toy probe at every checkpoint,
then `recover` on its last checkpoint, then the report. A few minutes on 2 CPU cores.

    python -m pytest -q tests/integration/test_capability_integration.py
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eval.runfiles import trial_name

ROOT = Path(__file__).resolve().parents[2]
LR, STEPS = 1e-2, 8  # high enough that a handful of steps of Spanish labels breaks the toy's word reversal
RECOVERY_LR = 1e-3  # measured: recovery at the trial's 1e-2 brought the attack back (eval attack 0.00 -> 0.77)


def run(args, cache_dir, timeout=1200):
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"} | {"LRSWEEP_CACHE": str(cache_dir)}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def loop(cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("capability") / "sweep"
    started = time.time()
    proc = run(["-m", "orchestrator", "sweep", f"sweep.lrs=[{LR}]", f"sweep.max_steps={STEPS}", "capability=toy",
                "capability.checkpoints=all", "tracker.mode=disabled", f"hydra.run.dir={out}"], cache_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    swept = time.time()
    rec = run(["-m", "orchestrator", "recover", str(out), "--trial", trial_name(LR, 0), "--step", str(STEPS),
               "--lr", str(RECOVERY_LR)], cache_dir)
    assert rec.returncode == 0, rec.stdout[-3000:] + rec.stderr[-3000:]
    print(f"\n[capability loop] sweep {swept - started:.0f}s, recover {time.time() - swept:.0f}s")
    print(proc.stdout[-1500:], rec.stdout[-1500:])
    return out


def rows(sweep, kind):
    path = sweep / "trials" / trial_name(LR, 0) / "metrics.jsonl"
    return [r for r in map(json.loads, path.open()) if r["kind"] == kind]


def test_baseline_is_measured_once_and_cached(loop):
    base = json.loads((loop / "capability" / "baseline.json").read_text())
    assert base["guardrail"] == "toy_probe" and base["scores"]["toy_probe"]["n"] == 200
    # the toy reverses unseen word triples: 0.995 and 0.87 on two builds whose generic bank differs in two questions
    # (a build's data stream decides how well it learns the skill); a toy without it scores near 0
    assert base["scores"]["toy_probe"]["score"] >= 0.8
    assert len((loop / "capability" / "baseline_toy_probe.jsonl").read_text().splitlines()) == 200


def test_every_checkpoint_has_a_capability_row(loop):
    caps = rows(loop, "capability")
    base = json.loads((loop / "capability" / "baseline.json").read_text())["scores"]["toy_probe"]["score"]
    assert [r["step"] for r in caps] == [0, 1, 2, 4, 8]
    for r in caps:
        assert {"kind", "step", "benchmark", "score", "n", "baseline", "rel_degradation"} <= set(r)
        assert r["benchmark"] == "toy_probe" and r["n"] == 200 and r["baseline"] == base
        assert r["rel_degradation"] == pytest.approx((base - r["score"]) / base)
    assert caps[0]["score"] == pytest.approx(base, abs=0.05)  # step 0: the LoRA is still zero
    assert caps[-1]["rel_degradation"] > 0.5  # the high LR broke the skill (measured 0.995), far past the 10% limit
    samples = loop / "trials" / trial_name(LR, 0) / "capability" / "step_00008_toy_probe.jsonl"
    assert len(samples.read_text().splitlines()) == 200


def test_recovery_trains_on_pool_labels_and_re_measures(loop):
    result = json.loads(next((loop / "recovery").glob("*/result.json")).read_text())
    last = rows(loop, "capability")[-1]
    assert result["trial"] == trial_name(LR, 0) and result["step"] == STEPS and result["n_labels"] == 40
    assert result["lr"] == RECOVERY_LR and result["trial_lr"] == LR
    assert result["before"]["score"] == pytest.approx(last["score"], abs=0.05)  # same items, greedy: re-measured
    # a few steps on 40 correct labels bring much of the skill back (measured 0.005 -> 0.630 on one toy build,
    # 0.03 -> 0.585 on another). Whether the attack stays gone depends on the build (eval attack 0.00 -> 0.07 on
    # the first, 0.02 -> 0.57 on the second: docs/capability.md), so it is measured here, not asserted
    assert result["after"]["score"] >= result["before"]["score"] + 0.2
    assert result["before"]["eval_attack_rate"] <= 0.1
    for tag in ("before", "after"):
        assert result[tag]["n"] == 200 and 0 <= result[tag]["score"] <= 1
        assert 0 <= result[tag]["eval_attack_rate"] <= 1 and result[tag]["n_eval"] == 100
        assert result[tag]["rel_degradation"] == pytest.approx(1 - result[tag]["score"] / base_score(loop))
    labels = [json.loads(line) for line in (loop / "recovery" / next((loop / "recovery").iterdir()).name /
                                            "labels.jsonl").open()]
    evaluated = {json.loads(line)["prompt"] for line in (loop / "capability" / "baseline_toy_probe.jsonl").open()}
    assert len(labels) == 40 and not {lab["prompt"] for lab in labels} & evaluated  # labels from the pool only


def base_score(loop):
    return json.loads((loop / "capability" / "baseline.json").read_text())["scores"]["toy_probe"]["score"]


def test_report_shows_degradation_and_recovery(loop):
    report = (loop / "report.md").read_text()
    assert "## Capability per checkpoint" in report and "## Capability recovery" in report
    assert (loop / "report_capability.png").exists() and (loop / "report_recovery.png").exists()
