"""A real local HTTP receiver for alert tests: ``http.server`` in a thread, recording every POST.

``with WebhookReceiver() as hooks: hooks.url("/ok")``; ``hooks.plan("/flaky", [503, 503])`` answers the
next two POSTs to that path with 503 (then 200); ``hooks.plan("/down", [500] * 99)``; ``hooks.posts``
holds ``(path, headers, json body)`` of every POST in arrival order.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class WebhookReceiver:
    def __init__(self):
        self.posts: list[tuple[str, dict, dict]] = []
        self._plans: dict[str, list[tuple[int, dict]]] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.posts.append((self.path, dict(self.headers), json.loads(body or b"null")))
                    plan = receiver._plans.get(self.path) or []
                    status, headers = plan.pop(0) if plan else (200, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def plan(self, path: str, statuses: list[int], headers: dict | None = None) -> None:
        """Answer the next POSTs to ``path`` with ``statuses`` (and ``headers``), then 200."""
        with self._lock:
            self._plans[path] = [(status, headers or {}) for status in statuses]

    def bodies(self, path: str | None = None) -> list[dict]:
        with self._lock:
            return [body for p, _h, body in self.posts if path is None or p == path]

    def __enter__(self) -> Self:
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
