"""Helpers for the tests that run inside the UML guest, against a real IPVS.

Every check that matters is made twice: through kanotify's own observe(), and
through ``ipvsadm`` -- the tool operators trust -- so a bug shared by the
encoder and the decoder cannot hide.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from kanotify.actions import Action
from kanotify.backends.ipvs import IpvsBackend
from kanotify.backends.netns import call_in
from kanotify.config.values import Config, Settings
from kanotify.model import Instance, Observed, RealServer, ServiceSpec, State, VirtualService
from kanotify.plan import Plan, PlanOptions, desired_for, plan

ip = ipaddress.ip_address
INSTANCE = "VI_1"


def run(argv: Sequence[str], check: bool = True) -> str:
    """Run a command; on failure, fail with its stderr (never a bare CalledProcessError)."""
    proc = subprocess.run(list(argv), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def ipvsadm(*args: str, netns: str | None = None) -> str:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return run([*prefix, "ipvsadm", *args])


def save(netns: str | None = None) -> list[str]:
    """``ipvsadm-save -n``, one rule per line, in the kernel's order."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return [line for line in run([*prefix, "ipvsadm-save", "-n"]).splitlines() if line.strip()]


def thresholds(netns: str | None = None) -> dict[str, tuple[int, int]]:
    """``ipvsadm -Ln --thresholds``: real server ``addr:port`` -> (upper, lower).

    ``ipvsadm-save`` does not print thresholds, so they are cross-checked here.
    """
    result = {}
    for line in ipvsadm("-Ln", "--thresholds", netns=netns).splitlines():
        words = line.split()
        if len(words) >= 5 and words[0] == "->" and words[1] != "RemoteAddress:Port":
            result[words[1]] = (int(words[2]), int(words[3]))
    return result


def connections(netns: str | None = None) -> dict[str, tuple[int, int]]:
    """``ipvsadm -Ln``: real server ``addr:port`` -> (active, inactive) connections."""
    result = {}
    for line in ipvsadm("-Ln", netns=netns).splitlines():
        words = line.split()
        if len(words) >= 6 and words[0] == "->" and words[1] != "RemoteAddress:Port":
            result[words[1]] = (int(words[4]), int(words[5]))
    return result


def service_stats(netns: str | None = None) -> dict[str, int]:
    """``ipvsadm -Ln --stats``: ``PROT addr:port`` -> Conns of the service.

    The kernel sums these counters every 2 s (estimator); a re-created service starts at 0.
    """
    result = {}
    for line in ipvsadm("-Ln", "--stats", netns=netns).splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] in ("TCP", "UDP", "SCTP"):
            result[f"{words[0]} {words[1]}"] = int(words[2])
    return result


def spec(service: VirtualService, *reals: RealServer, states: Iterable[State] = (State.MASTER,)) -> ServiceSpec:
    return ServiceSpec(service=service, reals=tuple(reals), states=frozenset(states))


def make_config(*specs: ServiceSpec, exclusive: bool = False, drain_timeout: float = 300.0) -> Config:
    """A config as the TOML loader would build it: one instance with these services."""
    return Config(
        path="<guest test>",
        settings=Settings(ipvs_exclusive=exclusive, drain_timeout=drain_timeout, syslog=False),
        instances=(Instance(INSTANCE, services=tuple(specs)),),
    )


@dataclass
class SyncResult:
    """One reconcile: the plan, the write commands it cost, and the re-observed state."""

    plan: Plan
    writes: int
    errors: list[BaseException] = field(default_factory=list)

    @property
    def changes(self) -> tuple[Action, ...]:
        return self.plan.changes

    def kinds(self) -> list[str]:
        return [type(a).__name__ for a in self.changes]


def sync(
    backend: IpvsBackend,
    config: Config,
    state: State = State.MASTER,
    options: PlanOptions = PlanOptions(),
    batch: bool = True,
) -> SyncResult:
    """What the engine does for IPVS: desired x observed -> plan -> apply; errors fail the test."""
    desired = desired_for(config, {INSTANCE: state})
    observed = Observed(services=backend.observe())
    the_plan = plan(desired, observed, options)
    before = backend.writes
    if batch:
        results = backend.apply_many(the_plan.changes)
    else:
        results = []
        for action in the_plan.changes:
            try:
                backend.apply(action)
                results.append(None)
            except Exception as exc:  # noqa: BLE001 - collected for the assertion below
                results.append(exc)
    errors = [r for r in results if r is not None]
    assert not errors, "\n".join(str(e) for e in errors)
    return SyncResult(the_plan, backend.writes - before, errors)


# --------------------------------------------------------------------------- a small LVS-DR LAN


@dataclass(frozen=True)
class Lan:
    """An LVS-DR LAN on a bridge: client, director, two real servers, each in a namespace.

    ``192.0.2.10`` client, ``192.0.2.1`` director (holds the VIP ``192.0.2.100``
    on eth0), ``192.0.2.21``/``192.0.2.22`` real servers with the VIP on ``lo``
    and the usual ARP policy, each running a TCP server on port 80 that
    answers every connection with its own name, then echoes lines.
    """

    director: str
    client: str
    rs1: str
    rs2: str
    bridge: str
    vip: str = "192.0.2.100"

    def exec(self, ns: str, *argv: str) -> str:
        return run(["ip", "netns", "exec", ns, *argv])


# A tiny TCP server for the real servers: says its name, then echoes each line
# prefixed with its name, and holds the connection open.
SERVER = r"""
import socket, sys, threading
name = sys.argv[1].encode()
def serve(conn):
    conn.sendall(name + b"\n")
    buf = conn.makefile("rb")
    for line in buf:
        conn.sendall(name + b" " + line)
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 80)); srv.listen(64)
print("ready", flush=True)
while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


def add_bridge(bridge: str) -> None:
    """A bridge in the guest's root namespace, up, without an IPv6 link-local address of its own."""
    run(["ip", "link", "add", bridge, "type", "bridge"])
    run(["ip", "link", "set", bridge, "addrgenmode", "none"])
    run(["ip", "link", "set", bridge, "up"])


def add_bridged_namespace(ns: str, end: str, bridge: str, address: str, made: list[str], ends: list[str]) -> None:
    """Namespace *ns* with ``lo`` up and ``eth0`` at *address*/24, the veth's root end *end* a port of *bridge*.

    *ns* and *end* go into *made* and *ends* as soon as they exist, for the caller's cleanup.
    """
    run(["ip", "netns", "add", ns])
    made.append(ns)
    run(["ip", "link", "add", end, "type", "veth", "peer", "name", "eth0", "netns", ns])
    ends.append(end)
    # A bridge port needs no address: no IPv6 link-local on the root namespace's side.
    run(["ip", "link", "set", end, "addrgenmode", "none"])
    run(["ip", "link", "set", end, "master", bridge, "up"])
    run(["ip", "-n", ns, "link", "set", "lo", "up"])
    run(["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0"])
    run(["ip", "-n", ns, "link", "set", "eth0", "up"])


def dr_real_server(ns: str, vip: str) -> None:
    """Namespace *ns* as an LVS-DR real server: *vip* on ``lo``, ARP for it neither answered nor announced."""
    for key, value in (("arp_ignore", "1"), ("arp_announce", "2")):
        run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"net.ipv4.conf.all.{key}={value}"])
    run(["ip", "-n", ns, "addr", "add", f"{vip}/32", "dev", "lo"])


def start_server(ns: str, name: str, servers: list[subprocess.Popen[bytes]]) -> None:
    """:data:`SERVER` (answering as *name*) in *ns*, listed in *servers* at once (the caller kills them), then ready."""
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SERVER, name], stdout=subprocess.PIPE)
    servers.append(proc)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready", f"server in {ns}"


def connect_from(ns: str, host: str, port: int) -> socket.socket:
    """An open TCP connection made from inside namespace ``ns`` (the socket keeps its netns)."""
    sock: socket.socket = call_in(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    sock.settimeout(10)
    sock.connect((host, port))
    return sock
