"""A real OpenAI-compatible HTTP server on 127.0.0.1 that misbehaves on purpose, for endpoint tests.

Each POST /chat/completions takes the next fault from `faults` ("429", "500", "hang", "drop", "trickle",
"400", "401", "garbled"; "gzip" is a good answer, compressed); when none is left it answers with
`reply(messages, n)` (a text, or (text, finish_reason)). Every request is recorded
(time, path, headers, body), so tests count what reached the server.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def echo_reply(messages: list[dict], n: int) -> str:
    return f"reply {n}: {messages[-1]['content']}"


class ChatServer:
    def __init__(self, models: tuple[str, ...] = ("toy",),
                 reply: Callable[[list[dict], int], str | tuple[str, str]] = echo_reply,
                 retry_after: str = "0.3", hang_s: float = 1.5, trickle_s: float = 0.1) -> None:
        self.models, self.reply, self.retry_after, self.hang_s = models, reply, retry_after, hang_s
        self.trickle_s = trickle_s
        self.faults: list[str] = []
        self.down = False  # every completion request fails with 500 while set
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

            def _send(self, code: int, payload: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                server._record(self, None)
                if self.path.endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in server.models]})
                else:
                    self._send(404, {"error": "no such route"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                n = server._record(self, body)
                with server.lock:
                    fault = server.faults.pop(0) if server.faults else ("500" if server.down else "ok")
                if fault == "429":
                    self._send(429, {"error": "slow down"}, {"Retry-After": server.retry_after})
                elif fault in ("500", "400"):
                    self._send(int(fault), {"error": f"fault {fault}"})
                elif fault == "401":  # some APIs echo the key they refused
                    self._send(401, {"error": f"bad key {self.headers.get('Authorization', '')}"})
                elif fault == "hang":
                    time.sleep(server.hang_s)
                    try:
                        self._send(200, _completion("too late"))
                    except OSError:
                        pass
                elif fault == "drop":  # promise a body, send part of it, close the connection
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "500")
                    self.end_headers()
                    self.wfile.write(b'{"choices": [')
                    self.wfile.flush()
                    self.close_connection = True
                elif fault == "trickle":  # a whole answer, one byte every trickle_s: each read is quick
                    data = json.dumps(_completion("too slow")).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    try:
                        for i in range(len(data)):
                            self.wfile.write(data[i:i + 1])
                            self.wfile.flush()
                            time.sleep(server.trickle_s)
                    except OSError:  # the client gave up
                        pass
                elif fault == "gzip":  # a compressed answer, as hosted APIs send when asked
                    data = gzip.compress(json.dumps(_completion(server.reply(body["messages"], n))).encode())
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Encoding", "gzip")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                elif fault == "garbled":
                    self._send(200, {"unexpected": True})
                else:
                    self._send(200, _completion(server.reply(body["messages"], n)))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _record(self, handler: BaseHTTPRequestHandler, body: Any) -> int:
        with self.lock:
            self.requests.append({"t": time.monotonic(), "path": handler.path, "headers": dict(handler.headers),
                                  "body": body})
            return len(self.requests)

    def completions(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _completion(reply: str | tuple[str, str]) -> dict[str, Any]:
    """`reply` is the answer's text, or (text, finish_reason) to play an answer cut at max_tokens ("length")."""
    text, finish = reply if isinstance(reply, tuple) else (reply, "stop")
    return {"id": "x", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}]}
