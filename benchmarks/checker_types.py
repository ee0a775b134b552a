#!/usr/bin/env python3
"""CPU per check, per checker type: ``kanotify listen`` against keepalived's checker (``keepalived -C``).

    .venv/bin/python benchmarks/checker_types.py --guest                  # a UML guest (IPVS for keepalived)
    .venv/bin/python benchmarks/checker_types.py --guest --types dns,udp  # some types only

Run as root.  In the guest, in network namespaces (:mod:`health_scale`'s:
``hs-*-rs`` has the real servers, ``hs-*-kan`` and ``hs-*-ka`` the two
directors, over veths), with ``--services`` x ``--reals`` real servers (10,000
by default), for each type in turn:

* one server process in the real servers' namespace answers on every real
  server's address and port: ``tcp`` accepts and closes, ``http`` answers
  ``200`` with the body ``ok``, ``smtp`` greets 220 and answers HELO 250,
  ``udp`` echoes, ``dns`` answers every query (RCODE 0); ``ping`` is the
  kernel's; it counts what it served per director address (ping: the
  namespace's ``Icmp InEchos``);
* ``kanotify listen`` with a config of those real servers, each with that
  check (http with ``digest``, udp with ``require_reply``, dns ``A``), then
  ``keepalived -C`` with the same checker (``HTTP_GET`` + digest, ``UDP_CHECK``
  + ``require_reply``, ``DNS_CHECK``, ``SMTP_CHECK``, ``PING_CHECK``,
  ``TCP_CHECK``), one after the other, never both at once;
* after ``--warmup`` seconds, over ``--window`` seconds: the process's CPU
  (utime + stime; keepalived's checker child) and the checks the servers saw.

Printed: per type, each one's CPU share of a core, checks per second, CPU per
check in microseconds, and kanotify's over keepalived's.  Absolute figures in
the guest mean little (a syscall costs ~5-10x the host's): compare the ratio.
``command`` (a process per check in both) and ``file`` (keepalived watches the
file with inotify: nothing per check to compare) are not measured.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from health_scale import (FIRST_PORT, LINKS, NS_KA, NS_KAN, NS_RS, SERVICE_VIP, Keepalived, Layout,  # noqa: E402
                          Listener, cpu_seconds, make_network, real_addresses, remove_network, write_private)

TYPES = ("tcp", "http", "smtp", "udp", "dns", "ping")
BODY = b"ok"
DIGEST = hashlib.md5(BODY).hexdigest()
KAN_ADDR, KA_ADDR = LINKS[NS_KAN][0], LINKS[NS_KA][0]
PKTINFO = getattr(socket, "IP_PKTINFO", 8)


# --------------------------------------------------------------------------- the real servers


def serve(kind: str, services: int) -> None:
    """``--serve KIND``: answer on FIRST_PORT.. (every address); ``count`` on stdin answers the counts."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    epoll = select.epoll()
    listeners: dict[int, socket.socket] = {}
    conns: dict[int, tuple[socket.socket, bytes]] = {}
    counts: dict[str, int] = {}
    udp = kind in ("udp", "dns")
    for s in range(services):
        sock = socket.socket(socket.AF_INET, (socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) | socket.SOCK_NONBLOCK)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if udp:
            sock.setsockopt(socket.SOL_IP, PKTINFO, 1)
        sock.bind(("0.0.0.0", FIRST_PORT + s))
        if not udp:
            sock.listen(1024)
        listeners[sock.fileno()] = sock
        epoll.register(sock.fileno(), select.EPOLLIN)
    epoll.register(0, select.EPOLLIN)
    print("ready", flush=True)

    def close(fd: int) -> None:
        conn, _ = conns.pop(fd)
        epoll.unregister(fd)
        conn.close()

    while True:
        for fd, _mask in epoll.poll():
            if fd == 0:
                line = sys.stdin.readline()
                if not line:
                    return
                print(json.dumps(counts), flush=True)
                continue
            sock = listeners.get(fd)
            if sock is not None and udp:
                while True:
                    try:
                        data, ancillary, _flags, peer = sock.recvmsg(2048, socket.CMSG_SPACE(12))
                    except BlockingIOError:
                        break
                    counts[peer[0]] = counts.get(peer[0], 0) + 1
                    if kind == "dns" and len(data) >= 12:  # the query back as an answer: QR, RD, RA, RCODE 0
                        data = data[:2] + b"\x81\x80" + data[4:6] + b"\0\0\0\0\0\0" + data[12:]
                    # from the address it was sent to (the real server's), or the checker's connected socket drops it
                    info = [(level, kind_, cdata) for level, kind_, cdata in ancillary if kind_ == PKTINFO]
                    dst = info[0][2][8:12] if info else b"\0\0\0\0"
                    sock.sendmsg([data], [(socket.SOL_IP, PKTINFO, struct.pack("I4s4s", 0, dst, dst))], 0, peer)
                continue
            if sock is not None:
                while True:
                    try:
                        conn, peer = sock.accept()
                    except BlockingIOError:
                        break
                    counts[peer[0]] = counts.get(peer[0], 0) + 1
                    if kind == "tcp":
                        conn.close()
                        continue
                    conn.setblocking(False)
                    if kind == "smtp":
                        conn.send(b"220 bench ESMTP\r\n")
                    conns[conn.fileno()] = (conn, b"")
                    epoll.register(conn.fileno(), select.EPOLLIN)
                continue
            if fd not in conns:
                continue
            conn, pending = conns[fd]
            try:
                data = conn.recv(4096)
            except OSError:
                data = b""
            if not data:
                close(fd)
                continue
            pending += data
            conns[fd] = (conn, pending)
            if kind == "http" and b"\r\n\r\n" in pending:
                conn.send(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY))
                close(fd)
            elif kind == "smtp":
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    conns[fd] = (conn, pending)
                    if line.upper().startswith(b"HELO"):
                        conn.send(b"250 hello\r\n")
                    elif line.upper().startswith(b"QUIT"):
                        conn.send(b"221 bye\r\n")
                        close(fd)
                        break


class Servers:
    def __init__(self, kind: str, services: int) -> None:
        self.kind = kind
        self.proc: subprocess.Popen[str] | None = None
        if kind != "ping":
            self.proc = subprocess.Popen(["ip", "netns", "exec", NS_RS, sys.executable, __file__, "--serve", kind,
                                          "--services", str(services)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert self.proc.stdout is not None
            if self.proc.stdout.readline().strip() != "ready":
                raise SystemExit(f"the {kind} servers did not start")

    def count(self, source: str) -> int:
        if self.proc is None:  # ping: the kernel answers; one director checks at a time
            snmp = subprocess.run(["ip", "netns", "exec", NS_RS, "cat", "/proc/net/snmp"], capture_output=True,
                                  text=True, check=True).stdout.splitlines()
            heads, values = [line.split() for line in snmp if line.startswith("Icmp:")][:2]
            return int(values[heads.index("InEchos")])
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        return int(json.loads(self.proc.stdout.readline()).get(source, 0))

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


# --------------------------------------------------------------------------- configs


def kanotify_check(kind: str, args: argparse.Namespace) -> str:
    extra = {"http": f'path = "/"\n    digest = "{DIGEST}"\n', "udp": "require_reply = true\n",
             "dns": 'dns_type = "A"\n    dns_name = "example.com"\n'}.get(kind, "")
    return (f'    [instance.service.check]\n    type = "{kind}"\n    {extra}    interval = {args.interval}\n'
            f"    timeout = {args.timeout}\n    retry = 1\n    retry_delay = 1\n")


def kanotify_config(tmp: Path, layout: Layout, kind: str, args: argparse.Namespace) -> str:
    out = [f"""[settings]
state_dir = "{tmp}/state"
journal = "{tmp}/journal.jsonl"
hooks_dir = "{tmp}/hooks.d"
syslog = false
reconcile_interval = 0

[[instance]]
name = "VI_1"
"""]
    addresses = real_addresses(layout.reals)
    protocol = "udp" if kind in ("udp", "dns") else "tcp"
    for s in range(layout.services):
        out.append(f'  [[instance.service]]\n  protocol = "{protocol}"\n  address = "{SERVICE_VIP}"\n'
                   f"  port = {FIRST_PORT + s}\n  scheduler = \"rr\"\n" + kanotify_check(kind, args))
        out.extend(f'    [[instance.service.real]]\n    address = "{a}"\n' for a in addresses)
    return "".join(out)


def keepalived_config(layout: Layout, kind: str, args: argparse.Namespace) -> str:
    body = {"tcp": "TCP_CHECK {\n", "ping": "PING_CHECK {\n", "smtp": "SMTP_CHECK {\n",
            "udp": "UDP_CHECK {\n            require_reply\n",
            "dns": "DNS_CHECK {\n            type A\n            name example.com\n",
            "http": f"HTTP_GET {{\n            url {{\n                path /\n                digest {DIGEST}\n"
                    "            }\n"}[kind]
    checker = (f"        {body}            connect_timeout {args.timeout:g}\n            retry 1\n"
               "            delay_before_retry 1\n        }\n")
    out = ["global_defs {\n    router_id checker_types\n}\n"]
    protocol = "UDP" if kind in ("udp", "dns") else "TCP"
    for s in range(layout.services):
        port = FIRST_PORT + s
        out.append(f"virtual_server {SERVICE_VIP} {port} {{\n    delay_loop {args.interval:g}\n"
                   f"    lb_algo rr\n    lb_kind DR\n    protocol {protocol}\n")
        for a in real_addresses(layout.reals):
            out.append(f"    real_server {a} {port} {{\n        weight 1\n        inhibit_on_failure\n{checker}    }}\n")
        out.append("}\n")
    return "".join(out)


# --------------------------------------------------------------------------- measuring


def measure(pid: int, servers: Servers, source: str, args: argparse.Namespace) -> dict[str, float]:
    time.sleep(args.warmup)
    cpu0, checks0, t0 = sum(cpu_seconds(pid)), servers.count(source), time.monotonic()
    time.sleep(args.window)
    cpu1, checks1, t1 = sum(cpu_seconds(pid)), servers.count(source), time.monotonic()
    seconds, checks = t1 - t0, checks1 - checks0
    cpu = cpu1 - cpu0
    return {"cpu": cpu / seconds, "checks_s": checks / seconds,
            "us_per_check": cpu / checks * 1e6 if checks else float("nan")}


def down_count(state_dir: Path) -> int:
    try:
        data = json.loads((state_dir / "health.json").read_text())
    except (OSError, ValueError):
        return -1
    return sum(1 for r in data.get("reals", []) if not r.get("up"))


def run_type(kind: str, layout: Layout, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    servers = Servers(kind, layout.services)
    result: dict[str, Any] = {}
    try:
        work = tmp / kind
        (work / "state").mkdir(parents=True)
        config = write_private(work / "kanotify.toml", kanotify_config(work, layout, kind, args))
        listener = Listener.start(work, config, profile=work / "profile" if args.profile else None)
        try:
            pid = int(subprocess.run(["pgrep", "-P", str(listener.proc.pid)], capture_output=True, text=True)
                      .stdout.split()[0]) if _is_wrapper(listener.proc.pid) else listener.proc.pid
            result["kanotify"] = measure(pid, servers, KAN_ADDR, args)
            result["kanotify"]["down"] = down_count(work / "state")
        finally:
            listener.stop()
        if args.profile:
            from health_scale import print_profile

            print_profile(work / "profile")
        if args.native:
            result["keepalived"] = {"cpu": float("nan"), "checks_s": float("nan"), "us_per_check": float("nan")}
            return result
        conf = write_private(work / "keepalived.conf", keepalived_config(layout, kind, args))
        ka = Keepalived.start(work, conf)
        try:
            result["keepalived"] = measure(ka.checker, servers, KA_ADDR, args)
        finally:
            ka.stop()
    finally:
        servers.close()
    return result


def _is_wrapper(pid: int) -> bool:
    """``ip netns exec`` execs the command: the pid is kanotify's own (kept for another launcher)."""
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read().split(b"\0")[0].endswith(b"/ip")


def report(results: dict[str, dict[str, Any]], layout: Layout, args: argparse.Namespace) -> None:
    print(f"\n{layout.total} real servers, one check each every {args.interval:g}s "
          f"(nominal {layout.total / args.interval:.0f} checks/s), window {args.window:g}s after {args.warmup:g}s")
    print(f"{'type':6} {'kanotify CPU':>13} {'checks/s':>9} {'us/check':>9}   {'keepalived CPU':>14} {'checks/s':>9} "
          f"{'us/check':>9}   {'ratio':>6}")
    for kind, r in results.items():
        k, a = r["kanotify"], r["keepalived"]
        ratio = k["us_per_check"] / a["us_per_check"] if a["us_per_check"] else float("nan")
        print(f"{kind:6} {k['cpu'] * 100:12.1f}% {k['checks_s']:9.0f} {k['us_per_check']:9.0f}   "
              f"{a['cpu'] * 100:13.1f}% {a['checks_s']:9.0f} {a['us_per_check']:9.0f}   {ratio:5.2f}x"
              + (f"   (kanotify saw {k['down']} DOWN)" if k.get("down") else ""))
    print("JSON " + json.dumps(results))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", default=",".join(TYPES))
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--reals", type=int, default=100, help="real servers per service")
    parser.add_argument("--interval", type=float, default=6.0)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--guest", action="store_true", help="boot a user-mode Linux guest and run it there")
    parser.add_argument("--mem", default="2G")
    parser.add_argument("--native", action="store_true", help="the host kernel, kanotify alone (no IPVS)")
    parser.add_argument("--profile", action="store_true", help="run the listener under cProfile, print its top")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.services)
        return 0
    if args.guest:
        from run_in_uml import run_script

        inner = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--guest"]
        inner = [a for i, a in enumerate(inner) if not (a == "--mem" or (i and inner[i - 1] == "--mem"))]
        return run_script([sys.executable, __file__, *inner], timeout=3600, mem=args.mem,
                          kernel_args=("seccomp=on",))
    if os.geteuid() != 0:
        raise SystemExit("run as root (it creates network namespaces)")
    if not args.native and not os.path.exists("/proc/net/ip_vs"):
        raise SystemExit("no IPVS in this kernel (keepalived's checker needs it): use --guest")
    layout = Layout(args.services, args.reals)
    results: dict[str, dict[str, Any]] = {}
    make_network(layout)
    try:
        with tempfile.TemporaryDirectory(prefix="checker-types-") as tmp:
            for kind in args.types.split(","):
                print(f"[{kind}]", flush=True)
                results[kind] = run_type(kind, layout, args, Path(tmp))
    finally:
        remove_network()
        if results:
            report(results, layout, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
