"""Tiny real servers for the checkers' tests: DNS (A/AAAA/SOA), SMTP banner, UDP echo.

Imported by the unit tests (a thread each on loopback), run as a script by
the netns tests inside a namespace: ``python3 check_servers.py dns 192.0.2.21 53``
(``smtp``, ``udp``; ``dns-refuse`` answers every query with RCODE 5, ``smtp-busy``
greets with 554).  It prints ``ready`` once it listens.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import sys
import threading


def dns_answer(query: bytes, rcode: int = 0) -> bytes | None:
    """An answer to ``query``: the question echoed, one A/AAAA record (192.0.2.1 / 2001:db8::1), else no record."""
    if len(query) < 12:
        return None
    ident, _flags, qd = struct.unpack_from("!HHH", query)
    pos = 12
    while pos < len(query) and query[pos]:
        pos += 1 + query[pos]
    question = query[12:pos + 5]
    qtype = struct.unpack_from("!H", query, pos + 1)[0] if pos + 3 <= len(query) else 0
    answers = b""
    count = 0
    if rcode == 0 and qtype in (1, 28):
        data = socket.inet_pton(socket.AF_INET if qtype == 1 else socket.AF_INET6,
                                "192.0.2.1" if qtype == 1 else "2001:db8::1")
        answers = b"\xc0\x0c" + struct.pack("!HHIH", qtype, 1, 60, len(data)) + data
        count = 1
    flags = 0x8180 | rcode  # QR, RD, RA
    return struct.pack("!HHHHHH", ident, flags, qd, count, 0, 0) + question + answers


class _Dns(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        answer = dns_answer(data, self.server.rcode)  # type: ignore[attr-defined]
        if answer is not None:
            sock.sendto(answer, self.client_address)


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        sock.sendto(data, self.client_address)


class _Smtp(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        banner = self.server.banner  # type: ignore[attr-defined]
        self.wfile.write(banner)
        if not banner.startswith(b"220"):
            return
        line = self.rfile.readline()
        if line.upper().startswith(b"HELO "):
            self.server.helos.append(line.strip().decode())  # type: ignore[attr-defined]
            self.wfile.write(b"250-mail.example.org\r\n250 pleased to meet you\r\n")
        else:
            self.wfile.write(b"500 what?\r\n")
        if self.rfile.readline().upper().startswith(b"QUIT"):
            self.wfile.write(b"221 bye\r\n")


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def server(kind: str, address: str, port: int) -> socketserver.BaseServer:
    """A server of ``kind`` on address:port (not started)."""
    udp = kind in ("dns", "dns-refuse", "udp")
    base = socketserver.ThreadingUDPServer if udp else socketserver.ThreadingTCPServer
    handler = {"dns": _Dns, "dns-refuse": _Dns, "udp": _Echo}.get(kind, _Smtp)

    class Server(base):  # type: ignore[valid-type,misc]
        address_family = _family(address)
        allow_reuse_address = True
        daemon_threads = True

    srv = Server((address, port), handler)
    srv.rcode = 5 if kind == "dns-refuse" else 0  # type: ignore[attr-defined]
    srv.banner = b"554 go away\r\n" if kind == "smtp-busy" else b"220-mail.example.org ESMTP\r\n220 ready\r\n"  # type: ignore[attr-defined]
    srv.helos = []  # type: ignore[attr-defined]
    return srv


def start(kind: str, address: str, port: int) -> socketserver.BaseServer:
    srv = server(kind, address, port)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


if __name__ == "__main__":
    srv = server(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    print("ready", flush=True)
    srv.serve_forever()
