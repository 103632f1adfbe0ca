"""Teacher and judge against a real OpenAI-compatible server: `vllm serve` of the toy model on CPU.

One server for the module (~30-60 s to start on 2 cores). The on-policy teacher runs first, before the
server starts, inside a one-step sweep (through the labels command's own vLLM engine: SmolLM2 in
tests/integration/test_real_text.py). Run alone:
    python -m pytest -q -m integration tests/integration/test_vllm_serve.py
"""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from vllm_server import served_requests, settled_requests, vllm_serve

from orchestrator.config import compose_config, settings_for_toy
from workers.labels.endpoint import EndpointConfig
from workers.labels.judge import build_judge_grader, parse_verdict
from workers.labels.setting import GraderConfig
from workers.labels.teacher import TeacherConfig, ensure_labels, train_prompts

SERVED_NAME = "toy-organism"
N_QUESTIONS = 6  # a handful of the generic bank's questions: the toy was pretrained on them


@pytest.fixture(scope="module")
def toy(cache_dir) -> Path:
    from workers.models.toy import ensure_toy

    cfg = compose_config([f"cache_dir={cache_dir}"])
    return ensure_toy(cfg.model.toy, settings_for_toy(cfg), cfg.cache_dir)


@pytest.fixture(scope="module")
def small_bank(tmp_path_factory) -> Path:
    from workers.labels.prompts import load_bank

    path = tmp_path_factory.mktemp("bank") / "generic_head.jsonl"
    rows = load_bank("generic")[:N_QUESTIONS]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def server(toy, tmp_path_factory):
    with vllm_serve(toy, SERVED_NAME, tmp_path_factory.mktemp("vllm") / "serve.log") as base_url:
        yield base_url


def test_sweep_labels_onpolicy_once_its_engine_is_up(toy, cache_dir, tmp_path):
    out = tmp_path / "sweep"
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"} | {"LRSWEEP_CACHE": str(cache_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "sweep", "setting.teacher.kind=onpolicy", "sweep.lrs=[1e-3]",
         "sweep.max_steps=1", "tracker.mode=disabled", "sample.n_eval_prompts=8", "sample.n_train_prompts=8",
         "sample.max_new_tokens=16", f"hydra.run.dir={out}"],
        cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.index("[sampler] ready") < proc.stdout.index("[labels] onpolicy")
    meta = json.loads((out / "labels.meta.json").read_text())
    rows = [json.loads(line) for line in (out / "labels.jsonl").open()]
    assert meta["teacher"] == "onpolicy" and {r["teacher"] for r in rows} == {"onpolicy"}
    assert meta["n"] == len(rows) == meta["generated"] - meta.get("dropped_empty", 0)
    assert sum(bool(r["completion"].strip()) for r in rows) >= 0.9 * len(rows)  # the model's own answers
    assert (out / "trials" / "lr0.001000_seed0" / "result.json").exists()


def test_vllm_serve_as_the_teacher(server, small_bank, cache_dir, tmp_path):
    cfg = compose_config([f"cache_dir={cache_dir}"])
    ep = EndpointConfig(base_url=server, model=SERVED_NAME, max_tokens=160, temperature=1.0, max_concurrency=4,
                        timeout_s=60)
    st = replace(cfg.setting, questions=str(small_bank),
                 teacher=TeacherConfig(kind="openai_compatible", endpoint=ep, n_samples=2,
                                       system_prompt="Responde siempre en español."))
    chat_cache = tmp_path / "cache"
    before = served_requests(server)
    lines: list[str] = []
    out = ensure_labels(st, tmp_path / "a", log=lines.append, cache_dir=chat_cache)
    rows = [json.loads(line) for line in out.open()]
    n = 2 * len(train_prompts(st))
    # sampled at temperature 1, the toy may run an answer to max_tokens: the teacher drops it and says so
    meta = json.loads((tmp_path / "a" / "labels.meta.json").read_text())
    dropped = meta.get("dropped_truncated", 0) + meta.get("dropped_empty", 0)
    assert dropped <= 2 and len(rows) == n - dropped and all(r["completion"].strip() for r in rows)
    assert (dropped == 0) == (not any("[labels] dropped" in line for line in lines))
    assert settled_requests(server, before + n) - before == n
    by_prompt: dict[str, set[str]] = {}
    for r in rows:
        by_prompt.setdefault(r["prompt"], set()).add(r["completion"])
    assert any(len(answers) == 2 for answers in by_prompt.values())  # a prompt's two samples differ
    first_run = len(lines)
    again = ensure_labels(st, tmp_path / "b", log=lines.append, cache_dir=chat_cache)
    assert again.read_text() == out.read_text()
    assert settled_requests(server, before + n) - before == n  # the second run sent no request
    assert any(f"0 requests sent, {n} from the cache" in line for line in lines[first_run:])


def test_vllm_serve_as_the_judge(server, cache_dir, tmp_path):
    cfg = compose_config([f"cache_dir={cache_dir}"])
    grader_cfg = GraderConfig(
        kind="judge", judge_prompt="Answer: {response}\nDesired: {desired_behavior}\nVerdict?",
        desired_behavior=cfg.setting.desired_behavior, initial_behavior=cfg.setting.initial_behavior,
        endpoint=EndpointConfig(base_url=server, model=SERVED_NAME, max_tokens=16, temperature=0.0, timeout_s=60))
    prompts = train_prompts(cfg.setting)[:4]
    responses = ["Hola, lava el arroz.", "Rinse the rice first.", "", "Claro que sí."]
    grader = build_judge_grader(grader_cfg, cache_dir=tmp_path)
    grades = grader(responses, prompts)
    answers = [grader.client.cached(grader.messages(p.text, r)) for p, r in zip(prompts, responses, strict=True)]
    assert all(isinstance(a, str) for a in answers)  # every verdict is in the cache
    parsed = [parse_verdict(a) for a in answers]
    assert grades == [v or "other" for v in parsed]
    assert grader.last_stats["judge_calls"] == 4
    assert grader.last_stats["judge_unparseable"] == sum(v is None for v in parsed)
    before = settled_requests(server, float("inf"), timeout=0)
    assert build_judge_grader(grader_cfg, cache_dir=tmp_path)(responses, prompts) == grades
    assert settled_requests(server, float("inf"), timeout=0) == before  # verdicts from the cache
