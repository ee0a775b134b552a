"""Active-active directors behind ECMP, in one guest: two directors, one VIP, the same flows.

IPVS is per network namespace, so each director is a namespace (``dA``, ``dB``) with the VIP
on a dummy ``kav0`` (what a BGP daemon would announce) and its own IPVS table and sync
daemons, on one bridge with a client and three LVS-DR real servers (the VIP on ``lo``, the
usual ARP policy, a TCP server on port 80 that says its name and echoes lines).  ECMP is
modelled by the client's route to the VIP: via ``192.0.2.1`` (A), then via ``192.0.2.2`` (B).
Each director is converged by kanotify's engine on the system backend pointed at its
namespace, with its own config file, state and journal, and every convergence runs twice
(the second plans nothing).

Which real server a director picked for a flow is read from its connection table
(``ipvsadm -Lnc``): ~1,000 UDP flows from as many client ports (``mh-port`` hashes the port
too) are sent through A, then through B, and the two tables are compared flow by flow.
"""

from __future__ import annotations

import json
import secrets
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from ipvs_guest_support import add_bridge, add_bridged_namespace, dr_real_server, run, start_server
from kanotify.backends.ipvs import IpvsBackend
from kanotify.backends.netns import call_in
from kanotify.backends.system import SystemBackend
from kanotify.config.schema import parse_config
from kanotify.config.values import Config
from kanotify.engine import Engine
from kanotify.model import State
from kanotify.plan import desired_for, plan
from kanotify.run import RunKind
from kanotify.status import collect_status

VIP = "192.0.2.100"
DIRECTORS = {"A": "192.0.2.1", "B": "192.0.2.2"}
SERVERS = ("192.0.2.21", "192.0.2.22", "192.0.2.23")  # namespaces with a TCP server
#: the mapping test's real servers: the first three exist, the others only as IPVS destinations
MAPPED = [f"192.0.2.{n}" for n in range(21, 29)]
FLOWS = 1000

HEAD = """
[settings]
state_dir = "{tmp}/state"
journal = "{tmp}/journal.jsonl"
hooks_dir = "{tmp}/hooks.d"
syslog = false
drain_timeout = 0
{sysctl}
[[instance]]
name = "ANYCAST"
  [[instance.vip]]
  address = "192.0.2.100/32"
  dev = "kav0"
  garp = false
"""


def service(protocol: str, port: int, scheduler: str, reals: list[str], flags: str = '["mh-port", "mh-fallback"]',
            weights: dict[str, int] | None = None, drained: tuple[str, ...] = ()) -> str:
    text = (f'  [[instance.service]]\n  protocol = "{protocol}"\n  address = "{VIP}"\n  port = {port}\n'
            f'  scheduler = "{scheduler}"\n')
    if scheduler == "mh":
        text += f"  flags = {flags}\n"
    for address in reals:
        text += f'    [[instance.service.real]]\n    address = "{address}"\n'
        text += f"    weight = {(weights or {}).get(address, 1)}\n"
        if address in drained:
            text += "    drain = true\n"
    return text


@dataclass
class Director:
    """One director: its namespace, config file and an engine on the system backend there."""

    name: str
    ns: str
    tmp: Path

    def config(self, body: str, sysctl: str = "", sync: str = "") -> Config:
        path = self.tmp / "kanotify.toml"
        path.write_text(HEAD.format(tmp=self.tmp, sysctl=sysctl) + body + sync)
        return parse_config(path.read_text(), str(path))

    def converge(self, config: Config) -> list[str]:
        """``kanotify master ANYCAST`` (a reconcile of a MASTER instance), twice: the second changes nothing."""
        engine = Engine(config, backend_factory=lambda: SystemBackend(netns=self.ns))
        first = engine.transition(["ANYCAST"], State.MASTER, argv=["kanotify", "master", "ANYCAST"],
                                  kind=RunKind.MASTER)
        assert first.outcome == "converged", first.record
        again = Engine(config, backend_factory=lambda: SystemBackend(netns=self.ns)).reconcile(
            argv=["kanotify", "reconcile"])
        assert again.outcome == "converged" and not again.plan.has_changes, again.record
        return [str(a) for a in first.plan.changes]

    def fingerprints(self, config: Config) -> dict[str, str]:
        """What ``kanotify status --json`` says: service -> fingerprint."""
        report = collect_status(config, lambda: SystemBackend(netns=self.ns))
        return {svc["service"].split(" scheduler")[0]: svc["fingerprint"] for svc in report["ipvs"]["services"]}

    def ipvsadm(self, *args: str) -> str:
        return run(["ip", "netns", "exec", self.ns, "ipvsadm", *args])

    def conns(self, protocol: str = "UDP") -> dict[int, str]:
        """The connection table: client port -> the real server picked (``ipvsadm -Lnc``)."""
        table = {}
        for line in self.ipvsadm("-Lnc").splitlines():
            words = line.split()
            if len(words) >= 6 and words[0] == protocol and words[4].startswith(VIP + ":"):
                table[int(words[3].rsplit(":", 1)[1])] = words[5].rsplit(":", 1)[0]
        return table

    def listed(self, port: int) -> list[str]:
        """The destinations of the service in the kernel's order (``ipvsadm -Ln --nosort``): address weight."""
        out = self.ipvsadm("-Ln", "--nosort", "-t" if port == 80 else "-u", f"{VIP}:{port}")
        return [f"{w[1].rsplit(':', 1)[0]} {w[3]}" for w in (line.split() for line in out.splitlines())
                if len(w) >= 4 and w[0] == "->" and w[1] != "RemoteAddress:Port"]


@dataclass
class Fabric:
    client: str
    servers: dict[str, str]  # address -> namespace
    directors: dict[str, Director]

    def via(self, name: str) -> None:
        """ECMP moves the client's flows to director ``name``."""
        run(["ip", "-n", self.client, "route", "replace", f"{VIP}/32", "via", DIRECTORS[name]])


@pytest.fixture
def fabric(tmp_path: Path) -> Iterator[Fabric]:
    tag = secrets.token_hex(2)
    bridge = f"kt{tag}aa"
    roles = {"cl": "192.0.2.10", "dA": DIRECTORS["A"], "dB": DIRECTORS["B"],
             **{f"rs{n}": address for n, address in enumerate(SERVERS, 1)}}
    made: list[str] = []
    ends: list[str] = []
    servers: list[subprocess.Popen[bytes]] = []
    try:
        add_bridge(bridge)
        for role, address in roles.items():
            add_bridged_namespace(f"kt-{tag}-{role}", f"kt{tag}{role}", bridge, address, made, ends)
        directors = {}
        for name in DIRECTORS:
            ns = f"kt-{tag}-d{name}"
            run(["ip", "-n", ns, "link", "add", "kav0", "type", "dummy"])  # what BGP would announce
            run(["ip", "-n", ns, "link", "set", "kav0", "up"])
            (tmp_path / name).mkdir()
            directors[name] = Director(name, ns, tmp_path / name)
        found = {}
        for n, address in enumerate(SERVERS, 1):
            ns = f"kt-{tag}-rs{n}"
            dr_real_server(ns, VIP)
            start_server(ns, address, servers)
            found[address] = ns
        fabric = Fabric(f"kt-{tag}-cl", found, directors)
        fabric.via("A")
        yield fabric
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()
        for name in DIRECTORS:
            for state in ("master", "backup"):
                subprocess.run(["ip", "netns", "exec", f"kt-{tag}-d{name}", "ipvsadm", "--stop-daemon", state],
                               capture_output=True)
        for dev in ends:
            subprocess.run(["ip", "link", "del", dev], capture_output=True)
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)


# --------------------------------------------------------------------------- ~1,000 flows through A and B


def send_flows(fabric: Fabric, first_port: int, count: int = FLOWS) -> None:
    """One UDP datagram to VIP:53 from each client port ``first_port ...``: one IPVS connection each."""
    def open_all() -> list[socket.socket]:
        socks = []
        for port in range(first_port, first_port + count):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("192.0.2.10", port))
            socks.append(s)
        return socks

    socks = call_in(fabric.client, open_all)
    try:
        for s in socks:
            s.sendto(b"flow", (VIP, 53))
    finally:
        for s in socks:
            s.close()


def mapped(fabric: Fabric, first_port: int) -> tuple[dict[int, str], dict[int, str]]:
    """The same flows through A, then B (the ECMP move): which real server each picked."""
    wanted = set(range(first_port, first_port + FLOWS))
    tables = []
    for name in ("A", "B"):
        fabric.via(name)
        send_flows(fabric, first_port)
        deadline = time.monotonic() + 10
        while not wanted <= (table := fabric.directors[name].conns()).keys():
            assert time.monotonic() < deadline, f"{name}: {len(wanted - table.keys())} flows without a connection"
            time.sleep(0.1)
        tables.append({port: table[port] for port in wanted})
    fabric.via("A")
    return tables[0], tables[1]


def doctor(here: Director, peer: Director, config: Config) -> tuple[str, str]:
    """``kanotify doctor --peer-fingerprints`` on ``here`` with ``peer``'s saved ``status --json``: the row."""
    saved = here.tmp / f"peer-{peer.name}.json"
    saved.write_text(json.dumps(collect_status(config, lambda: SystemBackend(netns=peer.ns))))
    conf = here.tmp / "keepalived.conf"
    conf.write_text("vrrp_instance ANYCAST {\n  interface eth0\n  virtual_router_id 51\n}\n")
    done = subprocess.run(["ip", "netns", "exec", here.ns, str(Path(sys.executable).with_name("kanotify")),
                           "--allow-insecure", "--config", str(here.tmp / "kanotify.toml"), "--json", "doctor",
                           "--keepalived-conf", str(conf), "--peer-fingerprints", str(saved)],
                          capture_output=True, text=True, timeout=120)
    (row,) = [r for r in json.loads(done.stdout)["rows"] if r["check"] == "fingerprint"]
    return row["status"], row["what"].split(" here")[0]


def differ(a: dict[int, str], b: dict[int, str]) -> int:
    return sum(a[port] != b[port] for port in a)


def test_a_long_history_and_a_fresh_director_map_every_flow_alike(fabric: Fabric) -> None:
    """A: config edits (a real server added in the middle), drain and restore, remove and re-add,
    a restart, destinations changed by hand.  B: the final config at once.  Same table, same fingerprint."""
    a, b = fabric.directors["A"], fabric.directors["B"]
    r = MAPPED
    final = service("udp", 53, "mh", r[:6], weights={r[1]: 2}, drained=(r[5],))
    history = [
        service("udp", 53, "mh", [r[0], r[2], r[4]]),
        service("udp", 53, "mh", [r[0], r[1], r[2], r[4]], weights={r[1]: 2}),  # added in the middle
        service("udp", 53, "mh", r[:6], weights={r[1]: 2}),
        service("udp", 53, "mh", r[:6], weights={r[1]: 2}, drained=(r[1], r[3])),  # drained
        service("udp", 53, "mh", r[:6], weights={r[1]: 2}),  # ... and restored
        service("udp", 53, "mh", [x for x in r[:6] if x != r[2]], weights={r[1]: 2}),  # removed
        service("udp", 53, "mh", r[:6], weights={r[1]: 2}),  # ... and added back
    ]
    for body in history:
        a.converge(a.config(body))
    # by hand (ipvsadm), behind kanotify's back; then a restart (a new engine and backend) converges
    a.ipvsadm("-a", "-u", f"{VIP}:53", "-r", r[6], "-g", "-w", "1")  # a destination not in the config
    a.ipvsadm("-d", "-u", f"{VIP}:53", "-r", r[3])
    a.ipvsadm("-a", "-u", f"{VIP}:53", "-r", r[3], "-g", "-w", "1")  # back, at the head of the list
    a.ipvsadm("-e", "-u", f"{VIP}:53", "-r", r[0], "-g", "-w", "3")  # another weight
    final_a = a.config(final)
    a.converge(final_a)
    b.converge(b.config(final))
    expected = [f"{x} {w}" for x, w in zip(r[:6], [1, 2, 1, 1, 1, 0])]
    assert a.listed(53) == b.listed(53) == expected  # the config's order, in both kernels

    fa, fb = a.fingerprints(final_a), b.fingerprints(final_a)
    print(f"\nfingerprints: A {fa['udp 192.0.2.100:53']}  B {fb['udp 192.0.2.100:53']}")
    assert fa == fb
    assert doctor(a, b, final_a) == ("pass", "udp 192.0.2.100:53: " + fa["udp 192.0.2.100:53"])
    on_a, on_b = mapped(fabric, 20000)
    print(f"flows: {len(on_a)}, mapped differently: {differ(on_a, on_b)}, "
          f"real servers used: {len(set(on_a.values()))}")
    assert differ(on_a, on_b) == 0
    assert len(set(on_a.values())) == 5  # every real server but the drained one (mh-fallback) gets flows

    # the control: another order on B (ipvsadm by hand) -- the measurement sees it, so does the fingerprint
    b.ipvsadm("-d", "-u", f"{VIP}:53", "-r", r[4])
    b.ipvsadm("-a", "-u", f"{VIP}:53", "-r", r[4], "-g", "-w", "1")
    assert b.listed(53)[0] == f"{r[4]} 1"
    assert b.fingerprints(final_a) != fa
    assert doctor(a, b, final_a)[0] == "fail"
    on_a, on_b = mapped(fabric, 22000)
    print(f"another order on B: mapped differently: {differ(on_a, on_b)} of {len(on_a)}")
    assert differ(on_a, on_b) > 0
    # kanotify puts it back: equal again
    b.converge(b.config(final))
    assert b.listed(53) == expected and b.fingerprints(final_a) == fa


# --------------------------------------------------------------------------- a TCP connection moved by ECMP


def hello(sock: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(64)
        assert chunk, "closed before the real server said hello"
        data += chunk
    return data.decode().strip()


def echo(sock: socket.socket) -> str:
    """A line through the connection: what came back, or ``"reset"``."""
    try:
        sock.sendall(b"ping\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(64)
            if not chunk:
                return "reset"
            data += chunk
        return data.decode().strip()
    except (ConnectionResetError, BrokenPipeError):
        return "reset"


# Set with sysctl(8) in each director's namespace: the engine's system backend scopes addresses and IPVS to
# a namespace, but writes /proc/sys as the process it runs in (one director per host in production).
SLOPPY = 1
NOT_SLOPPY = 0
SYNC_BOTH = '\n[sync_daemon]\ninterface = "eth0"\nmode = "both"\n'


def moved(fabric: Fabric, scheduler: str, sloppy: int, sync: str = "") -> str:
    """Converge A and B alike, open a connection through A, move it to B: what the echo gives."""
    for d in fabric.directors.values():
        run(["ip", "netns", "exec", d.ns, "sysctl", "-q", "-w", f"net.ipv4.vs.sloppy_tcp={sloppy}"])
        d.converge(d.config(service("tcp", 80, scheduler, list(SERVERS), flags='["mh-port"]'), sync=sync))
    fabric.via("A")
    sock = call_in(fabric.client, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    sock.settimeout(10)
    try:
        sock.connect((VIP, 80))
        name = hello(sock)
        for _ in range(3):
            assert echo(sock) == f"{name} ping"
        port = sock.getsockname()[1]
        if sync:
            # the master daemon on A sends its connections about every 2 s; B's backup (sync id 0) takes them
            deadline = time.monotonic() + 15
            while port not in fabric.directors["B"].conns("TCP"):
                assert time.monotonic() < deadline, "B never got A's connection from the sync daemon"
                time.sleep(0.2)
            assert fabric.directors["B"].conns("TCP")[port] == name
        fabric.via("B")
        return "survived" if echo(sock) == f"{name} ping" else "reset"
    finally:
        sock.close()


def test_ecmp_move_survives_with_mh_and_sloppy_tcp(fabric: Fabric) -> None:
    assert moved(fabric, "mh", SLOPPY) == "survived"


def test_ecmp_move_resets_with_mh_without_sloppy_tcp(fabric: Fabric) -> None:
    """The control: B sees a mid-stream segment it has no connection for, and its own stack resets it."""
    assert moved(fabric, "mh", NOT_SLOPPY) == "reset"


def test_ecmp_move_survives_with_wlc_and_sync_daemons_in_mode_both(fabric: Fabric) -> None:
    assert moved(fabric, "wlc", NOT_SLOPPY, SYNC_BOTH) == "survived"
    for d in fabric.directors.values():
        daemons = d.ipvsadm("-L", "--daemon")
        assert "master sync daemon (mcast=eth0, syncid=0" in daemons
        assert "backup sync daemon (mcast=eth0, syncid=0" in daemons


def test_ecmp_move_resets_with_wlc_without_sync_daemons(fabric: Fabric) -> None:
    assert moved(fabric, "wlc", NOT_SLOPPY) == "reset"


# --------------------------------------------------------------------------- what a delete and re-add costs


#: a UDP stream from the client, in a process of its own (in the test's process the GIL would keep it from
#: sending while Python runs between two netlink requests, and hide the gap): prints how many it sent
STREAM = r"""
import socket, struct, sys, time
seconds = float(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print("ready", flush=True)
n, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    for _ in range(10):
        s.sendto(struct.pack("!I", n), ("192.0.2.100", 5353))
        n += 1
    time.sleep(0.001)
print(n, flush=True)
"""


def test_packets_lost_while_a_real_server_is_deleted_and_re_added(fabric: Fabric) -> None:
    """A UDP stream through A to rs1 while kanotify re-adds rs1 (a real server is inserted after it):
    the kernel's dest trash keeps the connection; packets that arrive in the gap are dropped."""
    from kanotify.model import Observed

    a = fabric.directors["A"]
    rs1, absent = SERVERS[0], "192.0.2.29"
    one = a.config(service("udp", 5353, "mh", [rs1]))
    two = a.config(service("udp", 5353, "mh", [rs1, absent]))
    a.converge(one)
    receiver = call_in(fabric.servers[rs1], lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    receiver.bind((VIP, 5353))
    receiver.settimeout(1.0)
    got: set[int] = set()

    def receive() -> None:
        while True:
            try:
                data = receiver.recv(64)
            except socket.timeout:
                return
            got.add(struct.unpack("!I", data[:4])[0])

    def measure(seconds: float, changes: int, batch: bool) -> tuple[int, int]:
        got.clear()
        rx = threading.Thread(target=receive)
        rx.start()
        tx = subprocess.Popen(["ip", "netns", "exec", fabric.client, sys.executable, "-c", STREAM, str(seconds)],
                              stdout=subprocess.PIPE, text=True)
        assert tx.stdout is not None and tx.stdout.readline().strip() == "ready"
        readds = 0
        with IpvsBackend(netns=a.ns) as ipvs:
            time.sleep(0.2)
            for _ in range(changes):
                for config in (two, one):
                    desired = desired_for(config, {"ANYCAST": State.MASTER})
                    actions = [x for x in plan(desired, Observed(services=ipvs.observe())).changes
                               if x.domain == "ipvs"]  # the VIP is bound already
                    readds += sum(1 for x in actions if str(x).startswith(f"delete real server {rs1}"))
                    if batch:
                        errors = [str(r) for r in ipvs.apply_many(actions) if r is not None]
                        assert not errors, (errors, [str(x) for x in actions])
                    else:
                        for action in actions:
                            ipvs.apply(action)
                time.sleep(0.05)
        sent = int(tx.stdout.readline())
        tx.wait()
        rx.join()
        assert readds == changes
        return sent, sent - len(got)

    try:
        sent, lost = measure(1.0, 0, True)
        print(f"\nbaseline: {sent} packets, {lost} lost")
        assert lost == 0  # the stream itself loses nothing
        sent, lost_batched = measure(2.0, 20, True)
        print(f"20 delete/re-adds, each in one netlink batch (what kanotify does): {sent} packets, "
              f"{lost_batched} lost")
        sent, lost_apart = measure(2.0, 20, False)
        print(f"20 delete/re-adds, one netlink request each: {sent} packets, {lost_apart} lost")
        assert a.conns()[next(iter(a.conns()))] == rs1  # the stream's connection stayed on rs1 all along
    finally:
        receiver.close()


# --------------------------------------------------------------------------- the twin lists like the kernel


def test_the_memory_twin_lists_destinations_in_the_kernels_order(ipvs: IpvsBackend) -> None:
    """The same adds, deletes (a re-add comes back at the head) and edits on the kernel and on the twin."""
    import ipaddress

    from kanotify.actions import AddReal, AddService, DeleteReal, EditReal
    from kanotify.backends.memory import MemoryBackend
    from kanotify.model import RealServer, ServiceKey, VirtualService

    key = ServiceKey.inet("tcp", ipaddress.ip_address(VIP), 80)
    reals = [RealServer(ipaddress.ip_address(f"198.51.100.{n}"), 80) for n in range(1, 6)]
    drained = RealServer(reals[0].address, 80, weight=0)
    steps = [AddService(VirtualService(key, "mh")), *(AddReal(key, rs) for rs in reals),
             DeleteReal(key, reals[2]), AddReal(key, reals[2]), EditReal(key, reals[0], drained),
             DeleteReal(key, reals[4]), AddReal(key, reals[4])]
    twin = MemoryBackend()
    for step in steps:
        ipvs.apply(step)
        twin.apply(step)
    kernel = [(str(rs.address), rs.weight) for rs, _ in ipvs.observe()[key].reals.values()]
    listed = [(w[1].rsplit(":", 1)[0], int(w[3])) for w in (line.split() for line in run(
        ["ipvsadm", "-Ln", "--nosort", "-t", f"{VIP}:80"]).splitlines()) if len(w) >= 4 and w[0] == "->"
        and w[1] != "RemoteAddress:Port"]
    mine = [(str(rs.address), rs.weight) for rs, _ in twin.services[key].observed().reals.values()]
    assert kernel == listed == mine
    assert [a for a, _ in kernel] == ["198.51.100.5", "198.51.100.3", "198.51.100.4", "198.51.100.2", "198.51.100.1"]
