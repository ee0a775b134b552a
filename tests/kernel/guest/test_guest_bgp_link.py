"""[bgp] interface in a real kernel: kanotify creates the dummy link (up, no ARP), binds the VIP on
it, a second run changes nothing, a link turned down or ARP on is set back, STOP unbinds and keeps
the link, dry-run creates nothing.  In a network namespace of the guest (the host has no dummy driver).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from kanotify.actions import AddLink
from kanotify.backends.link import LinkBackend
from kanotify.model import Link

CONFIG = """
[settings]
state_dir = "{tmp}/state"
journal = "{tmp}/journal.jsonl"
hooks_dir = "{tmp}/hooks.d"
syslog = false
[bgp]
interface = "kav0"
[[instance]]
name = "ANYCAST"
  [[instance.vip]]
  address = "192.0.2.10/32"
  dev = "kav0"
"""


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"bgp{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _kanotify(netns: str, conf: Path, *args: str) -> tuple[int, list[dict[str, object]]]:
    argv = ["ip", "netns", "exec", netns, sys.executable, "-m", "kanotify", "--config", str(conf),
            "--no-daemon", "--json", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    out = json.loads(proc.stdout)
    return proc.returncode, out if isinstance(out, list) else [out]


def _link(netns: str) -> dict[str, object]:
    out = subprocess.run(["ip", "-n", netns, "-j", "-d", "addr", "show", "kav0"], capture_output=True, text=True)
    return json.loads(out.stdout)[0] if out.returncode == 0 else {}


def _actions(records: list[dict[str, object]]) -> list[tuple[str, str]]:
    return [(a["action"], a["status"]) for r in records for a in r["actions"]]  # type: ignore[index,union-attr]


def test_dummy_link_created_bound_idempotent_repaired_and_kept(netns: str, tmp_path: Path) -> None:
    conf = tmp_path / "kanotify.toml"
    conf.write_text(CONFIG.format(tmp=tmp_path))
    code, records = _kanotify(netns, conf, "plan", "--state", "master")
    assert code == 0 and ("create dummy link kav0 (up, no ARP)", "pending") in _actions(records)
    assert _link(netns) == {}, "dry-run created the link"

    code, records = _kanotify(netns, conf, "reconcile", "--state", "master", "--instance", "ANYCAST")
    assert code == 0, records
    assert _actions(records) == [("create dummy link kav0 (up, no ARP)", "applied"),
                                 ("bind 192.0.2.10/32 dev kav0", "applied")]
    link = _link(netns)
    assert link["linkinfo"]["info_kind"] == "dummy"  # type: ignore[index]
    assert {"UP", "NOARP"} <= set(link["flags"])  # type: ignore[arg-type]
    assert [a["local"] for a in link["addr_info"] if a["family"] == "inet"] == ["192.0.2.10"]  # type: ignore[union-attr,index]

    code, records = _kanotify(netns, conf, "reconcile")
    assert code == 0 and all(status == "noop" for _, status in _actions(records)), records

    subprocess.run(["ip", "-n", netns, "link", "set", "kav0", "down", "arp", "on"], check=True)
    code, records = _kanotify(netns, conf, "reconcile")
    assert code == 0 and ("set link kav0 up, ARP off (was down, ARP on)", "applied") in _actions(records)
    assert {"UP", "NOARP"} <= set(_link(netns)["flags"])  # type: ignore[arg-type]

    code, records = _kanotify(netns, conf, "stop", "ANYCAST")
    assert code == 0 and ("remove 192.0.2.10/32 dev kav0", "applied") in _actions(records)
    link = _link(netns)
    assert link, "STOP deleted the link"
    assert not [a for a in link["addr_info"] if a["family"] == "inet"]  # type: ignore[union-attr,index]


def test_link_backend_observes_kind_and_flags_and_add_of_existing_sets_flags(netns: str) -> None:
    subprocess.run(["ip", "-n", netns, "link", "add", "kav0", "type", "dummy"], check=True)
    backend = LinkBackend(netns=netns)
    try:
        assert backend.observe(["kav0", "nothere", "lo"]) == {
            "kav0": Link("kav0", "dummy", up=False, noarp=True), "lo": Link("lo", "", up=False, noarp=False)}
        backend.apply(AddLink(Link("kav0")))  # EEXIST: made up and ARP off instead
        assert backend.observe(["kav0"])["kav0"] == Link("kav0")
        writes = backend.writes
        backend.apply(AddLink(Link("kav0")))
        assert backend.writes == writes + 1  # the create attempt only; the flags were right
    finally:
        backend.close()


def test_listener_recreates_a_deleted_link_and_binds_the_vip_again(netns: str, tmp_path: Path) -> None:
    """``ip link del kav0`` behind kanotify's back: the listener's address watch sees the VIP go and
    its repair creates the link and binds the VIP again (the BGP daemon announces it again)."""
    conf = tmp_path / "kanotify.toml"
    conf.write_text(CONFIG.format(tmp=tmp_path).replace("syslog = false", "syslog = false\nreconcile_interval = 0"))
    code, _ = _kanotify(netns, conf, "reconcile", "--state", "master", "--instance", "ANYCAST")
    assert code == 0
    with open(tmp_path / "listen.log", "wb") as log:
        proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-m", "kanotify", "--config", str(conf),
                                 "listen"], stdout=log, stderr=subprocess.STDOUT)
    try:
        sock = tmp_path / "state" / "control.sock"
        deadline = time.monotonic() + 60
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "listen.log").read_text()
            time.sleep(0.1)
        subprocess.run(["ip", "-n", netns, "link", "del", "kav0"], check=True)
        deleted = time.monotonic()
        while not [a for a in _link(netns).get("addr_info", []) if a["family"] == "inet"]:  # type: ignore[union-attr]
            assert time.monotonic() - deleted < 20, (tmp_path / "listen.log").read_text()
            time.sleep(0.1)
        link = _link(netns)
        assert link["linkinfo"]["info_kind"] == "dummy" and {"UP", "NOARP"} <= set(link["flags"])  # type: ignore[index,arg-type]
        records = [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines()]
        repair = [r for r in records if r.get("record", "final") == "final" and any(
            a["action"] == "create dummy link kav0 (up, no ARP)" and a["status"] == "applied" for a in r["actions"])]
        assert repair, records[-2:]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
