"""[bgp] against real daemons: a router running BIRD 2, a director running BIRD 2 (the shipped
examples/bird-director.conf) and one running FRR 8 (examples/frr-director.conf), in network
namespaces of the guest.  kanotify creates the dummy link and binds the VIP, and then
``status --json`` shows the sessions read from ``birdc -r`` / ``vtysh``, ``doctor`` passes the
wiring rows, and a director configured with graceful restart and without BFD fails them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[3]
ROUTER, BIRD_DIR, FRR_DIR = "198.51.100.1", "198.51.100.11", "198.51.100.12"

ROUTER_CONF = f"""
router id {ROUTER};
protocol device {{}}
protocol kernel {{ merge paths on; ipv4 {{ import none; export all; }}; }}
protocol bfd {{ interface "eth0" {{ min rx interval 300 ms; min tx interval 300 ms; multiplier 3; }}; }}
template bgp dirs {{ local {ROUTER} as 65000; bfd on; graceful restart off; connect delay time 1;
  connect retry time 2; error wait time 1, 2; ipv4 {{ import all; export none; }}; }}
protocol bgp bird_director from dirs {{ neighbor {BIRD_DIR} as 65001; }}
protocol bgp frr_director from dirs {{ neighbor {FRR_DIR} as 65001; }}
"""

KANOTIFY = """
[settings]
state_dir = "{run}/state"
journal = "{run}/journal.jsonl"
syslog = false
[sysctl]
"net.ipv4.vs.sloppy_tcp" = 1
[bgp]
interface = "kav0"
daemon = "{daemon}"
control = "{control}"
[[instance]]
name = "ANYCAST"
  [[instance.vip]]
  address = "192.0.2.10/32"
  dev = "kav0"
  [[instance.service]]
  protocol = "tcp"
  address = "192.0.2.10"
  port = 7
  scheduler = "mh"
  flags = ["mh-port"]
    [[instance.service.real]]
    address = "198.51.100.21"
"""


def sh(*argv: str, check: bool = True) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    if check and done.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr or done.stdout}")
    return done.stdout


def bird_director_conf(address: str, *, graceful: bool = False, bfd: bool = True) -> str:
    text = (REPO / "examples" / "bird-director.conf").read_text()
    for old, new in (("router id 192.0.2.21;", f"router id {address};"), ("log syslog all;", ""),
                     ("local as 64513;", f"local {address} as 65001;"),
                     ("neighbor 192.0.2.1 as 64512;", f"neighbor {ROUTER} as 65000;"),
                     ("connect retry time 5;", "connect delay time 1; connect retry time 2;")):
        assert old in text, old
        text = text.replace(old, new)
    if graceful:
        text = text.replace("graceful restart off;", "graceful restart on;")
    if not bfd:
        text = text.replace("bfd on;", "bfd off;")
    return text


class Lab:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.tag = uuid.uuid4().hex[:6]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.namespaces: list[str] = []
        self.pidfiles: list[Path] = []

    def ns(self, name: str) -> str:
        return f"{name}{self.tag}"

    def add_ns(self, name: str, address: str) -> str:
        ns = self.ns(name)
        sh("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"p{name}", "netns", self.ns("sw"))
        sh("ip", "-n", self.ns("sw"), "link", "set", f"p{name}", "master", "br0", "up")
        sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        return ns

    def bird(self, ns: str, conf: str, name: str) -> Path:
        path, ctl = self.base / f"{name}.conf", self.base / f"{name}.ctl"
        path.write_text(conf)
        self.procs.append(subprocess.Popen(["ip", "netns", "exec", ns, "bird", "-f", "-c", str(path), "-s", str(ctl),
                                            "-P", str(self.base / f"{name}.pid")], start_new_session=True,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        assert wait(lambda: ctl.exists(), 20), f"BIRD {name} did not start"
        return ctl

    def frr(self, ns: str, address: str) -> Path:
        """zebra, bfdd and bgpd of FRR with their run directory on the guest's /run (a tmpfs: they chown it)."""
        run = Path(f"/run/frr-{self.tag}")
        run.mkdir()
        shutil.chown(run, "frr", "frr")
        text = (REPO / "examples" / "frr-director.conf").read_text()
        for old, new in (("192.0.2.21", address), ("192.0.2.1 ", f"{ROUTER} "), ("64513", "65001"),
                         ("64512", "65000")):
            text = text.replace(old, new)
        bfdd, bgpd = self.split_frr(text)
        confs = {}
        for daemon, body in (("bfdd", bfdd), ("bgpd", bgpd)):
            confs[daemon] = run / f"{daemon}.conf"  # FRR reads it as user frr: not in pytest's 0700 tmp_path
            confs[daemon].write_text(body)
            os.chmod(confs[daemon], 0o644)
        common = ["-d", "-z", f"{run}/zserv.api", "--vty_socket", str(run), "-u", "frr", "-g", "frr"]
        sh("ip", "netns", "exec", ns, "/usr/lib/frr/zebra", *common, "-i", f"{run}/zebra.pid")
        assert wait(lambda: Path(f"{run}/zserv.api").exists(), 10)
        sh("ip", "netns", "exec", ns, "/usr/lib/frr/bfdd", *common, "-i", f"{run}/bfdd.pid", "-f", str(confs["bfdd"]),
           "--bfdctl", f"{run}/bfdd.sock")
        sh("ip", "netns", "exec", ns, "/usr/lib/frr/bgpd", *common, "-i", f"{run}/bgpd.pid", "-f", str(confs["bgpd"]))
        self.pidfiles += [run / f"{d}.pid" for d in ("bgpd", "bfdd", "zebra")]
        return run

    @staticmethod
    def split_frr(text: str) -> tuple[str, str]:
        """FRR's integrated config cut into bfdd's part (the bfd block) and bgpd's (the rest)."""
        bfd, rest, inside = [], [], False
        for line in text.splitlines():
            if line.startswith("bfd"):
                inside = True
            (bfd if inside else rest).append(line)
            if inside and line == "exit":
                inside = False
        return "\n".join(bfd) + "\n", "\n".join(rest) + "\n"

    def close(self) -> None:
        for pidfile in self.pidfiles:
            try:
                os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
        for ns in [*self.namespaces, self.ns("sw")]:
            subprocess.run(["ip", "netns", "del", ns], check=False)


def wait(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path)
    sh("ip", "netns", "add", lab.ns("sw"))
    sh("ip", "-n", lab.ns("sw"), "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", lab.ns("sw"), "link", "set", "br0", "up")
    try:
        yield lab
    finally:
        lab.close()


def kanotify(ns: str, conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "kanotify", "--config", str(conf),
                           "--no-daemon", *args], capture_output=True, text=True, timeout=60)


def director_config(lab: Lab, name: str, daemon: str, control: Path) -> Path:
    run = lab.base / name
    run.mkdir()
    conf = lab.base / f"{name}.toml"
    conf.write_text(KANOTIFY.format(run=run, daemon=daemon, control=control))
    return conf


def router_nexthops(lab: Lab) -> list[str]:
    routes = json.loads(sh("ip", "-n", lab.ns("rt"), "-j", "route", "show", "192.0.2.10/32") or "[]")
    if not routes:
        return []
    return sorted(nh["gateway"] for nh in routes[0].get("nexthops", [routes[0]]) if "gateway" in nh)


def diagnose(lab: Lab, frr_ns: str) -> str:
    run = f"/run/frr-{lab.tag}"
    out = [sh("ip", "netns", "exec", frr_ns, "vtysh", "--vty_socket", run, "-c", cmd, check=False)
           for cmd in ("show bgp summary", "show running-config", "show ip bgp", "show interface brief")]
    out.append(sh("birdc", "-s", str(lab.base / "router.ctl"), "show", "protocols", "all", check=False))
    return "\n".join(out)


def test_bird_and_frr_directors_status_doctor_and_ecmp(lab: Lab) -> None:
    rt = lab.add_ns("rt", ROUTER)
    bird_ns = lab.add_ns("db", BIRD_DIR)
    frr_ns = lab.add_ns("df", FRR_DIR)
    lab.bird(rt, ROUTER_CONF, "router")
    bird_conf = director_config(lab, "db", "bird", lab.bird(bird_ns, bird_director_conf(BIRD_DIR), "director"))
    frr_conf = director_config(lab, "df", "frr", lab.frr(frr_ns, FRR_DIR))
    for ns, conf in ((bird_ns, bird_conf), (frr_ns, frr_conf)):
        done = kanotify(ns, conf, "reconcile", "--state", "master", "--instance", "ANYCAST")
        assert done.returncode == 0, done.stdout + done.stderr
    # both directors announce the VIP: the router has one route with two nexthops
    assert wait(lambda: router_nexthops(lab) == [BIRD_DIR, FRR_DIR], 30), (router_nexthops(lab), diagnose(lab, frr_ns))

    for ns, conf, daemon in ((bird_ns, bird_conf, "bird"), (frr_ns, frr_conf, "frr")):
        report = json.loads(kanotify(ns, conf, "status", "--json").stdout)
        bgp = report["bgp"]
        assert bgp["daemon"] == daemon and bgp["error"] is None, bgp
        assert bgp["interface"] == {"name": "kav0", "exists": True, "kind": "dummy", "up": True, "noarp": True}
        assert [s["state"] for s in bgp["sessions"]] == ["Established"], bgp
        assert set(bgp["sessions"][0]) == {"name", "state", "since"}
        text = kanotify(ns, conf, "status").stdout
        assert f"bgp ({daemon}, read-only; VIPs on kav0: dummy, up, no ARP):" in text, text
        assert wait(lambda: "BFD up" in kanotify(ns, conf, "doctor", "--json", "--keepalived-conf", "/dev/null").stdout,
                    10)
        every = json.loads(kanotify(ns, conf, "doctor", "--json", "--keepalived-conf", "/dev/null").stdout)["rows"]
        rows = [r for r in every if r["check"] == "bgp"]
        by_status = {r["what"]: r["status"] for r in rows}
        assert [w for w, st in by_status.items() if st == "fail"] == [], rows
        assert any(st == "pass" and "exactly the VIPs on kav0: 192.0.2.10/32" in w for w, st in by_status.items()), rows
        assert by_status["graceful restart off"] == "pass" and by_status["BFD up on every session"] == "pass", rows
        # one row per fact: sloppy_tcp and the sync mode have their own rows, not the bgp ones
        assert [r["status"] for r in every if r["check"] == "sloppy_tcp"] == ["pass"], every
        assert [r["status"] for r in every if r["check"] == "sync mode"] == ["warn"], every  # no [sync_daemon]
        assert not [r for r in rows if "sloppy" in r["what"] or "sync" in r["what"]], rows

    # STOP unbinds: both withdraw, and the router has no route left
    for ns, conf in ((bird_ns, bird_conf), (frr_ns, frr_conf)):
        assert kanotify(ns, conf, "stop", "ANYCAST").returncode == 0
    assert wait(lambda: router_nexthops(lab) == [], 10), router_nexthops(lab)


def test_doctor_fails_graceful_restart_and_missing_bfd(lab: Lab) -> None:
    rt = lab.add_ns("rt", ROUTER)
    ns = lab.add_ns("db", BIRD_DIR)
    lab.bird(rt, ROUTER_CONF, "router")
    ctl = lab.bird(ns, bird_director_conf(BIRD_DIR, graceful=True, bfd=False), "director")
    conf = director_config(lab, "db", "bird", ctl)
    assert kanotify(ns, conf, "reconcile", "--state", "master", "--instance", "ANYCAST").returncode == 0
    assert wait(lambda: router_nexthops(lab) == [BIRD_DIR], 30)
    done = kanotify(ns, conf, "doctor", "--json", "--keepalived-conf", "/dev/null")
    rows = [r for r in json.loads(done.stdout)["rows"] if r["check"] == "bgp" and r["status"] == "fail"]
    texts = " | ".join(r["what"] for r in rows)
    assert "graceful restart is offered" in texts and "BFD not up on uplink (none)" in texts, texts
    assert done.returncode == 1
