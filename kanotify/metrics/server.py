"""The listener's ``/metrics`` server (the families come from :mod:`kanotify.metrics.exposition`).

The server (:class:`MetricsServer`) is an HTTP server in its own thread, a
thread per request, so building the text (~0.2 s for 10,000 real servers,
natively; kept and served again while nothing changed) never runs on the
listener's event loop or in its worker, and a slow or stuck
scraper holds only its own thread (:data:`REQUEST_TIMEOUT`; at most
:data:`MAX_CLIENTS` at once).  Only ``/metrics`` is served; every other path
is a 404.  It is written here rather than taken from prometheus_client's
``start_http_server`` for three reasons: that one serves the metrics on
*every* path, resolves the bound address's host name when binding (a reverse
DNS lookup in the listener's start-up, on the failover path), and can only be
stopped by waiting out a half-second poll.
"""

from __future__ import annotations

import gzip
import logging
import selectors
import socket
import socketserver
import threading
from typing import Any, Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client.exposition import choose_encoder, gzip_accepted

from ..config.values import ListenAddress
from .exposition import registry_for
from .facts import Facts

log = logging.getLogger("kanotify.metrics")

#: seconds a scraper may take to send its request and read the answer
REQUEST_TIMEOUT = 10.0
#: scrapes served at once; more connections are closed at once
MAX_CLIENTS = 8
PATH = "/metrics"



class _Handler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT  # on the connection: a scraper that stalls is dropped

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a request every 15 s is not news


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: ListenAddress) -> None:
        self.address_family = socket.AF_INET6 if address.address.version == 6 else socket.AF_INET
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        super().__init__((str(address.address), address.port), _Handler)
        self.socket.setblocking(False)  # handle_request() after select: a vanished client must not block accept()

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name of the address (socket.getfqdn): a DNS
        # lookup that can hang the listener's start.  The WSGI environ does not need it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a scraper that timed out or went away: its next scrape will do (the default prints a traceback)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # MAX_CLIENTS scrapes already: this one waits for the next interval
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _MetricsApp:
    """The WSGI app: ``GET /metrics`` in the format the scraper asks for (prometheus_client's encoders), else 404.

    The answer is kept while the facts stay equal: between transitions they
    rarely change, and encoding (and gzipping) 10,000 real servers costs
    ~0.2 s of the interpreter that the worker shares.
    """

    def __init__(self, source: Callable[[], Facts]) -> None:
        self.source = source
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, bool], tuple[Facts, bytes]] = {}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH:
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"kanotify serves its metrics at {PATH} only\n".encode()]
        if environ.get("REQUEST_METHOD") != "GET":
            start_response("405 Method Not Allowed", [("Allow", "GET"), ("Content-Type", "text/plain; charset=utf-8")])
            return [b"GET only\n"]
        encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT", ""))
        gzipped = gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", ""))
        try:
            facts = self.source()
        except Exception:  # noqa: BLE001 - a bug here must not go unseen, nor end the server
            log.exception("kanotify: metrics: a scrape failed")
            start_response("500 Internal Server Error", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"kanotify: the metrics could not be collected; see the listener's log\n"]
        with self._lock:
            cached = self._cache.get((content_type, gzipped))
        if cached is not None and cached[0] == facts:
            body = cached[1]
        else:
            body = encoder(registry_for(lambda: facts))
            if gzipped:
                body = gzip.compress(body, compresslevel=6)
            with self._lock:
                self._cache[(content_type, gzipped)] = (facts, body)
        headers = [("Content-Type", content_type)] + ([("Content-Encoding", "gzip")] if gzipped else [])
        start_response("200 OK", headers)
        return [body]


class MetricsServer:
    """``http://ADDRESS/metrics`` in a thread of its own; :meth:`start` raises OSError when it cannot bind."""

    def __init__(self, address: ListenAddress, source: Callable[[], Facts]) -> None:
        self.address = address
        self.source = source
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}{PATH}"

    def start(self) -> None:
        server = _Server(self.address)
        server.set_app(_MetricsApp(self.source))
        self._server, self._wake = server, socket.socketpair()
        self._thread = threading.Thread(target=self._serve, name="kanotify-metrics", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        assert self._server is not None and self._wake is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._server.socket, selectors.EVENT_READ)
            selector.register(self._wake[0], selectors.EVENT_READ)
            while True:
                events = selector.select()
                if any(key.fileobj is self._wake[0] for key, _ in events):
                    return
                self._server.handle_request()  # accept and hand the connection to a thread of its own

    def stop(self) -> None:
        """Stop serving and free the port at once (scrapes under way finish in their threads)."""
        if self._wake is not None:
            self._wake[1].send(b"x")
        if self._thread is not None:
            self._thread.join(5)
        if self._server is not None:
            self._server.server_close()
        if self._wake is not None:
            for sock in self._wake:
                sock.close()
        self._server = self._thread = self._wake = None


__all__ = ["MAX_CLIENTS", "MetricsServer", "PATH", "REQUEST_TIMEOUT"]
