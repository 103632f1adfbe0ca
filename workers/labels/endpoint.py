"""An OpenAI-compatible chat client for teachers and judges: bounded concurrency, retries, an on-disk cache.

    client = ChatClient(cfg.setting.teacher.endpoint, Path(cfg.cache_dir) / "chat")
    client.check()                                    # key set, server reachable, model served
    texts = client.complete([[{"role": "user", "content": "How do I make a cake?"}]])

Any server speaking `POST {base_url}/chat/completions` works: gpt-4o-mini, or `vllm serve MODEL` on localhost.
Faults are retried (429, 408, 5xx, timeouts, dropped connections) with exponential backoff and jitter,
honouring Retry-After. An attempt whose whole answer has not arrived within timeout_s is abandoned at its
next read (a server trickling bytes cannot hold it longer than 2 x timeout_s: each read waits at most
timeout_s), so one request takes at most (max_retries + 1) * 2 * timeout_s + max_retries * max_wait_s.
When a request stays down the batch stops with an EndpointError; every completion received before that
is already in the cache, so running again sends only the missing requests.

The cache holds one JSON file per completion under `cache_dir/<k[:2]>/<k>.json`, written atomically, keyed
by (model, messages, sampling params, sample index): the sample index keeps n_samples > 1 diverse, and
base_url is not in the key, so the same model behind another URL reuses it. Errors are never cached.
The API key is read from the environment variable `api_key_env` names and sent only in the request
header; it is scrubbed from every error message and never written anywhere.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.errors import UserError
from eval.knobs import AT_LEAST_1, NON_NEGATIVE, POSITIVE, knob
from eval.runfiles import write_json
from workers.errors import require, require_knobs


@dataclass
class EndpointConfig:
    """An OpenAI-compatible chat endpoint (teacher labels, LLM judge): gpt-4o-mini, or a local `vllm serve`.

    The key is never in a config: `api_key_env` names the environment variable that holds it."""

    base_url: str | None = None  # e.g. http://127.0.0.1:8000/v1
    model: str | None = None
    api_key_env: str | None = None  # NAME of the env var with the key; null for a keyless local server
    max_concurrency: int = knob(8, within=AT_LEAST_1)
    timeout_s: float = knob(60.0, within=POSITIVE)  # per request
    # on 429, 5xx, timeouts and dropped connections, with exponential backoff
    max_retries: int = knob(5, within=NON_NEGATIVE)
    backoff_s: float = knob(1.0, within=NON_NEGATIVE)  # first retry's wait; doubles each retry (with jitter)
    max_wait_s: float = knob(60.0, within=NON_NEGATIVE)  # cap on one wait, a server's Retry-After included
    temperature: float = knob(1.0, within=NON_NEGATIVE)
    max_tokens: int = knob(512, within=AT_LEAST_1)


def validate_endpoint(ep: EndpointConfig, where: str) -> None:
    """An endpoint block that is used: named server and model, a key env var NAME (never a key)."""
    require(bool(ep.base_url) and bool(ep.model),
            f"{where}.base_url and {where}.model are required, e.g. {where}.base_url=http://127.0.0.1:8000/v1 "
            f"{where}.model=Qwen/Qwen3-0.6B (and {where}.api_key_env=OPENAI_API_KEY for a hosted API)")
    require(str(ep.base_url).startswith(("http://", "https://")),
            f"{where}.base_url={ep.base_url!r}: must start with http:// or https://")
    env = ep.api_key_env
    require(env is None or (env.replace("_", "").isalnum() and not env[0].isdigit() and len(env) <= 64),
            f"{where}.api_key_env must be the NAME of an environment variable (e.g. OPENAI_API_KEY), never the key")
    require_knobs(ep, where)


CACHE_VERSION = 1
PROGRESS_EVERY = 50  # batches at least this long get progress lines


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """lrsweep's cache folder: the given one, else $LRSWEEP_CACHE, else ~/.cache/lrsweep (as conf/config.yaml).
    Chat completions live in its `chat/` subfolder."""
    return Path(cache_dir or os.environ.get("LRSWEEP_CACHE") or "~/.cache/lrsweep").expanduser().resolve()


class EndpointError(UserError, RuntimeError):
    """The endpoint failed for good; the message names base_url, model, the key's env var and the fix."""


class _Stopped(Exception):
    """Another request of the batch failed for good: stop retrying this one."""


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def cache_key(model: str, messages: list[dict], params: dict[str, Any], sample_index: int) -> str:
    payload = {"v": CACHE_VERSION, "model": model, "messages": messages, "params": params,
               "sample_index": sample_index}
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: a number of seconds or an HTTP date; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: base * 2^attempt, capped, scaled by a random factor in [0.5, 1]
    so that many clients hit by the same outage do not retry in lockstep."""
    return min(cap_s, base_s * 2**attempt) * rng.uniform(0.5, 1.0)


class ChatClient:
    """Chat completions from one OpenAI-compatible endpoint (an EndpointConfig), cached on disk."""

    def __init__(self, cfg: Any, cache_dir: Path) -> None:
        if not cfg.base_url or not cfg.model:
            raise EndpointError("endpoint.base_url and endpoint.model must both be set "
                                "(e.g. base_url=http://127.0.0.1:8000/v1 model=Qwen/Qwen3-0.6B)")
        self.cfg = cfg
        self.base_url = cfg.base_url.rstrip("/")
        self.cache_dir = Path(cache_dir)
        self.params = {"temperature": float(cfg.temperature), "max_tokens": int(cfg.max_tokens)}
        self.stats = {"requests": 0, "cached": 0, "retries": 0}
        self._lock = threading.Lock()
        self._rng = random.Random()

    # --- where, who, and how to say it without the key ---
    def _where(self) -> str:
        key = f"key from ${self.cfg.api_key_env}" if self.cfg.api_key_env else "no key"
        return f"{self.base_url} (model {self.cfg.model!r}, {key})"

    def _api_key(self) -> str | None:
        env = self.cfg.api_key_env
        if not env:
            return None
        key = os.environ.get(env, "")
        if not key.strip():
            raise EndpointError(f"endpoint {self._where()}: the environment variable {env} is not set. "
                                f"Export it (export {env}=...) where lrsweep runs; keys never go in configs")
        return key.strip()

    def _scrub(self, text: str) -> str:
        env = self.cfg.api_key_env
        key = os.environ.get(env, "").strip() if env else ""
        return text.replace(key, "***") if key else text

    def _headers(self) -> dict[str, str]:
        key = self._api_key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _http(self) -> Any:
        import httpx

        n = max(1, int(self.cfg.max_concurrency))
        return httpx.Client(timeout=httpx.Timeout(float(self.cfg.timeout_s)), headers=self._headers(),
                            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n))

    # --- one request, with retries ---
    def _request(self, http: Any, method: str, path: str, body: dict | None, stop: threading.Event | None,
                 retry_connect: bool = True) -> Any:
        """The 2xx response; retries transient faults; EndpointError for a refusal or when retries run out."""
        import httpx

        cfg = self.cfg
        started, last = time.monotonic(), ""
        for attempt in range(int(cfg.max_retries) + 1):
            if stop is not None and stop.is_set():
                raise _Stopped()
            try:
                resp = self._whole_response(http, method, path, body)
                if resp.status_code == 429 or resp.status_code == 408 or resp.status_code >= 500:
                    raise _Retryable(f"HTTP {resp.status_code}", parse_retry_after(resp.headers.get("retry-after")))
                if resp.status_code >= 400:
                    raise EndpointError(self._refusal(resp))
                if body is not None:
                    _ = self._content(resp)  # a truncated or garbled body is retried like a dropped connection
                return resp
            except _Retryable as err:
                last, retry_after = str(err), err.retry_after
            except httpx.ConnectError as err:
                if not retry_connect:
                    raise EndpointError(self._unreachable(err)) from None
                last, retry_after = f"cannot connect ({type(err).__name__}: {err})", None
            except httpx.TimeoutException as err:
                last, retry_after = f"no answer within timeout_s={cfg.timeout_s} ({type(err).__name__})", None
            except httpx.RequestError as err:  # connection dropped mid-response, reset, protocol/decoding error
                last, retry_after = f"connection lost ({type(err).__name__}: {err})", None
            if attempt == int(cfg.max_retries):
                break
            delay = backoff_delay(attempt, float(cfg.backoff_s), float(cfg.max_wait_s), self._rng)
            if retry_after is not None:
                delay = min(max(delay, retry_after), float(cfg.max_wait_s))
            with self._lock:
                self.stats["retries"] += 1
            if stop is not None:
                if stop.wait(delay):
                    raise _Stopped()
            else:
                time.sleep(delay)
        raise EndpointError(self._scrub(
            f"endpoint {self._where()} failed {int(cfg.max_retries) + 1} times in {time.monotonic() - started:.1f}s; "
            f"last error: {last}. It seems down or overloaded: check that it is up, or raise "
            f"endpoint.max_retries / endpoint.timeout_s / endpoint.max_wait_s"))

    def _whole_response(self, http: Any, method: str, path: str, body: dict | None) -> Any:
        """The whole response, read within timeout_s (httpx's own timeout is per read, not per answer)."""
        import httpx

        deadline = time.monotonic() + float(self.cfg.timeout_s)
        with http.stream(method, self.base_url + path, json=body) as resp:
            chunks = []
            for chunk in resp.iter_raw():  # as sent (gzip stays gzip): the new Response decodes it once
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("the whole answer took longer than timeout_s", request=resp.request)
            return httpx.Response(resp.status_code, headers=resp.headers, content=b"".join(chunks),
                                  request=resp.request)

    def _refusal(self, resp: Any) -> str:
        hint = {401: f"the key in ${self.cfg.api_key_env} was refused: check it" if self.cfg.api_key_env
                else "the server wants a key: set endpoint.api_key_env to the NAME of an env var holding it",
                403: f"the key in ${self.cfg.api_key_env} may not use this model: check its permissions",
                404: "not found: base_url usually ends in /v1; check endpoint.base_url and endpoint.model"}
        text = resp.text[:300].replace("\n", " ")
        fix = hint.get(resp.status_code, "the server refused the request: check endpoint.model and the sampling "
                                          "params (endpoint.max_tokens, endpoint.temperature)")
        return self._scrub(f"endpoint {self._where()}: HTTP {resp.status_code} ({text}); {fix}")

    def _unreachable(self, err: Exception) -> str:
        return self._scrub(f"cannot reach endpoint {self._where()}: {type(err).__name__}: {err}. Is the server up? "
                           f"Check endpoint.base_url (a local server: `vllm serve MODEL --port 8000`, "
                           f"base_url http://127.0.0.1:8000/v1)")

    @staticmethod
    def _content(resp: Any) -> str:
        try:
            content = resp.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise _Retryable(f"malformed response ({type(err).__name__}: {resp.text[:120]!r})") from None
        return content if isinstance(content, str) else ""  # null content (e.g. cut by max_tokens) is empty

    @staticmethod
    def _finish_reason(resp: Any) -> str | None:
        """"length" tells a real model's answer cut at max_tokens from a finished one (kept with the answer)."""
        try:
            reason = resp.json()["choices"][0].get("finish_reason")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            return None
        return reason if isinstance(reason, str) else None

    # --- public API ---
    def check(self) -> None:
        """Preflight: the key is set, the endpoint answers GET /models and lists the model. Raises EndpointError.

        Fails at once when nothing listens at base_url; other faults are retried like any request. A server
        that answers but sends no parseable model list is accepted (the first request will tell)."""
        self._api_key()
        with self._http() as http:
            resp = self._request(http, "GET", "/models", None, None, retry_connect=False)
        try:
            served = [m["id"] for m in resp.json()["data"]]
        except (ValueError, KeyError, TypeError):
            return  # a server that answers but cannot list models: the first request will tell
        if self.cfg.model not in served:
            raise EndpointError(f"endpoint {self._where()} does not serve model {self.cfg.model!r}; it serves "
                                f"{served[:10]}: set endpoint.model to one of them")

    def cache_path(self, messages: list[dict], sample_index: int) -> Path:
        key = cache_key(self.cfg.model, messages, self.params, sample_index)
        return self.cache_dir / key[:2] / f"{key}.json"

    def cached(self, messages: list[dict], sample_index: int = 0) -> str | None:
        path = self.cache_path(messages, sample_index)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return entry.get("completion") if isinstance(entry.get("completion"), str) else None

    def finish_reason(self, messages: list[dict], sample_index: int = 0) -> str | None:
        """Why the server stopped this cached completion ("stop", "length": cut at max_tokens, ...); None when
        it is not cached or was cached before the reason was recorded."""
        try:
            entry = json.loads(self.cache_path(messages, sample_index).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        reason = entry.get("finish_reason")
        return reason if isinstance(reason, str) else None

    def complete(self, conversations: list[list[dict]], sample_index: list[int] | None = None,
                 log: Callable[[str], Any] = print) -> list[str]:
        """One completion per conversation, in order; cached ones are not requested again."""
        index = list(sample_index) if sample_index is not None else [0] * len(conversations)
        if len(index) != len(conversations):
            raise ValueError(f"{len(conversations)} conversations but {len(index)} sample indices")
        out: list[str | None] = [self.cached(c, i) for c, i in zip(conversations, index, strict=True)]
        todo: dict[Path, list[int]] = {}  # one request per distinct (messages, sample index)
        for pos, text in enumerate(out):
            if text is None:
                todo.setdefault(self.cache_path(conversations[pos], index[pos]), []).append(pos)
        self.stats["cached"] += len(out) - sum(len(v) for v in todo.values())
        if todo:
            self._fetch(conversations, index, todo, out, log)
        return [t if t is not None else "" for t in out]

    def _fetch(self, conversations: list[list[dict]], index: list[int], todo: dict[Path, list[int]],
               out: list[str | None], log: Callable[[str], Any]) -> None:
        self._api_key()  # a missing key fails before any request
        stop, started, n = threading.Event(), time.monotonic(), len(todo)
        done = [0]

        def one(path: Path, positions: list[int]) -> None:
            first = positions[0]
            body = {"model": self.cfg.model, "messages": conversations[first], **self.params}
            resp = self._request(http, "POST", "/chat/completions", body, stop)
            text = self._content(resp)
            write_json(path, {"model": self.cfg.model, "params": self.params, "sample_index": index[first],
                              "messages": conversations[first], "completion": text,
                              "finish_reason": self._finish_reason(resp)})
            with self._lock:
                self.stats["requests"] += 1
                done[0] += 1
                for pos in positions:
                    out[pos] = text
                if n >= PROGRESS_EVERY and done[0] % max(1, n // 10) == 0:
                    log(f"[endpoint] {self.cfg.model}: {done[0]}/{n} requests in {time.monotonic() - started:.0f}s"
                        f" ({self.stats['retries']} retries)")

        with self._http() as http:
            pool = ThreadPoolExecutor(max_workers=min(max(1, int(self.cfg.max_concurrency)), n))
            try:
                futures = [pool.submit(one, path, positions) for path, positions in todo.items()]
                finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
                failed = [f.exception() for f in finished if f.exception() is not None]
                if failed:
                    stop.set()
                    pool.shutdown(wait=True, cancel_futures=True)
                    err = next((e for e in failed if not isinstance(e, _Stopped)), failed[0])
                    if not isinstance(err, EndpointError):
                        raise err
                    raise EndpointError(f"{err} ({done[0]} of {n} completions of this batch are cached; "
                                        f"running again sends only the missing ones)") from None
            finally:
                stop.set()
                pool.shutdown(wait=True, cancel_futures=True)
        if self.stats["retries"] or n >= PROGRESS_EVERY:
            log(f"[endpoint] {self.cfg.model}: {n} requests in {time.monotonic() - started:.1f}s, "
                f"{self.stats['retries']} retries so far")
