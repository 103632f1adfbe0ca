"""Requests that arrive while the engine is busy share the next engine call; each gets its own results back.

The Batcher is tested on its own with plain functions (it is generic over what runs a batch);
tests/integration/test_sampler_engine.py drives the real vLLM engine on the toy model with several adapters in one
batch.
"""

import threading
import time

import pytest

from workers.sample.sampler import Batcher, Request


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


def test_request_seeds_differ_per_trial_and_checkpoint():
    from workers.sample.sampler import request_seed

    seeds = {request_seed(0, trial, step) for trial in range(10) for step in range(0, 3000, 7)}
    assert len(seeds) == 10 * len(range(0, 3000, 7))
    assert request_seed(0, 1, 64) == request_seed(0, 1, 64) != request_seed(1, 1, 64)
    spaced = sorted(seeds)
    assert min(b - a for a, b in zip(spaced, spaced[1:], strict=False)) >= 4096  # prompt offsets (+ i) never meet
