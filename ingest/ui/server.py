"""`UIServer`: the job's web UI and JSON API over the standard library's
`ThreadingHTTPServer`.

Owned by the `StreamingContext`: it binds in the constructor (a port in use is
a `PortInUseError` at once, before the job starts), serves on one thread of its
own plus one short-lived thread per connection, and `close()` shuts it down and
joins the serving thread. Requests read snapshots (`ingest.ui.views`), never a
lock of the scheduler; a connection that stalls for `REQUEST_TIMEOUT` seconds
is dropped, so a slow browser costs a thread, never a batch.

Access token (optional): requests must carry it as `Authorization: Bearer
<token>`; a browser opens `/?token=<token>` once, which sets an HttpOnly,
SameSite=Strict cookie `ingest_ui_token` and redirects to the same page without
the token in its address. Compared in constant time; never logged.

Routes: `/`, `/batches`, `/batches/<id>`, `/inputs`, `/checkpoint` (HTML),
`/api/v1/{status,batches,batches/<id>,inputs,receivers,checkpoint}` (JSON),
`/metrics` (Prometheus text, from `ingest.metrics` when that module is
installed), `/static/ui.js` and `/static/ui.css`. Anything else is a 404 with a
JSON error body.
"""

from __future__ import annotations

import errno
import hmac
import http.cookies
import json
import logging
import re
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Callable

from ingest.errors import ConfigError, PortInUseError
from ingest.ui import pages
from ingest.ui.views import Views



def _render_metrics(ssc: object) -> tuple[bytes, str]:
    """`/metrics`. Imported on request: it needs prometheus-client (the `metrics`
    extra), which a job without it must not need just to start."""
    from ingest.metrics import render_metrics

    return render_metrics(ssc)  # type: ignore[arg-type]

log = logging.getLogger("ingest.ui")

REQUEST_TIMEOUT = 10.0
"""Seconds a connection may stay silent before it is dropped."""
COOKIE = "ingest_ui_token"
API = "/api/v1/"
_STATIC = {"ui.js": "text/javascript; charset=utf-8", "ui.css": "text/css; charset=utf-8"}
_BATCH = re.compile(r"^(\d{1,20})$")
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class _NotFound(Exception):
    pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # per-connection threads: bounded by REQUEST_TIMEOUT, never joined one by one
    allow_reuse_address = False  # a port in use must be an error, not shared
    ui: "UIServer"


class _Server6(_Server):
    address_family = socket.AF_INET6


class UIServer:
    def __init__(self, views: Views, host: str = "127.0.0.1", port: int = 0, token: str | None = None) -> None:
        self.views = views
        self.token = token or None
        try:
            server = _Server6 if ":" in host else _Server
            self._httpd = server((host, port), _Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"web UI: port {port} on {host} is already in use; pick another with ui_port= "
                    "(ingest run --ui-port N), 0 for any free port, or turn the UI off (--no-ui)", port) from None
            raise PortInUseError(f"web UI: cannot listen on {host}:{port}: {exc.strerror or exc}; check ui_host= "
                                 "(--ui-host)", port) from None
        self._httpd.ui = self
        self.host, self.port = self._httpd.server_address[:2]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in str(self.host) else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        # A daemon thread: a failed job keeps its UI up until the process exits, and
        # Python joins non-daemon threads before atexit hooks run; `close()` (called by
        # the context, and at exit) shuts it down and joins it.
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="ingest-ui", daemon=True)
        self._thread.start()
        log.info("web UI at %s%s", self.url, " (access token required)" if self.token else "")

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving and join the serving thread. Idempotent."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._httpd.shutdown()
            thread.join(timeout)
        self._httpd.server_close()

    # -- what the handler calls -----------------------------------------------------------

    def authorized(self, header: str | None, cookie: str | None, query_token: str | None) -> bool:
        if self.token is None:
            return True
        offered = []
        if header and header.startswith("Bearer "):
            offered.append(header[len("Bearer "):].strip())
        if cookie:
            jar = http.cookies.SimpleCookie()
            try:
                jar.load(cookie)
            except http.cookies.CookieError:
                jar = http.cookies.SimpleCookie()
            if COOKIE in jar:
                offered.append(jar[COOKIE].value)
        if query_token:
            offered.append(query_token)
        return any(hmac.compare_digest(o.encode(), self.token.encode()) for o in offered)

    def route(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) of a GET; raises _NotFound."""
        v = self.views
        if path.startswith(API):
            return 200, "application/json", _json(self._api(path[len(API):]))
        if path == "/metrics":
            try:
                body, ctype = _render_metrics(v.ssc)
            except ConfigError as exc:  # prometheus-client is not installed: the message says how to
                raise _NotFound(str(exc)) from None
            return 200, ctype, body
        if path.startswith("/static/"):
            name = path[len("/static/"):]
            if name not in _STATIC:
                raise _NotFound(f"no static file {name!r}")
            return 200, _STATIC[name], resources.files("ingest.ui").joinpath("static", name).read_bytes()
        status = v.status()
        if path in ("/", "/index.html"):
            html = pages.layout("overview", "Streaming overview", status, pages.overview(status, v.batches()))
        elif path == "/batches":
            html = pages.layout("batches", "Batches", status, pages.batches_page(v.batches()))
        elif path.startswith("/batches/"):
            batch = self._batch(path[len("/batches/"):])
            html = pages.layout("batch", f"Batch {batch['time']}", status, pages.batch_page(batch))
        elif path == "/inputs":
            html = pages.layout("inputs", "Inputs", status, pages.inputs_page(v.inputs()))
        elif path == "/checkpoint":
            html = pages.layout("checkpoint", "Checkpoint", status, pages.checkpoint_page(v.checkpoint()))
        else:
            raise _NotFound(f"no page {path!r}; pages: /, /batches, /batches/<id>, /inputs, /checkpoint, "
                            f"and the JSON API under {API}")
        return 200, "text/html; charset=utf-8", html.encode()

    def _api(self, rest: str) -> Any:
        v = self.views
        simple: dict[str, Callable[[], Any]] = {
            "status": v.status, "batches": v.batches, "inputs": v.inputs, "receivers": v.receivers,
            "checkpoint": v.checkpoint}
        if rest in simple:
            return simple[rest]()
        if rest.startswith("batches/"):
            return self._batch(rest[len("batches/"):])
        raise _NotFound(f"no API endpoint {API}{rest}; endpoints: " + ", ".join(
            f"{API}{e}" for e in ("status", "batches", "batches/<id>", "inputs", "receivers", "checkpoint")))

    def _batch(self, ident: str) -> dict[str, Any]:
        if not _BATCH.match(ident):
            raise _NotFound(f"batch id {ident!r} is not a batch time in milliseconds")
        batch = self.views.batch(int(ident))
        if batch is None:
            raise _NotFound(f"no batch {ident} is kept (the UI keeps the newest 1000 batches and 100 failed ones)")
        return batch


def _json(value: Any) -> bytes:
    return json.dumps(value, default=str, allow_nan=False).encode()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT
    protocol_version = "HTTP/1.1"
    server_version = "ingest-ui"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        self._get(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._get(head=True)

    def _refuse(self) -> None:
        self._send(405, "application/json", _json({"error": f"method {self.command} not allowed: the UI is "
                                                   "read-only (GET and HEAD)"}), extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815

    def _get(self, head: bool) -> None:
        ui = self.server.ui
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        query_token = (query.get("token") or [None])[0]
        if not ui.authorized(self.headers.get("Authorization"), self.headers.get("Cookie"), query_token):
            self._send(401, "application/json", _json({"error": "an access token is required: send "
                       "'Authorization: Bearer <token>', or open /?token=<token> in a browser once"}),
                       extra={"WWW-Authenticate": 'Bearer realm="ingest"'}, head=head)
            return
        if query_token is not None and ui.token is not None:
            # Trade the token in the address for a cookie, then drop it from the address bar.
            cookie = f"{COOKIE}={ui.token}; HttpOnly; SameSite=Strict; Path=/"
            self._send(303, "text/plain", b"", extra={"Location": url.path or "/", "Set-Cookie": cookie}, head=head)
            return
        try:
            status, ctype, body = ui.route(url.path)
        except _NotFound as exc:
            status, ctype, body = 404, "application/json", _json({"error": str(exc), "path": url.path})
        except Exception as exc:  # noqa: BLE001 - a page that fails must not take the server down
            log.exception("web UI: rendering %s failed", url.path)
            status, ctype, body = 500, "application/json", _json({"error": f"{type(exc).__name__}: {exc}"})
        self._send(status, ctype, body, head=head)

    def _send(self, status: int, ctype: str, body: bytes, extra: dict[str, str] | None = None,
              head: bool = False) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, val in {**_SECURITY_HEADERS, **(extra or {})}.items():
                self.send_header(k, val)
            self.end_headers()
            if not head:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True  # the client went away; nothing to tell it

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the standard library's name
        # Never the query string: it may carry the access token.
        log.debug("%s %s -> %s", self.command, urllib.parse.urlsplit(self.path).path, args[1] if len(args) > 1 else "")
