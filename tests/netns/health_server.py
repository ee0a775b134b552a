"""Real servers for the netns health-check tests, run in the real servers' namespace.

``python health_server.py LOG SPEC...`` (under ``ip netns exec B``) serves each SPEC on
``[::]:PORT`` (dual stack: IPv4 and IPv6) and appends one JSON line per event to LOG,
with ``t`` = ``time.monotonic()`` (the same clock in every network namespace):

- ``tcp:PORT``: accepts and closes (``accept``); SIGUSR1 stops listening (``paused``,
  connections are refused), SIGUSR2 listens again (``listening``).
- ``http:PORT:STATUSFILE``: ``http.server`` answering a GET (``request`` with path and
  Host header) with the code that the JSON object in STATUSFILE gives for the path
  (``{"/": 200}``; read on every request, so the test changes it while checks run; 200 if absent).
- ``https:PORT:STATUSFILE:CERT:KEY``: the same over TLS.
- ``raw:PORT:HEX[:TIMES]``: sends the bytes HEX (TIMES times over), reads the request
  and closes (``accept``).
- ``silent:PORT``: accepts, reads what comes and never answers (``accept``, then ``closed``
  with what was ``received`` when the client gives up).

``ready`` is logged once every port listens.
"""

from __future__ import annotations

import json
import signal
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LOG_LOCK = threading.Lock()
LOG_PATH = ""


def log(event: str, **fields: Any) -> None:
    line = json.dumps({"t": time.monotonic(), "event": event, **fields}) + "\n"
    with LOG_LOCK, open(LOG_PATH, "a") as fh:
        fh.write(line)


def listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    sock.listen(128)
    return sock


def peer(addr: Any) -> str:
    return str(addr[0]).removeprefix("::ffff:")


class TcpPort:
    """Accept-and-close, paused and resumed by signals (a listening socket closed and opened again)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = listen(port)
        self.want_paused = False

    def run(self) -> None:
        import select

        while True:
            if self.want_paused and self.sock is not None:
                self.sock.close()
                self.sock = None
                log("paused", port=self.port)
            elif not self.want_paused and self.sock is None:
                self.sock = listen(self.port)
                log("listening", port=self.port)
            if self.sock is None:
                time.sleep(0.005)
                continue
            ready, _, _ = select.select([self.sock], [], [], 0.005)
            if ready:
                conn, addr = self.sock.accept()
                log("accept", port=self.port, peer=peer(addr))
                conn.close()


def raw_port(sock: socket.socket, port: int, data: bytes) -> None:
    while True:
        conn, addr = sock.accept()
        log("accept", port=port, peer=peer(addr))
        threading.Thread(target=answer, args=(conn, data), daemon=True).start()


def answer(conn: socket.socket, data: bytes) -> None:
    """Send ``data``, read the request, close: a close with the request unread would be a reset."""
    conn.settimeout(5)
    try:
        conn.sendall(data)
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = conn.recv(4096)
            if not chunk:
                break
            request += chunk
    except OSError:
        pass
    conn.close()


def silent_port(sock: socket.socket, port: int) -> None:
    while True:
        conn, addr = sock.accept()
        log("accept", port=port, peer=peer(addr))
        threading.Thread(target=hold, args=(conn, port), daemon=True).start()


def hold(conn: socket.socket, port: int) -> None:
    """Read until the client closes; never write a byte."""
    received = b""
    try:
        while chunk := conn.recv(4096):
            received += chunk
    except OSError:
        pass
    log("closed", port=port, received=received.decode(errors="replace"))
    conn.close()


class Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log("error", port=self.server_address[1], error=repr(sys.exc_info()[1]))


def http_server(port: int, status_file: str, tls: ssl.SSLContext | None) -> Server:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            log("request", port=port, path=self.path, host=self.headers.get("Host"), peer=peer(self.client_address),
                version=self.request_version)
            try:
                with open(status_file) as fh:
                    code = int(json.load(fh).get(self.path, 200))
            except (OSError, ValueError):
                code = 200
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = Server(("::", port), Handler)
    if tls is not None:
        # the handshake happens in the handler's thread, so a client that refuses the certificate
        # fails one request (logged as "error"), not the accept loop
        server.socket = tls.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    return server


def main(argv: list[str]) -> None:
    global LOG_PATH
    LOG_PATH = argv[0]
    threads: list[threading.Thread] = []
    tcp: list[TcpPort] = []
    for spec in argv[1:]:
        kind, port_text, *rest = spec.split(":")
        port = int(port_text)
        if kind == "tcp":
            tcp.append(TcpPort(port))
            threads.append(threading.Thread(target=tcp[-1].run, daemon=True))
        elif kind in ("http", "https"):
            context = None
            if kind == "https":
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.load_cert_chain(rest[1], rest[2])
            server = http_server(port, rest[0], context)
            threads.append(threading.Thread(target=server.serve_forever, daemon=True))
        elif kind == "raw":
            threads.append(threading.Thread(target=raw_port, args=(listen(port), port, bytes.fromhex(rest[0]) * int((rest[1:] or ["1"])[0])),
                                            daemon=True))
        elif kind == "silent":
            threads.append(threading.Thread(target=silent_port, args=(listen(port), port), daemon=True))
        else:
            raise SystemExit(f"unknown server kind {kind!r}")

    def pause(paused: bool) -> None:
        for t in tcp:
            t.want_paused = paused

    signal.signal(signal.SIGUSR1, lambda *_: pause(True))
    signal.signal(signal.SIGUSR2, lambda *_: pause(False))
    for thread in threads:
        thread.start()
    log("ready")  # every socket was bound and listens before its thread started
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main(sys.argv[1:])
