"""The chat client against a real local HTTP server that misbehaves on purpose (tests/support/chat_server.py)."""

import random
import socket
import time

import pytest
from chat_server import ChatServer

from workers.labels.endpoint import (
    ChatClient,
    EndpointConfig,
    EndpointError,
    backoff_delay,
    cache_key,
    parse_retry_after,
)

SECRET = "sk-test-DO-NOT-LEAK-4242"


def endpoint(server_url: str, **kw) -> EndpointConfig:
    base = dict(base_url=server_url, model="toy", api_key_env="LRSWEEP_TEST_KEY", max_concurrency=4,
                timeout_s=0.5, max_retries=5, backoff_s=0.05, max_wait_s=1.0, temperature=0.0, max_tokens=16)
    return EndpointConfig(**(base | kw))


@pytest.fixture(autouse=True)
def fake_key(monkeypatch):
    monkeypatch.setenv("LRSWEEP_TEST_KEY", SECRET)


@pytest.fixture
def server():
    with ChatServer() as s:
        yield s


def convs(n: int) -> list[list[dict]]:
    return [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"question {i}"}]
            for i in range(n)]


def files_text(folder) -> str:
    return "".join(p.read_text() for p in folder.rglob("*") if p.is_file())


def test_every_fault_is_retried_until_the_server_recovers(server, tmp_path):
    server.faults = ["429", "500", "hang", "drop", "garbled"]
    client = ChatClient(endpoint(server.base_url, max_concurrency=1), tmp_path)
    started = time.monotonic()
    out = client.complete(convs(1))
    elapsed = time.monotonic() - started
    assert out == ["reply 6: question 0"]
    reqs = server.completions()
    assert len(reqs) == 6 and client.stats["retries"] == 5
    assert reqs[1]["t"] - reqs[0]["t"] >= 0.3  # the 429's Retry-After was honoured
    assert elapsed < 8.0  # 0.3 s Retry-After + 0.5 s timeout + four short backoffs (slack for a loaded CI box)
    assert all(r["headers"]["Authorization"] == f"Bearer {SECRET}" for r in reqs)


def test_a_trickling_answer_is_abandoned_after_timeout_s(server, tmp_path):
    """One byte every 0.1 s never trips httpx's per-read timeout (0.5 s), but the whole answer (~150 bytes)
    would take 15 s: the attempt is dropped once timeout_s has passed and the retry gets the real answer."""
    server.faults = ["trickle"]
    client = ChatClient(endpoint(server.base_url, max_concurrency=1), tmp_path)
    started = time.monotonic()
    out = client.complete(convs(1))
    elapsed = time.monotonic() - started
    assert out == ["reply 2: question 0"]
    assert client.stats["retries"] == 1
    assert elapsed < 5.0, elapsed  # 0.5 s deadline + one read + a short backoff; the trickle alone takes 15 s


def test_a_compressed_answer_is_decoded_once(server, tmp_path):
    server.faults = ["gzip"]
    client = ChatClient(endpoint(server.base_url, max_concurrency=1), tmp_path)
    assert client.complete(convs(1)) == ["reply 1: question 0"]
    assert client.stats["retries"] == 0


def test_a_server_that_stays_down_gives_a_clear_error_in_bounded_time(server, tmp_path):
    server.down = True
    client = ChatClient(endpoint(server.base_url, max_retries=3), tmp_path)
    started = time.monotonic()
    with pytest.raises(EndpointError) as err:
        client.complete(convs(3))
    assert time.monotonic() - started < 6.0  # three backoffs of <= 0.2 s; slack for a loaded machine
    msg = str(err.value)
    for part in (server.base_url, "'toy'", "$LRSWEEP_TEST_KEY", "HTTP 500", "failed 4 times", "max_retries"):
        assert part in msg
    assert SECRET not in msg
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # errors are never cached


def test_nothing_listening_fails_the_check_at_once_and_requests_after_retries(tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # a port where nothing listens
    url = f"http://127.0.0.1:{port}/v1"
    started = time.monotonic()
    with pytest.raises(EndpointError, match="cannot reach endpoint .*Is the server up"):
        ChatClient(endpoint(url, max_retries=2, backoff_s=2.0), tmp_path).check()
    assert time.monotonic() - started < 1.0  # not retried: one retry alone would wait >= 1 s
    with pytest.raises(EndpointError, match="failed 3 times .*cannot connect"):  # a request retries (a restart)
        ChatClient(endpoint(url, max_retries=2), tmp_path).complete(convs(1))


def test_a_batch_that_failed_midway_resumes_from_the_cache(server, tmp_path):
    server.faults = ["ok"] * 4 + ["500"] * 50  # four answers, then down
    # a generous timeout: an "ok" answer that a loaded machine delays past 0.5 s would be retried into a 500
    cfg = endpoint(server.base_url, max_concurrency=1, max_retries=1, timeout_s=30.0)
    with pytest.raises(EndpointError, match="4 of 10 completions of this batch are cached"):
        ChatClient(cfg, tmp_path).complete(convs(10))
    assert len(list(tmp_path.rglob("*.json"))) == 4
    sent_before = len(server.completions())
    server.faults = []
    out = ChatClient(cfg, tmp_path).complete(convs(10))
    resent = server.completions()[sent_before:]
    assert len(resent) == 6  # only the missing requests go out again
    assert {r["body"]["messages"][-1]["content"] for r in resent} == {f"question {i}" for i in range(4, 10)}
    assert [o.split(": ")[1] for o in out] == [f"question {i}" for i in range(10)]  # in order


def test_cache_makes_reruns_free_and_keeps_sample_diversity(server, tmp_path):
    cfg = endpoint(server.base_url)
    conv = convs(1) * 3
    first = ChatClient(cfg, tmp_path).complete(conv, sample_index=[0, 1, 2])
    assert len(server.completions()) == 3 and len(set(first)) == 3  # one request per sample index
    again = ChatClient(cfg, tmp_path).complete(conv, sample_index=[0, 1, 2])
    assert again == first and len(server.completions()) == 3  # a re-run sends nothing
    dup = ChatClient(cfg, tmp_path).complete(convs(2) + convs(2), sample_index=[5, 5, 5, 5])
    assert len(server.completions()) == 5 and dup[:2] == dup[2:]  # identical requests in a batch go out once
    ChatClient(endpoint(server.base_url, temperature=0.7), tmp_path).complete(conv[:1])
    assert len(server.completions()) == 6  # other sampling params: another cache entry
    text = files_text(tmp_path)
    assert SECRET not in text and "LRSWEEP_TEST_KEY" not in text


def test_long_batches_print_progress(server, tmp_path):
    lines = []
    ChatClient(endpoint(server.base_url), tmp_path).complete(convs(60), log=lines.append)
    assert any("/60 requests" in line for line in lines) and "60 requests in" in lines[-1]


def test_refusals_are_not_retried_and_never_show_the_key(server, tmp_path):
    server.faults = ["401"]
    client = ChatClient(endpoint(server.base_url), tmp_path)
    with pytest.raises(EndpointError) as err:
        client.complete(convs(1))
    assert "HTTP 401" in str(err.value) and "$LRSWEEP_TEST_KEY was refused" in str(err.value)
    assert SECRET not in str(err.value) and "***" in str(err.value)
    server.faults = ["400"]
    with pytest.raises(EndpointError, match="HTTP 400"):
        client.complete(convs(1))
    assert len(server.completions()) == 2  # one request each: a refusal is final


def test_check_names_the_problem_and_the_fix(server, tmp_path, monkeypatch):
    ChatClient(endpoint(server.base_url), tmp_path).check()
    with pytest.raises(EndpointError, match=r"does not serve model 'gpt-4o-mini'; it serves \['toy'\]"):
        ChatClient(endpoint(server.base_url, model="gpt-4o-mini"), tmp_path).check()
    monkeypatch.delenv("LRSWEEP_TEST_KEY")
    with pytest.raises(EndpointError, match="environment variable LRSWEEP_TEST_KEY is not set"):
        ChatClient(endpoint(server.base_url), tmp_path).check()
    with pytest.raises(EndpointError, match="LRSWEEP_TEST_KEY is not set"):
        ChatClient(endpoint(server.base_url), tmp_path).complete(convs(1))
    assert server.completions() == []
    ChatClient(endpoint(server.base_url, api_key_env=None), tmp_path).check()  # a keyless local server


def test_cache_key_is_stable():
    msgs = [{"role": "user", "content": "¿Hola?"}]
    key = cache_key("gpt-4o-mini", msgs, {"temperature": 1.0, "max_tokens": 512}, 0)
    assert key == cache_key("gpt-4o-mini", [{"content": "¿Hola?", "role": "user"}],
                            {"max_tokens": 512, "temperature": 1.0}, 0)  # dict order does not matter
    # pinned: a change of the key's recipe would silently re-buy every cached label (bump CACHE_VERSION instead)
    assert key == "2a255c90eaf81ad542a85f1f5d346de33d70ab0b787cf3512804484d4427130e"
    others = {cache_key("gpt-4o", msgs, {"temperature": 1.0, "max_tokens": 512}, 0),
              cache_key("gpt-4o-mini", msgs, {"temperature": 0.0, "max_tokens": 512}, 0),
              cache_key("gpt-4o-mini", msgs, {"temperature": 1.0, "max_tokens": 512}, 1),
              cache_key("gpt-4o-mini", msgs + msgs, {"temperature": 1.0, "max_tokens": 512}, 0)}
    assert key not in others and len(others) == 4


@pytest.mark.parametrize("header, seconds", [
    (None, None), ("", None), ("2", 2.0), ("0.5", 0.5), ("-3", 0.0), ("soon", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date in the past: retry now
])
def test_retry_after_header(header, seconds):
    assert parse_retry_after(header) == seconds


def test_retry_after_http_date_in_the_future():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412480.0) == pytest.approx(30.0)


def test_backoff_doubles_with_jitter_and_is_capped():
    rng = random.Random(0)
    for attempt, top in [(0, 1.0), (1, 2.0), (2, 4.0), (6, 10.0)]:
        for _ in range(50):
            assert top / 2 <= backoff_delay(attempt, 1.0, 10.0, rng) <= top
