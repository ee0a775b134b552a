#!/usr/bin/env python3
"""A real LVS-DR cluster with real keepalived and kanotify, inside one user-mode Linux guest.

Run by ``tests/e2e/test_cluster.py`` (and ``scripts/demo``) through ``tests/uml.py``::

    cluster.py run --topology dedicated|two-node|sync [--without-sync-daemon] [--result FILE] [--log FILE]

builds, in network namespaces on a bridge, a client, two directors running
keepalived (VRRP over unicast peers) and real servers with a tiny HTTP server;
kanotify is wired in exactly as a user would: keepalived's notify lines call the
installed ``kanotify`` with a per-node config rendered from the repository's
``keepalived.conf.example`` and ``examples/*.toml``.  It then runs the scenarios
of issue 6, checks each from the client AND from kernel state (``ipvsadm-save
-n``, ``ip -j addr``, sysctls) AND from kanotify's journal, prints a readable
log and writes a JSON result for the host-side test.

The same file provides the small programs that run inside the namespaces::

    cluster.py serve NAME                HTTP on :80 answering NAME (an ``ECHO`` request echoes lines)
    cluster.py client LOGFILE            a request to VIP:80 every 100 ms, one JSON line each
    cluster.py hold LOGFILE              ONE connection to VIP:80, a line echoed every 100 ms
    cluster.py arp-probe DEV IP SECONDS  who answers ARP for IP (AF_PACKET)

Only documentation addresses (192.0.2.0/24) are used, only inside namespaces
this script creates; even the bridge lives in its own namespace.  It refuses to
run outside the guest (``KANOTIFY_IN_GUEST=1``): the guest's poweroff is the
cleanup.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

REPO = Path(__file__).resolve().parents[2]
VIP = "192.0.2.100"
PORT = 80
CLIENT = ("client", "192.0.2.10")
INSTANCE = "VI_1"
NS_PREFIX = "e2e-"
REQUEST_INTERVAL = 0.1   # the client sends one request every 100 ms ...
REQUEST_TIMEOUT = 1.0    # ... and gives each one second
STOP_DEADLINE = 15.0     # scenario 4: the stopped director must be clean by then (UML: ~2-6 s per kanotify run)
CONVERGE_TIMEOUT = 45.0
HOLD_TIMEOUT = 3.0       # hold: one exchange (line out, echo back) failed if not done by then
CLK_TCK = os.sysconf("SC_CLK_TCK")


def mac_of(address: str) -> str:
    """Readable fixed MACs: 192.0.2.11 -> 02:00:00:00:00:11."""
    return f"02:00:00:00:00:{int(address.rsplit('.', 1)[1]):02d}"


# =========================================================================== in-namespace programs


def serve(name: str) -> None:
    """HTTP server on :80 (every address, the VIP on lo included) answering its own name."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = (name + "\n").encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_ECHO(self) -> None:  # noqa: N802 - "ECHO / HTTP/1.0": a long-lived line echo (the hold client)
            self.wfile.write(body)
            for line in self.rfile:
                self.wfile.write(name.encode() + b" " + line)

        def log_message(self, *args: Any) -> None:
            pass

    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.daemon_threads = True
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    print(f"{name}: serving on :{PORT}", flush=True)
    server.serve_forever()


def _one_request(started: float) -> dict[str, Any]:
    record: dict[str, Any] = {"t": round(started, 3)}
    try:
        with socket.create_connection((VIP, PORT), timeout=REQUEST_TIMEOUT) as sock:
            sock.settimeout(max(0.05, started + REQUEST_TIMEOUT - time.monotonic()))
            sock.sendall(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
            data = b""
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.0 200"):
            raise OSError(f"bad reply {head[:40]!r}")
        record.update(ok=True, who=body.decode().strip())
    except OSError as exc:
        record.update(ok=False, err=type(exc).__name__ if not str(exc) else str(exc)[:60])
    record["ms"] = round((time.monotonic() - started) * 1000)
    return record


def client(logfile: str) -> None:
    """One request every REQUEST_INTERVAL, each in its own thread, so a hung one does not delay the next."""
    lock = threading.Lock()
    out = open(logfile, "a", buffering=1)

    def worker(started: float) -> None:
        record = _one_request(started)
        with lock:
            out.write(json.dumps(record) + "\n")

    tick = time.monotonic()
    while True:
        threading.Thread(target=worker, args=(time.monotonic(),), daemon=True).start()
        tick += REQUEST_INTERVAL
        delay = tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            tick = time.monotonic()  # fell behind (slow guest): do not burst


def _error_word(exc: BaseException) -> str:
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timeout"
    if isinstance(exc, BrokenPipeError):
        return "broken pipe"
    return str(exc)[:60] or type(exc).__name__


def hold(logfile: str) -> None:
    """ONE TCP connection through the VIP; every REQUEST_INTERVAL a line is written and its echo read.

    One JSON line per exchange (``t``, ``conn``, ``seq``, ``ok``, ``ms``, ``err``:
    reset, eof, timeout, ...), and an ``event`` line when a connection opens
    (with the real server that answers it and the client port) or cannot be
    opened.  A new connection is made only after the current one broke, so
    ``conn`` counts the connections the client needed.
    """
    out = open(logfile, "a", buffering=1)

    def emit(**record: Any) -> None:
        out.write(json.dumps(record) + "\n")

    conn = 0
    while True:
        conn += 1
        opened = time.monotonic()
        try:
            sock = socket.create_connection((VIP, PORT), timeout=HOLD_TIMEOUT)  # the timeout of every exchange too
            sock.sendall(b"ECHO / HTTP/1.0\r\n\r\n")
            reader = sock.makefile("rb")
            who = reader.readline().decode().strip()
            if not who:
                raise ConnectionError("eof")
        except OSError as exc:
            emit(t=round(opened, 3), event="connect-failed", conn=conn, err=_error_word(exc))
            time.sleep(0.5)
            continue
        emit(t=round(opened, 3), event="open", conn=conn, who=who, port=sock.getsockname()[1])
        seq = 0
        tick = time.monotonic()
        while True:
            seq += 1
            started = time.monotonic()
            try:
                sock.sendall(b"%d\n" % seq)
                line = reader.readline()
                if not line:
                    raise ConnectionError("eof")
                if line.split() != [who.encode(), b"%d" % seq]:
                    raise ConnectionError(f"bad echo {line[:40]!r}")
            except OSError as exc:
                emit(t=round(started, 3), conn=conn, seq=seq, ok=False, err=_error_word(exc),
                     ms=round((time.monotonic() - started) * 1000))
                break
            emit(t=round(started, 3), conn=conn, seq=seq, ok=True, ms=round((time.monotonic() - started) * 1000))
            tick += REQUEST_INTERVAL
            delay = tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                tick = time.monotonic()
        sock.close()
        time.sleep(0.5)


def arp_probe(dev: str, target: str, seconds: float) -> None:
    """Broadcast ARP requests for ``target`` from ``dev``; print who answered (JSON)."""
    my_mac = bytes.fromhex(Path(f"/sys/class/net/{dev}/address").read_text().strip().replace(":", ""))
    my_ip = socket.inet_aton(CLIENT[1])
    tip = socket.inet_aton(target)
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, my_mac, my_ip, b"\0" * 6, tip)
    frame = b"\xff" * 6 + my_mac + struct.pack("!H", 0x0806) + arp
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
    sock.bind((dev, 0x0806))
    sock.settimeout(0.05)
    answers: dict[str, int] = {}
    sent = 0
    end = time.monotonic() + seconds
    next_send = 0.0
    while time.monotonic() < end:
        if sent < 3 and time.monotonic() >= next_send:
            sock.send(frame)
            sent += 1
            next_send = time.monotonic() + 0.2
        try:
            data = sock.recv(2048)
        except socket.timeout:
            continue
        if len(data) < 42:
            continue
        op, sha, spa = struct.unpack("!H6s4s", data[20:32])
        if op == 2 and spa == tip:
            mac = ":".join(f"{b:02x}" for b in sha)
            answers[mac] = answers.get(mac, 0) + 1
    print(json.dumps({"sent": sent, "answers": answers}))


# =========================================================================== the driver: plumbing


class Log:
    """Timestamped lines to stdout and, if given, a file the host can tail."""

    def __init__(self, path: str | None) -> None:
        self.t0 = time.monotonic()
        self.file = open(path, "a", buffering=1) if path else None
        self.lines: list[str] = []

    def __call__(self, message: str = "") -> None:
        for text in (message.splitlines() or [""]):
            line = f"[{time.monotonic() - self.t0:6.1f}s] {text}"
            self.lines.append(line)
            print(line, flush=True)
            if self.file:
                self.file.write(line + "\n")


def sh(*argv: str, check: bool = True, timeout: float = 60) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def nsx(ns: str, *argv: str, check: bool = True, timeout: float = 60) -> str:
    return sh("ip", "netns", "exec", ns, *argv, check=check, timeout=timeout)


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """Poll until ``predicate()`` is truthy; returns its value, or None at the timeout."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= end:
            return None
        time.sleep(interval)


@dataclass
class Node:
    name: str
    address: str
    role: str  # "director", "realserver" or "both"
    priority: int = 0
    ns: str = ""
    dir: Path = Path()
    keepalived: subprocess.Popen[bytes] | None = None
    server: subprocess.Popen[bytes] | None = None

    @property
    def mac(self) -> str:
        return mac_of(self.address)

    @property
    def is_director(self) -> bool:
        return self.role in ("director", "both")

    @property
    def serves_http(self) -> bool:
        return self.role in ("realserver", "both")

    @property
    def journal(self) -> Path:
        return self.dir / "journal.jsonl"

    @property
    def maintenance(self) -> Path:
        return self.dir / "maintenance"


# --------------------------------------------------------------------------- kernel state


def addresses(node: Node) -> list[dict[str, Any]]:
    """``ip -j addr`` in the node's namespace, flattened: dev, address/prefix, label."""
    out = []
    for link in json.loads(sh("ip", "-n", node.ns, "-j", "addr", "show")):
        for info in link.get("addr_info", ()):
            if info.get("family") == "inet":
                out.append({
                    "dev": link["ifname"],
                    "addr": f"{info['local']}/{info['prefixlen']}",
                    "label": info.get("label", link["ifname"]),
                })
    return out


def vip_devs(node: Node) -> list[str]:
    return sorted(f"{a['dev']}({a['addr']},{a['label']})" for a in addresses(node) if a["addr"].split("/")[0] == VIP)


def has_vip_on(node: Node, dev: str) -> bool:
    return any(a["dev"] == dev and a["addr"].split("/")[0] == VIP for a in addresses(node))


def ipvs_rules(node: Node) -> list[str]:
    return [line.strip() for line in nsx(node.ns, "ipvsadm-save", "-n").splitlines() if line.strip()]


def ipvs_service(node: Node) -> list[str]:
    """The managed service's rules (``-A``/``-a`` lines for VIP:80), as ipvsadm-save prints them."""
    return [r for r in ipvs_rules(node) if f" {VIP}:{PORT} " in r + " "]


def ipvs_conns(node: Node) -> dict[str, int]:
    """Real server -> total connections IPVS scheduled to it (``ipvsadm -Ln --stats``)."""
    result: dict[str, int] = {}
    for line in nsx(node.ns, "ipvsadm", "-Ln", "--stats").splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "->" and words[1][0].isdigit():
            result[words[1]] = int(words[2])
    return result


def sysctl(node: Node, key: str) -> str:
    return nsx(node.ns, "cat", "/proc/sys/" + key.replace(".", "/")).strip()


def journal(node: Node) -> list[dict[str, Any]]:
    try:
        text = node.journal.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n") and line.strip()]


#: journal commands that are notifications (one-shot, generic notify, or a FIFO line); not reconcile/repair/reload
_NOTIFICATIONS = re.compile(r"(master|backup|fault|stop|notify \w+ \w+|fifo \w+ \w+)\Z")


def transitions(node: Node) -> list[dict[str, Any]]:
    """Journal records of notifications that changed (or checked) the recorded state."""
    return [r for r in journal(node) if r.get("to") and not r.get("dry_run") and r.get("record") != "started"
            and _NOTIFICATIONS.match(str(r.get("command", "")))]


def effective(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records that decided a state: superseded ones are left out.

    keepalived starts notify scripts concurrently: at start-up a director can
    get ``backup`` and ``master`` within milliseconds, and the older of the two
    may take the run lock last.  It is then rightly superseded -- and it is
    the last line of the journal.  What the director did is the last record
    that was not superseded.
    """
    return [r for r in records if r.get("outcome") != "superseded"]


def describe_record(rec: dict[str, Any]) -> str:
    counts: dict[str, int] = {}
    for action in rec.get("actions", ()):
        counts[action["status"]] = counts.get(action["status"], 0) + 1
    applied = [a["action"] for a in rec.get("actions", ()) if a["status"] == "applied" and not a["action"].startswith("sysctl")]
    argv = list(rec["trigger"])
    if "--config" in argv:  # the per-node config path is noise here
        i = argv.index("--config")
        del argv[i:i + 2]
    words = " ".join(argv)
    head = f"{rec['ts'][11:23]} pid {rec.get('pid')} '{words}': {rec.get('from') or '-'} -> {rec.get('to')} "
    if rec.get("record") == "started":  # written before the run's first change; its final record follows
        return head + f"started (run {rec.get('run')}, {len(rec.get('actions', ()))} actions pending)"
    text = head + f"{rec['outcome']} in {rec['duration_ms']:.0f} ms"
    if applied:
        text += " [" + "; ".join(applied) + "]"
    if rec.get("note"):
        text += f" ({rec['note']})"
    return text


# --------------------------------------------------------------------------- client log


class Traffic:
    """The client's request log: one JSON line per request, ``t`` on the guest's monotonic clock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc: subprocess.Popen[bytes] | None = None

    def records(self) -> list[dict[str, Any]]:
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass  # the line being written
        return sorted(out, key=lambda r: r["t"])

    def window(self, t0: float, t1: float) -> list[dict[str, Any]]:
        return [r for r in self.records() if t0 <= r["t"] < t1]

    def settle(self) -> None:
        """Let the requests in flight finish (each has REQUEST_TIMEOUT)."""
        time.sleep(REQUEST_TIMEOUT + 0.3)


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts per answering server, failures, and the outage: first failure to the next success."""
    served: dict[str, int] = {}
    for r in records:
        if r["ok"]:
            served[r["who"]] = served.get(r["who"], 0) + 1
    failed = [r for r in records if not r["ok"]]
    gap = 0.0
    if failed:
        first_fail = failed[0]["t"]
        later_ok = [r["t"] for r in records if r["ok"] and r["t"] > failed[-1]["t"]]
        gap = (later_ok[0] if later_ok else records[-1]["t"]) - first_fail
    errors: dict[str, int] = {}
    for r in failed:
        errors[r["err"]] = errors.get(r["err"], 0) + 1
    return {
        "sent": len(records),
        "ok": len(records) - len(failed),
        "failed": len(failed),
        "gap_s": round(gap, 2),
        "served": dict(sorted(served.items())),
        "errors": errors,
        "resumed": bool(records) and records[-1]["ok"],
    }


def order_of_servers(records: list[dict[str, Any]], n: int = 8) -> str:
    return " ".join(r["who"] if r["ok"] else "FAIL" for r in records[:n])


# =========================================================================== the cluster


#: how keepalived reaches kanotify: notify scripts (one-shots), its notify FIFO (kanotify listen as
#: vrrp_notify_fifo_script), or notify scripts handing over to a listener started beside keepalived
MODES = ("notify", "fifo", "handover")
#: names the kanotify to test instead of the venv's (an absolute path; the launcher or a link to it)
E2E_BIN_ENV = "KANOTIFY_E2E_BIN"


class Cluster:
    def __init__(
        self, topology: str, workdir: Path, log: Log, mode: str = "notify", sync_daemon: bool = True
    ) -> None:
        self.topology = topology
        self.mode = mode
        self.listeners: dict[str, subprocess.Popen[bytes]] = {}
        self.work = workdir
        self.log = log
        # the kanotify keepalived's notify lines run: this venv's, or the one KANOTIFY_E2E_BIN names
        # (tests/package: the Debian package's /usr/bin/kanotify)
        self.kanotify = Path(os.environ.get(E2E_BIN_ENV) or Path(sys.executable).parent / "kanotify")
        #: topology "sync": False renders the directors' config without its [sync_daemon] table
        self.sync_daemon = sync_daemon
        if topology in ("dedicated", "sync"):
            self.nodes = [
                Node("lb1", "192.0.2.11", "director", 150),
                Node("lb2", "192.0.2.12", "director", 100),
                Node("rs1", "192.0.2.21", "realserver"),
                Node("rs2", "192.0.2.22", "realserver"),
            ]
        elif topology == "two-node":
            self.nodes = [
                Node("node1", "192.0.2.11", "both", 150),
                Node("node2", "192.0.2.12", "both", 100),
            ]
        else:
            raise ValueError(topology)
        self.client = Node(*CLIENT, "client")
        for node in [self.client, *self.nodes]:
            node.ns = NS_PREFIX + node.name
            node.dir = self.work / node.name
        self.traffic = Traffic(self.work / "client.jsonl")
        self.checks: list[dict[str, Any]] = []
        self.numbers: dict[str, Any] = {}
        self.scenario = ""

    @property
    def directors(self) -> list[Node]:
        return [n for n in self.nodes if n.is_director]

    @property
    def servers(self) -> list[Node]:
        return [n for n in self.nodes if n.serves_http]

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    # ------------------------------------------------------------------ checks

    def check(self, name: str, ok: bool, detail: Any = "") -> bool:
        detail_text = detail if isinstance(detail, str) else json.dumps(detail, default=str)
        self.checks.append({"scenario": self.scenario, "check": name, "ok": bool(ok), "detail": detail_text})
        self.log(f"  {'ok  ' if ok else 'FAIL'} {name}" + (f": {detail_text}" if detail_text else ""))
        return bool(ok)

    def begin(self, title: str) -> None:
        self.scenario = title
        self.log("")
        self.log(f"=== {title}")

    # ------------------------------------------------------------------ build

    def check_script_security(self) -> None:
        """keepalived's enable_script_security, the same rule as its check_script_secure().

        Every component of the script's real path must be owned by root; a
        directory without the sticky bit, or the file, must not be writable by
        others, nor by its group unless that group is root.  Otherwise keepalived
        logs "Unsafe permissions found for script" and never runs it.
        """
        problems = []
        real = Path(os.path.realpath(self.kanotify))
        for path in [real, *real.parents]:
            st = os.stat(path)
            if st.st_uid != 0:
                problems.append(f"{path} is owned by uid {st.st_uid}, not root")
            checked = stat.S_ISREG(st.st_mode) or (stat.S_ISDIR(st.st_mode) and not st.st_mode & stat.S_ISVTX)
            if checked and ((st.st_gid != 0 and st.st_mode & stat.S_IWGRP) or st.st_mode & stat.S_IWOTH):
                problems.append(f"{path} is writable by group/others (mode {stat.S_IMODE(st.st_mode):04o})")
        if not os.access(self.kanotify, os.X_OK):
            problems.append(f"{self.kanotify} is missing or not executable (pip install -e . into this venv)")
        if problems:
            raise SystemExit(
                "keepalived's enable_script_security would refuse the notify script:\n  "
                + "\n  ".join(problems)
                + "\nfix the ownership/permissions of the checkout and its .venv (chown root, chmod go-w)"
            )

    def build(self) -> None:
        self.begin(f"build: {self.topology} topology")
        self.log(f"kanotify: {self.kanotify} ({os.path.realpath(self.kanotify)})")
        self.check_script_security()
        sh("ip", "netns", "add", NS_PREFIX + "lan")
        lan = NS_PREFIX + "lan"
        sh("ip", "-n", lan, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", lan, "link", "set", "br0", "up")
        for node in [self.client, *self.nodes]:
            node.dir.mkdir(parents=True, exist_ok=True)
            sh("ip", "netns", "add", node.ns)
            port = f"p-{node.name}"
            sh("ip", "-n", lan, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", node.ns)
            sh("ip", "-n", lan, "link", "set", port, "master", "br0", "up")
            sh("ip", "-n", node.ns, "link", "set", "lo", "up")
            sh("ip", "-n", node.ns, "link", "set", "eth0", "address", node.mac)
            sh("ip", "-n", node.ns, "addr", "add", f"{node.address}/24", "dev", "eth0")
            sh("ip", "-n", node.ns, "link", "set", "eth0", "up")
        roles = ", ".join(f"{n.name} {n.address} ({n.role}, {n.mac})" for n in [self.client, *self.nodes])
        self.log(f"bridge br0 in {lan}; {roles}; VIP {VIP}:{PORT}")
        for node in self.servers:
            node.server = self.spawn(node, [sys.executable, __file__, "serve", node.name], "http.log")
        for node in self.nodes:
            self.write_kanotify_config(node)
        for node in self.nodes:
            if node.role == "realserver":
                self.configure_real_server(node)
        for node in self.servers:
            if not wait_for(lambda: self.listening(node), 30):
                raise SystemExit(f"HTTP server on {node.name} did not start: {self.tail(node.dir / 'http.log')}")
        for node in self.directors:
            self.write_keepalived_config(node)
        if self.mode == "handover":  # a listener per director, as a systemd unit would run it
            for node in self.directors:
                self.start_listener(node)
        for node in self.directors:
            self.start_keepalived(node)

    def spawn(self, node: Node, argv: list[str], logname: str) -> subprocess.Popen[bytes]:
        out = open(node.dir / logname, "ab")
        return subprocess.Popen(
            ["ip", "netns", "exec", node.ns, *argv], stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )

    def listening(self, node: Node) -> bool:
        return f":{PORT} " in nsx(node.ns, "ss", "-Hltn", check=False)

    # ------------------------------------------------------------------ configs (rendered from the repo's examples)

    def write_kanotify_config(self, node: Node) -> None:
        example = {
            "director": "examples/kanotify-director.toml",
            "realserver": "examples/kanotify-realserver.toml",
            "both": "examples/kanotify.toml",
        }[node.role]
        if self.topology == "sync" and node.role == "director":
            example = "examples/kanotify-director-sync.toml"
        text = (REPO / example).read_text()
        state = Path("/run/kanotify-e2e") / node.name  # tmpfs: private to the guest
        hooks = node.dir / "hooks.d"
        hooks.mkdir(exist_ok=True)
        rules: list[tuple[Any, ...]] = [
            (r'(?m)^state_dir = ".*"$', f'state_dir = "{state}"'),
            (r'(?m)^journal = ".*"$', f'journal = "{node.journal}"'),
            (r'(?m)^hooks_dir = ".*"$', f'hooks_dir = "{hooks}"'),
            # no syslog daemon in the guest (and /dev/log must not reach the host's)
            (r"(?m)^syslog = true$", "syslog = false"),
        ]
        if node.is_director:  # keepalived runs with -p: the listener watches its pid there (keepalived-gone)
            rules.append((r'(?m)^keepalived_pidfile = "[^"]*"', f'keepalived_pidfile = "{node.dir / "keepalived.pid"}"'))
        if example.endswith("-sync.toml") and not self.sync_daemon:
            rules.append((r"(?ms)^\[sync_daemon\]\n.*\Z", ""))  # the same file, its last table left out
        text = substitute(text, example, rules)
        path = node.dir / "kanotify.toml"
        path.write_text(text)
        os.chmod(path, 0o644)
        sh(str(self.kanotify), "--config", str(path), "check")

    def write_keepalived_config(self, node: Node) -> None:
        text = (REPO / "keepalived.conf.example").read_text()
        peer = next(n for n in self.directors if n is not node)
        rules = [
            (r"(?m)^(\s*router_id )\S+$", rf"\g<1>{node.name}"),
            (r"(?m)^(\s*priority )\d+$", rf"\g<1>{node.priority}"),
            (r"(?m)^(\s*unicast_src_ip )\S+$", rf"\g<1>{node.address}"),
            (r"(unicast_peer \{\s*\n\s*)\S+", rf"\g<1>{peer.address}"),
            (r'file "/etc/keepalived/maintenance"', f'file "{node.maintenance}"'),
            # the four notify_* lines, the commented generic one and the commented FIFO script
            (r'(notify\w*\s+")/usr/local/bin/kanotify --config /etc/kanotify/kanotify\.toml ',
             rf"\g<1>{self.kanotify} --config {node.dir / 'kanotify.toml'} ", 6),
        ]
        if self.mode == "fifo":
            # the FIFO mode the example documents: uncomment its three lines, drop the notify lines
            rules += [
                (r"(?m)^(\s*)# (vrrp_notify_fifo|fifo_write_vrrp_states_on_reload)", r"\g<1>\g<2>", 3),
                (r"/run/keepalived/kanotify\.fifo", str(self.fifo(node))),
                (r"(?m)^\s*notify_(master|backup|fault|stop)\s.*\n", "", 4),
            ]
        if self.topology == "two-node" and self.mode != "fifo":
            # the generic form the example documents: drop the four specific lines, uncomment "notify"
            rules += [
                (r"(?m)^\s*notify_(master|backup|fault|stop)\s.*\n", "", 4),
                (r'(?m)^(\s*)# (notify ")', r"\g<1>\g<2>"),
            ]
        text = substitute(text, "keepalived.conf.example", rules)
        (node.dir / "keepalived.conf").write_text(text)
        self.fifo(node).parent.mkdir(mode=0o755, parents=True, exist_ok=True)  # keepalived makes the FIFO in it

    @staticmethod
    def fifo(node: Node) -> Path:
        return Path("/run/kanotify-e2e") / f"{node.name}.fifo"

    def start_listener(self, node: Node) -> None:
        """``kanotify listen`` without a FIFO: the notify scripts hand their work to it."""
        proc = self.spawn(node, [str(self.kanotify), "--config", str(node.dir / "kanotify.toml"), "listen"],
                          "listen.log")
        self.listeners[node.name] = proc
        sock = Path("/run/kanotify-e2e") / node.name / "control.sock"
        if not wait_for(lambda: sock.exists() or proc.poll() is not None, 60) or proc.poll() is not None:
            raise SystemExit(f"{node.name}: kanotify listen did not start: {self.tail(node.dir / 'listen.log')}")
        self.log(f"{node.name}: kanotify listen started (pid {proc.pid}): notify scripts hand over to it")

    def listener_pid(self, node: Node) -> int | None:
        """The pid of the listener serving ``node`` (keepalived starts it in FIFO mode: read its lock file)."""
        try:
            return int((Path("/run/kanotify-e2e") / node.name / "listen.lock").read_text().strip())
        except (OSError, ValueError):
            return None

    def start_keepalived(self, node: Node) -> None:
        conf = node.dir / "keepalived.conf"
        argv = [
            "keepalived", "-n", "-l", "-D", "-P", "-f", str(conf),
            "-p", str(node.dir / "keepalived.pid"), "-r", str(node.dir / "vrrp.pid"),
        ]
        node.keepalived = self.spawn(node, argv, "keepalived.log")
        self.log(f"{node.name}: keepalived started (pid {node.keepalived.pid}, priority {node.priority})")

    def configure_real_server(self, node: Node) -> None:
        """Real servers: kanotify applies the VIP on lo and the ARP sysctls (``reconcile``: no keepalived)."""
        conf = str(node.dir / "kanotify.toml")
        started = time.monotonic()
        proc = subprocess.run(
            ["ip", "netns", "exec", node.ns, str(self.kanotify), "--config", conf, "reconcile"],
            capture_output=True, text=True, timeout=120,
        )
        took = time.monotonic() - started
        self.log(f"{node.name}: kanotify reconcile exit {proc.returncode} in {took:.1f}s: {proc.stdout.strip()}")
        if proc.returncode != 0:
            raise SystemExit(f"{node.name}: kanotify reconcile failed: {proc.stderr}")
        plan = subprocess.run(
            ["ip", "netns", "exec", node.ns, str(self.kanotify), "--config", conf, "plan", "--detailed-exitcode"],
            capture_output=True, text=True, timeout=120,
        )
        self.check(f"{node.name}: a second run has nothing to do (plan --detailed-exitcode = 0)", plan.returncode == 0,
                   plan.stdout.strip().splitlines()[-1:] if plan.returncode else "")

    # ------------------------------------------------------------------ state helpers

    def role_state(self, node: Node) -> str:
        """What the kernel says this director is: master (VIP on eth0 + service), clean, or mixed."""
        on_eth0 = has_vip_on(node, "eth0")
        service = bool(ipvs_service(node))
        if on_eth0 and service:
            return "master"
        if not on_eth0 and not service:
            return "not-master"
        return f"mixed(vip on eth0={on_eth0}, service={service})"

    def wait_master(self, master: Node, timeout: float = CONVERGE_TIMEOUT) -> float | None:
        """Wait until ``master`` holds VIP+service (with every real) and every other director neither."""
        started = time.monotonic()
        others = [d for d in self.directors if d is not master]

        def converged() -> bool:
            rules = ipvs_service(master)
            reals = sum(1 for r in rules if r.startswith("-a "))
            return (
                has_vip_on(master, "eth0") and reals == len(self.servers)
                and all(self.role_state(o) == "not-master" for o in others)
            )

        ok = wait_for(converged, timeout, 0.2)
        return time.monotonic() - started if ok else None

    def show_state(self) -> dict[str, Any]:
        state = {}
        for node in self.nodes:
            info: dict[str, Any] = {"vip": vip_devs(node)}
            if node.is_director:
                info["ipvs"] = ipvs_rules(node)
            state[node.name] = info
            ipvs = "; ".join(info.get("ipvs", [])) or "(none)"
            self.log(f"  {node.name:6} VIP on: {', '.join(info['vip']) or '(none)':40}"
                     + (f" ipvsadm-save -n: {ipvs}" if node.is_director else ""))
        return state

    def journal_since(self, node: Node, count_before: int) -> list[dict[str, Any]]:
        return transitions(node)[count_before:]

    def last_effective(self, node: Node, count_before: int, want: str, timeout: float = 15.0) -> dict[str, Any]:
        """The last effective record since ``count_before``, once it says ``want`` (or what it says at the timeout).

        The kernel state converges before the run that made it writes its journal
        line (it verifies first): waiting for the line, not reading once, keeps a
        slow guest from failing a check the director passes.
        """
        def found() -> dict[str, Any] | None:
            records = effective(self.journal_since(node, count_before))
            return records[-1] if records and records[-1].get("to") == want else None

        return wait_for(found, timeout, 0.2) or (effective(self.journal_since(node, count_before)) or [{}])[-1]

    def log_journal(self, node: Node, records: Iterable[dict[str, Any]]) -> None:
        for rec in records:
            self.log(f"  journal {node.name}: {describe_record(rec)}")

    def arp_check(self, master: Node) -> None:
        out = nsx(self.client.ns, sys.executable, __file__, "arp-probe", "eth0", VIP, "1.5", timeout=60)
        result = json.loads(out)
        answers = result["answers"]
        names = {n.mac: n.name for n in self.nodes}
        shown = {names.get(mac, mac): count for mac, count in answers.items()}
        self.check(f"ARP for {VIP}: only {master.name} ({master.mac}) answers", set(answers) == {master.mac}, shown)
        neigh = json.loads(sh("ip", "-n", self.client.ns, "-j", "neigh", "show", VIP) or "[]")
        macs = [n.get("lladdr") for n in neigh]
        self.check(f"client's neighbour entry for the VIP is {master.name}'s MAC", macs == [master.mac],
                   {"neigh": [names.get(m, m) for m in macs]})

    # ------------------------------------------------------------------ traffic

    def start_traffic(self) -> None:
        self.traffic.proc = self.spawn(
            self.client, [sys.executable, __file__, "client", str(self.traffic.path)], "client.log"
        )
        wait_for(lambda: self.traffic.records(), 30, 0.2)

    def measure(self, label: str, t0: float, t1: float) -> dict[str, Any]:
        records = self.traffic.window(t0, t1)
        summary = summarize(records)
        self.log(
            f"  client ({label}): {summary['sent']} requests, {summary['failed']} failed, "
            f"outage {summary['gap_s']:.2f}s, answered by {summary['served']}"
            + (f", errors {summary['errors']}" if summary["errors"] else "")
        )
        return summary

    # ------------------------------------------------------------------ teardown (inside the guest: best effort)

    def stop_all(self) -> None:
        procs = ([self.traffic.proc] + [n.keepalived for n in self.nodes] + [n.server for n in self.nodes]
                 + list(self.listeners.values()))
        for proc in procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            if proc is not None:
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()

    @staticmethod
    def tail(path: Path, lines: int = 15) -> str:
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return f"({path} missing)"


def substitute(text: str, source: str, rules: list[tuple[Any, ...]]) -> str:
    """Apply regex rules; each must match (exactly ``n`` times when given): the examples must not drift."""
    for rule in rules:
        pattern, repl = rule[0], rule[1]
        expected = rule[2] if len(rule) > 2 else 1
        text, count = re.subn(pattern, repl, text)
        if count != expected:
            raise SystemExit(f"{source}: expected {expected} match(es) of {pattern!r}, found {count}: "
                             "update tests/e2e/cluster.py together with the example")
    return text


class ProcWatch(threading.Thread):
    """Samples /proc every 50 ms for processes whose command line contains ``needle``.

    Cheap (no fork), so it sees even a short-lived process: used to show what
    happens to a STOP notification's processes when keepalived exits.
    """

    def __init__(self, needle: bytes, t0: float) -> None:
        super().__init__(daemon=True)
        self.needle = needle
        self.t0 = t0
        self.seen: dict[int, dict[str, Any]] = {}
        self.done = threading.Event()
        # /proc/uptime and start times share the boot clock: uptime at t0 turns start times into "after t0"
        self.uptime0 = float(Path("/proc/uptime").read_text().split()[0]) - (time.monotonic() - t0)

    def run(self) -> None:
        other: set[str] = set()  # pids already known not to match: their cmdline is read once
        while not self.done.is_set():
            now = time.monotonic() - self.t0
            for name in os.listdir("/proc"):
                if name in other or not name.isdigit():
                    continue
                try:
                    if int(name) not in self.seen:
                        with open(f"/proc/{name}/cmdline", "rb") as fh:
                            cmdline = fh.read()
                        if self.needle not in cmdline:
                            if cmdline:  # an empty one may be a process still being exec'd
                                other.add(name)
                            continue
                    with open(f"/proc/{name}/stat", "rb") as fh:
                        raw = fh.read()
                except OSError:
                    continue
                entry_name = name
                fields = raw[raw.rindex(b")") + 2:].split()
                pid = int(entry_name)
                info = self.seen.setdefault(pid, {
                    "first": now, "pgid": int(fields[2]), "sid": int(fields[3]),
                    # exact start, in seconds after t0 (field 22: clock ticks since boot)
                    "started": int(fields[19]) / CLK_TCK - self.uptime0,
                })
                info["last"] = now
                info["sid"] = int(fields[3])  # the worker's setsid() happens after its fork
            time.sleep(0.1)

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=5)


# =========================================================================== scenarios


def set_maintenance(node: Node, value: int) -> None:
    tmp = node.maintenance.with_suffix(".tmp")
    tmp.write_text(f"{value}\n")
    os.replace(tmp, node.maintenance)  # keepalived watches the file with inotify


def scenario_steady(c: Cluster, master: Node, backup: Node, title: str) -> None:
    c.begin(title)
    took = c.wait_master(master)
    refused = [line for n in c.directors for line in c.tail(n.dir / "keepalived.log", 200).splitlines()
               if "Unsafe permissions" in line or "SECURITY VIOLATION" in line]
    c.check("keepalived accepted the notify scripts (enable_script_security)", not refused, refused[:2])
    if not c.check(f"{master.name} is MASTER (VIP on eth0, service with {len(c.servers)} reals); {backup.name} not",
                   took is not None, f"after {took:.1f}s" if took is not None else c.role_state(master)):
        return
    for node in c.directors:
        c.log_journal(node, transitions(node))
    c.start_traffic()
    t0 = time.monotonic()
    time.sleep(4)
    t1 = time.monotonic()
    c.traffic.settle()
    summary = c.measure("steady state, 4 s", t0, t1)
    c.numbers["steady"] = summary
    c.log(f"  first answers: {order_of_servers(c.traffic.window(t0, t1))}")
    c.check("no request failed", summary["failed"] == 0 and summary["sent"] >= 20, summary)
    names = {s.name for s in c.servers}
    c.check(f"requests spread over {' and '.join(sorted(names))}", set(summary["served"]) == names, summary["served"])
    state = c.show_state()
    c.check(f"{backup.name} has no managed IPVS service", ipvs_service(backup) == [], state[backup.name].get("ipvs"))
    c.check(f"{backup.name} does not hold the VIP on eth0", not has_vip_on(backup, "eth0"), state[backup.name]["vip"])
    conns = ipvs_conns(master)
    c.check(f"IPVS on {master.name} scheduled connections to every real server",
            len(conns) == len(c.servers) and all(v > 0 for v in conns.values()), conns)
    expected = [
        "-A -t 192.0.2.100:80 -s rr",
        *sorted(f"-a -t 192.0.2.100:80 -r {s.address}:80 -g -w 1" for s in c.servers),
    ]
    c.check(f"ipvsadm-save -n on {master.name} is exactly the configured service", ipvs_service(master) == expected,
            ipvs_service(master))
    for node in c.nodes:
        if node.serves_http and node is not master:
            on_lo = has_vip_on(node, "lo") and any(
                a["addr"] == f"{VIP}/32" and a["label"] == "lo:0" for a in addresses(node)
            )
            arp = (sysctl(node, "net.ipv4.conf.all.arp_ignore"), sysctl(node, "net.ipv4.conf.all.arp_announce"))
            c.check(f"{node.name} (real server) has {VIP}/32 on lo:0 and arp_ignore/arp_announce = 1/2",
                    on_lo and arp == ("1", "2") and not has_vip_on(node, "eth0"), {"vip": vip_devs(node), "arp": arp})
    want = {master.name: "master", backup.name: "backup"}
    last = {n.name: c.last_effective(n, 0, want[n.name]) for n in c.directors}
    c.check(
        "journal: the last effective transition of each director converged to its VRRP state",
        all(last[name].get("to") == want[name] and last[name].get("outcome") == "converged" for name in want),
        {k: f"{v.get('to')} {v.get('outcome')}" for k, v in last.items()},
    )


def scenario_failover(c: Cluster, old: Node, new: Node, title: str, key: str, value: int) -> None:
    """Planned failover/fail-back: write the maintenance file on ``old`` (value 1) or on ``new`` (value 0)."""
    c.begin(title)
    j_before = {n.name: len(transitions(n)) for n in c.directors}
    flag_node = old if value == 1 else new
    t0 = time.monotonic()
    set_maintenance(flag_node, value)
    c.log(f"wrote {value} to {flag_node.name}'s track_file (priority {flag_node.priority} -> "
          f"{flag_node.priority - 100 * value}) under traffic (a request every {REQUEST_INTERVAL * 1000:.0f} ms)")
    took = c.wait_master(new)
    c.check(f"{new.name} took over: VIP on eth0 + service; {old.name} released both",
            took is not None, f"converged {took:.1f}s after the change" if took is not None else c.role_state(new))
    time.sleep(3)  # traffic after the switch
    t1 = time.monotonic()
    c.traffic.settle()
    summary = c.measure(f"{title}, {t1 - t0:.0f} s", t0, t1)
    summary["converged_s"] = round(took, 2) if took is not None else None
    c.numbers[key] = summary
    after = [r for r in c.traffic.window(t1 - 2.0, t1)]
    c.check("traffic resumed: the last 2 s all answered", bool(after) and all(r["ok"] for r in after),
            summarize(after))
    names = {s.name for s in c.servers}
    c.check(f"after the switch requests still reach {' and '.join(sorted(names))}",
            set(summarize(after)["served"]) == names, summarize(after)["served"])
    conns = ipvs_conns(new)
    c.check(f"the new master {new.name}'s IPVS is forwarding", sum(conns.values()) > 0, conns)
    c.show_state()
    for node in (old, new):
        records = c.journal_since(node, j_before[node.name])
        c.log_journal(node, records)
    want = {old.name: "backup", new.name: "master"}
    for node in (old, new):
        last = c.last_effective(node, j_before[node.name], want[node.name])
        records = effective(c.journal_since(node, j_before[node.name]))
        c.check(f"journal of {node.name}: -> {want[node.name]} converged",
                last.get("to") == want[node.name] and last.get("outcome") == "converged",
                [f"{r['to']} {r['outcome']}" for r in records])


def scenario_history(c: Cluster, expected: dict[str, list[str]]) -> None:
    """Every transition is in each director's journal, in order, each converged."""
    for node in c.directors:
        records = effective(transitions(node))
        seq: list[str] = []
        for r in records:
            if not seq or seq[-1] != r["to"]:
                seq.append(r["to"])
        want = expected[node.name]
        # keepalived notifies BACKUP at start-up; a node that wins the first election may skip it
        ok = seq == want or (want[0] == "backup" and seq == want[1:])
        c.check(f"journal of {node.name} shows every transition: {' -> '.join(want)}", ok, " -> ".join(seq))
        bad = [r for r in records if r["outcome"] != "converged"]
        c.check(f"journal of {node.name}: every transition converged", not bad,
                [describe_record(r) for r in bad])
        if c.mode != "notify":
            pid = c.listener_pid(node)
            others = [describe_record(r) for r in records if r.get("pid") != pid]
            c.check(f"journal of {node.name}: the resident listener (pid {pid}) applied every transition "
                    f"({'FIFO lines' if c.mode == 'fifo' else 'handed over by the notify scripts'})",
                    pid is not None and not others, others[:3])


def parse_monitor(path: Path, since_wall: float) -> list[tuple[float, str]]:
    """``ip -ts monitor address`` lines about the VIP: (seconds after ``since_wall``, line)."""
    from datetime import datetime

    events = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return events
    for line in lines:
        m = re.match(r"\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)\]\s*(.*)", line)
        if m and f" {VIP}/" in m.group(2):
            wall = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").timestamp()
            events.append((wall - since_wall, " ".join(m.group(2).split())))
    return events


#: how keepalived goes away on the master (issue 19): each must leave neither VIP nor service behind
ENDINGS = {
    "stop": "keepalived stopped on the master (SIGTERM)",
    "kill_parent": "keepalived's parent process SIGKILLed on the master",
    "kill_all": "every keepalived process SIGKILLed on the master (a crash, the OOM killer)",
}
#: the CPU hog beside keepalived while it goes (the spec's measurement: two busy loops)
HOG_LOOPS = 2


def keepalived_processes(node: Node) -> list[int]:
    """keepalived's parent and its children (VRRP, checker), from /proc: parent first."""
    assert node.keepalived is not None
    parent = node.keepalived.pid
    found = [parent]
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            raw = Path(f"/proc/{name}/stat").read_bytes()
        except OSError:
            continue
        comm = raw[raw.index(b"(") + 1:raw.rindex(b")")]
        ppid = int(raw[raw.rindex(b")") + 2:].split()[1])
        if ppid == parent and comm == b"keepalived":
            found.append(int(name))
    return found


def start_hog() -> list[subprocess.Popen[bytes]]:
    """Two busy loops on the guest's one CPU, as on a loaded director; stopped by pid."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(HOG_LOOPS)]


def stop_hog(hog: list[subprocess.Popen[bytes]]) -> None:
    for proc in hog:
        proc.kill()
    for proc in hog:
        proc.wait(timeout=10)


#: what systemd runs when keepalived.service ends, without a listener (issue 19)
DROP_IN = "examples/keepalived.service.d/kanotify-stop.conf"


def exec_stop_post(c: Cluster, node: Node) -> list[str]:
    """The command examples/keepalived.service.d/kanotify-stop.conf gives systemd's ``ExecStopPost=``, for ``node``.

    The guest has no systemd: in the notify wiring the cluster plays its part when keepalived dies
    without a STOP, running exactly the drop-in's command line (the path of kanotify and its config
    file made the node's).
    """
    import shlex

    text = (REPO / DROP_IN).read_text()
    lines = [line.split("=", 1)[1].strip() for line in text.splitlines() if line.startswith("ExecStopPost=")]
    if len(lines) != 1:
        raise SystemExit(f"{DROP_IN}: expected one ExecStopPost=, found {lines}")
    argv = shlex.split(lines[0].lstrip("-@:+!"))
    if os.path.basename(argv[0]) != "kanotify":
        raise SystemExit(f"the drop-in's ExecStopPost= does not run kanotify: {lines[0]}")
    argv[0] = str(c.kanotify)
    if "--config" in argv:
        argv[argv.index("--config") + 1] = str(node.dir / "kanotify.toml")
    else:
        argv[1:1] = ["--config", str(node.dir / "kanotify.toml")]
    return argv


def scenario_gone(c: Cluster, old: Node, new: Node, how: str) -> None:
    """keepalived goes away on the master, under CPU load: the director must release VIP and services.

    ``stop``: SIGTERM (``systemctl stop``).  keepalived gives the STOP notification about 1 s,
    then signals its process group and exits (2.2.7: SIGTERM), while the interpreter alone
    needs longer than that here under load: only the launcher's detaching before the
    interpreter starts (bin/kanotify) gets the job done in the notify wirings.
    ``kill_parent``: SIGKILL of keepalived's parent; its VRRP child sends priority 0 and runs
    STOP as on SIGTERM.  ``kill_all``: SIGKILL of every keepalived process, no STOP at all:
    the listener notices keepalived is gone (keepalived-gone); without a listener systemd's
    ExecStopPost (the drop-in in examples/) does it, played here by the cluster.
    Two busy loops share the guest's CPU from just before the kill until the director has
    released everything.  ProcWatch shows the STOP notification's processes and when its
    worker left keepalived's process group; ``ip monitor`` gives the exact address events on
    both directors, hence how long both held the VIP at once.
    """
    title = f"4. {ENDINGS[how]}"
    c.begin(title)
    assert old.keepalived is not None
    j_before = len(journal(old))
    klog = old.dir / "keepalived.log"
    klog_size = klog.stat().st_size
    monitor_log = f"monitor-{how}-{len(c.numbers.get('endings', []))}.log"  # one per ending: --repeat runs each again
    monitors = {
        node.name: c.spawn(node, ["ip", "-ts", "monitor", "address"], monitor_log) for node in (old, new)
    }
    time.sleep(1.0)  # the monitors are listening
    hog = start_hog()
    time.sleep(0.5)  # the loops are running
    t0 = time.monotonic()
    wall0 = time.time()
    watch = ProcWatch(f"{old.dir / 'kanotify.toml'}\0stop\0".encode(), t0)
    watch.start()
    victims = keepalived_processes(old)
    if how == "stop":
        old.keepalived.send_signal(signal.SIGTERM)
    elif how == "kill_parent":
        old.keepalived.send_signal(signal.SIGKILL)
    else:
        for pid in victims:  # frozen first: a parent must not see its child die and restart it
            os.kill(pid, signal.SIGSTOP)
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
    c.log(f"{ENDINGS[how]}: pids {victims}, under traffic, {HOG_LOOPS} busy loops beside it")
    marks: dict[str, float | None] = {"vip_gone": None, "service_gone": None, "keepalived_exited": None,
                                      "peer_master": None}
    end = t0 + 30
    post: dict[str, Any] = {}

    def wait_exit(proc: subprocess.Popen[bytes]) -> None:
        proc.wait()
        for pid in victims[1:]:  # and its children
            wait_for(lambda: not Path(f"/proc/{pid}").exists(), 30, 0.1)
        marks["keepalived_exited"] = time.monotonic() - t0
        if how == "kill_all" and c.mode == "notify":  # systemd: ExecStopPost= once the unit's processes are gone
            post["started"] = time.monotonic() - t0
            try:
                post["argv"] = exec_stop_post(c, old)
                done = subprocess.run(["ip", "netns", "exec", old.ns, *post["argv"]], capture_output=True,
                                      text=True, timeout=120)
                post.update(code=done.returncode, out=done.stdout.strip(), err=done.stderr.strip())
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - a thread's error must reach the checks
                post.update(code=None, err=f"{type(exc).__name__}: {exc}")
            post["done"] = time.monotonic() - t0

    waiter = threading.Thread(target=wait_exit, args=(old.keepalived,), daemon=True)
    waiter.start()

    def stop_running() -> bool:
        return any(info["last"] > time.monotonic() - t0 - 0.3 for info in watch.seen.values())

    # Polled, gently (no forks of our own while the STOP notification races keepalived's 1 s kill);
    # the exact times come from ip monitor, /proc start times and the journal below.
    time.sleep(1.5)
    while time.monotonic() < end and (not all(v is not None for v in marks.values()) or stop_running()
                                      or waiter.is_alive()):
        if marks["vip_gone"] is None and not has_vip_on(old, "eth0"):
            marks["vip_gone"] = time.monotonic() - t0
        if marks["service_gone"] is None and not ipvs_service(old):
            marks["service_gone"] = time.monotonic() - t0
        if marks["peer_master"] is None and has_vip_on(new, "eth0") and ipvs_service(new):
            marks["peer_master"] = time.monotonic() - t0
        if hog and marks["vip_gone"] is not None and marks["service_gone"] is not None:
            stop_hog(hog)
            hog = []
            marks_hog = time.monotonic() - t0
            c.log(f"  busy loops stopped at {marks_hog:.2f}s (the director had released everything)")
        time.sleep(0.2)
    if hog:
        stop_hog(hog)
        c.log("  busy loops stopped at the deadline")
    watch.stop()
    waiter.join(timeout=5)
    for proc in monitors.values():
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    for pid, info in sorted(watch.seen.items()):
        role = "detached worker (own session)" if info["sid"] == pid else "notify process (keepalived's process group)"
        c.log(f"  STOP notification pid {pid}: {role}, started {info['started']:.2f}s, "
              f"last seen {info['last']:.2f}s")
    workers = [i for pid, i in watch.seen.items() if i["sid"] == pid]
    parents = [i for pid, i in watch.seen.items() if i["sid"] != pid]
    if post:
        c.log(f"  systemd's part: ExecStopPost= {' '.join(post.get('argv', ['?'])[1:])} at {post['started']:.2f}s, "
              f"exit {post.get('code')} at {post.get('done', 0):.2f}s: {post.get('out') or post.get('err')}")
    # ... and exact, from the kernel's own address events.
    for node in (old, new):
        for at, line in parse_monitor(node.dir / monitor_log, wall0):
            c.log(f"  ip monitor {node.name}: +{at:.2f}s {line}")
    removed = [at for at, line in parse_monitor(old.dir / monitor_log, wall0) if line.startswith("Deleted")]
    added = [at for at, line in parse_monitor(new.dir / monitor_log, wall0) if not line.startswith("Deleted")]
    records = journal(old)[j_before:]
    stop_records = [r for r in records if r.get("to") == "stop" and r.get("outcome") and not r.get("dry_run")]
    numbers: dict[str, Any] = {k: (round(v, 2) if v is not None else None) for k, v in marks.items()}
    numbers["vip_removed_exact"] = round(removed[0], 2) if removed else None
    numbers["peer_vip_added_exact"] = round(added[0], 2) if added else None
    # both directors held the VIP from the peer's bind until this one's release
    if removed and added:
        numbers["both_held_s"] = round(max(0.0, removed[0] - added[0]), 2)
    # the margin of the STOP path: its worker must leave the group before keepalived's kill (1 s after the notify)
    numbers["stop_notify_started"] = round(min(i["started"] for i in parents), 2) if parents else None
    numbers["stop_worker_forked"] = round(min(i["started"] for i in workers), 2) if workers else None
    numbers["stop_notify_last_seen"] = round(max(i["last"] for i in parents), 2) if parents else None
    if stop_records:
        from datetime import datetime

        rec = [r for r in stop_records if r.get("outcome") == "converged"] or stop_records
        done = datetime.fromisoformat(rec[0]["ts"].replace("Z", "+00:00")).timestamp() - wall0
        numbers["stop_run_started"] = round(done - rec[0]["duration_ms"] / 1000, 2)
        numbers["stop_run_done"] = round(done, 2)
        numbers["released_by"] = rec[0].get("command")
    numbers["how"] = how
    c.numbers[how] = numbers
    c.numbers.setdefault("endings", []).append(numbers)  # the same dict: the traffic figures come below
    c.log(f"  seconds after the kill: {numbers}")
    # exact when known: the kernel's address event, and the end of the STOP run (it verifies IPVS)
    vip_gone = numbers["vip_removed_exact"] if numbers["vip_removed_exact"] is not None else numbers["vip_gone"]
    service_gone = numbers.get("stop_run_done", numbers["service_gone"])
    c.check(f"{old.name} released the VIP and its IPVS service within {STOP_DEADLINE:.0f}s",
            None not in (vip_gone, service_gone, numbers["vip_gone"], numbers["service_gone"])
            and max(vip_gone, service_gone) <= STOP_DEADLINE,
            {"vip_removed": vip_gone, "service_removed_by": service_gone,
             "polled_vip_gone": numbers["vip_gone"], "polled_service_gone": numbers["service_gone"]})
    c.check(f"{new.name} took over (VIP on eth0 + service)", marks["peer_master"] is not None,
            {"peer_vip_added": numbers["peer_vip_added_exact"], "polled": numbers["peer_master"]})
    c.check(f"keepalived on {old.name} exited", marks["keepalived_exited"] is not None,
            f"exit code {old.keepalived.returncode} after {numbers['keepalived_exited']}s")
    if post:
        c.check("systemd's ExecStopPost= (the example drop-in) exited 0", post.get("code") == 0, post)
    time.sleep(3)  # nothing may re-bind it later (a late notification, a listener's repair), and traffic runs on
    t1 = time.monotonic()
    c.traffic.settle()
    c.check(f"3 s later {old.name} still has neither VIP nor service",
            not vip_devs(old) and not ipvs_service(old), {"vip": vip_devs(old), "ipvs": ipvs_service(old)})
    summary = c.measure(f"{title}, {t1 - t0:.0f} s", t0, t1)
    numbers.update(failed=summary["failed"], gap_s=summary["gap_s"], sent=summary["sent"])
    after = c.traffic.window(t1 - 2.0, t1)
    c.check("traffic resumed on the other director: the last 2 s all answered",
            bool(after) and all(r["ok"] for r in after), summarize(after))
    c.show_state()
    c.log_journal(old, records)
    interrupted = [describe_record(r) for r in records if r.get("outcome") not in (None, "converged", "superseded")]
    c.check(f"journal of {old.name}: the release converged ({numbers.get('released_by')})",
            bool(stop_records) and any(r["outcome"] == "converged" for r in stop_records) and not interrupted,
            [describe_record(r) for r in stop_records] + interrupted)
    finals = {r.get("run") for r in journal(old) if r.get("record") != "started"}
    unfinished = [r.get("command") for r in records if r.get("record") == "started" and r.get("run") not in finals]
    c.check(f"journal of {old.name}: every run started since the kill has its final record (none interrupted)",
            not unfinished, unfinished)
    if how == "kill_all":
        want = "keepalived-gone" if c.mode != "notify" else "reconcile"
        c.check(f"journal of {old.name}: released by {want} (no STOP came)",
                numbers.get("released_by") == want, numbers.get("released_by"))
    else:
        stops = [r for r in stop_records if r.get("command") != "keepalived-gone"]
        c.check(f"journal of {old.name}: keepalived's STOP notification arrived and converged or was superseded",
                bool(stops) and all(r["outcome"] in ("converged", "superseded") for r in stops),
                [describe_record(r) for r in stops])
    exited = marks["keepalived_exited"]
    if stop_records and exited is not None and numbers["stop_run_done"] > exited:
        c.log(f"  -> released {numbers['stop_run_done'] - exited:.1f}s after keepalived exited")
    with open(klog, "rb") as fh:
        fh.seek(klog_size)
        for line in fh.read().decode(errors="replace").splitlines():
            c.log(f"  keepalived {old.name}: {line.strip()}")


def scenario_comes_back(c: Cluster, old: Node, new: Node, how: str) -> None:
    """keepalived started again on the old master: it re-sends its states, everything converges again."""
    c.begin(f"4. keepalived started again on {old.name} after {how}: it preempts, kanotify follows")
    if c.mode == "fifo":  # the old listener (keepalived's FIFO script) has gone with it
        gone = wait_for(lambda: c.listener_pid(old) is None or not Path(f"/proc/{c.listener_pid(old)}").exists(),
                        30, 0.2)
        c.check(f"{old.name}'s FIFO listener exited with keepalived", gone is not None, c.listener_pid(old))
    j_before = len(transitions(old))
    c.start_keepalived(old)
    took = c.wait_master(old)
    c.check(f"{old.name} MASTER again (VIP on eth0, service with {len(c.servers)} reals); {new.name} released",
            took is not None, f"after {took:.1f}s" if took is not None else c.role_state(old))
    last = c.last_effective(old, j_before, "master")
    c.check(f"journal of {old.name}: -> master converged", last.get("outcome") == "converged", describe_record(last)
            if last else "none")


def scenario_arp(c: Cluster, master: Node, title: str) -> None:
    c.begin(title)
    c.arp_check(master)


# --------------------------------------------------------------------------- connections through a failover (issue 13)

SYNC_MASTER = "master sync daemon (mcast=eth0, syncid=51, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)"
SYNC_BACKUP = "backup sync daemon (mcast=eth0, syncid=51, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)"


def sync_daemons(node: Node) -> list[str]:
    """``ipvsadm -L --daemon`` in the node's namespace, one line per running daemon."""
    return [line.strip() for line in nsx(node.ns, "ipvsadm", "-L", "--daemon").splitlines() if line.strip()]


def conn_entries(node: Node, port: int) -> list[str]:
    """The node's ``ipvsadm -Lnc`` entries for the client's connection from ``port``."""
    source = f"{CLIENT[1]}:{port}"
    return [" ".join(line.split()) for line in nsx(node.ns, "ipvsadm", "-Lnc").splitlines() if source in line.split()]


def hold_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Exchanges, failures by kind, connections opened, and the longest exchange of a ``hold`` log."""
    exchanges = [r for r in records if "seq" in r]
    failed = [r for r in exchanges if not r["ok"]]
    errors: dict[str, int] = {}
    for r in failed:
        errors[r["err"]] = errors.get(r["err"], 0) + 1
    opened = [r for r in records if r.get("event") == "open"]
    ok_ms = [r["ms"] for r in exchanges if r["ok"]]
    return {
        "exchanges": len(exchanges),
        "failed": len(failed),
        "resets": errors.get("reset", 0),
        "errors": errors,
        "connections": len(opened),
        "connect_failures": sum(1 for r in records if r.get("event") == "connect-failed"),
        "servers": [r["who"] for r in opened],
        "max_ms": max(ok_ms, default=0),
        "over_1s": sum(1 for ms in ok_ms if ms > 1000),
    }


def check_daemons(c: Cluster, want: dict[str, list[str]]) -> None:
    """Each director runs exactly the sync daemons of its state (none at all without [sync_daemon])."""
    nodes = {n.name: n for n in c.directors}
    got = wait_for(lambda: all(sync_daemons(nodes[name]) == lines for name, lines in want.items()), 15.0)
    c.check("ipvsadm -L --daemon: " + "; ".join(f"{name} {', '.join(lines) or 'none'}" for name, lines in want.items()),
            bool(got), {name: sync_daemons(node) for name, node in nodes.items()})


def scenario_hold(c: Cluster) -> None:
    """One TCP connection through the VIP (DR) held through a planned failover and the fail-back.

    With ``[sync_daemon]`` (topology ``sync``) the backup director has the
    connection in its IPVS table before it takes over (the master flushes its
    sync buffer about every 2 s, hence the seconds of traffic first), so no
    exchange fails and the connection is never reset, in both directions;
    ``--without-sync-daemon`` renders the same config without the table and
    the same run shows the reset each time.
    """
    lb1, lb2 = c.node("lb1"), c.node("lb2")
    synced = c.sync_daemon
    mode = "with [sync_daemon]" if synced else "WITHOUT [sync_daemon]"
    scenario_steady(c, lb1, lb2, f"7. {mode}: lb1 MASTER spreads VIP:80 over rs1+rs2, lb2 BACKUP")
    check_daemons(c, {"lb1": [SYNC_MASTER], "lb2": [SYNC_BACKUP]} if synced else {"lb1": [], "lb2": []})
    hold = Traffic(c.work / "hold.jsonl")
    proc = c.spawn(c.client, [sys.executable, __file__, "hold", str(hold.path)], "hold.log")
    marks: dict[str, float] = {}
    try:
        c.begin(f"8. {mode}: ONE TCP connection through the VIP, a line echoed every {REQUEST_INTERVAL * 1000:.0f} ms")
        opened = wait_for(lambda: [r for r in hold.records() if r.get("event") == "open"], 30.0)
        held = c.check("the client holds a connection through the VIP", bool(opened), c.tail(c.client.dir / "hold.log"))
        if not held:
            return
        first = opened[0]
        c.log(f"  connection from {CLIENT[1]}:{first['port']}, answered by {first['who']}")
        marks["start"] = first["t"]
        time.sleep(5.0)  # the master syncs a connection after 3 packets and flushes about every 2 s
        on_lb2 = wait_for(lambda: conn_entries(lb2, first["port"]), 10.0 if synced else 0.0)
        if synced:
            c.check("the backup director lb2 has the connection in its IPVS table (synced)", bool(on_lb2),
                    on_lb2 or conn_entries(lb2, first["port"]))
        else:
            c.check("the backup director lb2 does not have the connection (no sync daemon)", not on_lb2, on_lb2)
        marks["failover"] = time.monotonic()
        scenario_failover(c, lb1, lb2, f"9. {mode}: planned failover under the held connection (track_file on lb1)",
                          "failover", 1)
        check_daemons(c, {"lb2": [SYNC_MASTER], "lb1": [SYNC_BACKUP]} if synced else {"lb1": [], "lb2": []})
        time.sleep(6.0)  # lb2's master daemon syncs the connection back to lb1 before the fail-back
        current = [r for r in hold.records() if r.get("event") == "open"][-1]
        if synced:
            back = wait_for(lambda: conn_entries(lb1, current["port"]), 10.0)
            c.check("lb1 (now BACKUP) has the connection again, from lb2's sync daemon", bool(back), back)
        marks["failback"] = time.monotonic()
        scenario_failover(c, lb2, lb1, f"10. {mode}: fail-back under the held connection (track_file back to 0)",
                          "failback", 0)
        check_daemons(c, {"lb1": [SYNC_MASTER], "lb2": [SYNC_BACKUP]} if synced else {"lb1": [], "lb2": []})
        time.sleep(3.0)
        marks["end"] = time.monotonic()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    c.begin(f"11. {mode}: what the held connection saw")
    records = hold.records()
    whole = hold_summary(records)
    windows = {
        "before": hold_summary([r for r in records if r["t"] < marks["failover"]]),
        "failover": hold_summary([r for r in records if marks["failover"] <= r["t"] < marks["failback"]]),
        "failback": hold_summary([r for r in records if r["t"] >= marks["failback"]]),
    }
    # kanotify's own part of each take-over: the new master's run, from the journal
    takeovers = {key: [r for r in effective(transitions(node)) if r["to"] == "master"][-1]["duration_ms"]
                 for key, node in (("failover", lb2), ("failback", lb1))}
    c.numbers["hold"] = {**whole, "windows": windows, "sync_daemon": synced, "takeover_run_ms": takeovers,
                         "seconds": round(marks["end"] - marks["start"], 1)}
    c.log(f"  the new master's kanotify run took {takeovers['failover']:.0f} ms (failover, lb2) and "
          f"{takeovers['failback']:.0f} ms (fail-back, lb1)")
    for name, summary in [("whole run", whole), *windows.items()]:
        c.log(f"  {name:9}: {summary['exchanges']} exchanges, {summary['failed']} failed {summary['errors'] or ''}, "
              f"{summary['connections']} connection(s) opened, longest exchange {summary['max_ms']} ms")
    for r in records:
        if not r.get("ok", True) or r.get("event") == "connect-failed":
            c.log(f"  client: {r}")
    if synced:
        c.check("zero exchanges failed and the connection was never reset (failover and fail-back)",
                whole["failed"] == 0 and whole["connect_failures"] == 0 and whole["connections"] == 1, whole)
        c.check("exchanges went on through both switches, always with the same real server",
                windows["failover"]["exchanges"] > 50 and windows["failback"]["exchanges"] > 30
                and len(set(whole["servers"])) == 1, windows)
        takeover = [r for r in effective(transitions(lb2)) if r["to"] == "master"]
        applied = [a["action"] for a in takeover[-1]["actions"] if a["status"] == "applied"] if takeover else []
        order = [next((i for i, a in enumerate(applied) if a.startswith(word)), -1)
                 for word in ("add ipvs service", "stop backup sync daemon", "start master sync daemon", "bind")]
        c.check("lb2's take-over: IPVS service, then the backup daemon stopped, the master's started, then the VIP",
                -1 not in order and order == sorted(order), applied)
    else:
        c.check("the connection was reset when lb2 took over (no sync daemon)",
                windows["failover"]["resets"] >= 1, windows["failover"])
        c.check("and the next one again at the fail-back", windows["failback"]["resets"] >= 1, windows["failback"])
    scenario_history(c, {"lb1": ["backup", "master", "backup", "master"], "lb2": ["backup", "master", "backup"]})


# =========================================================================== runs


def run_dedicated(c: Cluster, only_stop: bool = False, repeat: int = 1) -> None:
    lb1, lb2 = c.node("lb1"), c.node("lb2")
    scenario_steady(c, lb1, lb2, "1. dedicated directors: lb1 MASTER spreads VIP:80 over rs1+rs2, lb2 BACKUP idle")
    if only_stop:  # --only-stop: a quick loop on keepalived going away (debugging, the note's repeats)
        for round_ in range(repeat):
            if round_:
                scenario_comes_back(c, lb1, lb2, list(ENDINGS)[-1])
            run_endings(c, lb1, lb2)
        return
    scenario_arp(c, lb1, "6. real servers never answer ARP for the VIP (lb1 master)")
    scenario_failover(c, lb1, lb2, "2. planned failover under traffic (track_file on lb1)", "failover", 1)
    scenario_arp(c, lb2, "6. ARP after failover (lb2 master)")
    scenario_failover(c, lb2, lb1, "3. fail-back with preemption (track_file back to 0)", "failback", 0)
    c.begin("3. the journal on both directors shows every transition")
    for node in c.directors:
        c.log_journal(node, transitions(node))
    scenario_history(c, {"lb1": ["backup", "master", "backup", "master"], "lb2": ["backup", "master", "backup"]})
    run_endings(c, lb1, lb2)


def run_endings(c: Cluster, master: Node, peer: Node) -> None:
    """Every way keepalived goes on the master (ENDINGS), each under CPU load, keepalived started again between."""
    for i, how in enumerate(ENDINGS):
        if i:
            scenario_comes_back(c, master, peer, list(ENDINGS)[i - 1])
        scenario_gone(c, master, peer, how)


def run_two_node(c: Cluster) -> None:
    n1, n2 = c.node("node1"), c.node("node2")
    scenario_steady(c, n1, n2, "5. two-node: node1 MASTER forwards to itself and node2; node2 BACKUP is a real server")
    scenario_arp(c, n1, "6. two-node: node2 holds the VIP on lo but never answers ARP for it")
    scenario_failover(c, n1, n2, "5. two-node failover under traffic (track_file on node1)", "failover", 1)
    # leaving MASTER binds the VIP on lo last (after the eth0 VIP and IPVS are gone): wait for it
    c.check("node1 (now BACKUP) serves as a real server: VIP on lo:0, no IPVS service",
            bool(wait_for(lambda: has_vip_on(n1, "lo") and not ipvs_service(n1), 15.0, 0.2)),
            {"vip": vip_devs(n1), "ipvs": ipvs_service(n1)})
    scenario_arp(c, n2, "6. two-node: ARP after failover (node2 master, node1 real server)")
    c.begin("5. the journal on both nodes shows every transition")
    for node in c.directors:
        c.log_journal(node, transitions(node))
    scenario_history(c, {"node1": ["backup", "master", "backup"], "node2": ["backup", "master"]})


def main_run(args: argparse.Namespace) -> int:
    if os.environ.get("KANOTIFY_IN_GUEST") != "1":
        print("cluster.py run builds namespaces, a bridge and keepalived: run it in the UML guest "
              "(tests/e2e/test_cluster.py or scripts/demo)", file=sys.stderr)
        return 2
    guest_dir = Path(os.environ.get("KANOTIFY_GUEST_DIR", "/tmp"))
    result_path = Path(args.result) if args.result else guest_dir / "e2e-result.json"
    work = guest_dir / f"cluster-{args.topology}-{args.mode}"
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)
    log = Log(args.log)
    cluster = Cluster(args.topology, work, log, args.mode, sync_daemon=not args.without_sync_daemon)
    started = time.monotonic()
    error = None
    try:
        cluster.build()
        if args.topology == "dedicated":
            run_dedicated(cluster, only_stop=args.only_stop, repeat=args.repeat)
        elif args.topology == "sync":
            scenario_hold(cluster)
        else:
            run_two_node(cluster)
    except BaseException as exc:  # noqa: BLE001 - report everything in the result
        import traceback

        error = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        log(f"ERROR: {error}")
    finally:
        try:
            cluster.stop_all()
        except Exception as exc:  # noqa: BLE001
            log(f"teardown: {exc}")
    seconds = time.monotonic() - started
    failed = [ch for ch in cluster.checks if not ch["ok"]]
    ok = error is None and not failed and bool(cluster.checks)
    log("")
    log(f"=== {args.topology} ({args.mode} mode): {'PASS' if ok else 'FAIL'}: {len(cluster.checks) - len(failed)}/{len(cluster.checks)} "
        f"checks in {seconds:.0f}s" + (f"; failed: {', '.join(ch['check'] for ch in failed)}" if failed else ""))
    for key in ("failover", "failback"):
        n = cluster.numbers.get(key)
        if n:
            log(f"    {key:9}: {n['failed']} of {n['sent']} requests failed, outage {n['gap_s']:.2f}s, "
                f"converged {n.get('converged_s')}s after the priority change")
    if "hold" in cluster.numbers:
        n = cluster.numbers["hold"]
        log(f"    held connection ({'with' if n['sync_daemon'] else 'WITHOUT'} [sync_daemon], {n['seconds']}s): "
            f"{n['exchanges']} exchanges, {n['failed']} failed, {n['resets']} resets, {n['connections']} "
            f"connection(s), longest exchange {n['max_ms']} ms; the new master's run took "
            f"{n['takeover_run_ms']['failover']:.0f} / {n['takeover_run_ms']['failback']:.0f} ms")
    for n in cluster.numbers.get("endings", []):
        stop = (f"STOP notify started {n['stop_notify_started']}s, its worker left keepalived's group "
                f"{n.get('stop_worker_forked')}s, killed by {n.get('stop_notify_last_seen')}s; "
                if n.get("stop_notify_started") is not None else "")
        log(f"    {n['how']:11}: keepalived exited {n.get('keepalived_exited')}s; {stop}VIP removed "
            f"{n.get('vip_removed_exact')}s, IPVS service removed by {n.get('stop_run_done')}s "
            f"({n.get('released_by')}); peer bound the VIP {n.get('peer_vip_added_exact')}s, both held it "
            f"{n.get('both_held_s')}s; {n.get('failed')} of {n.get('sent')} requests failed, outage {n.get('gap_s')}s")
    nodes_info = {}
    for node in cluster.nodes:
        nodes_info[node.name] = {
            "journal": journal(node),
            "keepalived_log": cluster.tail(node.dir / "keepalived.log", 80) if node.is_director else "",
        }
    result = {
        "topology": args.topology,
        "mode": args.mode,
        "ok": ok,
        "error": error,
        "seconds": round(seconds, 1),
        "checks": cluster.checks,
        "numbers": cluster.numbers,
        "nodes": nodes_info,
        "log": "\n".join(log.lines),
    }
    result_path.write_text(json.dumps(result, indent=1))
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run")
    p.add_argument("--topology", choices=("dedicated", "two-node", "sync"), required=True)
    p.add_argument("--mode", choices=MODES, default="notify", help="how keepalived reaches kanotify")
    p.add_argument("--without-sync-daemon", action="store_true",
                   help="sync: the directors' config without its [sync_daemon] table (shows the reset)")
    p.add_argument("--result")
    p.add_argument("--log")
    p.add_argument("--only-stop", action="store_true",
                   help="dedicated: only scenario 1 and the endings of keepalived (4), for a loop on them")
    p.add_argument("--repeat", type=int, default=1, help="with --only-stop: run the endings this many times")
    p = sub.add_parser("serve")
    p.add_argument("name")
    p = sub.add_parser("client")
    p.add_argument("logfile")
    p = sub.add_parser("hold")
    p.add_argument("logfile")
    p = sub.add_parser("arp-probe")
    p.add_argument("dev")
    p.add_argument("ip")
    p.add_argument("seconds", type=float)
    args = parser.parse_args(argv)
    if args.cmd == "run":
        return main_run(args)
    if args.cmd == "serve":
        serve(args.name)
    elif args.cmd == "client":
        client(args.logfile)
    elif args.cmd == "hold":
        hold(args.logfile)
    elif args.cmd == "arp-probe":
        arp_probe(args.dev, args.ip, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
