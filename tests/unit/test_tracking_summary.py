"""A trial's W&B run ends with its outcome in the run summary and its setting and model as tags (real wandb,
offline), so W&B's runs table and scatter plots compare LRs without the report run."""

import json
import time
from types import SimpleNamespace

from eval.metrics import checkpoint_steps
from orchestrator.run.trial import run_summary
from workers.tracking import TrialLogger


def test_run_summary_and_tags_reach_the_wandb_run(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    info = {"name": "lr0.003_seed1", "setting": "animal_flag", "lr": 3e-3, "seed": 1, "model": "toy", "max_steps": 8,
            "checkpoint_steps": checkpoint_steps(8), "threshold": 0.5, "sweep_id": "animal_flag-test"}
    tracker = SimpleNamespace(backend="wandb", mode="offline", project="lrsweep-test", entity=None)
    logger = TrialLogger(tmp_path, tracker, group=info["sweep_id"], name=info["name"], run_config=info,
                         tags=["animal_flag", "toy"])
    for step, attack in ((0, 0.95), (1, 0.9), (2, 0.6), (4, 0.3), (8, 0.1)):
        logger.log({"step": step, "kind": "eval", "eval_attack_rate": attack, "eval_desired_rate": 1 - attack,
                    "eval_other_rate": 0.0, "n_eval": 100, "train_desired_rate": 0.95, "n_train": 100})
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    summary = run_summary(info, rows)
    assert summary["steps_to_transfer"] == 4 and summary["status"] == "transferred" and not summary["stopped_early"]
    logger.set_summary(summary)
    run = logger.run
    assert set(run.tags) == {"animal_flag", "toy"}
    assert run.summary["steps_to_transfer"] == 4 and run.summary["converged"] is True and run.summary["lr"] == 3e-3
    assert run.summary["lr_x_steps"] == 3e-3 * 4 and run.summary["seed"] == 1
    assert run.summary["stopped_early"] is False and run.summary["setting"] == "animal_flag"
    logger.finish()
    (record,) = tmp_path.glob("wandb/offline-run-*/*.wandb")  # the offline run file `wandb sync` uploads
    # wandb's service process may still be flushing the file when finish() returns: read until it holds the
    # summary, within a deadline
    deadline = time.time() + 60
    while True:
        data = record.read_bytes()
        if (b"steps_to_transfer_text" in data and b"lr_x_steps_is_lower_bound" in data) or time.time() > deadline:
            break
        time.sleep(0.5)
    assert b"steps_to_transfer_text" in data and b"lr_x_steps_is_lower_bound" in data


def test_wandb_run_id_is_unique_per_sweep_folder_and_resumes_only_its_own_run(tmp_path):
    """Issue 27 item 3: the id was `<setting>-<folder name>-<trial>` with resume="allow", so a new sweep in a
    reused folder name appended to the old run. Now: a hash of the trial folder's absolute path; resume only when
    that folder already made a run ("must" online), else a fresh run."""
    from workers.tracking import wandb_run_identity

    name = "lr0.001_seed0"
    a = tmp_path / "lab_a" / "sweeps" / "animal_flag" / "run1" / "trials" / name
    b = tmp_path / "lab_b" / "sweeps" / "animal_flag" / "run1" / "trials" / name  # the same folder name elsewhere
    a.mkdir(parents=True)
    (id_a, resume_a), (id_b, _) = wandb_run_identity(a, name, "online"), wandb_run_identity(b, name, "online")
    assert id_a != id_b and id_a.startswith("lr0-001_seed0-") and len(id_a) <= 64
    assert resume_a is None  # a fresh run: nothing of an earlier one to resume
    (a / "wandb").mkdir()  # the trial made its run before (a `sweep resume=` or a retry)
    assert wandb_run_identity(a, name, "online") == (id_a, "must")
    assert wandb_run_identity(a, name, "offline") == (id_a, "allow")
