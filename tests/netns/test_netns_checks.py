"""keepalived's other checkers (issue 21) in network namespaces, against real server processes.

The checker (``health_driver.py``) runs in namespace ``a`` (192.0.2.1, 2001:db8::1), the
servers in ``b`` (192.0.2.2, 2001:db8::2) over a veth: a DNS server, an SMTP server and a
UDP echo server (``tests/check_servers.py``), ``health_server.py``'s HTTP server (it logs
the Host header and the peer address), and ICMP echo by ``b``'s own kernel for addresses
that are added and removed.  Each goes UP -> DOWN -> UP with keepalived's retry semantics:
DOWN only after 1 + ``retry`` consecutive failures ``retry_delay`` apart.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from netns_support import Netns, Pair
from test_netns_health import SLACK, Checker, Procs, Servers, checks_at_least, procs, toml_table, write_config

pytestmark = pytest.mark.root

TESTS = Path(__file__).resolve().parent.parent
#: retry 2, 0.3 s apart: DOWN 0.6 s after the first failure at the earliest
FAST: dict[str, Any] = {"interval": 0.2, "timeout": 0.5, "retry": 2, "retry_delay": 0.3}
__all__ = ["procs"]  # the fixture, used by name


def service(vip: str, port: int, *reals: str, protocol: str = "tcp") -> str:
    return f'[[instance.service]]\nprotocol = "{protocol}"\naddress = "{vip}"\nport = {port}\n' + "".join(reals)


def real(address: str, port: int, *checks: dict[str, Any]) -> str:
    text = f'[[instance.service.real]]\naddress = "{address}"\nport = {port}\nforward = "nat"\n'
    return text + "".join("[" + toml_table("instance.service.real.check]", {**FAST, **c}) for c in checks)


class Server:
    """``check_servers.py KIND ADDRESS PORT`` in ``ns``; killed by pid (SIGKILL) and started again."""

    def __init__(self, procs: Procs, ns: Netns, kind: str, address: str, port: int) -> None:
        self.procs, self.ns, self.argv = procs, ns, [kind, address, str(port)]
        self.proc: subprocess.Popen[Any] | None = None
        self.start()

    def start(self, kind: str | None = None) -> None:
        if kind is not None:
            self.argv[0] = kind
        self.proc = self.procs.start(["ip", "netns", "exec", self.ns.name, sys.executable,
                                      str(TESTS / "check_servers.py"), *self.argv], stdout=subprocess.PIPE)
        assert self.proc.stdout is not None and self.proc.stdout.readline() == b"ready\n"

    def kill(self) -> float:
        assert self.proc is not None
        self.procs.kill(self.proc)
        return time.monotonic()


def down_then_up(checker: Checker, real_: str, stop: Any, start: Any, error: str) -> None:
    """``stop()``: DOWN after 1 + retry failures (not before retry x retry_delay), ``error`` its reason;
    ``start()``: UP again after one success."""
    index = len(checker.events)
    stopped = stop()
    change = checker.change(real_, False, 10, index)
    took = change["t"] - stopped
    assert FAST["retry"] * FAST["retry_delay"] <= took <= (
        FAST["interval"] + FAST["retry"] * FAST["retry_delay"] + (1 + FAST["retry"]) * FAST["timeout"] + SLACK), took
    assert error in change["why"], change
    index = len(checker.events)
    started = start()
    up = checker.change(real_, True, 10, index)
    assert up["t"] - started <= FAST["interval"] + FAST["timeout"] + SLACK


def test_dns_over_ipv4_and_ipv6(pair: Pair, procs: Procs, tmp_path: Path) -> None:
    v4 = Server(procs, pair.b, "dns", "192.0.2.2", 53)
    v6 = Server(procs, pair.b, "dns", "2001:db8::2", 53)
    check = {"type": "dns", "dns_type": "A", "dns_name": "www.example.com"}
    config = write_config(tmp_path, service("192.0.2.100", 53, real("192.0.2.2", 53, check), protocol="udp"),
                          service("2001:db8::100", 53, real("2001:db8::2", 53, {**check, "dns_type": "AAAA"}),
                                  protocol="udp"))
    checker = Checker(procs, pair.a, config)
    snap = checker.until(checks_at_least(2, "192.0.2.2:53", "[2001:db8::2]:53"), 10, "two checks each")
    assert snap["192.0.2.2:53"]["up"] and snap["[2001:db8::2]:53"]["up"] and checker.changes() == []
    # the server gone: ICMP port unreachable, "connection refused"
    down_then_up(checker, "192.0.2.2:53", v4.kill, lambda: (v4.start(), time.monotonic())[1], "connection refused")
    down_then_up(checker, "[2001:db8::2]:53", v6.kill, lambda: (v6.start(), time.monotonic())[1],
                 "connection refused")
    # an answer with an error RCODE is DOWN too (keepalived: rcode != 0)
    down_then_up(checker, "192.0.2.2:53", lambda: (v4.kill(), v4.start("dns-refuse"), time.monotonic())[2],
                 lambda: (v4.kill(), v4.start("dns"), time.monotonic())[2], "DNS error rcode 5")


def test_udp_echo_and_a_closed_port(pair: Pair, procs: Procs, tmp_path: Path) -> None:
    echo = Server(procs, pair.b, "udp", "192.0.2.2", 7)
    config = write_config(tmp_path, service("192.0.2.100", 7, real("192.0.2.2", 7, {
        "type": "udp", "payload": "70 69 6e 67", "reply": "7069"}), protocol="udp"))
    checker = Checker(procs, pair.a, config)
    snap = checker.until(checks_at_least(2, "192.0.2.2:7"), 10, "two checks")
    assert snap["192.0.2.2:7"]["up"]
    down_then_up(checker, "192.0.2.2:7", echo.kill, lambda: (echo.start(), time.monotonic())[1],
                 "connection refused")


def test_smtp_banner_and_helo(pair: Pair, procs: Procs, tmp_path: Path) -> None:
    smtp = Server(procs, pair.b, "smtp", "192.0.2.2", 25)
    config = write_config(tmp_path, service("192.0.2.100", 25, real("192.0.2.2", 25, {"type": "smtp"})))
    checker = Checker(procs, pair.a, config)
    snap = checker.until(checks_at_least(2, "192.0.2.2:25"), 10, "two checks")
    assert snap["192.0.2.2:25"]["up"]
    down_then_up(checker, "192.0.2.2:25", smtp.kill, lambda: (smtp.start(), time.monotonic())[1],
                 "connection refused")
    down_then_up(checker, "192.0.2.2:25", lambda: (smtp.kill(), smtp.start("smtp-busy"), time.monotonic())[2],
                 lambda: (smtp.kill(), smtp.start("smtp"), time.monotonic())[2], "banner b'554 go away'")


def test_ping_an_address_that_goes_away(pair: Pair, procs: Procs, tmp_path: Path) -> None:
    pair.b.ip("addr", "add", "192.0.2.50/24", "dev", "eth0")
    pair.b.ip("addr", "add", "2001:db8::50/64", "dev", "eth0", "nodad")
    config = write_config(tmp_path, service("192.0.2.100", 80, real("192.0.2.50", 80, {"type": "ping"})),
                          service("2001:db8::100", 80, real("2001:db8::50", 80, {"type": "ping"})))
    checker = Checker(procs, pair.a, config)
    snap = checker.until(checks_at_least(2, "192.0.2.50:80", "[2001:db8::50]:80"), 10, "two checks each")
    assert snap["192.0.2.50:80"]["up"] and snap["[2001:db8::50]:80"]["up"]
    for address, prefix, shown in (("192.0.2.50", 24, "192.0.2.50:80"), ("2001:db8::50", 64, "[2001:db8::50]:80")):
        extra = ("nodad",) if ":" in address else ()
        down_then_up(checker, shown,
                     lambda: (pair.b.ip("addr", "del", f"{address}/{prefix}", "dev", "eth0"), time.monotonic())[1],
                     lambda: (pair.b.ip("addr", "add", f"{address}/{prefix}", "dev", "eth0", *extra),
                              time.monotonic())[1], "no echo reply within 0.5s")


def test_http_connect_ip_bindto_virtualhost_digest(pair: Pair, procs: Procs, tmp_path: Path) -> None:
    """The real server 192.0.2.60 does not exist: the check goes to connect_ip 192.0.2.2, from 192.0.2.61."""
    status = tmp_path / "status.json"
    status.write_text("{}")
    servers = Servers(procs, pair.b, tmp_path / "servers.log", f"http:8080:{status}")
    pair.a.ip("addr", "add", "192.0.2.61/24", "dev", "eth0")
    empty = "d41d8cd98f00b204e9800998ecf8427e"  # md5 of the server's empty body, as genhash prints it
    check = {"type": "http", "port": 8080, "address": "192.0.2.2", "source": "192.0.2.61", "source_port": 40061,
             "host": "www.example.org", "digest": empty}
    config = write_config(tmp_path, service("192.0.2.100", 80, real("192.0.2.60", 80, check)))
    checker = Checker(procs, pair.a, config)
    snap = checker.until(checks_at_least(2, "192.0.2.60:80"), 10, "two checks")
    assert snap["192.0.2.60:80"]["up"] and snap["192.0.2.60:80"]["last_error"] is None
    request = servers.events("request")[-1]
    assert (request["peer"], request["host"], request["path"]) == ("192.0.2.61", "www.example.org", "/")
    # a wrong digest is DOWN (the status is 200), the right one UP again
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(config.read_text().replace(empty, "0" * 32))
    down_then_up(checker, "192.0.2.60:80", lambda: checker.reload(wrong), lambda: checker.reload(config),
                 f"digest {empty}, expected {'0' * 32}")


def test_several_checks_on_one_real_server(pair: Pair, procs: Procs, tmp_path: Path) -> None:
    """ping and smtp on one real server: DOWN when either fails, one Change; UP only when both pass."""
    smtp = Server(procs, pair.b, "smtp", "192.0.2.2", 25)
    config = write_config(tmp_path, service("192.0.2.100", 25, real("192.0.2.2", 25, {"type": "ping"},
                                                                    {"type": "smtp"})))
    checker = Checker(procs, pair.a, config)
    checker.until(lambda s: sum(1 for _ in s) > 0 and all(r["checks"] >= 2 for r in s.values()), 10, "two checks")
    down_then_up(checker, "192.0.2.2:25", smtp.kill, lambda: (smtp.start(), time.monotonic())[1],
                 "connection refused")
    assert [c["up"] for c in checker.changes("192.0.2.2:25")] == [False, True]
