#!/usr/bin/env python3
"""Active-active directors behind BGP/ECMP, inside one user-mode Linux guest (issue 23).

Run by ``tests/e2e/test_bgp_cluster.py`` through ``tests/uml.py``::

    bgp_cluster.py run [--result FILE] [--log FILE] [--connections N] [--director-daemon bird|frr]

builds, in network namespaces: a router running BIRD 2 with ECMP (``merge paths``,
``fib_multipath_hash_policy = 1``) and eBGP + BFD to three directors; each director runs
its own BIRD (``protocol direct`` on kanotify's ``[bgp]`` dummy link, from
``examples/bird-director.conf``) and kanotify (``reconcile --state master --instance
ANYCAST`` once, then ``kanotify listen`` for the health checks): no keepalived.  Three
LVS-DR real servers echo lines; a client holds a few hundred TCP connections through
the VIP, each sending a line every 200 ms and checking its echo.

Scenarios, each with fresh client connections (the IPVS sync daemons in mode both on every
director unless ``--no-sync-daemon``; ``quorum = 1`` on the service and scenario 3 unless
``--no-quorum``):

1. ``kill``: SIGKILL of one director's BIRD and kanotify; the router's BGP session closes.
2. ``cut``: that director's link cut at the switch: its link stays up, only BFD notices.
3. ``quorum``: every real server refuses that director's health checks: its quorum is lost,
   kanotify unbinds the VIP (the route is withdrawn); back when the checks pass.  Checked in
   the router's nexthops, ``status --json``, the metric and the journal.
4. ``control-kill``: the same kill with ``wlc``, ``sloppy_tcp = 0`` and no sync daemon:
   connections that ECMP moves to another director must break, or the test could not see it.

For each: broken connections among those the survivors carried and among those the dead
director carried (the connections a director carried: origin LOCAL in its
``/proc/net/ip_vs_conn_sync``), and the time from the kill until the router has two nexthops.

Also the small programs that run inside the namespaces::

    bgp_cluster.py serve PORT...        an echo server on each port (DR real server)
    bgp_cluster.py client N RESULT STOP  N connections to VIP:7, a line every 200 ms each

Only documentation addresses, only inside namespaces this script creates.  It refuses to
run outside the guest (``KANOTIFY_IN_GUEST=1``): the guest's poweroff is the cleanup.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cluster import Log, nsx, sh  # the e2e drivers' shared plumbing (this directory is on sys.path)

REPO = Path(__file__).resolve().parents[2]
VIP = "192.0.2.10"
PORT = 7
ROUTER_LAN = "198.51.100.1"
ROUTER_AS, DIRECTOR_AS = 65000, 65001
CLIENT, ROUTER_UP = "203.0.113.2", "203.0.113.1"
DIRECTORS = (("d1", "198.51.100.11"), ("d2", "198.51.100.12"), ("d3", "198.51.100.13"))
REALS = (("rs1", "198.51.100.21"), ("rs2", "198.51.100.22"), ("rs3", "198.51.100.23"))
#: the health-check port of each director on every real server (refused on demand: quorum)
CHECK_PORTS = {"d1": 8001, "d2": 8002, "d3": 8003}
MESSAGE_INTERVAL = 0.2
#: an exchange that has no echo after this long counts as a broken connection
EXCHANGE_TIMEOUT = 5.0
#: BFD on every session: the examples' 300 ms x 3 (``--bfd-interval`` changes the interval on every side)
BFD_INTERVAL_MS, BFD_MULTIPLIER = 300, 3
#: the directors' drift repair period (s)
RECONCILE_INTERVAL = 5


# --------------------------------------------------------------------------- programs in the namespaces


def serve(ports: list[int], flags: Path) -> None:
    """Echo lines on every port; a file ``flags/refuse-PORT`` closes that port's listener (connects refused)."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def main() -> None:
        servers: dict[int, asyncio.base_events.Server] = {}
        while True:
            for port in ports:
                refused = (flags / f"refuse-{port}").exists()
                if refused and port in servers:
                    servers.pop(port).close()
                elif not refused and port not in servers:
                    servers[port] = await asyncio.start_server(echo, "0.0.0.0", port, reuse_address=True,
                                                               backlog=1024)
            await asyncio.sleep(0.2)

    asyncio.run(main())


def client(count: int, base: int, result: Path, stop: Path) -> None:
    """``count`` connections to VIP:7 from ports ``base``..; each sends ``"<i> <seq>\\n"`` every 200 ms
    and checks the echo.

    Runs until the file ``stop`` exists; writes one JSON object: per connection its local port,
    exchanges, and the first failure (time, what) if any.  Times are ``time.time()``.
    """
    conns: list[dict[str, Any]] = []

    async def one(i: int, ready: asyncio.Semaphore) -> None:
        info: dict[str, Any] = {"i": i, "port": None, "ok": 0, "broken_at": None, "error": None, "max_ms": 0,
                                "last_ok": None}
        conns.append(info)
        try:
            async with ready:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(VIP, PORT, local_addr=(CLIENT, base + i)), 10)
        except (OSError, asyncio.TimeoutError) as exc:
            info.update(broken_at=time.time(), error=f"connect: {exc!r}")
            return
        info["port"] = writer.get_extra_info("sockname")[1]
        seq = 0
        try:
            while not stop.exists():
                seq += 1
                line = f"{i} {seq}\n".encode()
                started = time.monotonic()
                writer.write(line)
                answer = await asyncio.wait_for(reader.readline(), EXCHANGE_TIMEOUT)
                if answer != line:
                    raise ConnectionError(f"echo {answer!r} for {line!r}")
                info["ok"] += 1
                info["last_ok"] = time.time()
                info["max_ms"] = max(info["max_ms"], round((time.monotonic() - started) * 1000))
                await asyncio.sleep(MESSAGE_INTERVAL)
        except (OSError, ConnectionError, asyncio.TimeoutError) as exc:
            info.update(broken_at=time.time(), error=type(exc).__name__ + (f": {exc}" if str(exc) else ""))
        finally:
            writer.close()

    async def main() -> None:
        ready = asyncio.Semaphore(20)  # no SYN storm through a one-CPU guest
        tasks = [asyncio.create_task(one(i, ready)) for i in range(count)]
        await asyncio.gather(*tasks)

    asyncio.run(main())
    result.write_text(json.dumps(conns))


# --------------------------------------------------------------------------- the driver


def ip_hex(address: str) -> str:
    """``198.51.100.1`` as the kernel's /proc/net/ip_vs_conn* print it: ``C6336401``."""
    return "".join(f"{int(octet):02X}" for octet in address.split("."))


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= end:
            return value
        time.sleep(interval)


@dataclass
class Director:
    name: str
    address: str
    dir: Path
    bird: subprocess.Popen[bytes] | None = None
    listen: subprocess.Popen[bytes] | None = None
    extra: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def ns(self) -> str:
        return f"bgp-{self.name}"

    #: "bird" or "frr": the BGP daemon of this director
    daemon: str = "bird"

    @property
    def control(self) -> Path:
        """BIRD's control socket, or FRR's run directory (vty sockets, pid files; on the guest's tmpfs)."""
        return self.dir / "bird.ctl" if self.daemon == "bird" else Path(f"/run/frr-{self.name}")


class Cluster:
    def __init__(self, work: Path, log: Log, connections: int, daemon: str, bfd_ms: int = BFD_INTERVAL_MS,
                 quorum: bool = False, sync_daemon: bool = False) -> None:
        self.bfd_ms = bfd_ms
        self.quorum = quorum
        self.sync_daemon = sync_daemon
        self.work = work
        self.log = log
        self.connections = connections
        self.daemon = daemon
        self.kanotify = Path(sys.executable).parent / "kanotify"
        self.directors = [Director(name, addr, work / name, daemon=daemon) for name, addr in DIRECTORS]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.checks: list[dict[str, Any]] = []
        self.numbers: dict[str, Any] = {}
        self.scenarios = 0
        self.flags = work / "flags"

    def check(self, scenario: str, name: str, ok: bool, detail: Any = "") -> bool:
        self.checks.append({"scenario": scenario, "check": name, "ok": bool(ok), "detail": str(detail)})
        self.log(f"  [{'ok' if ok else 'FAIL'}] {name}" + (f": {detail}" if detail != "" else ""))
        return bool(ok)

    def spawn(self, ns: str, argv: list[str], logname: str) -> subprocess.Popen[bytes]:
        out = open(self.work / logname, "ab")
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        return proc

    # ------------------------------------------------------------------ build

    def build(self) -> None:
        self.flags.mkdir(parents=True, exist_ok=True)
        for ns in ("bgp-sw", "bgp-rt", "bgp-cl", *(d.ns for d in self.directors), *(f"bgp-{r}" for r, _ in REALS)):
            sh("ip", "netns", "add", ns)
            nsx(ns, "ip", "link", "set", "lo", "up")
        nsx("bgp-sw", "ip", "link", "add", "br0", "type", "bridge")
        nsx("bgp-sw", "ip", "link", "set", "br0", "up")
        # client <-> router: a point-to-point veth
        sh("ip", "link", "add", "cl0", "netns", "bgp-cl", "type", "veth", "peer", "name", "up0", "netns", "bgp-rt")
        nsx("bgp-cl", "ip", "addr", "add", f"{CLIENT}/24", "dev", "cl0")
        nsx("bgp-cl", "ip", "link", "set", "cl0", "up")
        nsx("bgp-cl", "ip", "route", "add", "default", "via", ROUTER_UP)
        nsx("bgp-rt", "ip", "addr", "add", f"{ROUTER_UP}/24", "dev", "up0")
        nsx("bgp-rt", "ip", "link", "set", "up0", "up")
        # router, directors and real servers on one LAN (the switch's bridge): a cut port is seen by BFD only
        members = [("rt", "bgp-rt", ROUTER_LAN)] + [(d.name, d.ns, d.address) for d in self.directors] + [
            (name, f"bgp-{name}", addr) for name, addr in REALS]
        for name, ns, addr in members:
            sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"p-{name}", "netns", "bgp-sw")
            nsx("bgp-sw", "ip", "link", "set", f"p-{name}", "master", "br0", "up")
            nsx(ns, "ip", "addr", "add", f"{addr}/24", "dev", "eth0")
            nsx(ns, "ip", "link", "set", "eth0", "up")
            if ns != "bgp-rt":
                nsx(ns, "ip", "route", "add", "default", "via", ROUTER_LAN)
        for key, value in (("net.ipv4.ip_forward", "1"), ("net.ipv4.fib_multipath_hash_policy", "1")):
            nsx("bgp-rt", "sysctl", "-qw", f"{key}={value}")
        for name, addr in REALS:
            self.configure_real_server(name)
        self.start_router_bird()
        for d in self.directors:
            self.configure_director(d, scheduler="mh", sloppy=1)
            self.start_director(d)
        self.log(f"cluster built: router, 3 directors ({self.daemon}, BFD {self.bfd_ms} ms x {BFD_MULTIPLIER}), "
                 "3 real servers, client")

    def configure_real_server(self, name: str) -> None:
        ns = f"bgp-{name}"
        conf = self.work / f"{name}.toml"
        conf.write_text(f"""
[settings]
state_dir = "{self.work}/{name}-state"
journal = "{self.work}/{name}-journal.jsonl"
syslog = false
[sysctl]
"net.ipv4.conf.all.arp_ignore" = 1
"net.ipv4.conf.all.arp_announce" = 2
[[instance]]
name = "RS"
  [[instance.vip]]
  address = "{VIP}/32"
  dev = "lo"
  label = "lo:0"
  states = ["master", "backup", "fault"]
""")
        sh("ip", "netns", "exec", ns, str(self.kanotify), "--config", str(conf), "reconcile", "--state", "backup")
        self.spawn(ns, [sys.executable, __file__, "serve", "--flags", str(self.flags), str(PORT),
                        *map(str, CHECK_PORTS.values())], f"{name}-serve.log")

    def start_router_bird(self) -> None:
        peers = "\n".join(
            f"protocol bgp {d.name} from directors {{ neighbor {d.address} as {DIRECTOR_AS}; }}" for d in self.directors)
        conf = self.work / "router-bird.conf"
        conf.write_text(f"""
router id {ROUTER_LAN};
log "{self.work}/router-bird.log" all;
timeformat log "%F %T.%3f";
debug protocols {{ states }};
protocol device {{ scan time 10; }}
protocol kernel {{
  merge paths on;              # ECMP: one kernel route with a nexthop per director
  ipv4 {{ import none; export all; }};
}}
protocol bfd {{
  interface "eth0" {{ min rx interval {self.bfd_ms} ms; min tx interval {self.bfd_ms} ms;
                     idle tx interval 1000 ms; multiplier {BFD_MULTIPLIER}; }};
}}
template bgp directors {{
  local {ROUTER_LAN} as {ROUTER_AS};
  bfd on;
  graceful restart off;
  connect delay time 1; connect retry time 2; error wait time 1, 2;
  ipv4 {{ import where net ~ [ 192.0.2.0/24{{32,32}} ]; export none; }};
}}
{peers}
""")
        self.router_bird = self.spawn("bgp-rt", ["bird", "-f", "-c", str(conf), "-s", str(self.work / "router.ctl"),
                                                  "-P", str(self.work / "router.pid")], "router-bird.out")
        if not wait_for(lambda: (self.work / "router.ctl").exists(), 20):
            raise RuntimeError(f"router BIRD did not start: {self.tail(self.work / 'router-bird.out')}")

    def configure_director(self, d: Director, *, scheduler: str, sloppy: int) -> Path:
        d.dir.mkdir(parents=True, exist_ok=True)
        flags = '["mh-port"]' if scheduler == "mh" else "[]"  # hash the client's port too: flows spread
        # below 1 UP real server the VIP is unbound, i.e. withdrawn (quorum_withdraw: true by default with quorum)
        quorum = "  quorum = 1\n  hysteresis = 0\n" if self.quorum else ""
        # master and backup daemons on every director, so each hears the others (docs/ipvs.md, active-active)
        sync = '[sync_daemon]\ninterface = "eth0"\nmode = "both"\n' if self.sync_daemon and sloppy else ""
        reals = "".join(f"""
    [[instance.service.real]]
    address = "{addr}"
    forward = "dr"
      [instance.service.real.check]
      type = "tcp"
      port = {CHECK_PORTS[d.name]}
      interval = 1
      timeout = 1
      retry = 1
""" for _, addr in REALS)
        conf = d.dir / "kanotify.toml"
        conf.write_text(f"""
[settings]
state_dir = "/run/kanotify-bgp/{d.name}"
journal = "{d.dir}/journal.jsonl"
syslog = false
reconcile_interval = {RECONCILE_INTERVAL}
metrics = "127.0.0.1:9650"
[sysctl]
"net.ipv4.vs.sloppy_tcp" = {sloppy}
{sync}[bgp]
interface = "kav0"
daemon = "{d.daemon}"
control = "{d.control}"
[[instance]]
name = "ANYCAST"
  [[instance.vip]]
  address = "{VIP}/32"
  dev = "kav0"
  [[instance.service]]
  protocol = "tcp"
  address = "{VIP}"
  port = {PORT}
  scheduler = "{scheduler}"
  flags = {flags}
{quorum}{reals}""")
        sh(str(self.kanotify), "--config", str(conf), "check")
        return conf

    def director_bird_conf(self, d: Director) -> Path:
        """The shipped example, with this director's addresses and the test's timers."""
        text = (REPO / "examples" / "bird-director.conf").read_text()
        for old, new in (("192.0.2.1 as 64512", f"{ROUTER_LAN} as {ROUTER_AS}"), ("router id 192.0.2.21", f"router id {d.address}"),
                         ("local as 64513", f"local {d.address} as {DIRECTOR_AS}"),
                         ("log syslog all;", f'log "{d.dir / "bird.log"}" all;')):
            if old not in text:
                raise RuntimeError(f"examples/bird-director.conf no longer has {old!r}: update bgp_cluster.py")
            text = text.replace(old, new)
        text = text.replace("connect retry time 5;", "connect delay time 1; connect retry time 2; error wait time 1, 2;")
        text = text.replace("interval 300 ms;", f"interval {self.bfd_ms} ms;")
        conf = d.dir / "bird.conf"
        conf.write_text(text)
        return conf

    def start_director(self, d: Director, *, reconcile: bool = True) -> None:
        conf = d.dir / "kanotify.toml"
        if reconcile:  # at boot, as kanotify-anycast@ANYCAST.service does
            out = nsx(d.ns, str(self.kanotify), "--config", str(conf), "reconcile", "--state", "master",
                      "--instance", "ANYCAST")
            self.log(f"{d.name}: {out.strip().splitlines()[-1]}")
        d.listen = self.spawn(d.ns, [str(self.kanotify), "--config", str(conf), "listen"], f"{d.name}-listen.log")
        sock = Path(f"/run/kanotify-bgp/{d.name}/control.sock")
        if not wait_for(lambda: sock.exists() or d.listen.poll() is not None, 60) or d.listen.poll() is not None:
            raise RuntimeError(f"{d.name}: kanotify listen did not start: {self.tail(self.work / f'{d.name}-listen.log')}")
        self.start_bird(d)

    def start_bird(self, d: Director) -> None:
        if d.daemon == "frr":
            self.start_frr(d)
            return
        d.control.unlink(missing_ok=True)
        d.bird = self.spawn(d.ns, ["bird", "-f", "-c", str(self.director_bird_conf(d)), "-s", str(d.control),
                                   "-P", str(d.dir / "bird.pid")], f"{d.name}-bird.out")
        if not wait_for(lambda: d.control.exists() or d.bird.poll() is not None, 20) or d.bird.poll() is not None:
            raise RuntimeError(f"{d.name}: BIRD did not start: {self.tail(self.work / f'{d.name}-bird.out')}")

    def start_frr(self, d: Director) -> None:
        """zebra, bfdd and bgpd with examples/frr-director.conf (cut into bfdd's part and bgpd's)."""
        run = d.control
        run.mkdir(exist_ok=True)
        shutil.chown(run, "frr", "frr")  # FRR drops to user frr; the guest's /run is a tmpfs (hostfs cannot chown)
        text = (REPO / "examples" / "frr-director.conf").read_text()
        for old, new in (("bgp router-id 192.0.2.21", f"bgp router-id {d.address}"),
                         ("neighbor 192.0.2.1 ", f"neighbor {ROUTER_LAN} "), ("router bgp 64513", f"router bgp {DIRECTOR_AS}"),
                         ("remote-as 64512", f"remote-as {ROUTER_AS}"), ("timers connect 5", "timers connect 2"),
                         ("receive-interval 300", f"receive-interval {self.bfd_ms}"),
                         ("transmit-interval 300", f"transmit-interval {self.bfd_ms}")):
            if old not in text:
                raise RuntimeError(f"examples/frr-director.conf no longer has {old!r}: update bgp_cluster.py")
            text = text.replace(old, new)
        bfd, rest, inside = [], [], False
        for line in text.splitlines():
            inside = inside or line.startswith("bfd")
            (bfd if inside else rest).append(line)
            inside = inside and line != "exit"
        for daemon, lines in (("bfdd", bfd), ("bgpd", rest)):
            (run / f"{daemon}.conf").write_text("\n".join(lines) + "\n")
            os.chmod(run / f"{daemon}.conf", 0o644)
        common = ["-d", "-z", f"{run}/zserv.api", "--vty_socket", str(run), "-u", "frr", "-g", "frr"]
        nsx(d.ns, "/usr/lib/frr/zebra", *common, "-i", f"{run}/zebra.pid")
        wait_for(lambda: (run / "zserv.api").exists(), 10)
        nsx(d.ns, "/usr/lib/frr/bfdd", *common, "-i", f"{run}/bfdd.pid", "-f", f"{run}/bfdd.conf",
            "--bfdctl", f"{run}/bfdd.sock")
        nsx(d.ns, "/usr/lib/frr/bgpd", *common, "-i", f"{run}/bgpd.pid", "-f", f"{run}/bgpd.conf")

    def kill_bgp_daemon(self, d: Director) -> None:
        if d.daemon == "bird":
            assert d.bird is not None
            os.killpg(d.bird.pid, signal.SIGKILL)
            return
        for name in ("bgpd", "bfdd", "zebra"):
            try:
                os.kill(int((d.control / f"{name}.pid").read_text()), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        for name in ("bgpd", "bfdd", "zebra"):
            (d.control / f"{name}.pid").unlink(missing_ok=True)

    # ------------------------------------------------------------------ observe

    def nexthops(self) -> list[str]:
        routes = json.loads(nsx("bgp-rt", "ip", "-j", "route", "show", f"{VIP}/32") or "[]")
        if not routes:
            return []
        route = routes[0]
        if "nexthops" in route:
            return sorted(nh["gateway"] for nh in route["nexthops"])
        return [route["gateway"]] if "gateway" in route else []

    def wait_nexthops(self, n: int, timeout: float) -> float | None:
        started = time.monotonic()
        if wait_for(lambda: len(self.nexthops()) == n, timeout, interval=0.05):
            return time.monotonic() - started
        return None

    def router_changes(self, since: float) -> list[str]:
        """The router's session state changes logged since ``since`` (wall clock): "d2 stop" ..."""
        import datetime

        changes = []
        for line in (self.work / "router-bird.log").read_text(errors="replace").splitlines():
            if ": State changed to " not in line:
                continue
            try:
                stamp = datetime.datetime.strptime(" ".join(line.split()[:2]), "%Y-%m-%d %H:%M:%S.%f").timestamp()
            except ValueError:
                continue
            name = line.split(": State changed to ")[0].split()[-1]
            if stamp >= since and name in {d.name for d in self.directors}:
                changes.append(f"{name} {line.rsplit(' ', 1)[-1]} {stamp - since:.2f}s")
        return changes

    def router_saw_down(self, d: Director, since: float) -> float | None:
        """Seconds from ``since`` (wall clock) to the router's first log line of ``d``'s session leaving up."""
        import datetime

        for line in (self.work / "router-bird.log").read_text(errors="replace").splitlines():
            if f" {d.name}: State changed to " not in line or line.endswith("to up"):
                continue
            try:
                stamp = datetime.datetime.strptime(" ".join(line.split()[:2]), "%Y-%m-%d %H:%M:%S.%f").timestamp()
            except ValueError:
                continue
            if stamp >= since - 0.001:
                return stamp - since
        return None

    def reals_up(self, d: Director) -> bool:
        weights = [line.split()[3] for line in nsx(d.ns, "ipvsadm", "-Ln").splitlines()
                   if line.strip().startswith("-> 198.51.100.")]
        return weights == ["1"] * len(REALS)

    def bfd_sessions(self) -> dict[str, tuple[str, str]]:
        """The router's BFD sessions: neighbor -> (state, timeout), from ``birdc show bfd sessions``."""
        out = sh("birdc", "-r", "-s", str(self.work / "router.ctl"), "show", "bfd", "sessions", check=False)
        found = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 6 and parts[0].startswith("198.51.100."):
                found[parts[0]] = (parts[2], parts[-1])
        return found

    def bfd_fast(self) -> bool:
        timeout = f"{self.bfd_ms * BFD_MULTIPLIER / 1000:.3f}"
        sessions = self.bfd_sessions()
        return all(sessions.get(d.address) == ("Up", timeout) for d in self.directors)

    def carried(self, d: Director, ports: range) -> set[int]:
        """Client source ports (of ``ports``) ESTABLISHED in the director's IPVS connection table that the
        director scheduled itself: origin LOCAL in ``/proc/net/ip_vs_conn_sync`` (with sync daemons in mode
        both every director also lists the others' connections, origin SYNC)."""
        client, vip = f"{ip_hex(CLIENT)}", f"{ip_hex(VIP)}"
        found = set()
        for line in nsx(d.ns, "cat", "/proc/net/ip_vs_conn_sync").splitlines()[1:]:
            # Pro FromIP FPrt ToIP TPrt DestIP DPrt State Origin Expires (addresses and ports in hex)
            parts = line.split()
            if len(parts) >= 9 and parts[0] == "TCP" and parts[1] == client and parts[3] == vip \
                    and int(parts[4], 16) == PORT and parts[7] == "ESTABLISHED" and parts[8] == "LOCAL" \
                    and int(parts[2], 16) in ports:
                found.add(int(parts[2], 16))
        return found

    def synced(self, d: Director, ports: range) -> int:
        """How many of ``ports``' connections the director has from another director's sync daemon."""
        client = ip_hex(CLIENT)
        return sum(1 for line in nsx(d.ns, "cat", "/proc/net/ip_vs_conn_sync").splitlines()[1:]
                   if (parts := line.split()) and len(parts) >= 9 and parts[1] == client and parts[8] == "SYNC"
                   and int(parts[2], 16) in ports)

    @staticmethod
    def tail(path: Path, n: int = 30) -> str:
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return f"({path} missing)"

    # ------------------------------------------------------------------ scenarios

    def start_client(self, tag: str, base: int) -> tuple[subprocess.Popen[bytes], Path, Path]:
        result, stop = self.work / f"client-{tag}.json", self.work / f"client-{tag}.stop"
        proc = self.spawn("bgp-cl", [sys.executable, __file__, "client", str(self.connections), str(base),
                                     str(result), str(stop)], f"client-{tag}.log")
        return proc, result, stop

    def all_carried(self, ports: range) -> dict[str, set[int]]:
        return {d.name: self.carried(d, ports) for d in self.directors}

    def scenario(self, tag: str, how: str, expect_breakage: bool) -> None:
        self.log(f"--- {tag}: {how} d1 while {self.connections} connections exchange a line every 200 ms ---")
        victim = self.directors[0]
        have = self.wait_nexthops(3, 30)
        self.check(tag, "router has 3 nexthops before", have is not None, self.nexthops())
        # a director whose health checks have not yet seen its real servers (just back, just reloaded)
        # serves with them drained; quorum (issue 21) withdraws such a director by itself
        ready = wait_for(lambda: all(self.reals_up(d) for d in self.directors), 30, interval=0.3)
        self.check(tag, "every director has its 3 real servers at weight 1 before", ready,
                   {d.name: self.reals_up(d) for d in self.directors})
        # a BFD session that just came up runs at 1 s until its poll sequence agrees on 100 ms:
        # measure the detection, not the negotiation
        fast = wait_for(self.bfd_fast, 30, interval=0.2)
        self.check(tag, f"router's BFD sessions up at {self.bfd_ms} ms x {BFD_MULTIPLIER} before", fast,
                   self.bfd_sessions())
        self.scenarios += 1
        started_wall = time.time()
        base = 20000 + 1000 * self.scenarios  # each scenario's own source ports: no stale IPVS entry counts
        ports = range(base, base + self.connections)
        proc, result, stop = self.start_client(tag, base)
        counts = wait_for(lambda: (c := self.all_carried(ports)) and sum(map(len, c.values())) >= self.connections
                          and c, 60, interval=0.5)
        carried = counts or self.all_carried(ports)
        self.log(f"connections per director: { {k: len(v) for k, v in carried.items()} }")
        self.check(tag, "every director carries connections", all(carried.values()),
                   {k: len(v) for k, v in carried.items()})
        synced = {d.name: self.synced(d, ports) for d in self.directors} if self.sync_daemon and not expect_breakage \
            else None
        if synced is not None:  # every director's master daemon sent its connections to the others' backups
            synced = wait_for(lambda: (s := {d.name: self.synced(d, ports) for d in self.directors})
                              and all(s[d.name] >= self.connections - len(carried[d.name]) for d in self.directors)
                              and s, 10, interval=0.5) or {d.name: self.synced(d, ports) for d in self.directors}
            self.log(f"connections each director has from the others' sync daemons: {synced}")
            self.check(tag, "every director has the others' connections from their sync daemons",
                       all(synced[d.name] >= self.connections - len(carried[d.name]) for d in self.directors), synced)
        time.sleep(2)
        killed_at = time.time()
        t0 = time.monotonic()
        if how == "kill":
            self.kill_bgp_daemon(victim)
            assert victim.listen is not None
            os.killpg(victim.listen.pid, signal.SIGKILL)
        else:
            nsx("bgp-sw", "ip", "link", "set", f"p-{victim.name}", "down")
        two = wait_for(lambda: len(self.nexthops()) == 2 and time.monotonic() - t0, 10, interval=0.05)
        self.log(f"router has 2 nexthops {two:.2f}s after the {how}" if two else "router did not drop to 2 nexthops")
        self.check(tag, "router drops the dead director's nexthop", bool(two),
                   f"{two:.2f}s" if two else self.nexthops())
        down = self.router_saw_down(victim, killed_at)
        self.log(f"router's BIRD logged {victim.name} down {down:.2f}s after the {how}" if down is not None
                 else f"router's BIRD logged no state change of {victim.name}")
        # moved connections: a few exchanges each on the other directors.  ECMP also moves flows between the
        # survivors (Linux hashes by threshold); a survivor that gets one uses the SYNC entry it has (or
        # sloppy_tcp makes one): its table cannot tell, the control's broken_survivors counts them
        time.sleep(6)
        stop.touch()
        proc.wait(timeout=60)
        changes = self.router_changes(started_wall)
        flaps = [c for c in changes if not c.startswith(victim.name + " ")]
        self.check(tag, "the survivors' sessions stayed up", not flaps, changes)
        conns = json.loads(result.read_text())
        dead = carried[victim.name]
        # went on through a survivor: an echo after the router had stopped sending anything to the dead director
        rerouted_at = killed_at + (two or 0)
        moved_from_dead = {c["port"] for c in conns if c["port"] in dead and (c["last_ok"] or 0) > rerouted_at + 1}
        broken = [c for c in conns if c["broken_at"] is not None]
        before = [c for c in broken if c["broken_at"] < killed_at]
        on_dead = [c for c in broken if c["port"] in dead and c["broken_at"] >= killed_at]
        on_survivors = [c for c in broken if c["port"] not in dead and c["broken_at"] >= killed_at]
        numbers = {
            "connections": len(conns), "carried_by_dead": len(dead), "broken_before_kill": len(before),
            "moved_from_dead": len(moved_from_dead),
            "synced": synced, "broken_dead": len(on_dead), "broken_survivors": len(on_survivors),
            "two_nexthops_s": round(two, 2) if two else None,
            "router_saw_down_s": round(down, 2) if down is not None else None,
            "max_exchange_ms": max((c["max_ms"] for c in conns), default=0),
            "errors": sorted({c["error"].split(":")[0] for c in broken})[:5],
        }
        self.numbers[tag] = numbers
        self.log(f"{tag}: {numbers}")
        self.check(tag, "no connection broke before the kill", not before, [c["error"] for c in before[:3]])
        if expect_breakage:
            self.check(tag, "control: the dead director's connections break (the test can see breakage)",
                       len(on_dead) > 0, numbers)
        else:
            self.check(tag, "0 broken among the connections the survivors carried", not on_survivors,
                       [(c["port"], c["error"]) for c in on_survivors[:5]])
            self.check(tag, "0 broken among the connections the dead director carried", not on_dead,
                       [(c["port"], c["error"]) for c in on_dead[:5]])
            self.check(tag, "every connection of the dead director goes on through a survivor",
                       len(moved_from_dead) == len(dead), f"{len(moved_from_dead)} of {len(dead)}")
        self.revive(victim, how)

    def scenario_quorum(self) -> None:
        """Every real server fails d1's checks (their port for d1 refuses): d1's quorum is lost, kanotify
        unbinds the VIP and the router drops d1 within interval x (retry + 1) + timeout + 1 s; when the
        checks pass again (a full round), the VIP is bound and the router has 3 nexthops again.
        The client's connections must not notice (d1's go on through the survivors: mh + sloppy_tcp)."""
        tag, victim = "quorum", self.directors[0]
        interval, retry, timeout = 1, 1, 1  # the checks configure_director writes
        bound = interval * (retry + 1) + timeout + 1
        self.log(f"--- {tag}: every real server refuses {victim.name}'s health checks ---")
        self.check(tag, "router has 3 nexthops before", self.wait_nexthops(3, 30) is not None, self.nexthops())
        self.scenarios += 1
        base = 20000 + 1000 * self.scenarios
        proc, result, stop = self.start_client(tag, base)
        wait_for(lambda: sum(map(len, self.all_carried(range(base, base + self.connections)).values()))
                 >= self.connections, 60, interval=0.5)
        port = CHECK_PORTS[victim.name]
        carried = self.carried(victim, range(base, base + self.connections))
        refused_at = time.monotonic()
        (self.flags / f"refuse-{port}").touch()
        gone = wait_for(lambda: len(self.nexthops()) == 2 and time.monotonic() - refused_at, bound + 5, interval=0.1)
        self.check(tag, f"{victim.name} withdrawn within interval x (retry + 1) + timeout + 1 = {bound} s",
                   bool(gone) and gone <= bound, f"{gone:.2f}s" if gone else self.nexthops())
        self.quorum_seen(tag, victim, up=False)
        # the listener's drift repair (reconcile_interval = 5) must not bind the withdrawn VIP again
        rebound = wait_for(lambda: len(self.nexthops()) != 2, RECONCILE_INTERVAL + 1, interval=0.2)
        self.check(tag, f"{victim.name} stays withdrawn through a drift repair ({RECONCILE_INTERVAL + 1} s)",
                   not rebound, self.nexthops())
        (self.flags / f"refuse-{port}").unlink()
        back_from = time.monotonic()
        back = wait_for(lambda: len(self.nexthops()) == 3 and time.monotonic() - back_from, 30, interval=0.1)
        self.check(tag, f"{victim.name} announced again once its checks pass", bool(back),
                   f"{back:.2f}s" if back else self.nexthops())
        self.quorum_seen(tag, victim, up=True)
        time.sleep(2)
        stop.touch()
        proc.wait(timeout=60)
        broken = [c for c in json.loads(result.read_text()) if c["broken_at"] is not None]
        self.numbers[tag] = {"carried_by_withdrawn": len(carried), "withdrawn_s": round(gone, 2) if gone else None,
                             "bound_s": bound, "back_s": round(back, 2) if back else None, "broken": len(broken)}
        self.log(f"{tag}: {self.numbers[tag]}")
        self.check(tag, "no connection broke", not broken, [c["error"] for c in broken[:3]])

    def quorum_seen(self, tag: str, d: Director, *, up: bool) -> None:
        """The quorum's state where an operator sees it: status --json, the metric, the journal."""
        service = f"tcp {VIP}:{PORT}"
        status = json.loads(nsx(d.ns, str(self.kanotify), "--config", str(d.dir / "kanotify.toml"), "--json",
                                "status", check=False) or "{}")
        quorums = [s.get("quorum") for s in status.get("ipvs", {}).get("services", [])
                   if str(s.get("service", "")).startswith(service)]
        self.check(tag, f"status --json: quorum up {str(up).lower()}", quorums and quorums[0]
                   and quorums[0].get("up") is up, quorums)
        metrics = nsx(d.ns, sys.executable, "-c", "import urllib.request; print(urllib.request.urlopen("
                      "'http://127.0.0.1:9650/metrics', timeout=5).read().decode())", check=False)
        lines = [line for line in metrics.splitlines() if line.startswith("kanotify_service_quorum_up{")]
        self.check(tag, f"metric kanotify_service_quorum_up {int(up)}",
                   len(lines) == 1 and float(lines[0].rsplit(" ", 1)[1]) == int(up), lines)
        word = "gained" if up else "lost"
        journal = (d.dir / "journal.jsonl").read_text(errors="replace")
        self.check(tag, f"journal: quorum of {service} {word}", f"quorum of {service} {word}" in journal, "")

    def revive(self, d: Director, how: str) -> None:
        if how == "kill":
            self.start_director(d, reconcile=False)  # the VIP is still on kav0: BIRD exports it at start
        else:
            nsx("bgp-sw", "ip", "link", "set", f"p-{d.name}", "up")
        back = self.wait_nexthops(3, 30)
        self.log(f"{d.name} back: 3 nexthops after {back:.1f}s" if back is not None else f"{d.name} did not come back")

    def reconfigure(self, scheduler: str, sloppy: int) -> None:
        for d in self.directors:
            if self.sync_daemon and not sloppy:  # the control has no sync daemon: kanotify leaves unmanaged ones
                for state in ("master", "backup"):
                    nsx(d.ns, "ipvsadm", "--stop-daemon", state, check=False)
            self.configure_director(d, scheduler=scheduler, sloppy=sloppy)
            assert d.listen is not None
            d.listen.send_signal(signal.SIGHUP)
        time.sleep(1)
        for d in self.directors:
            out = nsx(d.ns, str(self.kanotify), "--config", str(d.dir / "kanotify.toml"), "reconcile")
            self.log(f"{d.name}: {out.strip().splitlines()[-1]}")
            table = nsx(d.ns, "ipvsadm", "-Ln")
            sloppy_now = nsx(d.ns, "cat", "/proc/sys/net/ipv4/vs/sloppy_tcp").strip()
            self.check("reconfigure", f"{d.name} runs {scheduler} with sloppy_tcp = {sloppy}",
                       f" {scheduler}" in table and sloppy_now == str(sloppy), f"sloppy_tcp {sloppy_now}")

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)


def main_run(args: argparse.Namespace) -> int:
    if os.environ.get("KANOTIFY_IN_GUEST") != "1":
        print("bgp_cluster.py run builds namespaces and BIRD routers: run it in the UML guest "
              "(tests/e2e/test_bgp_cluster.py)", file=sys.stderr)
        return 2
    guest_dir = Path(os.environ.get("KANOTIFY_GUEST_DIR", "/tmp"))
    result_path = Path(args.result) if args.result else guest_dir / "bgp-result.json"
    work = guest_dir / "bgp-cluster"
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)
    log = Log(args.log)
    cluster = Cluster(work, log, args.connections, args.director_daemon, args.bfd_interval, args.quorum,
                      args.sync_daemon)
    started = time.monotonic()
    error = None
    try:
        cluster.build()
        cluster.scenario("kill", "kill", expect_breakage=False)
        cluster.scenario("cut", "cut", expect_breakage=False)
        if args.quorum:
            cluster.scenario_quorum()
        cluster.reconfigure("wlc", 0)
        cluster.scenario("control-kill", "kill", expect_breakage=True)
    except BaseException as exc:  # noqa: BLE001 - reported in the result
        import traceback

        error = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        log(f"ERROR: {error}")
    finally:
        logs = {p.name: cluster.tail(p, 40) for p in sorted(work.glob("*.log")) + sorted(work.glob("*.out"))}
        cluster.stop_all()
        for d in cluster.directors:
            if d.daemon == "frr":
                cluster.kill_bgp_daemon(d)
    seconds = time.monotonic() - started
    failed = [c for c in cluster.checks if not c["ok"]]
    ok = error is None and not failed and bool(cluster.checks)
    log(f"=== bgp: {'PASS' if ok else 'FAIL'}: {len(cluster.checks) - len(failed)}/{len(cluster.checks)} checks "
        f"in {seconds:.0f}s")
    result_path.write_text(json.dumps({
        "ok": ok, "error": error, "seconds": round(seconds, 1), "checks": cluster.checks,
        "numbers": cluster.numbers, "log": "\n".join(log.lines), "logs": logs if not ok else {},
    }, indent=1))
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run")
    p.add_argument("--result")
    p.add_argument("--log")
    p.add_argument("--connections", type=int, default=200)
    p.add_argument("--director-daemon", choices=("bird", "frr"), default="bird")
    p.add_argument("--bfd-interval", type=int, default=BFD_INTERVAL_MS, help="BFD tx/rx interval (ms), x3")
    p.add_argument("--sync-daemon", action=argparse.BooleanOptionalAction, default=True,
                   help='[sync_daemon] mode = "both" on the directors (default); never in the control run')
    p.add_argument("--quorum", action=argparse.BooleanOptionalAction, default=True,
                   help="services with quorum = 1 and the quorum scenario (default)")
    p = sub.add_parser("serve")
    p.add_argument("--flags", type=Path, required=True)
    p.add_argument("ports", type=int, nargs="+")
    p = sub.add_parser("client")
    p.add_argument("count", type=int)
    p.add_argument("base", type=int)
    p.add_argument("result", type=Path)
    p.add_argument("stop", type=Path)
    args = parser.parse_args(argv)
    if args.cmd == "run":
        return main_run(args)
    if args.cmd == "serve":
        serve(args.ports, args.flags)
    else:
        client(args.count, args.base, args.result, args.stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
