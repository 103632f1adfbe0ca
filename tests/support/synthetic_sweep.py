"""A sweep folder built by hand in the run-file format every sweep writes (no engines): 3 LRs x 3 seeds, eval rows
whose attack rate crosses the threshold at CROSS's checkpoint, for the tests of the report, the results frame and
the commands that read a sweep folder."""

from pathlib import Path

from eval.metrics import checkpoint_steps
from eval.runfiles import trial_name, write_json, write_jsonl

LRS, SEEDS, MAX_STEPS = (1e-4, 1e-3, 1e-2), (0, 1, 2), 16
# first checkpoint at/below 0.5 per (lr, seed); None: never (the unconverged LR)
CROSS = {1e-2: (2, 4, 4), 1e-3: (8, 16, 8), 1e-4: (None, None, None)}


def make_sweep(root: Path, setting: str, failed: tuple[float, int] | None = None,
               stopped: tuple[float, int] | None = None, wandb: bool = False) -> Path:
    """A sweep folder in the format every sweep writes. `failed`: a trial with no eval rows; `stopped`: one that
    ran only up to step 2."""
    sweep = root / setting
    (sweep / "config.yaml").parent.mkdir(parents=True, exist_ok=True)
    (sweep / "config.yaml").write_text(f"setting:\n  name: {setting}\nsweep:\n  threshold: 0.5\n"
                                       f"  max_steps: {MAX_STEPS}\ntracker:\n  project: lrsweep-test\n")
    for lr in LRS:
        for seed in SEEDS:
            name = trial_name(lr, seed)
            tdir = sweep / "trials" / name
            write_json(tdir / "config.json", {
                "name": name, "setting": setting, "lr": lr, "seed": seed, "model": "toy", "max_steps": MAX_STEPS,
                "checkpoint_steps": checkpoint_steps(MAX_STEPS), "threshold": 0.5, "sweep_id": f"{setting}-test"})
            cross = CROSS[lr][seed]
            rows = []
            for step in range(MAX_STEPS + 1):
                if step:
                    rows.append({"step": step, "kind": "train", "train_loss": 3.0 - step * lr * 10})
                if step not in checkpoint_steps(MAX_STEPS) or (lr, seed) == failed:
                    continue
                if (lr, seed) == stopped and step > 2:
                    continue
                attack = 0.2 if cross is not None and step >= cross else 0.95 - 0.01 * step
                rows.append({"step": step, "kind": "eval", "lr": lr, "seed": seed, "train_loss": 2.0,
                             "eval_latency_s": 1.0, "eval_desired_rate": round(0.97 - attack, 2),
                             "eval_attack_rate": round(attack, 2), "eval_other_rate": 0.03, "n_eval": 100,
                             "train_desired_rate": 0.97 - 0.01 * (step % 3), "train_attack_rate": 0.0,
                             "train_other_rate": 0.03 + 0.01 * (step % 3), "n_train": 60})
            write_jsonl(tdir / "metrics.jsonl", rows)
            if wandb:
                (tdir / "wandb").mkdir()
    return sweep
