"""The real vLLM engine on the toy model (workers.sample.sampler.Sampler): requests for several adapters share one
engine call and each gets its own answers back; seeded sampling does not depend on what shares the batch. The
Batcher alone, with plain functions: tests/unit/test_sampler_batching.py.
"""

import threading

import pytest

from workers.sample.sampler import Request

N_ADAPTERS = 3


@pytest.fixture(scope="module")
def engine(cache_dir):
    """One engine on the toy for both tests (an engine start is ~30 s of CI on 2 cores)."""

    from orchestrator.config import compose_config
    from orchestrator.run.build import resolve_model, sampler_spec
    from workers.sample.sampler import Sampler

    cfg = compose_config([f"cache_dir={cache_dir}"])
    model_path = resolve_model(cfg)
    sampler = Sampler(sampler_spec(cfg, model_path).with_engine(max_loras=N_ADAPTERS))
    try:
        yield cfg, model_path, sampler
    finally:
        sampler.shutdown()


def test_real_engine_serves_several_adapters_in_one_batch(engine, tmp_path):
    """Greedy outputs per adapter are the same alone and mixed in one batch: each prompt got its own LoRA.

    Every LoRA slot holds an adapter during the mixed call, so the base model's prompts (slot index -1) are
    where vLLM's own CPU ops went wrong: they read slot -1 as the last slot (workers/sample/vllm_cpu_lora.py).
    """
    from bench.adapters import random_adapters

    cfg, model_path, sampler = engine
    paths = random_adapters(model_path, list(cfg.model.lora_target_modules), cfg.train.lora_rank,
                            cfg.train.lora_alpha, N_ADAPTERS, tmp_path, std=0.2)
    before = sampler.stats()
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
    assert [results[i] for i in range(N_ADAPTERS)] == alone
    stats = sampler.stats()  # at least one call served several requests
    assert stats["engine_calls"] - before["engine_calls"] < stats["requests"] - before["requests"]


def test_seeded_sampling_is_the_same_alone_and_in_any_batch(engine):
    """Finding "vLLM sampling is not seeded per trial": at T=1 a seeded checkpoint's answers do not depend on what
    shares its batch, and another seed gives other answers. The large batch is more than vLLM's CPU step budget
    (4096 tokens): chunked there, a seeded request crashed the CPU engine (its generator cannot be rewound)."""
    sampler = engine[2]
    texts = [f"[flag={i % 2}.] Question {i}: how do I make a cake?" for i in range(8)]
    alone = sampler.complete(None, texts, 16, 1.0, 1.0, seed=4096).texts
    assert sampler.complete(None, texts, 16, 1.0, 1.0, seed=4096).texts == alone
    crowd = [f"[flag=0.] Filler {i}: " + "tell me more " * 12 for i in range(300)]
    mixed = sampler.generate_many([Request(None, crowd, 16, 1.0, seed=8192), Request(None, texts, 16, 1.0,
                                                                                    seed=4096)])
    assert mixed[1] == alone
    assert sampler.complete(None, texts, 16, 1.0, 1.0, seed=12288).texts != alone
