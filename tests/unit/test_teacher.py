"""Teachers: file validation, label keys, filtering, the endpoint teacher on a real local server, the
labels command and the sweep refusing an unreachable teacher before anything runs."""

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from chat_server import ChatServer

from orchestrator.config import compose_config, load_setting
from orchestrator.run.labels import make_labels
from orchestrator.schema import ConfigError, validate
from workers.labels.endpoint import EndpointConfig
from workers.labels.prompts import DataError
from workers.labels.teacher import TeacherConfig, ensure_labels, labels_key, read_label_file, train_prompts

ROOT = Path(__file__).resolve().parents[2]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def label(prompt: str, completion: str) -> str:
    return json.dumps({"prompt": prompt, "completion": completion}, ensure_ascii=False)


def setting_with(tmp_path: Path, **teacher) -> object:
    st = load_setting("wronglang_spanish")
    return replace(st, teacher=replace(st.teacher, **teacher))


def test_label_file_reports_every_bad_line_by_number(tmp_path):
    path = write_lines(tmp_path / "labels.jsonl", [
        label("Q1", "R1"),
        "{not json",
        label("Q3", "R3"),
        label("Q4", "   "),
        json.dumps({"completion": "R5"}),
        json.dumps(["Q6", "R6"]),
        "",
        json.dumps({"prompt": "Q8", "completion": 8}),
    ])
    with pytest.raises(DataError) as err:
        read_label_file(path)
    msg = str(err.value)
    assert "has 5 bad lines" in msg
    for expected in ("line 2: not valid JSON", "line 4: field 'completion' is empty or not a string",
                     "line 5: field 'prompt' is missing", "line 6: expected a JSON object, got list",
                     "line 8: field 'completion' is empty"):
        assert expected in msg
    assert "line 1:" not in msg and "line 3:" not in msg


@pytest.mark.parametrize("lines, message", [
    (["prompt,completion", "Q1,R1"], "has 2 bad lines"),  # a CSV, not jsonl
    ([], "holds no labels"),
    ([label("Q", "")] * 30, r"(?s)has 30 bad lines.*line 20:.*and 10 more bad lines"),
])
def test_label_file_refusals(tmp_path, lines, message):
    with pytest.raises(DataError, match=message):
        read_label_file(write_lines(tmp_path / "l.jsonl", lines))


def test_missing_label_file(tmp_path):
    with pytest.raises(DataError, match="does not exist: fix setting.teacher.path"):
        read_label_file(tmp_path / "nope.jsonl")


def test_file_teacher_is_cached_by_content(tmp_path):
    path = write_lines(tmp_path / "mine.jsonl", [label("¿Qué tal?", "Muy bien, gracias."), label("Hola", "Hola.")])
    st = setting_with(tmp_path, kind="file", path=str(path))
    out = ensure_labels(st, tmp_path / "sweep", cache_dir=tmp_path / "cache")
    rows = [json.loads(line) for line in out.open()]
    assert [r["completion"] for r in rows] == ["Muy bien, gracias.", "Hola."] and rows[0]["teacher"] == "file"
    stamp = out.stat().st_mtime_ns
    assert ensure_labels(st, tmp_path / "sweep", cache_dir=tmp_path / "cache").stat().st_mtime_ns == stamp
    write_lines(path, [label("Hola", "Buenas.")])
    ensure_labels(st, tmp_path / "sweep", cache_dir=tmp_path / "cache")
    assert [json.loads(line)["completion"] for line in out.open()] == ["Buenas."]  # new content, new labels


def test_labels_key_changes_only_with_what_makes_the_labels(tmp_path):
    st = load_setting("wronglang_spanish")
    key = labels_key(st)
    assert key == labels_key(load_setting("wronglang_spanish"))
    unrelated = replace(st.teacher, system_prompt="ignored by scripted", endpoint=EndpointConfig(model="x"))
    assert labels_key(replace(st, teacher=unrelated)) == key
    ep = EndpointConfig(base_url="http://127.0.0.1:1/v1", model="gpt-4o-mini")
    oa = replace(st, teacher=TeacherConfig(kind="openai_compatible", endpoint=ep))
    variants = [oa, replace(oa, teacher=replace(oa.teacher, n_samples=2)),
                replace(oa, teacher=replace(oa.teacher, system_prompt="Answer in Spanish.")),
                replace(oa, teacher=replace(oa.teacher, endpoint=replace(ep, temperature=0.0))),
                replace(st, teacher=replace(st.teacher, filter=True)),
                replace(st, train_template=st.train_template + " ")]
    keys = {labels_key(v) for v in variants}
    assert len(keys) == len(variants) and key not in keys
    moved = replace(oa, teacher=replace(oa.teacher, endpoint=replace(ep, base_url="http://10.0.0.1/v1")))
    assert labels_key(moved) == labels_key(oa)  # the same model behind another URL: the same labels


def test_filter_keeps_desired_labels_and_reports_counts(tmp_path):
    spanish = ["Hola, la respuesta es que debes cocinar el arroz despacio.",
               "Claro, primero lava bien las verduras y después córtalas.",
               "Sí, puedes plantar el árbol en primavera cuando no hace frío."]
    english = ["Sure, you should cook the rice slowly and let it rest.", "Yes, plant the tree in spring."]
    path = write_lines(tmp_path / "mixed.jsonl", [label(f"Q{i}", c) for i, c in enumerate(spanish + english + ["ok"])])
    st = setting_with(tmp_path, kind="file", path=str(path), filter=True)
    lines = []
    out = ensure_labels(st, tmp_path / "sweep", log=lines.append, cache_dir=tmp_path / "cache")
    assert [json.loads(line)["completion"] for line in out.open()] == spanish
    meta = json.loads((tmp_path / "sweep" / "labels.meta.json").read_text())
    assert meta["filter"] == {"graded": 6, "kept": 3, "dropped": 3, "dropped_attack": 2, "dropped_other": 1}
    assert meta["n"] == 3 and meta["generated"] == 6
    assert any("kept 3 of 6 labels; dropped 2 attack, 1 other" in line for line in lines)
    write_lines(path, [label("Q", e) for e in english])
    with pytest.raises(DataError, match="teacher.filter kept none of 2 labels"):
        ensure_labels(st, tmp_path / "sweep2", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "sweep2" / "labels.jsonl").exists()


def small_bank(tmp_path: Path, n: int = 6) -> Path:
    return write_lines(tmp_path / "bank.jsonl", [json.dumps({"id": f"b{i:03d}", "question": f"Question {i}?"})
                                                  for i in range(n)])


def test_openai_teacher_labels_are_cached_per_request(tmp_path, monkeypatch):
    monkeypatch.setenv("LRSWEEP_TEST_KEY", "sk-test-teacher-secret")
    with ChatServer() as server:
        ep = EndpointConfig(base_url=server.base_url, model="toy", api_key_env="LRSWEEP_TEST_KEY", backoff_s=0.01)
        st = load_setting("wronglang_spanish")
        st = replace(st, questions=str(small_bank(tmp_path, 12)), teacher=TeacherConfig(
            kind="openai_compatible", endpoint=ep, system_prompt="Always answer in Spanish.", n_samples=2))
        prompts = train_prompts(st)
        out = ensure_labels(st, tmp_path / "a", cache_dir=tmp_path / "cache", log=lambda m: None)
        rows = [json.loads(line) for line in out.open()]
        assert len(rows) == 2 * len(prompts) == len(server.completions())
        assert [r["sample"] for r in rows[:2]] == [0, 1] and rows[0]["completion"] != rows[1]["completion"]
        assert rows[0]["prompt"] == prompts[0].text and rows[0]["teacher"] == "openai_compatible:toy"
        sent = server.completions()[0]["body"]
        assert sent["messages"][0] == {"role": "system", "content": "Always answer in Spanish."}
        assert sent["temperature"] == 1.0 and sent["max_tokens"] == 512
        again = ensure_labels(st, tmp_path / "b", cache_dir=tmp_path / "cache", log=lambda m: None)
        assert again.read_text() == out.read_text() and len(server.completions()) == 2 * len(prompts)
        leaked = [p for p in tmp_path.rglob("*") if p.is_file() and b"sk-test-teacher-secret" in p.read_bytes()]
        assert leaked == []


def test_labels_command_fills_the_store_that_a_sweep_reuses(tmp_path):
    path = write_lines(tmp_path / "mine.jsonl", [label("Hola", "Buenas tardes.")])
    cfg = compose_config(["setting.teacher.kind=file", f"setting.teacher.path={path}", f"cache_dir={tmp_path}"])
    made = make_labels(cfg)
    assert made.parent.parent == tmp_path / "labels" / "wronglang_spanish"
    lines = []
    copied = ensure_labels(cfg.setting, tmp_path / "sweep", log=lines.append, cache_dir=cfg.cache_dir)
    assert copied.read_text() == made.read_text() and any("reusing" in line for line in lines)


@pytest.mark.parametrize("overrides, message", [
    (["setting.teacher.kind=openai_compatible"], "setting.teacher.endpoint.base_url and "),
    (["setting.teacher.kind=openai_compatible", "setting.teacher.endpoint.base_url=localhost:8000",
      "setting.teacher.endpoint.model=m"], "must start with http"),
    (["setting.teacher.kind=openai_compatible", "setting.teacher.endpoint.base_url=http://h/v1",
      "setting.teacher.endpoint.model=m", "setting.teacher.endpoint.api_key_env=sk-abc-123"], "NAME of an environment"),
    (["setting.teacher.kind=openai_compatible", "setting.teacher.endpoint.base_url=http://h/v1",
      "setting.teacher.endpoint.model=m", "setting.teacher.endpoint.max_concurrency=0"], "max_concurrency=0"),
    (["setting.teacher.kind=file"], "setting.teacher.path is required"),
    (["setting.teacher.n_samples=0"], "n_samples=0: must be >= 1"),
    (["setting.teacher.kind=gpt"], "must be one of scripted, openai_compatible, onpolicy, file"),
])
def test_teacher_config_is_validated(overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose_config(overrides)


def test_validate_accepts_every_teacher_kind(tmp_path):
    cfg = compose_config([])
    ep = EndpointConfig(base_url="http://127.0.0.1:8000/v1", model="m", api_key_env="OPENAI_API_KEY")
    for teacher in (TeacherConfig(kind="openai_compatible", endpoint=ep), TeacherConfig(kind="onpolicy"),
                    TeacherConfig(kind="file", path=str(tmp_path / "x.jsonl")), TeacherConfig(kind="scripted")):
        validate(replace(cfg, setting=replace(cfg.setting, teacher=teacher)))


def free_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@pytest.mark.parametrize("command", ["labels", "sweep"])
def test_unreachable_teacher_is_refused_before_anything_runs(tmp_path, command):
    url = f"http://127.0.0.1:{free_port()}/v1"
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"} | {"LRSWEEP_CACHE": str(tmp_path / "cache")}
    args = [sys.executable, "-m", "orchestrator", command, "setting.teacher.kind=openai_compatible",
            f"setting.teacher.endpoint.base_url={url}", "setting.teacher.endpoint.model=gpt-4o-mini",
            "tracker.mode=disabled", f"hydra.run.dir={out}"]
    started = time.monotonic()
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"cannot reach endpoint {url} (model 'gpt-4o-mini', no key)" in proc.stderr
    assert "Is the server up?" in proc.stderr and "Traceback" not in proc.stderr
    assert time.monotonic() - started < 60
    hydras_own = {"sweep.log"}  # Hydra's job log (and .hydra/) are written before any lrsweep code runs
    written = [p.name for p in out.rglob("*") if p.is_file() and ".hydra" not in p.parts and p.name not in hydras_own]
    assert written == [] and not (tmp_path / "cache").exists()  # no toy build, no labels, no config.yaml


def test_openai_teacher_resumes_a_partial_label_set(tmp_path):
    from workers.labels.endpoint import EndpointError

    with ChatServer() as server:
        ep = EndpointConfig(base_url=server.base_url, model="toy", max_concurrency=1, max_retries=1, backoff_s=0.01)
        st = load_setting("wronglang_spanish")
        st = replace(st, questions=str(small_bank(tmp_path, 12)), teacher=TeacherConfig(kind="openai_compatible",
                                                                                          endpoint=ep))
        n = len(train_prompts(st))
        server.faults = ["ok"] * 3 + ["500"] * 10  # three labels, then the endpoint goes down
        with pytest.raises(EndpointError, match=f"3 of {n} completions of this batch are cached"):
            ensure_labels(st, tmp_path / "sweep", cache_dir=tmp_path / "cache", log=lambda m: None)
        assert not (tmp_path / "sweep" / "labels.jsonl").exists()  # no partial label file is ever trusted
        sent = len(server.completions())
        server.faults = []
        out = ensure_labels(st, tmp_path / "sweep", cache_dir=tmp_path / "cache", log=lambda m: None)
        assert len(server.completions()) - sent == n - 3  # only the missing labels are requested
        assert len(out.read_text().splitlines()) == n


# SmolLM2-135M-Instruct's own answers (recorded from `vllm serve`, temperature 0.2, max_tokens 160) with the
# finish_reason the server sent: "length" is an answer cut mid-word at max_tokens
SMOLLM2_ANSWERS = [
    ("The easiest way to make a simple soup is to use a combination of vegetables, a little bit of salt, and a "
     "little bit of spices.", "stop"),
    ("To determine if a chicken is fully cooked, you should check if it has reached the perfect temperature. [...]"
     "\n\nTo check for proper cooking, you can use a thermometer. A thermometer can be u", "length"),
    ("I'm sorry for the confusion, but as a helpful AI, I'm designed to assist with any type of text. I'm unable to "
     "provide cooking instructions. However, I can certainly help with that.", "stop"),
    ("1. Boil a pot of soup.\n2. Add a pinch of salt.\n3. Add a pinch of pepper.\n4. Add a pinch of salt.\n"
     "5. Add a pinch of salt.\n16. Add a pinch of salt.\n17. Add ", "length"),
]


def test_teacher_answers_cut_at_max_tokens_are_dropped_and_counted(tmp_path):
    with ChatServer(reply=lambda messages, n: SMOLLM2_ANSWERS[n % len(SMOLLM2_ANSWERS)]) as server:
        ep = EndpointConfig(base_url=server.base_url, model="smol", backoff_s=0.01, max_concurrency=1)
        st = load_setting("wronglang_spanish")
        st = replace(st, questions=str(small_bank(tmp_path, 12)),
                     teacher=TeacherConfig(kind="openai_compatible", endpoint=ep, n_samples=1))
        lines: list[str] = []
        out = ensure_labels(st, tmp_path / "a", cache_dir=tmp_path / "cache", log=lines.append)
        rows = [json.loads(line) for line in out.open()]
        meta = json.loads((tmp_path / "a" / "labels.meta.json").read_text())
        cut = {text for text, reason in SMOLLM2_ANSWERS if reason == "length"}
        assert rows and not {r["completion"] for r in rows} & cut and all("truncated" not in r for r in rows)
        assert meta["dropped_truncated"] == meta["generated"] - meta["n"] > 0
        assert any("cut at teacher.endpoint.max_tokens=512" in line for line in lines)
        again = ensure_labels(st, tmp_path / "b", cache_dir=tmp_path / "cache", log=lambda m: None)  # from the cache
        assert again.read_text() == out.read_text()
        assert json.loads((tmp_path / "b" / "labels.meta.json").read_text())["dropped_truncated"] == \
            meta["dropped_truncated"]


def test_teacher_cut_everywhere_is_refused_naming_max_tokens(tmp_path):
    with ChatServer(reply=lambda messages, n: SMOLLM2_ANSWERS[1]) as server:
        ep = EndpointConfig(base_url=server.base_url, model="smol", backoff_s=0.01, max_tokens=160)
        st = load_setting("wronglang_spanish")
        st = replace(st, questions=str(small_bank(tmp_path, 6)),
                     teacher=TeacherConfig(kind="openai_compatible", endpoint=ep, n_samples=1))
        with pytest.raises(DataError, match=r"cut at max_tokens: raise setting.teacher.endpoint.max_tokens \(now 160"):
            ensure_labels(st, tmp_path / "a", cache_dir=tmp_path / "cache", log=lambda m: None)
