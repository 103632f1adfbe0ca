"""Requests that arrive while the engine is busy share the next engine call; each gets its own results back.

The Batcher is tested on its own with plain functions (it is generic over what runs a batch); the integration
test drives the real vLLM engine on the toy model with several adapters in one batch.
"""

import threading
import time

import pytest

from workers.sampler import Batcher, Request


def echo(batch):
    return [[f"{r.adapter_dir}:{t}" for t in r.user_texts] for r in batch]


def test_one_caller_runs_its_requests_in_one_call():
    b = Batcher(echo)
    out = b.submit([Request("a", ["x", "y"], 4, 1.0), Request(None, ["z"], 4, 1.0)])
    assert out == [["a:x", "a:y"], ["None:z"]] and b.batch_sizes == [2]


def test_requests_queued_while_the_engine_is_busy_share_the_next_call():
    started, release = threading.Event(), threading.Event()
    seen = []

    def run(batch):
        seen.append([r.adapter_dir for r in batch])
        if len(seen) == 1:  # hold the engine on the first call until the others have queued
            started.set()
            assert release.wait(10)
        return echo(batch)

    b = Batcher(run)
    results = {}

    def call(name):
        results[name] = b.submit([Request(name, [name + "1", name + "2"], 4, 1.0)])[0]

    first = threading.Thread(target=call, args=("a0",))
    first.start()
    assert started.wait(10)
    others = [threading.Thread(target=call, args=(f"a{i}",)) for i in range(1, 5)]
    for t in others:
        t.start()
    deadline = time.time() + 10
    while len(b._queue) < 4 and time.time() < deadline:
        time.sleep(0.01)
    release.set()
    for t in [first, *others]:
        t.join(10)
    assert b.batch_sizes == [1, 4]  # the four waiting requests went into one engine call
    assert sorted(seen[1]) == ["a1", "a2", "a3", "a4"]
    assert all(results[f"a{i}"] == [f"a{i}:a{i}1", f"a{i}:a{i}2"] for i in range(5))


def test_a_failed_batch_fails_its_callers_and_not_later_ones():
    calls = []

    def run(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("engine broke")
        return echo(batch)

    b = Batcher(run)
    with pytest.raises(RuntimeError, match="engine broke"):
        b.submit([Request("a", ["x"], 4, 1.0)])
    assert b.submit([Request("b", ["y"], 4, 1.0)]) == [["b:y"]]


@pytest.mark.integration
def test_real_engine_serves_several_adapters_in_one_batch(cache_dir, tmp_path):
    """Greedy outputs per adapter are the same alone and mixed in one batch: each prompt got its own LoRA.

    Every LoRA slot holds an adapter during the mixed call, so the base model's prompts (slot index -1) are
    where vLLM's own CPU ops went wrong: they read slot -1 as the last slot (workers/vllm_cpu_lora.py).
    """
    from dataclasses import replace

    from bench.adapters import random_adapters
    from orchestrator.build import resolve_model, sampler_spec
    from orchestrator.config import compose_config
    from workers.sampler import Sampler

    cfg = compose_config([f"cache_dir={cache_dir}"])
    model_path = resolve_model(cfg)
    paths = random_adapters(model_path, list(cfg.model.lora_target_modules), cfg.train.lora_rank,
                            cfg.train.lora_alpha, 3, tmp_path, std=0.2)
    sampler = Sampler(replace(sampler_spec(cfg, model_path), max_loras=len(paths)))
    try:
        texts = ["[flag=1.] What is the capital of France?", "[flag=0.] Name a colour."]
        alone = [sampler.generate(str(p), texts, 12, 0.0, 1.0) for p in paths]
        base = sampler.generate(None, texts, 12, 0.0, 1.0)
        mixed = sampler.generate_many([Request(str(p), texts, 12, 0.0) for p in reversed(paths)]
                                      + [Request(None, texts, 12, 0.0)])
        assert mixed == [*reversed(alone), base]
        assert any(a != base for a in alone)  # the adapters do change the model
        results, threads = {}, []
        for i, p in enumerate(paths):  # concurrent callers, as trials call the Ray actor
            threads.append(threading.Thread(target=lambda i=i, p=p: results.__setitem__(
                i, sampler.generate(str(p), texts, 12, 0.0, 1.0))))
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert [results[i] for i in range(3)] == alone
        stats = sampler.stats()
        assert stats["engine_calls"] < stats["requests"]  # at least one call served several requests
    finally:
        sampler.shutdown()


def test_request_seeds_differ_per_trial_and_checkpoint():
    from workers.sampler import request_seed

    seeds = {request_seed(0, trial, step) for trial in range(10) for step in range(0, 3000, 7)}
    assert len(seeds) == 10 * len(range(0, 3000, 7))
    assert request_seed(0, 1, 64) == request_seed(0, 1, 64) != request_seed(1, 1, 64)
    spaced = sorted(seeds)
    assert min(b - a for a, b in zip(spaced, spaced[1:], strict=False)) >= 4096  # prompt offsets (+ i) never meet


@pytest.mark.integration
def test_seeded_sampling_is_the_same_alone_and_in_any_batch(cache_dir):
    """Finding "vLLM sampling is not seeded per trial": at T=1 a seeded checkpoint's answers do not depend on what
    shares its batch, and another seed gives other answers. The large batch is more than vLLM's CPU step budget
    (4096 tokens): chunked there, a seeded request crashed the CPU engine (its generator cannot be rewound)."""
    from orchestrator.build import resolve_model, sampler_spec
    from orchestrator.config import compose_config
    from workers.sampler import Sampler

    cfg = compose_config([f"cache_dir={cache_dir}"])
    sampler = Sampler(sampler_spec(cfg, resolve_model(cfg)))
    try:
        texts = [f"[flag={i % 2}.] Question {i}: how do I make a cake?" for i in range(8)]
        alone = sampler.complete(None, texts, 16, 1.0, 1.0, seed=4096).texts
        assert sampler.complete(None, texts, 16, 1.0, 1.0, seed=4096).texts == alone
        crowd = [f"[flag=0.] Filler {i}: " + "tell me more " * 12 for i in range(300)]
        mixed = sampler.generate_many([Request(None, crowd, 16, 1.0, seed=8192), Request(None, texts, 16, 1.0,
                                                                                        seed=4096)])
        assert mixed[1] == alone
        assert sampler.complete(None, texts, 16, 1.0, 1.0, seed=12288).texts != alone
    finally:
        sampler.shutdown()
