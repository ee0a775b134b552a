"""The [bgp] daemon read-only: parsers on outputs captured from BIRD 2.0.12 and FRR 8.4, the reader's
commands, doctor's [bgp] rows and status's ``bgp`` (issue 23).  The same against live daemons:
tests/kernel/guest/test_guest_bgp_daemons.py.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import pytest

from kanotify.backends.bgpd import (
    BgpReader,
    BgpReadError,
    BgpSession,
    bird_sessions,
    parse_bird_bfd,
    parse_bird_protocol_all,
    parse_bird_protocols,
    parse_bird_routes,
    parse_frr_advertised,
    parse_frr_bfd,
    parse_frr_running,
    parse_frr_summary,
)
from kanotify.config.schema import parse_config
from kanotify.config.values import BgpSpec
from kanotify.keepalived.doctor_bgp import bgp_rows
from kanotify.model import IPInterface, Link
from kanotify.status import _format_bgp, collect_bgp

OUT = Path(__file__).parent / "bgp_outputs"


def out(name: str) -> str:
    return (OUT / name).read_text()


# --------------------------------------------------------------------------- parsers


def test_bird_protocols_and_sessions() -> None:
    rows = parse_bird_protocols(out("rt-show-protocols.txt"))
    assert [(r.name, r.proto, r.state) for r in rows] == [
        ("device1", "Device", "up"), ("kernel1", "Kernel", "up"), ("bfd1", "BFD", "up"),
        ("d1", "BGP", "up"), ("d2", "BGP", "up"), ("d3", "BGP", "start")]
    assert bird_sessions(rows) == [BgpSession("d1", "Established", "04:38:28.288"),
                                   BgpSession("d2", "Established", "04:38:28.954"),
                                   BgpSession("d3", "Connect", "04:38:27.298")]
    after = bird_sessions(parse_bird_protocols(out("rt-show-protocols-after-kill.txt")))
    assert [(s.name, s.state) for s in after] == [("d1", "Established"), ("d2", "Active"), ("d3", "Connect")]
    director = parse_bird_protocols(out("d1-show-protocols.txt"))
    assert [(r.name, r.proto) for r in director][1] == ("kanotify_vips", "Direct")  # a name wider than the column


def test_bird_protocol_all_graceful_restart_and_neighbor() -> None:
    off = parse_bird_protocol_all(out("d1-show-protocols-all-uplink.txt"))
    assert off["neighbor"] == "198.51.100.1" and off["graceful_restart"] is False
    assert off["local_capabilities"] == ["Multiprotocol", "Route refresh", "4-octet AS numbers", "Enhanced refresh"]
    on = parse_bird_protocol_all(out("d1-gr-show-protocols-all-uplink.txt"))
    assert on["graceful_restart"] is True and "Long-lived graceful restart" in on["local_capabilities"]


def test_bird_routes_and_bfd() -> None:
    assert parse_bird_routes(out("d1-show-route-export.txt")) == [("192.0.2.10/32", "kav0")]
    assert parse_bird_routes(out("d1-show-route-direct.txt")) == [("192.0.2.10/32", "kav0")]
    assert [p for p, _ in parse_bird_routes(out("rt-show-route-all.txt"))] == ["192.0.2.10/32"]
    assert parse_bird_bfd(out("d1-show-bfd.txt")) == {"198.51.100.1": "Up"}
    assert parse_bird_bfd(out("d1-nobfd-show-bfd.txt")) == {}


def test_frr_summary_running_config_bfd_and_advertised() -> None:
    assert parse_frr_summary(out("d2-bgp-summary.json")) == [
        BgpSession("198.51.100.1", "Established", "00:00:06", "198.51.100.1")]
    assert parse_frr_summary("{}") == [] and parse_frr_summary("% BGP instance not found") == []
    running = parse_frr_running(out("d2-running-config.txt"), "kav0")
    assert running["graceful_restart"] is False and running["exports_interface"] is True
    assert running["bfd_neighbors"] == {"198.51.100.1"} and not running["redistributes_everything"]
    assert parse_frr_running(out("d2-running-config.txt"), "kav1")["exports_interface"] is False
    default = parse_frr_running("router bgp 65001\n neighbor 192.0.2.1 remote-as 65000\n"
                                " address-family ipv4 unicast\n  redistribute connected\n  network 192.0.2.10/32\n",
                                "kav0")
    assert default["graceful_restart"] is True  # FRR's default is helper mode: not "disabled"
    assert default["redistributes_everything"] and default["networks"] == {"192.0.2.10/32"}
    assert parse_frr_bfd(out("d2-bfd-peers.json")) == {"198.51.100.1": "up"}
    assert parse_frr_advertised(out("d2-advertised.json")) == {"192.0.2.10/32"}


# --------------------------------------------------------------------------- the reader's commands


class Daemon:
    """A fake runner answering birdc/vtysh commands from the captured outputs."""

    def __init__(self, answers: dict[str, str], code: int = 0) -> None:
        self.answers = answers
        self.code = code
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> tuple[int, str]:
        self.calls.append(list(argv))
        if argv[0] == "vtysh":
            command = argv[argv.index("-c") + 1]
        else:
            rest = list(argv[2:])  # after "birdc -r"
            command = " ".join(rest[2:] if rest[:1] == ["-s"] else rest)
        if command in self.answers:
            return self.code, self.answers[command]
        for key, text in self.answers.items():
            if command.endswith(key):
                return self.code, text
        return 0, ""


BIRD = {
    "show protocols": out("d1-show-protocols.txt"),
    "show route protocol kanotify_vips": out("d1-show-route-direct.txt"),
    "show protocols all uplink": out("d1-show-protocols-all-uplink.txt"),
    "show route export uplink": out("d1-show-route-export.txt"),
    "show bfd sessions": out("d1-show-bfd.txt"),
}
FRR = {
    "show bgp summary json": out("d2-bgp-summary.json"),
    "show running-config": out("d2-running-config.txt"),
    "advertised-routes json": out("d2-advertised.json"),
    "show bfd peers json": out("d2-bfd-peers.json"),
}


def test_bird_reader_asks_restricted_and_reads_the_wiring() -> None:
    daemon = Daemon(BIRD)
    wiring = BgpReader(BgpSpec("kav0", "bird", "/run/bird/bird.ctl"), daemon).wiring("kav0")
    assert all(call[:4] == ["birdc", "-r", "-s", "/run/bird/bird.ctl"] for call in daemon.calls), daemon.calls
    assert wiring["sessions"] == [BgpSession("uplink", "Established", "04:38:28.288")]
    assert wiring["exported"] == {"uplink": {"192.0.2.10/32"}} and wiring["exports_interface"] is True
    assert wiring["graceful_restart"] is False and wiring["bfd"] == {"uplink": "Up"}


def test_frr_reader_uses_vtysh_show_commands_only() -> None:
    daemon = Daemon(FRR)
    wiring = BgpReader(BgpSpec("kav0", "frr", "/run/frr"), daemon).wiring("kav0")
    assert all(c[:3] == ["vtysh", "--vty_socket", "/run/frr"] and c[4].startswith("show ") for c in daemon.calls)
    assert wiring["exported"] == {"198.51.100.1": {"192.0.2.10/32"}} and wiring["bfd"] == {"198.51.100.1": "up"}
    assert wiring["graceful_restart"] is False and wiring["exports_interface"] is True


def test_unreachable_daemon_is_an_error_naming_the_command() -> None:
    text = "Unable to connect to server control socket (/nonexistent): No such file or directory\n"
    with pytest.raises(BgpReadError, match=r"birdc -r -s /nonexistent show protocols: Unable to connect"):
        BgpReader(BgpSpec("kav0", "bird", "/nonexistent"), Daemon({"show protocols": text}, code=1)).sessions()


# --------------------------------------------------------------------------- doctor rows


@dataclasses.dataclass
class Host:
    sysctls: dict[str, str]
    addrs: list[str]

    def sysctl(self, key: str) -> str | None:
        return self.sysctls.get(key)

    def interfaces(self) -> list[str]:
        return ["lo", "eth0", "kav0"]

    def addresses(self, dev: str) -> list[IPInterface]:
        return [ipaddress.ip_interface(a) for a in self.addrs] if dev == "kav0" else []

    def ipvs(self) -> tuple[str, str]:
        return ("loaded", "")

    def keepalived_test(self, path: str, config_id: str | None) -> tuple[int, list[str]] | None:
        return None


@dataclasses.dataclass
class Facts:
    link_: Link | None
    wiring_: dict[str, object] | Exception

    def link(self, name: str) -> Link | None:
        return self.link_

    def wiring(self, spec: BgpSpec) -> dict[str, object]:
        if isinstance(self.wiring_, Exception):
            raise self.wiring_
        return self.wiring_


ANYCAST = """
[sysctl]
"net.ipv4.vs.sloppy_tcp" = 1
[bgp]
interface = "kav0"
[[instance]]
name = "ANYCAST"
  [[instance.vip]]
  address = "192.0.2.10/32"
  dev = "kav0"
  [[instance.service]]
  protocol = "tcp"
  address = "192.0.2.10"
  port = 7
  scheduler = "{scheduler}"
    [[instance.service.real]]
    address = "198.51.100.21"
"""


def rows(*, scheduler: str = "mh", sloppy: str = "1", link: Link | None = Link("kav0"), addrs: Sequence[str] = (
        "192.0.2.10/32",), wiring: dict[str, object] | Exception | None = None, sync: object = None,
         ) -> dict[str, str]:
    config = parse_config(ANYCAST.format(scheduler=scheduler), "kanotify.toml")
    if sync is not None:
        config = dataclasses.replace(config, sync_daemon=sync)  # type: ignore[arg-type]
    facts = Facts(link, wiring if wiring is not None else BgpReader(BgpSpec("kav0"), Daemon(BIRD)).wiring("kav0"))
    found = bgp_rows(config, Host({"net.ipv4.vs.sloppy_tcp": sloppy}, list(addrs)), facts)
    assert all(r[1] == "bgp" for r in found)
    return {r[2]: r[0] for r in found}


def test_doctor_bgp_rows_pass_on_the_shipped_wiring() -> None:
    found = rows()
    assert found == {
        "dummy link kav0 (up, no ARP)": "pass",
        "bird sessions: uplink Established": "pass",
        "uplink is sent exactly the VIPs on kav0: 192.0.2.10/32": "pass",
        "graceful restart off": "pass",
        "BFD up on every session": "pass",
    }  # sloppy_tcp and the sync mode: rows of their own (test_doctor.py), one row per fact
    assert parse_config('[[instance]]\nname = "A"\n').bgp is None
    assert bgp_rows(parse_config('[[instance]]\nname = "A"\n'), Host({}, []), Facts(None, {})) == []


def fails(found: dict[str, str]) -> list[str]:
    return [what for what, status in found.items() if status == "fail"]


def test_doctor_bgp_rows_fail_what_breaks_the_promise() -> None:
    gr = BgpReader(BgpSpec("kav0"), Daemon({**BIRD, "show protocols all uplink": out(
        "d1-gr-show-protocols-all-uplink.txt"), "show bfd sessions": out("d1-nobfd-show-bfd.txt")})).wiring("kav0")
    assert [w.split(":")[0] for w in fails(rows(wiring=gr))] == [
        "graceful restart is offered", "BFD not up on uplink (none)"]
    assert fails(rows(addrs=["192.0.2.10/32", "192.0.2.11/32"])) == [
        "bound on kav0 but not exported to uplink: 192.0.2.11/32"]
    assert fails(rows(link=Link("kav0", "veth", noarp=False)))[0].startswith("kav0 is a veth link, not a dummy")
    assert rows(link=None)["kav0 does not exist yet: kanotify creates it (dummy, up, no ARP) on its next run"] == "warn"
    assert [s for w, s in rows(scheduler="wlc").items() if w.startswith("ECMP moves flows")] == ["warn"]
    assert fails(rows(wiring=BgpReadError("birdc -r show protocols: Unable to connect"))) == [
        "cannot ask bird: birdc -r show protocols: Unable to connect"]
    assert rows(addrs=[])["no VIP bound on kav0 now: cannot see whether bird exports it"] == "warn"


# --------------------------------------------------------------------------- status


def test_status_bgp_sessions_and_text() -> None:
    config = parse_config(ANYCAST.format(scheduler="mh"))
    report = collect_bgp(config, {"kav0": Link("kav0")}, Daemon(BIRD))
    assert report == {"daemon": "bird", "interface": {"name": "kav0", "exists": True, "kind": "dummy", "up": True,
                                                      "noarp": True},
                      "sessions": [{"name": "uplink", "state": "Established", "since": "04:38:28.288"}], "error": None}
    assert _format_bgp(report) == ["bgp (bird, read-only; VIPs on kav0: dummy, up, no ARP):",
                                   "  uplink           Established  since 04:38:28.288"]
    down = collect_bgp(config, {}, Daemon({"show protocols": "Unable to connect to server control socket"}, code=1))
    assert down["sessions"] == [] and down["error"].startswith("birdc -r show protocols: Unable to connect")
    assert _format_bgp(down)[0] == "bgp (bird, read-only; VIPs on kav0: missing):"
