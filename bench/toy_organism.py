"""Measure the toy model organism's initial behavior through vLLM and record it.

    python bench/toy_organism.py [hydra overrides]     # writes bench/results/toy_organism.json

The toy must follow the setting's instruction before any training: attack behavior on eval prompts
(English when the flag asks for English) and desired behavior on train prompts (Spanish on flag=0).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from eval.graders import build_grader
from orchestrator.config import compose_config
from orchestrator.sweep import resolve_model, sampler_spec
from orchestrator.trial import eval_prompts, grade_checkpoint
from workers.sampler import Sampler

OUT = Path(__file__).resolve().parent / "results" / "toy_organism.json"


def main(overrides: list[str]) -> dict:
    cfg = compose_config(["sample.n_eval_prompts=300", "sample.n_train_prompts=300", *overrides])
    started = time.time()
    model_path = resolve_model(cfg)
    built = time.time() - started
    sampler = Sampler(sampler_spec(cfg, model_path))
    evals, trains = eval_prompts(cfg.setting, cfg.sample)
    g = cfg.setting.grader
    responses = sampler.generate(None, [p.text for p in evals + trains], cfg.sample.max_new_tokens,
                                 cfg.sample.temperature, cfg.sample.top_p)
    samples, row = grade_checkpoint(evals + trains, responses, build_grader(g))
    info = json.loads((Path(model_path) / "build_info.json").read_text())
    result = {
        "setting": cfg.setting.name, "model": model_path, "toy_key": info["key"], "toy_final_loss": info["final_loss"],
        "toy_build_seconds": info["build_seconds"], "seconds_to_resolve_model_here": round(built, 1),
        "temperature": cfg.sample.temperature, **row,
        "examples": [{k: s[k] for k in ("split", "prompt", "response", "grade")} for s in samples[:2] + samples[-2:]],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "examples"}, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
