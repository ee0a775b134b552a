"""``kanotify import`` round trip against real keepalived and a real IPVS (inside the UML guest).

For each test config: keepalived's checker process (``keepalived -C``) loads its
own ``virtual_server`` blocks into IPVS in one namespace; ``kanotify import``
turns the same file into TOML, and ``kanotify master`` applies it in another
namespace.  ``ipvsadm-save -n`` (order-normalized) and the thresholds of
``ipvsadm -Ln --thresholds`` must be the same.  kanotify's run is made twice:
the second changes nothing.

keepalived's health checkers would take real servers out as their checks fail;
the namespace routes the documentation prefixes into a dummy device, so a check
hangs until its connect_timeout (several seconds per try) and the table is read
as soon as keepalived has loaded it -- before any checker can have decided.
MISC_CHECKs run /bin/true.  The imported checks are in the TOML kanotify applies
(they change nothing without a listener).

The sync daemon: keepalived's VRRP process (``keepalived -P``) runs the IPVS
sync daemon from ``lvs_sync_daemon`` (or the legacy ``lvs_sync_daemon_interface``)
in one namespace, kanotify the imported ``[sync_daemon]`` in another, and
``ipvsadm -L --daemon`` must list the same daemon in both, in each state
keepalived starts one in: FAULT (its interface is down at start: the backup
daemon) and MASTER (the link comes up, no peer answers: the master daemon).
keepalived with ``lvs_sync_daemon`` without an instance runs both daemons from
its checker process, which import says it cannot map.

Then the checks themselves: for checkers.conf, whose checkers fail or pass
whatever the host (unreachable addresses, /bin/false, /bin/true), keepalived's
checkers and ``kanotify listen`` with the imported checks must leave the same
IPVS table -- removed real servers, drained ones (inhibit_on_failure) and an
``alpha`` one that comes up.  Also here, the pass side of doctor's ip_vs check.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from ipvs_guest_support import run, save, thresholds
from kanotify.config.schema import parse_config
from kanotify.keepalived.importer import import_file

CONFIGS = Path(__file__).resolve().parents[2] / "unit" / "keepalived_configs"
ROUND_TRIP = [
    "seed004.conf", "dr_basic.conf", "fwmark.conf", "group.conf", "includes/main.conf", "conditional.conf",
    "definitions.conf", "seq.conf", "comments_quotes.conf", "legacy.conf", "nat_ipv6.conf", "sync_fifo.conf",
    "sync_defaults.conf", "tunnels.conf", "quorum.conf", "port0.conf",
]
#: configs with a sync daemon, and the instance to import them for (None: the file's first)
SYNC_ROUND_TRIP = [("sync_fifo.conf", None), ("legacy.conf", None), ("sync_defaults.conf", "VI_2")]
CONFIG_ID = "lb1"
KANOTIFY = str(Path(sys.executable).with_name("kanotify"))
SINK_PREFIXES = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    """Two namespaces: ``ka`` for keepalived (documentation prefixes routed into a dummy), ``kn`` for kanotify.

    ``kn`` has veths ``eth0`` and ``eth1``: the interfaces the imported sync daemons name.
    """
    tag = secrets.token_hex(2)
    ka, kn = f"kt-{tag}-ka", f"kt-{tag}-kn"
    made: list[str] = []
    try:
        run(["modprobe", "dummy"])
        for ns in (ka, kn):
            run(["ip", "netns", "add", ns])
            made.append(ns)
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "-n", ka, "link", "add", "sink0", "type", "dummy"])
        run(["ip", "-n", ka, "link", "set", "sink0", "up"])
        for prefix in SINK_PREFIXES:
            run(["ip", "-n", ka, "route", "add", prefix, "dev", "sink0"])
        for dev in ("eth0", "eth1"):
            run(["ip", "-n", kn, "link", "add", dev, "type", "veth", "peer", "name", f"{dev}p"])
            for end in (dev, f"{dev}p"):
                run(["ip", "-n", kn, "link", "set", end, "up"])
        yield ka, kn
    finally:
        _remove(made)


def _normalized(lines: list[str]) -> list[str]:
    return sorted(" ".join(line.split()) for line in lines)


def _wait_for_table(ns: str, services: int, reals: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> list[str]:
    """ipvsadm-save -n of *ns* once it holds the expected numbers of services and real servers."""
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = save(ns)
        if (sum(line.startswith("-A") for line in lines) == services
                and sum(line.startswith("-a") for line in lines) == reals):
            return lines
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    out = proc.stdout.read().decode(errors="replace") if proc.stdout and proc.poll() is not None else ""
    raise AssertionError(f"keepalived did not load {services} services / {reals} real servers in {timeout}s; "
                         f"ipvsadm-save: {lines}\n{out}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # keepalived's parent stops its checker child
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _twice(kanotify: list[str], *args: str) -> None:
    """``kanotify ... --json ARGS`` twice: both succeed, the second changes nothing."""
    records = []
    for _ in range(2):
        done = subprocess.run([*kanotify, *args], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        records.append(json.loads(done.stdout))
    assert all(a["status"] == "noop" for a in records[1]["actions"]), records[1]["actions"]


def _keepalived_checkers(ka: str, conf: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    """keepalived's checker process (``keepalived -C``) in *ka*, loading *conf*'s ``virtual_server`` blocks."""
    return subprocess.Popen(
        ["ip", "netns", "exec", ka, "keepalived", "-n", "-l", "-D", "-C", "-f", str(conf), "-i", CONFIG_ID,
         "-p", str(tmp_path / "keepalived.pid"), "-c", str(tmp_path / "checkers.pid")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


@contextmanager
def _listening(kn: str, config: Path, tmp_path: Path, instance: str,
               settled: dict[str, int]) -> Iterator[tuple[list[str], list[str], float]]:
    """``kanotify listen`` in *kn*, ``master`` run, the table *settled* and a reconcile through the listener a no-op.

    Yields (the kanotify command line, for more commands; the settled table; how long it took to settle); the
    listener is stopped when the block ends.
    """
    with open(tmp_path / "listen.log", "wb") as log:
        listener = subprocess.Popen(["ip", "netns", "exec", kn, KANOTIFY, "--allow-insecure", "--config", str(config),
                                     "listen"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "state" / "control.sock").exists():
            assert time.monotonic() < deadline and listener.poll() is None, (tmp_path / "listen.log").read_text()
            time.sleep(0.05)
        kanotify = [KANOTIFY, "--allow-insecure", "--config", str(config), "--json"]
        done = subprocess.run(["ip", "netns", "exec", kn, *kanotify, "master", instance], capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        table, took = _settle(kn, listener, settled=settled)
        # converged: a reconcile through the listener changes nothing (the health it knows included)
        again = subprocess.run(["ip", "netns", "exec", kn, *kanotify, "reconcile"], capture_output=True, text=True,
                               timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
        assert all(a["status"] == "noop" for a in json.loads(again.stdout)["actions"]), again.stdout
        yield kanotify, table, took
    finally:
        _stop(listener)


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_keepalived_and_the_imported_toml_load_the_same_ipvs_table(
    name: str, namespaces: tuple[str, str], tmp_path: Path
) -> None:
    ka, kn = namespaces
    conf = CONFIGS / name
    result, text = import_file(str(conf), None, CONFIG_ID)
    assert result.services, f"{name} has no virtual_server to compare"
    # an inhibited sorry server is in the service from the start, at weight 0 (keepalived's init_service_vs)
    n_reals = sum(len(s.reals) for s in result.services) + sum(
        1 for s in result.services if s.quorum is not None and ("inhibit", "true") in [l[:2] for l in s.quorum.sorry])

    proc = _keepalived_checkers(ka, conf, tmp_path)
    try:
        keepalived_table = _wait_for_table(ka, len(result.services), n_reals, proc)
        keepalived_thresholds = thresholds(ka)
    finally:
        _stop(proc)

    config = _config(tmp_path, text)
    # the imported checks are in what kanotify loads (and apply nothing without a listener)
    checked = sum(len(spec.checks) for spec in parse_config(config.read_text()).instances[0].services)
    assert checked == sum(1 for s in result.services for r in s.reals if r.check is not None)
    _twice(["ip", "netns", "exec", kn, KANOTIFY, "--allow-insecure", "--config", str(config), "--json"],
           "master", result.instance)

    assert _normalized(save(kn)) == _normalized(keepalived_table)
    assert thresholds(kn) == keepalived_thresholds


def _config(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "kanotify.toml"
    config.write_text(f'[settings]\nstate_dir = "{tmp_path}/state"\njournal = "{tmp_path}/journal.jsonl"\n'
                      f'hooks_dir = "{tmp_path}/hooks.d"\nsyslog = false\n\n{text}')
    config.chmod(0o600)
    return config


#: checkers.conf once the checkers have decided: service real -> weight (a removed real server is absent)
SETTLED = {
    "-t 192.0.2.100:80 192.0.2.22:80": 0,  # TCP_CHECK fails, inhibit_on_failure: drained
    "-t 192.0.2.100:80 192.0.2.23:80": 2,  # MISC_CHECK /bin/true
    "-t 192.0.2.100:80 192.0.2.25:80": 1,  # alpha: DOWN until its first (passing) check
    "-t 192.0.2.100:80 192.0.2.26:80": 0,  # HTTP_GET fails, inhibit_on_failure
    "-f 7 192.0.2.31:0": 1,  # MISC_CHECK /bin/true
    "-f 7 192.0.2.32:0": 0,  # TCP_CHECK connect_port 443 fails, the virtual_server's inhibit_on_failure
}  # 192.0.2.21 (TCP_CHECK) and 192.0.2.24 (MISC_CHECK /bin/false) are removed


def _weights(lines: list[str]) -> dict[str, int]:
    """``ipvsadm-save -n`` real server lines: "-t VIP:PORT REAL:PORT" -> weight."""
    found = {}
    for line in lines:
        words = line.split()
        if words[:1] == ["-a"]:
            found[f"{words[1]} {words[2]} {words[4]}"] = int(words[words.index("-w") + 1])
    return found


def _settle(ns: str, proc: subprocess.Popen[bytes], timeout: float = 60,
            settled: dict[str, int] = SETTLED) -> tuple[list[str], float]:
    """ipvsadm-save -n of *ns* once it is *settled* and stays so for two delay_loops; and how long it took."""
    started = time.monotonic()
    lines: list[str] = []
    while time.monotonic() - started < timeout and proc.poll() is None:
        lines = save(ns)
        if _weights(lines) == settled:
            took = time.monotonic() - started
            time.sleep(4)  # two delay_loops: nothing flaps
            again = save(ns)
            assert _weights(again) == settled, again
            return again, took
        time.sleep(0.2)
    raise AssertionError(f"{ns} did not settle in {timeout}s (exit {proc.poll()}): {_weights(lines)}")


def test_the_imported_checks_leave_the_table_keepalived_s_checkers_leave(
    namespaces: tuple[str, str], tmp_path: Path
) -> None:
    ka, kn = namespaces
    conf = CONFIGS / "checkers.conf"
    result, text = import_file(str(conf), None, CONFIG_ID)
    assert sum(1 for s in result.services for r in s.reals if r.check is not None) == 8

    keepalived = _keepalived_checkers(ka, conf, tmp_path)
    try:
        keepalived_table, keepalived_took = _settle(ka, keepalived)
    finally:
        _stop(keepalived)

    config = _config(tmp_path, text)
    with _listening(kn, config, tmp_path, result.instance, SETTLED) as (_, kanotify_table, kanotify_took):
        pass  # settled and converged: nothing more to ask the listener

    assert _normalized(kanotify_table) == _normalized(keepalived_table)
    print(f"checkers.conf settled: keepalived's checkers after {keepalived_took:.1f}s, kanotify listen with the "
          f"imported checks after {kanotify_took:.1f}s")


#: quorum.conf once the checkers have decided (keepalived's ipwrapper.c update_quorum_state, perform_quorum_state)
QUORUM_SETTLED = {
    # 192.0.2.42 drained (inhibit_on_failure), .43 removed: up weight 1 < 3 - 1, the quorum is lost: the inhibited
    # sorry server gets its weight, 192.0.2.41 (UP, no inhibit_on_failure) leaves the pool
    "-t 192.0.2.110:80 192.0.2.42:80": 0,
    "-t 192.0.2.110:80 192.0.2.99:80": 1,
    # the quorum (1) holds: the inhibited sorry server stays at weight 0
    "-t 192.0.2.111:80 192.0.2.51:80": 1,
    "-t 192.0.2.111:80 192.0.2.52:80": 0,
    "-t 192.0.2.111:80 192.0.2.98:80": 0,
    # its only real server removed: the sorry server (NAT, port 8080) added
    "-t 192.0.2.112:80 192.0.2.97:8080": 1,
}


def test_the_imported_quorum_and_sorry_servers_leave_the_table_keepalived_leaves(
    namespaces: tuple[str, str], tmp_path: Path
) -> None:
    """quorum.conf: the same real servers fail under keepalived's checkers and kanotify listen's imported checks;
    the drains, removals and sorry servers must be the same."""
    ka, kn = namespaces
    conf = CONFIGS / "quorum.conf"
    result, text = import_file(str(conf), None, CONFIG_ID)
    assert [s.quorum is not None for s in result.services] == [True, True, True]

    keepalived = _keepalived_checkers(ka, conf, tmp_path)
    try:
        keepalived_table, keepalived_took = _settle(ka, keepalived, settled=QUORUM_SETTLED)
    finally:
        _stop(keepalived)

    config = _config(tmp_path, text)
    with _listening(kn, config, tmp_path, result.instance, QUORUM_SETTLED) as (kanotify, kanotify_table, kanotify_took):
        status = json.loads(subprocess.run(["ip", "netns", "exec", kn, *kanotify, "status"], capture_output=True,
                                           text=True, timeout=300).stdout)
        quorum = {s["service"].split()[1]: s["quorum"] for s in status["ipvs"]["services"]}
        assert {k: (q["up"], q["up_weight"]) for k, q in quorum.items()} == {
            "192.0.2.110:80": (False, 1), "192.0.2.111:80": (True, 1), "192.0.2.112:80": (False, 0)}, quorum
        journal = (tmp_path / "journal.jsonl").read_text()
        assert "quorum of tcp 192.0.2.110:80 lost" in journal and "quorum of tcp 192.0.2.112:80 lost" in journal

    assert _normalized(kanotify_table) == _normalized(keepalived_table)
    print(f"quorum.conf settled: keepalived's checkers after {keepalived_took:.1f}s, kanotify listen with the "
          f"imported checks after {kanotify_took:.1f}s")


@pytest.fixture
def sync_namespaces() -> Iterator[tuple[str, str]]:
    """``ka`` for keepalived, ``kn`` for kanotify, each with veths ``eth0`` and ``eth1`` (peers up).

    keepalived's ``eth0`` (its VRRP interface) has an address and is left down: the instances start in
    FAULT.  kanotify's interfaces are up.
    """
    tag = secrets.token_hex(2)
    ka, kn = f"kt-{tag}-ska", f"kt-{tag}-skn"
    made: list[str] = []
    try:
        for ns in (ka, kn):
            run(["ip", "netns", "add", ns])
            made.append(ns)
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            for dev in ("eth0", "eth1"):
                run(["ip", "-n", ns, "link", "add", dev, "type", "veth", "peer", "name", f"{dev}p"])
                run(["ip", "-n", ns, "link", "set", f"{dev}p", "up"])
            run(["ip", "-n", ns, "link", "set", "eth1", "up"])
        run(["ip", "-n", ka, "addr", "add", "203.0.113.1/24", "dev", "eth0"])
        run(["ip", "-n", kn, "link", "set", "eth0", "up"])
        yield ka, kn
    finally:
        _remove(made)


def _remove(namespaces: list[str]) -> None:
    """Stop the sync daemons in *namespaces* and delete them."""
    for ns in namespaces:
        for state in ("master", "backup"):
            subprocess.run(["ip", "netns", "exec", ns, "ipvsadm", "--stop-daemon", state], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _daemons(ns: str) -> list[str]:
    """``ipvsadm -L --daemon`` in *ns*: one line per running daemon."""
    return [line.strip() for line in run(["ip", "netns", "exec", ns, "ipvsadm", "-L", "--daemon"]).splitlines()
            if line.strip()]


def _wait_for_daemon(ns: str, state: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> list[str]:
    """``ipvsadm -L --daemon`` of *ns* once exactly one daemon runs, the *state* one."""
    deadline = time.monotonic() + timeout
    listed: list[str] = []
    while time.monotonic() < deadline and proc.poll() is None:
        listed = _daemons(ns)
        if len(listed) == 1 and listed[0].startswith(f"{state} sync daemon"):
            return listed
        time.sleep(0.1)
    _stop(proc)
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    raise AssertionError(f"keepalived ran no lone {state} sync daemon in {timeout}s: {listed}\n{out}")


@pytest.mark.parametrize(("name", "instance"), SYNC_ROUND_TRIP)
def test_keepalived_and_the_imported_sync_daemon_run_the_same_daemon(
    name: str, instance: str | None, sync_namespaces: tuple[str, str], tmp_path: Path
) -> None:
    ka, kn = sync_namespaces
    conf = CONFIGS / name
    result, text = import_file(str(conf), instance, CONFIG_ID)
    assert result.sync_daemon is not None, text

    proc = subprocess.Popen(
        ["ip", "netns", "exec", ka, "keepalived", "-n", "-l", "-D", "-P", "-f", str(conf), "-i", CONFIG_ID,
         "-p", str(tmp_path / "keepalived.pid"), "-r", str(tmp_path / "vrrp.pid")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        keepalived_fault = _wait_for_daemon(ka, "backup", proc)  # eth0 down: FAULT
        run(["ip", "-n", ka, "link", "set", "eth0", "up"])  # BACKUP, and MASTER when no advert comes
        keepalived_master = _wait_for_daemon(ka, "master", proc)
    finally:
        _stop(proc)
    assert _daemons(ka) == []  # keepalived stops its daemon when it stops

    config = _config(tmp_path, text)
    kanotify = ["ip", "netns", "exec", kn, KANOTIFY, "--allow-insecure", "--config", str(config), "--json"]
    for state, expected in (("fault", keepalived_fault), ("master", keepalived_master)):
        _twice(kanotify, state, result.instance)
        assert _daemons(kn) == expected, state
    status = subprocess.run([*kanotify, "status"], capture_output=True, text=True, timeout=300)
    assert status.returncode == 0, status.stdout + status.stderr
    sync = json.loads(status.stdout)["sync_daemons"]
    assert (sync["managed"], sync["instance"], sync["state"]) == (True, result.instance, "master")
    assert [d["state"] for d in sync["daemons"] if d["running"]] == ["master"] and all(d["ok"] for d in sync["daemons"])
    print(f"{name}: keepalived and kanotify ran {keepalived_fault} in FAULT, {keepalived_master} in MASTER")


def test_lvs_sync_daemon_without_an_instance_is_both_daemons_in_keepalived_s_checker(
    sync_namespaces: tuple[str, str], tmp_path: Path
) -> None:
    """keepalived's checker runs master and backup at once: imported as mode = "both", which kanotify runs the
    same way, except that its backup listens with sync id 0 (hearing every director's master)."""
    ka, kn = sync_namespaces
    conf = tmp_path / "keepalived.conf"
    conf.write_text("global_defs {\n    lvs_sync_daemon eth1 id 9\n}\n"
                    "vrrp_instance VI_1 {\n    interface eth0\n    virtual_router_id 51\n    priority 100\n}\n"
                    "virtual_server 192.0.2.150 80 {\n    protocol TCP\n    real_server 192.0.2.21 80 {\n    }\n}\n")
    result, text = import_file(str(conf))
    assert result.sync_daemon is not None and re.search(r'^mode = "both"', text, re.M), text
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ka, "keepalived", "-n", "-l", "-D", "-C", "-f", str(conf),
         "-p", str(tmp_path / "keepalived.pid"), "-c", str(tmp_path / "checkers.pid")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while len(_daemons(ka)) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        listed = _daemons(ka)
    finally:
        _stop(proc)
    assert listed == ["master sync daemon (mcast=eth1, syncid=9, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)",
                      "backup sync daemon (mcast=eth1, syncid=9, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)"]
    config = _config(tmp_path, text)
    kanotify = ["ip", "netns", "exec", kn, KANOTIFY, "--allow-insecure", "--config", str(config), "--json"]
    for state in ("fault", "master", "backup"):  # in every state, twice: the second run changes nothing
        _twice(kanotify, state, result.instance)
        assert _daemons(kn) == [listed[0], listed[1].replace("syncid=9", "syncid=0")], state


def test_doctor_ip_vs_passes_where_the_kernel_has_it(tmp_path: Path) -> None:
    ns = f"kt-{secrets.token_hex(2)}-doc"
    run(["ip", "netns", "add", ns])
    try:
        done = subprocess.run(
            ["ip", "netns", "exec", ns, KANOTIFY, "doctor", "--json", "--keepalived-conf",
             str(CONFIGS / "seed004.conf"), "--sysctl-root", str(tmp_path)],
            capture_output=True, text=True, timeout=300, env={k: v for k, v in os.environ.items()
                                                               if k != "KANOTIFY_CONFIG"})
        report = json.loads(done.stdout)
        (row,) = [r for r in report["rows"] if r["check"] == "ip_vs"]
        assert row["status"] == "pass", row
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
