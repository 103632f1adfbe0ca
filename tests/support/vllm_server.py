"""`vllm serve` (the OpenAI-compatible server) of a local model folder on 127.0.0.1, for integration tests, and
the server's own request count (its Prometheus metrics), so tests can tell cached answers from new requests."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@contextmanager
def vllm_serve(model: Path, served_name: str, log_path: Path, max_model_len: int = 512) -> Iterator[str]:
    """The server in its own process group, polled on /v1/models, stopped on exit; yields its base_url."""
    port = free_port()
    env = os.environ | {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING",
                        "TOKENIZERS_PARALLELISM": "false"}
    # the OpenAI server module, not the `vllm serve` script: vllm-cpu's script asks package metadata for a
    # distribution named "vllm" and exits; both run the same server
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--host", "127.0.0.1",
           "--port", str(port), "--served-model-name", served_name, "--dtype", "float32", "--max-model-len",
           str(max_model_len), "--enforce-eager", "--seed", "0"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline, started = time.time() + 300, time.time()
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(base_url + "/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > deadline:
                pytest.fail(f"vllm serve not up after 300 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        print(f"[test] vllm serve up after {time.time() - started:.0f}s", flush=True)
        yield base_url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def served_requests(base_url: str) -> float:
    """Finished requests as the server counts them (its Prometheus metrics)."""
    text = httpx.get(base_url.removesuffix("/v1") + "/metrics", timeout=5).text
    return sum(float(m.group(1)) for m in re.finditer(r"^vllm:request_success_total\{[^}]*\} ([0-9.e+]+)$",
                                                      text, re.MULTILINE))


def settled_requests(base_url: str, expected: float, timeout: float = 10.0) -> float:
    """The server's count once it reaches `expected` (its metrics may lag the responses a little), or after
    `timeout`; a count that must not move is read after a pause so a late increment would show."""
    deadline = time.time() + timeout
    while True:
        count = served_requests(base_url)
        if count >= expected or time.time() > deadline:
            time.sleep(1.0)
            return served_requests(base_url)
        time.sleep(0.2)
