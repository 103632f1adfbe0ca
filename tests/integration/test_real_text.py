"""A real chat model's free text through the teacher, the label filter and the LLM judge.

SmolLM2-135M-Instruct (prepared offline by workers.models.real_models) is served by one `vllm serve` for the module
and is the `openai_compatible` teacher and the judge of the judge-graded settings (ct_formality, t_age_*); the
on-policy test samples it through the labels command's own engine, before the server starts. Its text is
what a toy never writes: long answers cut at max_tokens, markdown, refusals, echoed prompts, judges that never
reach a verdict line. Greedy sampling (temperature 0) keeps the runs repeatable. Run alone (~2-3 min, 2 cores):
    LRSWEEP_CACHE=~/.cache/lrsweep python -m pytest -q -m integration tests/integration/test_real_text.py
"""

import json
from dataclasses import replace
from pathlib import Path

import pytest
from vllm_server import served_requests, settled_requests, vllm_serve

from eval.graders import LABELS
from orchestrator.config import compose_config
from orchestrator.run.labels import make_labels
from workers.labels.endpoint import ChatClient, EndpointConfig
from workers.labels.judge import build_judge_grader, parse_verdict
from workers.labels.prompts import DataError, load_bank
from workers.labels.teacher import TeacherConfig, ensure_labels, teacher_messages, train_prompts

SERVED_NAME = "smollm2"
SHORT = "Answer in one or two short sentences."
N_QUESTIONS = 6  # 3 train prompts at eval_fraction 0.3: few requests, CI stays short


@pytest.fixture(scope="module")
def smollm2(cache_dir) -> Path:
    from workers.models.real_models import ensure_smollm2

    return ensure_smollm2(cache_dir)


def head_bank(tmp_path_factory, name: str) -> Path:
    path = tmp_path_factory.mktemp("bank") / f"{name}_head.jsonl"
    rows = load_bank(name)[:N_QUESTIONS]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def generic_bank(tmp_path_factory) -> Path:
    return head_bank(tmp_path_factory, "generic")


@pytest.fixture(scope="module")
def server(smollm2, tmp_path_factory):
    with vllm_serve(smollm2, SERVED_NAME, tmp_path_factory.mktemp("vllm") / "serve.log", max_model_len=1024) as url:
        yield url


def local(ep: EndpointConfig, base_url: str, max_tokens: int) -> EndpointConfig:
    """A setting's endpoint (gpt-4o-mini) pointed at the local server: no key, greedy, short."""
    return replace(ep, base_url=base_url, model=SERVED_NAME, api_key_env=None, temperature=0.0,
                   max_tokens=max_tokens, max_concurrency=4, timeout_s=120)


def setting(name: str, bank: Path, cache_dir: Path):
    return replace(compose_config([f"cache_dir={cache_dir}", f"setting={name}", "model=smollm2_135m"]).setting,
                   questions=str(bank))


def test_onpolicy_labels_are_the_real_models_own_answers(smollm2, generic_bank, cache_dir, tmp_path):
    cfg = compose_config([f"cache_dir={cache_dir}", "setting=ct_formality", "model=smollm2_135m",
                          "setting.teacher.kind=onpolicy", "sample.max_new_tokens=24", "sample.temperature=0.0"])
    cfg = replace(cfg, setting=replace(cfg.setting, questions=str(generic_bank)))
    path = make_labels(cfg, tmp_path / "labels")
    rows = [json.loads(line) for line in path.open()]
    meta = json.loads((tmp_path / "labels" / "labels.meta.json").read_text())
    assert meta["n"] == len(rows) == meta["generated"] - meta.get("dropped_empty", 0) == len(train_prompts(cfg.setting))
    assert {r["teacher"] for r in rows} == {"onpolicy"} and all(r["completion"].strip() for r in rows)
    assert len({r["completion"] for r in rows}) == len(rows)  # an answer per question, not one canned reply
    stamp = path.stat().st_mtime_ns
    assert make_labels(cfg, tmp_path / "labels").stat().st_mtime_ns == stamp  # cached: no engine started again


def test_real_teacher_labels_keep_its_text_and_drop_answers_cut_at_max_tokens(server, generic_bank, cache_dir,
                                                                              tmp_path):
    st = setting("ct_formality", generic_bank, cache_dir)
    # a short-answer system prompt so that some answers finish within max_tokens (greedy: the same ones each run)
    st = replace(st, teacher=replace(st.teacher, endpoint=local(st.teacher.endpoint, server, 64),
                                     system_prompt=SHORT))
    chat = tmp_path / "cache"
    before = served_requests(server)
    lines: list[str] = []
    try:
        out = ensure_labels(st, tmp_path / "a", log=lines.append, cache_dir=chat)
    except DataError as err:  # every answer ran past max_tokens: refused, naming the fix
        out, refused = None, str(err)
    client = ChatClient(st.teacher.endpoint, chat / "chat")
    prompts = train_prompts(st)
    answers = [(client.cached(teacher_messages(SHORT, p.text)), client.finish_reason(teacher_messages(SHORT, p.text)))
               for p in prompts]
    assert settled_requests(server, before + len(prompts)) - before == len(prompts)
    assert all(isinstance(text, str) and reason in ("stop", "length") for text, reason in answers)
    finished = [text for text, reason in answers if reason == "stop"]
    print(f"[test] teacher: {len(finished)} of {len(answers)} answers finished within 64 tokens")
    if out is None:
        assert not finished and "raise setting.teacher.endpoint.max_tokens" in refused
        return
    rows = [json.loads(line) for line in out.open()]
    meta = json.loads((tmp_path / "a" / "labels.meta.json").read_text())
    assert [r["completion"] for r in rows] == [t for t in finished if t.strip()]  # the model's text, verbatim
    assert meta.get("dropped_truncated", 0) == len(answers) - len(finished)
    again = ensure_labels(st, tmp_path / "b", log=lines.append, cache_dir=chat)
    assert again.read_text() == out.read_text()
    assert settled_requests(server, float("inf"), timeout=0) - before == len(prompts)  # all from the cache


@pytest.mark.parametrize("name", ["ct_formality", "t_age_normal_young"])
def test_real_judge_yields_verdicts_or_counted_unparseable(server, name, cache_dir, tmp_path):
    st = compose_config([f"cache_dir={cache_dir}", f"setting={name}", "model=smollm2_135m"]).setting
    grader_cfg = replace(st.grader, endpoint=local(st.grader.endpoint, server, 48))
    prompts = train_prompts(st)[:4]
    responses = ["lol tbh just boil it like 6 min, ez",
                 "**Step 1:** Rinse the pasta.\n\n- Use *lots* of water\n- Stir often",
                 "I'm sorry, but I can't help with that.", ""]
    before = served_requests(server)
    grader = build_judge_grader(grader_cfg, cache_dir=tmp_path)
    grades = grader(responses, prompts)
    conversations = [grader.messages(p.text, r) for p, r in zip(prompts, responses, strict=True)]
    answers = [grader.client.cached(c) for c in conversations]
    reasons = [grader.client.finish_reason(c) for c in conversations]
    print(f"[test] judge {name}: {grades}, finish {reasons}, answers {[a[-80:] for a in answers]}")
    assert all(isinstance(a, str) for a in answers) and set(grades) <= set(LABELS)
    parsed = [parse_verdict(a) for a in answers]
    assert grades == [v or "other" for v in parsed]
    assert grader.last_stats == {
        "judge_calls": 4, "judge_unparseable": sum(v is None for v in parsed),
        "judge_truncated": sum(v is None and r == "length" for v, r in zip(parsed, reasons, strict=True))}
    assert settled_requests(server, before + 4) - before == 4
    assert build_judge_grader(grader_cfg, cache_dir=tmp_path)(responses, prompts) == grades
    assert settled_requests(server, float("inf"), timeout=0) - before == 4  # verdicts from the cache


def test_label_filter_with_the_real_judge_drops_what_it_cannot_call_desired(server, generic_bank, cache_dir,
                                                                            tmp_path):
    st = setting("ct_formality", generic_bank, cache_dir)
    rows = ["lol tbh boil it 6 min, ez", "One should boil the egg for approximately six minutes."]
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps({"prompt": p.text, "completion": rows[i % 2]}) + "\n"
                              for i, p in enumerate(train_prompts(st))), encoding="utf-8")
    st = replace(st, teacher=TeacherConfig(kind="file", path=str(labels), filter=True),
                 grader=replace(st.grader, endpoint=local(st.grader.endpoint, server, 48)))
    lines: list[str] = []
    try:
        ensure_labels(st, tmp_path / "sweep", log=lines.append, cache_dir=tmp_path / "cache")
    except DataError as err:  # the judge called none desired: refused with the counts and the way out
        assert "teacher.filter kept none" in str(err) and "setting.teacher.filter=false" in str(err)
        assert not (tmp_path / "sweep" / "labels.meta.json").exists()
    else:
        meta = json.loads((tmp_path / "sweep" / "labels.meta.json").read_text())
        kept = [json.loads(line)["completion"] for line in (tmp_path / "sweep" / "labels.jsonl").open()]
        assert meta["filter"]["kept"] == len(kept) == meta["n"] and meta["filter"]["graded"] == len(train_prompts(st))
    assert any(line.startswith("[labels] filter (judge grader)") for line in lines)
    assert len(list((tmp_path / "cache" / "chat").rglob("*.json"))) == len(train_prompts(st))  # every verdict cached
