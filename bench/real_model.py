"""SmolLM2-135M-Instruct per setting: probe rates before and after the organism step, and the organism's build time.

    PYTHONPATH=$PWD python bench/real_model.py [--settings animal_flag,wronglang_spanish,allcaps_refusal]
        [--n 32] [hydra overrides, e.g. model.organism_recipe.steps=16]

Both measurements are on held-out questions (eval-split questions under each template), with the same n, sampler
settings and seed; a setting without a `toy:` block has no organism, so only its unmodified rates.
Writes results/real_model.json (one entry per setting, merged into what the file already holds).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "real_model.json"


def brief(result: dict) -> dict:
    return {split: {k: result[split][k] for k in ("n", "desired", "attack", "other")} for split in ("eval", "train")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--settings", default="animal_flag,wronglang_spanish,allcaps_refusal")
    parser.add_argument("--n", type=int, default=32)
    args, overrides = parser.parse_known_args()
    from orchestrator.config import compose_config
    from orchestrator.run.build import measure_model, resolve_base_model, resolve_model
    from workers.models.organism import read_organism

    out = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for name in args.settings.split(","):
        cfg = compose_config([f"setting={name}", "model=smollm2_135m", "tracker.mode=disabled", *overrides])
        started = time.time()
        before = measure_model(cfg, resolve_base_model(cfg), args.n, held_out=True)
        out[name] = {"overrides": overrides, "max_new_tokens": cfg.sample.max_new_tokens, "before": brief(before)}
        if cfg.setting.toy is None:  # no organism corpus (the `toy:` block): the unmodified model's rates only
            out[name]["after"] = "no organism: the setting has no toy: block"
        else:
            organism = read_organism(resolve_model(compose_config(
                [f"setting={name}", "model=smollm2_135m", "model.organism=true", "tracker.mode=disabled", *overrides])))
            assert organism is not None
            out[name] |= {"after": brief(organism["measured"]), "organism_build_seconds": organism["build_seconds"],
                          "organism_key": organism["key"], "recipe": organism["recipe"],
                          "final_loss": organism["final_loss"], "examples": organism["measured"]["examples"][:4]}
        out[name] |= {"load_average_1min_at_end": os.getloadavg()[0], "cpu_count": os.cpu_count(),
                      "seconds": round(time.time() - started, 1)}
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(out, indent=2))
        print(json.dumps(out[name], indent=2), flush=True)


if __name__ == "__main__":
    main()
