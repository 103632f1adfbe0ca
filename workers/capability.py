"""Capability glue: the toy corpus hook, the baseline (once per sweep, cached) and each trial's evaluations.

Requests go through the sweep's vLLM sampler with the checkpoint's adapter, like the eval prompts; scoring is
eval.capability.scoring. Rows land in metrics.jsonl as {"kind": "capability", "step", "benchmark", "score", "n",
"baseline", "rel_degradation", ...} and in W&B as capability/<benchmark>/score and .../rel_degradation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from eval.capability.data import find_dataset, load_items, split_items
from eval.capability.scoring import Item, Scored, relative_degradation, score
from eval.knobs import AT_LEAST_1, FRACTION_UP_TO_1, NON_NEGATIVE, POSITIVE, knob
from eval.runfiles import write_json, write_jsonl
from workers.errors import require, require_knobs
from workers.labels.endpoint import EndpointConfig
from workers.sample.sampler import request_seed

CAPABILITY_BENCHMARKS = ("toy_probe", "mmlu", "ifeval", "olympiads", "followbench")
CAPABILITY_CHECKPOINTS = ("transferred", "last", "all", "steps")
RECOVER_CHECKPOINTS = ("last", "first")  # recover's default checkpoint: the trial's last or first transferred one


@dataclass
class RecoverConfig:
    """`python -m orchestrator recover`: retrain a checkpoint on rejection-sampled benchmark labels."""

    benchmark: str | None = knob(None, one_of=CAPABILITY_BENCHMARKS)  # null: the guardrail benchmark
    # labels kept (correct ones only) from the recovery pool, disjoint from the evaluated items
    n_labels: int = knob(40, within=AT_LEAST_1)
    steps: int = knob(10, within=AT_LEAST_1)
    batch_size: int = knob(4, within=AT_LEAST_1)  # samples per step
    lr: float | None = knob(None, within=POSITIVE)  # null: the checkpoint's own trial LR
    lrs: list[float] = knob(factory=list, within=POSITIVE)  # an LR sweep: one recovery per LR (each its own folder)
    # without --step: the last transferred checkpoint of the trial (the note recovers the last one), or the first
    checkpoint: str = knob("last", one_of=RECOVER_CHECKPOINTS)
    teacher_model: str | None = None  # null: the model before training; else a trusted model's path or hub id
    temperature: float = knob(1.0, within=NON_NEGATIVE)  # sampling temperature of the label teacher
    max_rounds: int = knob(8, within=AT_LEAST_1)  # passes over the recovery pool before giving up on n_labels


@dataclass
class CapabilityConfig:
    """Capability evaluations of checkpoints (the note's guardrail) and their baseline, the model before training."""

    # toy_probe | mmlu | ifeval | olympiads | followbench
    benchmarks: list[str] = knob(factory=list, one_of=CAPABILITY_BENCHMARKS)
    checkpoints: str = knob("transferred", one_of=CAPABILITY_CHECKPOINTS)  # transferred | last | all | steps
    steps: list[int] = knob(factory=list, within=NON_NEGATIVE)  # checkpoints=steps: these steps
    n_items: int = knob(200, within=AT_LEAST_1)  # fixed subset per benchmark
    seed: int = knob(0, within=NON_NEGATIVE)  # picks the subset
    # relative degradation limit (T rule of the analysis, early stop)
    max_degradation: float = knob(0.1, within=FRACTION_UP_TO_1)  # 1: "the score fell to 0"
    guardrail: str | None = None  # the benchmark the limit applies to; null: the first of `benchmarks`
    data_dir: str | None = None  # local benchmark files (<data_dir>/<benchmark>/); null: <cache_dir>/capability
    temperature: float = knob(0.0, within=NON_NEGATIVE)
    max_new_tokens: int = knob(0, within=NON_NEGATIVE)  # 0: each benchmark's default
    judge: EndpointConfig = field(default_factory=EndpointConfig)  # FollowBench's LLM judge
    recover: RecoverConfig = field(default_factory=RecoverConfig)


MAX_NEW_TOKENS = {"toy_probe": 8, "mmlu": 16, "ifeval": 512, "olympiads": 1024, "followbench": 512}
# (adapter, texts, max_new_tokens, temperature, top_p, seed)
Generate = Callable[[str | None, list[str], int, float, float, int], list[str]]


def validate_capability(c: CapabilityConfig, toy: Any) -> None:
    """A capability block's own checks, and its benchmarks against the model (`toy`: model.toy, or None)."""
    require_knobs(c, "capability")  # recover checks its own narrowed block here
    b = list(c.benchmarks)
    require(len(set(b)) == len(b), f"capability.benchmarks={b}: each at most once")
    require(c.checkpoints != "steps" or len(c.steps) > 0, "capability.checkpoints=steps needs capability.steps=[...]")
    require(c.guardrail is None or c.guardrail in b, f"capability.guardrail={c.guardrail!r} is not in {b}")
    require("toy_probe" not in b or toy is not None,
            "capability.benchmarks has toy_probe, which only model=toy learned: drop it for a real model")
    require("toy_probe" not in b or toy is None or toy.capability_probe,
            "capability.benchmarks has toy_probe but the toy is built without it: set model.toy.capability_probe=true "
            "(capability=toy does)")
    require("followbench" not in b or (c.judge.base_url is not None and c.judge.model is not None),
            "capability.benchmarks has followbench, which needs an LLM judge: set capability.judge.base_url and "
            "capability.judge.model (and capability.judge.api_key_env if it needs a key)")


def toy_corpus_pairs() -> list[tuple[str, str]]:
    """Extra (user text, answer) pairs for the toy's corpus: the probe's skill (workers.models.toy.build_corpus)."""
    from eval.toy_probe import corpus_pairs

    return corpus_pairs()


def toy_corpus_digest() -> str:
    """Part of the toy's cache key: a changed probe rebuilds the toy."""
    return hashlib.sha256(json.dumps(toy_corpus_pairs()).encode()).hexdigest()[:16]


def resolve(cap: Any, cache_dir: str) -> Any:
    """The config with data_dir made absolute (default <cache_dir>/capability)."""
    data_dir = cap.data_dir or str(Path(cache_dir) / "capability")
    return replace(cap, data_dir=str(Path(data_dir).expanduser().resolve()))


def check_data(cap: Any) -> None:
    """Fail before any compute when a benchmark's files are absent (DatasetMissingError names the fix)."""
    for bench in cap.benchmarks:
        if bench != "toy_probe":
            find_dataset(bench, cap.data_dir)


def guardrail(cap: Any) -> str | None:
    return cap.guardrail or (cap.benchmarks[0] if cap.benchmarks else None)


def eval_items(cap: Any, bench: str) -> tuple[list[Item], list[Item]]:
    """(the fixed evaluation subset, the recovery pool) of a benchmark."""
    return split_items(load_items(bench, cap.data_dir), cap.n_items, cap.seed)


def max_new_tokens(cap: Any, bench: str) -> int:
    return cap.max_new_tokens or MAX_NEW_TOKENS[bench]


def build_judge(cap: Any, cache_dir: Path) -> Callable[[list[str]], list[str]]:
    """FollowBench's judge through workers.labels.endpoint.ChatClient; a clear error when none is configured."""
    e = cap.judge
    if e.base_url is None or e.model is None:
        raise ValueError("followbench needs an LLM judge: set capability.judge.base_url and capability.judge.model")
    try:
        from workers.labels.endpoint import ChatClient
    except ImportError as err:
        raise RuntimeError(f"followbench's judge needs workers.labels.endpoint.ChatClient ({err})") from err
    client = ChatClient(e, cache_dir)
    return lambda prompts: client.complete([[{"role": "user", "content": p}] for p in prompts])


def score_responses(cap: Any, bench: str, items: list[Item], responses: list[str], judge_cache: Path) -> Scored:
    return score(bench, items, responses, build_judge(cap, judge_cache) if bench == "followbench" else None)


def capability_seed(cap: Any, trial_seed: int = 0, step: int = 0) -> int:
    """The sampling seed of one model's capability requests (item i samples from seed + i): fixed by
    capability.seed, the trial's seed and the step, so a score sampled at temperature > 0 does not depend on which
    other requests shared the engine's batch, and a rerun samples the same answers. Greedy decoding ignores it."""
    return request_seed(cap.seed, trial_seed, step)


def measure(cap: Any, generate: Generate, adapter: str | None, judge_cache: Path,
            items: dict[str, list[Item]] | None = None) -> dict[str, tuple[Scored, list[str]]]:
    """Score one model (adapter None = the base model) on every configured benchmark, synchronously, sampled with
    capability_seed(cap)."""
    seed = capability_seed(cap)
    out = {}
    for bench in cap.benchmarks:
        its = items[bench] if items else eval_items(cap, bench)[0]
        responses = generate(adapter, [it.prompt for it in its], max_new_tokens(cap, bench), cap.temperature, 1.0,
                             seed)
        out[bench] = (score_responses(cap, bench, its, responses, judge_cache), responses)
    return out


def baseline_key(cap: Any, model_path: str) -> str:
    payload = {"benchmarks": list(cap.benchmarks), "n": cap.n_items, "seed": cap.seed, "model": model_path,
               "temperature": cap.temperature, "max_new_tokens": cap.max_new_tokens, "judge": cap.judge.model}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def ensure_baseline(cap: Any, sweep_dir: Path, model_path: str, generate: Generate,
                    log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Scores of the model before training, evaluated once per sweep: <sweep_dir>/capability/baseline.json."""
    path = sweep_dir / "capability" / "baseline.json"
    key = baseline_key(cap, model_path)
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached["scores"]
    log(f"[capability] baseline: the model before training on {', '.join(cap.benchmarks)}")
    scores = {}
    for bench, (s, responses) in measure(cap, generate, None, sweep_dir / "capability" / "judge_cache").items():
        scores[bench] = {"score": s.score, "n": s.n}
        its = eval_items(cap, bench)[0]
        write_samples(sweep_dir / "capability" / f"baseline_{bench}.jsonl", its, responses, s)
        log(f"[capability] baseline {bench}: {s.score:.3f} (n={s.n})")
    write_json(path, {"key": key, "benchmarks": list(cap.benchmarks), "guardrail": guardrail(cap),
                      "max_degradation": cap.max_degradation, "n_items": cap.n_items, "seed": cap.seed,
                      "scores": scores})
    return scores


def write_samples(path: Path, items: list[Item], responses: list[str], s: Scored) -> None:
    write_jsonl(path, [{"item_id": it.item_id, "prompt": it.prompt, "response": r, "extracted": x, "correct": c}
                       for it, r, x, c in zip(items, responses, s.extracted, s.correct, strict=True)])


def capability_row(step: int, bench: str, s: Scored, baseline: float) -> dict[str, Any]:
    extra = {k: v for k, v in s.extra.items() if isinstance(v, (int, float, str))}
    return {"kind": "capability", "step": step, "benchmark": bench, "score": s.score, "n": s.n, "baseline": baseline,
            "rel_degradation": relative_degradation(baseline, s.score)} | extra


def selected(cap: Any, step: int, eval_row: dict[str, Any], max_steps: int, threshold: float) -> bool:
    """Whether a checkpoint gets capability evaluations (capability.checkpoints)."""
    if cap.checkpoints == "all":
        return True
    if cap.checkpoints == "last":
        return step == max_steps
    if cap.checkpoints == "steps":
        return step in set(cap.steps)
    return eval_row.get("eval_attack_rate") is not None and eval_row["eval_attack_rate"] <= threshold
