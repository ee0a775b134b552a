"""The checks that run as coroutines on the listener's loop (:mod:`kanotify.daemon.health` runs tcp itself).

keepalived 2.2.7's checkers, one coroutine each; every one returns
``(error, weight)``: ``error`` None when the check passed, ``weight`` what a
``command`` check's dynamic exit status (the weight itself) or a ``file``
check's number (added to the configured weight) says, else None.

- ``http``/``https`` (check_http.c): a GET; the status line judged, and with
  ``digest`` the MD5 of the body (everything after the headers, up to the
  close), compared as keepalived's genhash prints it.
- ``dns`` (check_dns.c): a query of ``dns_type``/``dns_name`` with recursion
  desired over UDP; any answer with the query's ID, the answer bit and RCODE 0
  passes -- the answer section is not looked at (keepalived does not either).
- ``udp`` (check_udp.c, layer4.c udp_socket_state): ``payload`` sent on a
  connected socket; an ICMP error (port unreachable: "connection refused")
  fails it, silence until ``timeout`` passes unless ``require_reply``, an
  answer passes unless it does not start with ``reply``.
- ``ping`` (check_ping.c): one ICMP/ICMPv6 echo, over an unprivileged ping
  socket (``net.ipv4.ping_group_range``) or, where that is refused, a raw one.
- ``smtp`` (check_smtp.c): the banner must be 220, ``HELO helo_name`` answered
  250, then QUIT.
- ``file`` (check_file.c, track_file.c): the file's number (strtol base 0, a
  missing or empty file is 0) times ``weight`` (negated with ``reverse``) is
  added to the weight, DOWN at -254 or below; with weight 0, a non-zero number
  (with ``reverse``: zero) is DOWN.
- ``command`` (check_misc.c): exit 0 passes, with ``dynamic`` exit 2..255
  too, setting the weight to exit-2.

``address``, ``source`` and ``source_port`` (connect_ip, bindto, bind_port)
apply to every check that connects.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import itertools
import os
import random
import socket
import ssl
import struct
from typing import Callable

from ..model import DNS_TYPES, HealthCheck, IPAddress

#: keepalived's UDP payload when none is given (layer4.c set_buf: UDP_BUFSIZE bytes of this text, repeated)
DEFAULT_UDP_PAYLOAD = (b"keepalived check - " * 2)[:32]
#: a file check's sum at or below this is DOWN (keepalived's IPVS_WEIGHT_FAULT)
WEIGHT_FAULT = -254
#: the most of an HTTP body read for a digest (a health page, not a download)
DIGEST_LIMIT = 1 << 22

Outcome = tuple[str | None, int | None]
_sequence = itertools.count(1)


#: errors that are this host's problem (no descriptor, no memory, no such local address): raised, so that the
#: health engine does not count them against the real server (its LOCAL_ERRORS, as for tcp)
LOCAL_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EADDRNOTAVAIL})


def _errno_text(exc: OSError) -> str:
    return "connection refused" if isinstance(exc, ConnectionRefusedError) else exc.strerror or str(exc)


def _os_error(exc: OSError, prefix: str = "") -> Outcome:
    """A failed socket call as the check's outcome; this host's own trouble (:data:`LOCAL_ERRORS`) raised instead."""
    if exc.errno in LOCAL_ERRORS:
        raise exc
    return prefix + _errno_text(exc), None


def _bind_to(check: HealthCheck) -> tuple[str, int] | None:
    if check.source is None and not check.source_port:
        return None
    return (str(check.source) if check.source is not None else "", check.source_port)


def _udp_socket(address: IPAddress, port: int, check: HealthCheck) -> socket.socket:
    """A non-blocking UDP socket connected to address:port, bound as the check says, with ICMP errors reported."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        if family == socket.AF_INET:
            sock.setsockopt(socket.SOL_IP, 11, 1)  # IP_RECVERR: host/port unreachable as the next recv's error
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, 25, 1)  # IPV6_RECVERR
        bind = _bind_to(check)
        if bind is not None:
            sock.bind(bind)
        sock.connect((str(address), port))
    except BaseException:
        sock.close()
        raise
    return sock


# ----------------------------------------------------------------------------- http / https


async def http(address: IPAddress, port: int, check: HealthCheck, tls: ssl.SSLContext | None, host: str,
               status_error: Callable[[bytes, HealthCheck], str | None]) -> Outcome:
    writer = None
    try:
        async with asyncio.timeout(check.timeout):
            reader, writer = await asyncio.open_connection(
                str(address), port, ssl=tls, server_hostname=(check.host or str(address)) if tls else None,
                local_addr=_bind_to(check),
            )
            writer.write(f"GET {check.path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: kanotify\r\n"
                         "Connection: close\r\n\r\n".encode())
            line = await reader.readline()
            error = status_error(line, check)
            if error is None and check.digest is not None:
                while await reader.readline() not in (b"\r\n", b"\n", b""):
                    pass
                body = await reader.read(DIGEST_LIMIT)
                digest = hashlib.md5(body, usedforsecurity=False).hexdigest()
                if digest != check.digest:
                    error = f"digest {digest}, expected {check.digest}"
    except TimeoutError:
        error = f"no answer within {check.timeout:g}s"
    except ssl.SSLCertVerificationError as exc:  # which: self-signed, expired, the wrong name...
        error = f"TLS: {exc.reason or 'CERTIFICATE_VERIFY_FAILED'}" + (f" ({exc.verify_message.rstrip('.')})"
                                                                      if exc.verify_message else "")
    except ssl.SSLError as exc:
        error = f"TLS: {exc.reason or exc}"
    except OSError as exc:
        if exc.errno in LOCAL_ERRORS:
            raise
        error = exc.strerror or str(exc)
    except ValueError:  # readline() past the stream's limit: not left unhandled, or the target stays busy
        error = "not an HTTP answer: no line end in the first 64 KiB"
    finally:
        if writer is not None:
            writer.close()
    return error, None


# ----------------------------------------------------------------------------- command


async def command(check: HealthCheck) -> Outcome:
    try:
        proc = await asyncio.create_subprocess_exec(
            *check.command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
        )
    except OSError as exc:
        return f"{check.command[0]}: {exc.strerror}", None
    try:
        code = await asyncio.wait_for(proc.wait(), check.timeout)
    except TimeoutError:
        _kill(proc.pid)  # its own session: the whole job, not only the first process
        await proc.wait()
        return f"killed after {check.timeout:g}s", None
    except asyncio.CancelledError:  # the loop ends (the listener stops): the command must not outlive it
        _kill(proc.pid)
        raise
    if code == 0:
        return None, None
    if check.dynamic and 2 <= code <= 255:
        return None, code - 2  # keepalived's misc_dynamic: the weight is the exit status minus 2
    return (f"exit status {code}" if code > 0 else f"killed by signal {-code}"), None


def _kill(pid: int) -> None:
    try:
        os.killpg(pid, 9)
    except ProcessLookupError:
        pass


# ----------------------------------------------------------------------------- dns


def dns_query(check: HealthCheck, ident: int) -> bytes:
    """check_dns.c dns_make_query: one question, recursion desired, class IN."""
    labels = [label.encode("idna") for label in check.dns_name.split(".") if label]
    qname = b"".join(bytes([len(label)]) + label for label in labels) + b"\0"
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", DNS_TYPES[check.dns_type], 1)


async def dns(address: IPAddress, port: int, check: HealthCheck) -> Outcome:
    loop = asyncio.get_running_loop()
    ident = random.getrandbits(16)
    try:
        sock = _udp_socket(address, port, check)
    except OSError as exc:
        return _os_error(exc, "socket: ")
    try:
        async with asyncio.timeout(check.timeout):
            await loop.sock_sendall(sock, dns_query(check, ident))
            while True:
                data = await loop.sock_recv(sock, 768)
                if len(data) < 12:
                    continue  # too short: keepalived waits on
                rid, flags = struct.unpack_from("!HH", data)
                if rid != ident or not flags & 0x8000:
                    continue  # not the answer to this query
                rcode = flags & 0xF
                return (None if rcode == 0 else f"DNS error rcode {rcode}"), None
    except TimeoutError:
        return f"no answer within {check.timeout:g}s", None
    except OSError as exc:
        return _os_error(exc)
    finally:
        sock.close()


# ----------------------------------------------------------------------------- udp


async def udp(address: IPAddress, port: int, check: HealthCheck) -> Outcome:
    loop = asyncio.get_running_loop()
    try:
        sock = _udp_socket(address, port, check)
    except OSError as exc:
        return _os_error(exc, "socket: ")
    try:
        async with asyncio.timeout(check.timeout):
            await loop.sock_sendall(sock, check.payload or DEFAULT_UDP_PAYLOAD)
            data = await loop.sock_recv(sock, 65535)
        if check.reply and data[:len(check.reply)] != check.reply[:len(data)]:  # the shorter one's bytes compared
            return f"reply {data[:16].hex()} does not start with {check.reply.hex()}", None
        return None, None
    except TimeoutError:
        # layer4.c udp_socket_state: silence is success unless a reply is required
        return (f"no reply within {check.timeout:g}s" if check.require_reply else None), None
    except OSError as exc:
        return _os_error(exc)
    finally:
        sock.close()


# ----------------------------------------------------------------------------- ping


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _ping_socket(family: int) -> tuple[socket.socket, bool]:
    """An ICMP socket: unprivileged (SOCK_DGRAM) where net.ipv4.ping_group_range allows, else raw; (socket, raw)."""
    proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
    flags = socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
    try:
        return socket.socket(family, socket.SOCK_DGRAM | flags, proto), False
    except PermissionError:
        return socket.socket(family, socket.SOCK_RAW | flags, proto), True


async def ping(address: IPAddress, check: HealthCheck) -> Outcome:
    loop = asyncio.get_running_loop()
    v6 = address.version == 6
    family = socket.AF_INET6 if v6 else socket.AF_INET
    try:
        sock, raw = _ping_socket(family)
    except OSError as exc:
        return _os_error(exc, "socket: ")
    try:
        if check.source is not None:
            sock.bind((str(check.source), 0))
        sock.connect((str(address), 0))
        seq = next(_sequence) & 0xFFFF
        ident = random.getrandbits(16)  # a ping socket replaces it with its own (and checks it for us)
        request, reply = (128, 129) if v6 else (8, 0)
        body = b"kanotify ping check"
        header = struct.pack("!BBHHH", request, 0, 0, ident, seq)
        if not v6:  # ICMPv6's checksum is the kernel's (it covers a pseudo-header)
            header = struct.pack("!BBHHH", request, 0, _checksum(header + body), ident, seq)
        async with asyncio.timeout(check.timeout):
            await loop.sock_sendall(sock, header + body)
            while True:
                data = await loop.sock_recv(sock, 2048)
                if raw and not v6:
                    data = data[(data[0] & 0xF) * 4:]  # a raw IPv4 socket gets the IP header too
                if len(data) < 8:
                    continue
                kind, _code, _sum, rid, rseq = struct.unpack_from("!BBHHH", data)
                if kind == reply and rseq == seq and (rid == ident or not raw):
                    return None, None
    except TimeoutError:
        return f"no echo reply within {check.timeout:g}s", None
    except OSError as exc:
        return _os_error(exc)
    finally:
        sock.close()


# ----------------------------------------------------------------------------- smtp


async def smtp(address: IPAddress, port: int, check: HealthCheck) -> Outcome:
    writer = None
    try:
        async with asyncio.timeout(check.timeout):
            reader, writer = await asyncio.open_connection(str(address), port, local_addr=_bind_to(check))
            code, line = await _smtp_reply(reader)
            if code != 220:
                return f"banner {line[:60]!r}, expected 220", None
            writer.write(f"HELO {check.helo_name}\r\n".encode())
            code, line = await _smtp_reply(reader)
            if code != 250:
                return f"HELO answered {line[:60]!r}, expected 250", None
            writer.write(b"QUIT\r\n")
            await writer.drain()
        return None, None
    except TimeoutError:
        return f"no answer within {check.timeout:g}s", None
    except OSError as exc:
        return _os_error(exc)
    except ValueError:
        return "not an SMTP answer: no line end in the first 64 KiB", None
    finally:
        if writer is not None:
            writer.close()


async def _smtp_reply(reader: asyncio.StreamReader) -> tuple[int | None, bytes]:
    """One SMTP reply (its continuation lines ``250-...`` read too): (code, last line)."""
    while True:
        line = await reader.readline()
        if not line:
            return None, b"closed without an answer"
        if len(line) >= 4 and line[3:4] == b"-":
            continue
        return (int(line[:3]) if line[:3].isdigit() else None), line.rstrip()


# ----------------------------------------------------------------------------- file


def file_number(path: str) -> int:
    """track_file.c process_track_file: strtol(base 0) of the first 127 bytes; missing, empty or no number: 0."""
    try:
        with open(path, "rb") as f:
            text = f.read(127).decode("ascii", "replace").strip()
    except OSError:
        return 0
    sign = 1
    if text[:1] in ("+", "-"):
        sign, text = (-1 if text[0] == "-" else 1), text[1:]
    digits = ""
    base = 10
    if text[:2].lower() == "0x":
        base, text = 16, text[2:]
    elif text[:1] == "0" and len(text) > 1:
        base = 8
    for ch in text:
        if ch.isdigit() and int(ch) < base or base == 16 and ch.lower() in "abcdef":
            digits += ch
        else:
            break
    return sign * int(digits, base) if digits else 0


def file(check: HealthCheck) -> Outcome:
    number = file_number(check.file)
    if check.weight == 0:
        if (number != 0) != check.reverse:
            return f"{check.file} says {number}" + (" (reverse: 0 is DOWN)" if check.reverse else ""), None
        return None, None
    total = number * check.weight * (-1 if check.reverse else 1)
    if total <= WEIGHT_FAULT:
        return f"{check.file} says {number}: weight {total} (DOWN at {WEIGHT_FAULT} or below)", None
    return None, total


__all__ = ["DEFAULT_UDP_PAYLOAD", "command", "dns", "dns_query", "file", "file_number", "http", "ping", "smtp", "udp"]
