"""A tiny HTTP server on 127.0.0.1 for tests: fake OpenAI-compatible / vLLM / scoring endpoints.

Routes map ``(method, path)`` to a handler ``fn(body: dict | None, headers: dict) -> (status, payload)``;
``payload`` is a dict/list (sent as JSON), ``bytes`` (sent raw, for garbage responses) or a callable
that gets the raw socket file (for slow or truncated responses). Every request is recorded in
``server.requests`` so tests can assert what the client sent.

    with LoopbackServer({("POST", "/v1/chat/completions"): handler}) as srv:
        client = SomeClient(base_url=srv.url)
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

Handler = Callable[[Any, dict], tuple[int, Any]]


class LoopbackServer:
    """Threaded HTTP server on an ephemeral 127.0.0.1 port; use as a context manager."""

    def __init__(self, routes: dict[tuple[str, str], Handler]):
        self.routes = dict(routes)
        self.requests: list[dict[str, Any]] = []
        outer = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                path = self.path.split("?", 1)[0]
                outer.requests.append({"method": method, "path": path, "body": body, "headers": dict(self.headers)})
                fn = outer.routes.get((method, path))
                if fn is None:
                    status, payload = 404, {"error": f"no route {method} {path}"}
                else:
                    status, payload = fn(body, dict(self.headers))
                if callable(payload):
                    payload(self)
                    return
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "LoopbackServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
