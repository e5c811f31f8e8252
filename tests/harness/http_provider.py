"""A real HTTP server standing in for an SMS or push provider's API (tests): it keeps every JSON
message POSTed to it with its headers, and answers the next requests to a destination with the
statuses it is told (500 to exercise retries, 400 for a permanent refusal), else 200 with an id."""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .process import free_port


@dataclass
class Posted:
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class _State:
    posted: list[Posted] = field(default_factory=list)
    statuses: dict[str, list[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class ProviderServer:
    """An HTTP provider API on 127.0.0.1; `url` is where to POST."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1/messages"
        state = self._state = _State()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                with state.lock:
                    pending = state.statuses.get(str(body.get("to")), [])
                    status = pending.pop(0) if pending else 200
                    if status == 200:
                        state.posted.append(Posted(dict(self.headers.items()), body))
                answer = json.dumps(
                    {"id": f"prov-{uuid.uuid4().hex[:8]}"} if status == 200 else {"error": status}
                )
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(answer.encode())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def posted(self) -> list[Posted]:
        with self._state.lock:
            return list(self._state.posted)

    def answer_next(self, destination: str, *statuses: int) -> None:
        """Answers the next requests for `destination` with these statuses, in order."""
        with self._state.lock:
            self._state.statuses.setdefault(destination, []).extend(statuses)
