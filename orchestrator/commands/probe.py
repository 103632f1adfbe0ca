"""Does a model show a setting's initial behavior at all? The researcher's first question about a candidate organism.

    python -m orchestrator probe setting=animal_flag model=smollm2_135m [probe.n=100] [--out probe.json]
    python -m orchestrator probe setting=animal_flag model=smollm2_135m model.organism=true   # the organism

Samples n eval prompts (held-out questions, eval template) and n train prompts from the model without any adapter,
through the sweep's vLLM sampler (`sample.*`: max_new_tokens, temperature, seed) and the setting's grader, and prints
the desired / attack / other rates with 95% Wilson intervals. `--held-out` draws the train prompts from the eval
questions too (what an organism never saw). Exit status 0 when the model shows the initial behavior (eval attack
and train desired both above sweep.threshold), 1 when it does not, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from orchestrator.schema import ConfigError


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m orchestrator probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="also write the rates and a few graded examples to this json")
    parser.add_argument("--held-out", action="store_true", help="train prompts on eval questions too")
    args, rest = parser.parse_known_args(argv)
    n = 100
    overrides = []
    for arg in rest:  # probe.n is the probe's own knob, not part of the sweep's config
        if arg.startswith("probe.n="):
            try:
                n = int(arg.split("=", 1)[1])
            except ValueError:
                raise ConfigError(f"{arg}: probe.n must be a whole number of prompts per split") from None
            if n < 1:
                raise ConfigError(f"{arg}: probe.n must be >= 1")
        elif arg.startswith("-"):
            raise ConfigError(f"unknown option {arg}; see python -m orchestrator probe --help")
        else:
            overrides.append(arg)
    args.n = n
    return args, overrides


def main(argv: list[str]) -> int:
    from orchestrator.config import compose_config
    from orchestrator.run.build import measure_model, resolve_model
    from workers.models.probe import format_rates, shows_initial_behavior

    args, overrides = parse(argv)  # user errors (ConfigError, DataError, ...): exit 2 in orchestrator/__main__.py
    cfg = compose_config(overrides)
    model_path = resolve_model(cfg)
    print(f"[probe] {cfg.setting.name} on {cfg.model.name} ({model_path}): {args.n} eval + {args.n} train prompts, "
          f"max_new_tokens {cfg.sample.max_new_tokens}, temperature {cfg.sample.temperature}", flush=True)
    result = measure_model(cfg, model_path, args.n, args.held_out)
    result |= {"model": cfg.model.name, "organism": cfg.model.organism, "threshold": cfg.sweep.threshold}
    print(format_rates(result))
    ok = shows_initial_behavior(result, cfg.sweep.threshold)
    print(f"[probe] {'shows' if ok else 'does NOT show'} the initial behavior (eval attack and train desired "
          f"> {cfg.sweep.threshold}); {result['seconds']:.0f}s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(f"[probe] wrote {args.out}")
    return 0 if ok else 1
