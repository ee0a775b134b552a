"""keepalived's other checkers (issue 21) against real servers on loopback: dns, udp, smtp, ping, file,
a command's dynamic weight, HTTP digest, connect_ip/bindto, several checks per real server; their config."""

from __future__ import annotations

import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from check_servers import dns_answer, start
from kanotify.config.schema import parse_config
from kanotify.daemon import checks
from kanotify.errors import ConfigError
from kanotify.model import HealthCheck
from test_health import FAST, Run, free_port


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    r = Run(tmp_path)
    try:
        yield r
    finally:
        r.close()


def config(port: int, *checks_toml: str, real: str = "127.0.0.1", protocol: str = "tcp", weight: int = 1) -> str:
    tables = "".join(f"\n      [[instance.service.real.check]]\n      {c}\n      {FAST}\n" for c in checks_toml)
    return f"""
[[instance]]
name = "VI_1"
  [[instance.service]]
  protocol = "{protocol}"
  address = "127.0.0.1"
  port = {port}
    [[instance.service.real]]
    address = "{real}"
    forward = "nat"
    weight = {weight}{tables}"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def real_up(run: Run) -> bool:
    return not run.health.is_down(*next(iter(run.health._by_real)))


# --------------------------------------------------------------------------- dns


def test_dns_query_is_keepaliveds() -> None:
    query = checks.dns_query(HealthCheck("dns", dns_type="AAAA", dns_name="www.example.com"), 0x1234)
    assert query == (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x03com\x00\x00\x1c\x00\x01")
    root = checks.dns_query(HealthCheck("dns"), 1)  # keepalived's default: SOA of the root
    assert root.endswith(b"\x00\x00\x06\x00\x01") and len(root) == 12 + 1 + 4
    assert dns_answer(query) is not None and dns_answer(query)[3] & 0xF == 0  # type: ignore[index]


def test_dns_up_with_any_answer_down_on_rcode_and_on_a_closed_port(run: Run) -> None:
    port = free_udp_port()
    srv = start("dns", "127.0.0.1", port)
    try:
        run.configure(config(port, 'type = "dns"\n      dns_type = "A"\n      dns_name = "example.com"', protocol="udp"))
        run.wait(lambda: run.target().checks >= 2)
        assert run.target().up and run.target().last_error is None
    finally:
        srv.shutdown()
        srv.server_close()
    run.wait(lambda: not run.target().up)  # nothing listens: ICMP port unreachable
    assert run.target().last_error == "connection refused"
    refuse = start("dns-refuse", "127.0.0.1", port)
    try:
        run.wait(lambda: run.target().checks >= run.target().checks + 0 and "rcode" in (run.target().last_error or ""))
        assert run.target().last_error == "DNS error rcode 5" and not run.target().up
    finally:
        refuse.shutdown()
        refuse.server_close()


# --------------------------------------------------------------------------- udp


def test_udp_echo_up_closed_port_down_silence_up_unless_a_reply_is_required(run: Run) -> None:
    port = free_udp_port()
    srv = start("udp", "127.0.0.1", port)
    try:
        run.configure(config(port, 'type = "udp"\n      payload = "6b 61 6e"\n      reply = "6b61"', protocol="udp"))
        run.wait(lambda: run.target().checks >= 2)
        assert run.target().up and run.target().last_error is None
        run.configure(config(port, 'type = "udp"\n      payload = "6b 61 6e"\n      reply = "ffff"', protocol="udp"))
        run.wait(lambda: not run.target().up)
        assert run.target().last_error == "reply 6b616e does not start with ffff"
    finally:
        srv.shutdown()
        srv.server_close()
    run.configure(config(port, 'type = "udp"', protocol="udp"))
    run.wait(lambda: run.target().checks >= 1 and run.target().last_error == "connection refused")
    # a port that takes the datagram and says nothing: up (keepalived's default), down with require_reply
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as quiet:
        quiet.bind(("127.0.0.1", 0))
        qport = quiet.getsockname()[1]
        run.configure(config(qport, 'type = "udp"', protocol="udp"))
        run.wait(lambda: run.target().up and run.target().checks >= 1 and qport == run.target().port)
        first = quiet.recv(100)
        assert first == checks.DEFAULT_UDP_PAYLOAD == b"keepalived check - keepalived ch"
        run.configure(config(qport, 'type = "udp"\n      require_reply = true', protocol="udp"))
        run.wait(lambda: not run.target().up)
        assert run.target().last_error == "no reply within 0.5s"


# --------------------------------------------------------------------------- smtp


def test_smtp_banner_and_helo(run: Run) -> None:
    port = free_port()
    srv = start("smtp", "127.0.0.1", port)
    try:
        run.configure(config(port, 'type = "smtp"\n      helo_name = "director.example.org"'))
        run.wait(lambda: run.target().checks >= 1)
        assert run.target().up and run.target().last_error is None
        assert srv.helos[0] == "HELO director.example.org"  # type: ignore[attr-defined]
    finally:
        srv.shutdown()
        srv.server_close()
    busy = start("smtp-busy", "127.0.0.1", port)
    try:
        run.wait(lambda: not run.target().up)
        assert run.target().last_error == "banner b'554 go away', expected 220"
    finally:
        busy.shutdown()
        busy.server_close()


# --------------------------------------------------------------------------- ping


def test_ping_loopback_up(run: Run) -> None:
    run.configure(config(80, 'type = "ping"'))
    run.wait(lambda: run.target().checks >= 2)
    assert run.target().up and run.target().last_error is None


# --------------------------------------------------------------------------- file


@pytest.mark.parametrize("text, weight, reverse, up, real_weight", [
    ("0\n", 1, False, True, None),  # 0: the configured weight
    ("", 0, False, True, None),
    ("1\n", 0, False, False, None),  # weight 0: non-zero is DOWN
    ("0", 0, True, False, None),  # reverse: zero is DOWN
    ("5", 2, False, True, 20),  # 10 + 5 x 2
    ("0x3", 1, True, True, 7),  # strtol base 0, reverse subtracts
    ("-127", 2, False, False, None),  # -254: DOWN
])
def test_file_check_is_track_files(run: Run, tmp_path: Path, text: str, weight: int, reverse: bool, up: bool,
                                   real_weight: int | None) -> None:
    path = tmp_path / "state"
    path.write_text(text)
    run.configure(config(80, f'type = "file"\n      file = "{path}"\n      weight = {weight}\n      '
                             f'reverse = {"true" if reverse else "false"}', weight=10))
    run.wait(lambda: run.target().checks >= 3)
    assert run.target().up is up
    key = next(iter(run.health._by_real))
    assert run.health.weight_of(*key) == real_weight
    assert run.health.down_now().weight_of(*key) == real_weight


def test_file_number_is_strtol() -> None:
    assert [checks.file_number(p) for p in ("/nonexistent/x",)] == [0]


# --------------------------------------------------------------------------- command: misc_dynamic


def test_command_dynamic_weight(run: Run, tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.write_text("7")
    script = tmp_path / "check.sh"
    script.write_text(f"#!/bin/sh\nexit $(cat {code})\n")
    script.chmod(0o755)
    run.configure(config(80, f'type = "command"\n      command = ["{script}"]\n      dynamic = true', weight=3))
    run.wait(lambda: run.target().checks >= 1)
    key = next(iter(run.health._by_real))
    assert run.target().up and run.health.weight_of(*key) == 5
    assert [str(c).split(" (")[0] for c in run.changes] == ["127.0.0.1:80 of tcp 127.0.0.1:80 UP weight 5"]
    code.write_text("0")  # exit 0: the configured weight again
    run.wait(lambda: run.health.weight_of(*key) is None)
    assert run.changes[-1].weight == 3 and run.changes[-1].up
    code.write_text("1")  # exit 1: a failure, DOWN after 1 + retry
    run.wait(lambda: not run.target().up)
    assert run.target().last_error == "exit status 1" and not run.changes[-1].up
    # without dynamic, exit 7 is a failure
    code.write_text("7")
    run.configure(config(80, f'type = "command"\n      command = ["{script}"]', weight=3))
    run.wait(lambda: run.target().checks >= 8 and run.target().last_error == "exit status 7")
    assert not run.target().up


# --------------------------------------------------------------------------- http digest, connect_ip, bindto


class _Page(BaseHTTPRequestHandler):
    body = b"hello world\n"
    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:  # noqa: N802
        _Page.seen.append((self.client_address[0], self.headers.get("Host")))
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def page() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.2", 0), _Page)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def test_http_digest_address_and_source(run: Run, page: ThreadingHTTPServer) -> None:
    port = page.server_address[1]
    digest = hashlib.md5(_Page.body).hexdigest()
    # the real server is 127.0.0.1, where nothing listens: connect_ip sends the check to 127.0.0.2
    run.configure(config(port, f'type = "http"\n      address = "127.0.0.2"\n      source = "127.0.0.3"\n      '
                               f'host = "www.example.org"\n      digest = "{digest.upper()}"'))
    run.wait(lambda: run.target().checks >= 1)
    assert run.target().up and run.target().last_error is None
    assert _Page.seen[-1] == ("127.0.0.3", "www.example.org")
    run.configure(config(port, 'type = "http"\n      address = "127.0.0.2"\n      digest = "' + "0" * 32 + '"'))
    run.wait(lambda: not run.target().up)
    assert run.target().last_error == f"digest {digest}, expected {'0' * 32}"


def test_tcp_address_and_source(run: Run, page: ThreadingHTTPServer) -> None:
    port = page.server_address[1]
    run.configure(config(port, 'type = "tcp"\n      address = "127.0.0.2"\n      source = "127.0.0.4"'))
    run.wait(lambda: run.target().checks >= 2)
    assert run.target().up
    run.configure(config(port, 'type = "tcp"'))  # the real server's own address: refused
    run.wait(lambda: not run.target().up)
    assert run.target().last_error == "connection refused"


# --------------------------------------------------------------------------- several checks


def test_several_checks_up_only_when_all_pass(run: Run, tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    flag.write_text("0")
    run.configure(config(80, 'type = "ping"', f'type = "file"\n      file = "{flag}"\n      weight = 0'))
    assert len(run.health.targets) == 2
    run.wait(lambda: all(t.checks >= 1 for t in run.health.targets.values()))
    assert real_up(run) and run.changes == []
    flag.write_text("1")
    run.wait(lambda: not real_up(run))
    assert [c.up for c in run.changes] == [False]
    assert {t.check.type: t.up for t in run.health.targets.values()} == {"ping": True, "file": False}
    flag.write_text("0")
    run.wait(lambda: real_up(run))
    assert [c.up for c in run.changes] == [False, True]


# --------------------------------------------------------------------------- config


SERVICE = """
[[instance]]
name = "VI_1"
  [[instance.service]]
  protocol = "tcp"
  address = "192.0.2.100"
  port = 80
{service}
    [[instance.service.real]]
    address = "192.0.2.21"
{real}"""


def problem(service: str = "", real: str = "") -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(SERVICE.format(service=service, real=real))
    return str(err.value)


def test_config_keys_parse() -> None:
    cfg = parse_config(SERVICE.format(service='  [[instance.service.check]]\n  type = "ping"\n'
                                              '  [[instance.service.check]]\n  type = "dns"\n  dns_name = "."\n',
                                      real=""))
    spec = cfg.instances[0].services[0]
    assert [c.type for c in spec.checks_for(spec.reals[0].key)] == ["ping", "dns"]
    assert spec.checks_for(spec.reals[0].key)[1].dns_name == ""


@pytest.mark.parametrize("service, real, expected", [
    ('  [instance.service.check]\n  type = "tcp"\n  digest = "' + "0" * 32 + '"\n', "",
     "check.digest: expected no digest: it is for http and https checks, this check is tcp"),
    ('  [instance.service.check]\n  type = "http"\n  digest = "abc"\n', "",
     'check.digest: expected an MD5 digest: 32 hex digits (as keepalived\'s genhash prints it), got "abc"'),
    ('  [instance.service.check]\n  type = "dns"\n  dns_type = "PTR"\n', "", "check.dns_type: expected"),
    ('  [instance.service.check]\n  type = "udp"\n  payload = "xyz"\n', "",
     'check.payload: expected bytes as hex digits'),
    ('  [instance.service.check]\n  type = "file"\n', "", "check.type: expected a file key too"),
    ('  [instance.service.check]\n  type = "file"\n  file = "x"\n', "", 'check.file: expected an absolute path'),
    ('  [instance.service.check]\n  type = "file"\n  file = "/x"\n  weight = 300\n', "",
     "check.weight: expected an integer -254..254"),
    ('  [instance.service.check]\n  type = "tcp"\n  source = "2001:db8::1"\n', "",
     "check.source: expected an IPv4 source address like the real server 192.0.2.21, got 2001:db8::1"),
    ('  [instance.service.check]\n  type = "ping"\n  port = 80\n', "", "check.port: expected no port"),
    ('  [[instance.service.check]]\n  type = "ping"\n', '    [instance.service.real.check]\n    timeout = 1\n',
     "real[0].check: expected [[instance.service.real.check]] tables: the service has several checks"),
    ("", '    [[instance.service.real.check]]\n    type = "ping"\n    [[instance.service.real.check]]\n'
         '    type = "tcp"\n    on_failure = "remove"\n',
     'real[0].check[1].on_failure: expected on_failure = "drain" as in instance[0].service[0].real[0].check[0]'),
    ("", '    check = []\n', "real[0].check: expected at least one check table"),
])
def test_config_problems(service: str, real: str, expected: str) -> None:
    assert expected in problem(service, real)
