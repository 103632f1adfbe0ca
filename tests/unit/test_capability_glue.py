"""The capability glue's pure parts: which checkpoints are evaluated, the row contract, resume bookkeeping,
the judge adapter's error, and the toy corpus hook."""

from dataclasses import replace
from pathlib import Path

import pytest

from eval.capability.scoring import Scored
from eval.runfiles import read_jsonl, write_jsonl
from orchestrator.config import compose_config
from orchestrator.run.trial import reconcile_trial_dir
from workers.capability import build_judge, capability_row, resolve, selected, toy_corpus_pairs


@pytest.fixture
def cap():
    return compose_config(["capability=toy"]).capability


@pytest.mark.parametrize("mode, steps, expected", [
    ("all", [], [0, 1, 2, 4, 8]),
    ("last", [], [8]),
    ("steps", [2, 8], [2, 8]),
    ("transferred", [], [4, 8]),
])
def test_selected_checkpoints(cap, mode, steps, expected):
    cap = replace(cap, checkpoints=mode, steps=steps)
    attack = {0: 0.9, 1: 0.8, 2: 0.6, 4: 0.5, 8: 0.1}
    assert [s for s, a in attack.items() if selected(cap, s, {"eval_attack_rate": a}, 8, 0.5)] == expected


def test_capability_row_has_the_contract_keys():
    row = capability_row(4, "ifeval", Scored(0.6, 5, [True] * 3 + [False] * 2, [], {"n_unsupported_items": 1,
                                                                                     "unsupported_ids": ["x"]}), 0.8)
    assert row["kind"] == "capability" and row["step"] == 4 and row["benchmark"] == "ifeval"
    assert (row["score"], row["n"], row["baseline"]) == (0.6, 5, 0.8)
    assert row["rel_degradation"] == pytest.approx(0.25) and row["n_unsupported_items"] == 1


def test_resume_keeps_one_row_per_benchmark_and_step(tmp_path: Path):
    rows = [{"step": 4, "kind": "eval", "eval_attack_rate": 0.2},
            {"step": 4, "kind": "capability", "benchmark": "mmlu", "score": 0.5},
            {"step": 4, "kind": "capability", "benchmark": "ifeval", "score": 0.4},
            {"step": 4, "kind": "capability", "benchmark": "mmlu", "score": 0.5},
            {"step": 8, "kind": "capability", "benchmark": "mmlu", "score": 0.1}]
    write_jsonl(tmp_path / "metrics.jsonl", rows)
    assert reconcile_trial_dir(tmp_path, resumed_from=4) == {4}
    kept = read_jsonl(tmp_path / "metrics.jsonl")
    assert [(r["kind"], r.get("benchmark")) for r in kept] == [("eval", None), ("capability", "mmlu"),
                                                                ("capability", "ifeval")]


def test_judge_needs_an_endpoint(cap, tmp_path):
    with pytest.raises(ValueError, match="capability.judge.base_url"):
        build_judge(cap, tmp_path)


def test_data_dir_defaults_under_the_cache(cap, tmp_path):
    assert resolve(cap, str(tmp_path)).data_dir == str((tmp_path / "capability").resolve())
    assert resolve(replace(cap, data_dir=str(tmp_path / "d")), "/x").data_dir == str(tmp_path / "d")


def test_toy_corpus_teaches_the_probe():
    from orchestrator.config import settings_for_toy
    from workers.models.toy import build_corpus, skill_from_setting

    cfg = compose_config([])
    skills = [skill_from_setting(s) for s in settings_for_toy(cfg)]
    pairs = build_corpus(skills, probe=True)
    probe = toy_corpus_pairs()
    assert len(probe) >= 240 and pairs[-len(probe):] == probe
    assert build_corpus(skills) == pairs[:-len(probe)]  # the default toy is untouched


def test_rejection_sampling_keeps_only_correct_answers_one_per_item(cap, tmp_path):
    from eval.capability.data import load_items
    from orchestrator.commands.recover import rejection_sample

    pool = load_items("toy_probe", None)[:30]
    calls = []

    seeds = []

    def teacher(adapter, texts, max_new, temperature, top_p, seed):  # round 1: every other item right; round 2: all
        calls.append(len(texts))
        seeds.append(seed)
        answers = {it.prompt: it.answer for it in pool}
        return [answers[t] if len(calls) > 1 or i % 2 == 0 else "wrong" for i, t in enumerate(texts)]

    r = replace(cap.recover, n_labels=20, temperature=1.0)
    labels, sampled, correct = rejection_sample(cap, r, pool, teacher, tmp_path)
    answers = {it.prompt: it.answer for it in pool}
    assert len(labels) == 20 and all(answers[lab["prompt"]] == lab["completion"] for lab in labels)
    assert len({lab["item_id"] for lab in labels}) == 20 and calls == [30, 15] and sampled == 45
    assert correct == 30  # 15 of round 1, all 15 of round 2: the acceptance rate is 30 / 45
    assert len(set(seeds)) == 2 and None not in seeds  # each round draws new answers, from a seed of its own
    labels, _, _ = rejection_sample(cap, replace(r, n_labels=100, max_rounds=1), pool, teacher, tmp_path)
    assert len(labels) == 30  # the pool runs out: fewer labels, never a wrong one


def test_recoveries_with_different_recipes_get_their_own_folders(cap):
    from orchestrator.commands.recover import recovery_name

    r = cap.recover
    names = {recovery_name("lr0.01_seed0", 8, "toy_probe", lr, replace(r, **kw))
             for lr in (1e-2, 1e-3) for kw in ({}, {"steps": 20}, {"teacher_model": "/models/Qwen3-30B-A3B"})}
    assert len(names) == 6  # nothing overwrites another recipe's result
    name = recovery_name("lr0.01_seed0", 8, "toy_probe", 1e-3, r)
    assert name == "lr0.01_seed0_step8_toy_probe_lr0.001_10x4_n40_base"
    assert all("/" not in n for n in names)


def test_recovery_offers_an_lr_sweep_and_the_last_checkpoint_by_default(cap):
    """Finding "recovery defaults to the first transferred checkpoint and to the trial's own LR": --lr takes a list
    (one recovery per LR, each its own folder), and the default checkpoint is the last transferred one."""
    import argparse

    from orchestrator.commands.recover import parse_args, recovery_lrs

    args = parse_args(["/s", "--lr", "1e-5,1e-4,1e-3"])
    assert args.lr == [1e-5, 1e-4, 1e-3] and args.checkpoint is None
    assert recovery_lrs(replace(cap.recover, lrs=args.lr), 3e-3) == [1e-5, 1e-4, 1e-3]
    assert recovery_lrs(cap.recover, 3e-3) == [3e-3]  # nothing given: the trial's own LR
    assert recovery_lrs(replace(cap.recover, lr=1e-4), 3e-3) == [1e-4]
    assert cap.recover.checkpoint == "last"
    assert parse_args(["/s", "--checkpoint", "first"]).checkpoint == "first"
    with pytest.raises(SystemExit):
        parse_args(["/s", "--lr", "1e-4,fast"])
    with pytest.raises(argparse.ArgumentTypeError, match="must be > 0"):
        from orchestrator.commands.recover import _lr_list

        _lr_list("0,1e-4")


def test_followbench_is_scored_by_a_judge_over_http_and_cached(cap, tmp_path):
    """FollowBench's real path: the fixture's items, the judge prompt sent to an OpenAI-compatible server,
    verdicts parsed (an unreadable one is not scored), and a second scoring served from the judge cache."""
    from chat_server import ChatServer

    from eval.capability.data import load_items
    from workers.capability import score_responses

    items = load_items("followbench", Path(__file__).resolve().parents[1] / "data" / "capability")
    responses = ["a good answer", "a bad answer", "a rambling answer"]
    verdicts = {"good": "It meets every constraint.\nYES", "bad": "NO", "rambling": "hard to say"}

    def reply(messages, n):
        return next(v for k, v in verdicts.items() if f"a {k} answer" in messages[-1]["content"])

    with ChatServer(reply=reply) as server:
        judge = replace(cap.judge, base_url=server.base_url, model="toy", max_retries=1, timeout_s=5)
        fb = replace(cap, benchmarks=["followbench"], judge=judge)
        s = score_responses(fb, "followbench", items, responses, tmp_path / "judge")
        assert s.correct == [True, False, None] and s.score == 0.5 and s.extra["n_invalid_verdicts"] == 1
        sent = [r["body"]["messages"][-1]["content"] for r in server.completions()]
        assert len(sent) == 3 and all(any(it.prompt in p for p in sent) for it in items)
        again = score_responses(fb, "followbench", items, responses, tmp_path / "judge")
        assert again.correct == s.correct and len(server.completions()) == 3  # verdicts from the cache


class _Recorder:
    """Records the arguments of generate calls, as a function or as a Ray actor method (`.remote`)."""

    def __init__(self):
        self.calls = []
        self.remote = self

    def __call__(self, *args):
        self.calls.append(args)
        return ["river"] * len(args[1])


def test_capability_requests_are_seeded_by_trial_and_step_and_the_baseline_by_capability_seed(cap, tmp_path):
    """At temperature > 0 an unseeded request samples from the engine's stream, so a score would depend on which
    other requests shared its batch: every capability request carries a seed (item i samples from seed + i)."""
    from types import SimpleNamespace

    from orchestrator.run.capability_queue import TrialCapability
    from workers.capability import capability_seed, measure

    cap = replace(cap, temperature=1.0, checkpoints="all")
    gen = _Recorder()
    measure(cap, gen, None, tmp_path)
    assert [c[5] for c in gen.calls] == [capability_seed(cap)] * len(cap.benchmarks)
    assert capability_seed(cap) != capability_seed(replace(cap, seed=cap.seed + 1))

    seeds = {}
    for trial_seed in (0, 1):
        sampler = SimpleNamespace(generate=_Recorder())
        queue = TrialCapability(cap, {}, sampler, tmp_path, None, 8, 0.5, trial_seed)
        queue.drain = lambda block: None  # scoring is not under test here; nothing was sent to Ray
        for step in (0, 4):
            queue.after_eval(step, {"eval_attack_rate": 1.0})
        seeds[trial_seed] = [c[5] for c in sampler.generate.calls]
    per_step = len(cap.benchmarks)
    assert all(isinstance(x, int) for x in seeds[0] + seeds[1])
    assert seeds[0][:per_step] == [capability_seed(cap, 0, 0)] * per_step
    assert seeds[0][per_step:] == [capability_seed(cap, 0, 4)] * per_step
    assert set(seeds[0]).isdisjoint(seeds[1])  # another trial samples other answers
