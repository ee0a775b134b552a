"""``kanotify listen`` against real IPVS (in the UML guest): FIFO lines converge IPVS, ``ipvsadm -C`` is repaired.

The host has no IPVS, so the listener's IPVS work is proven here: a real
listener process in a namespace of the guest, keepalived's lines written into
its FIFO, the kernel read back with ``ipvsadm-save -n``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from ipvs_guest_support import run
from nstools import whole_lines

KANOTIFY = str(Path(sys.executable).with_name("kanotify"))

CONFIG = """
[settings]
state_dir = "{tmp}/state"
journal = "{tmp}/journal.jsonl"
hooks_dir = "{tmp}/hooks.d"
syslog = false
garp_count = 0
reconcile_interval = 0.5

[[instance]]
name = "VI_1"
  [[instance.vip]]
  address = "192.0.2.100/24"
  dev = "eth0"
  [[instance.service]]
  protocol = "tcp"
  address = "192.0.2.100"
  port = 80
  scheduler = "rr"
    [[instance.service.real]]
    address = "192.0.2.21"
    [[instance.service.real]]
    address = "192.0.2.22"
"""

RULES = ["-A -t 192.0.2.100:80 -s rr", "-a -t 192.0.2.100:80 -r 192.0.2.21:80 -g -w 1",
         "-a -t 192.0.2.100:80 -r 192.0.2.22:80 -g -w 1"]



@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[str, Path, int, subprocess.Popen[bytes]]]:
    ns = f"kt-l{secrets.token_hex(2)}"
    run(["ip", "netns", "add", ns])
    proc = None
    writer = -1
    try:
        run(["ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"])
        for dev in ("lo", "eth0", "peer0"):
            run(["ip", "-n", ns, "link", "set", dev, "up"])
        run(["ip", "-n", ns, "addr", "add", "192.0.2.1/24", "dev", "eth0"])
        conf = tmp_path / "kanotify.toml"
        conf.write_text(CONFIG.format(tmp=tmp_path))
        conf.chmod(0o600)
        fifo = tmp_path / "notify.fifo"
        os.mkfifo(fifo)
        writer = os.open(fifo, os.O_RDWR)
        with open(tmp_path / "listen.log", "wb") as log:
            proc = subprocess.Popen(["ip", "netns", "exec", ns, KANOTIFY, "--config", str(conf), "listen", str(fifo)],
                                    stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not (tmp_path / "state" / "control.sock").exists():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "listen.log").read_text()
            time.sleep(0.05)
        yield ns, tmp_path, writer, proc
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        if writer >= 0:
            os.close(writer)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def rules(ns: str) -> list[str]:
    return sorted(line for line in run(["ip", "netns", "exec", ns, "ipvsadm-save", "-n"]).splitlines() if line)


def wait(predicate, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_fifo_lines_converge_ipvs_and_ipvsadm_clear_is_repaired(listener) -> None:  # type: ignore[no-untyped-def]
    ns, tmp, writer, proc = listener
    started = time.monotonic()
    os.write(writer, b'INSTANCE "VI_1" MASTER 100\n')
    assert wait(lambda: rules(ns) == RULES), rules(ns)
    print(f"FIFO MASTER -> IPVS converged (polled): {(time.monotonic() - started) * 1000:.0f} ms")
    run(["ip", "netns", "exec", ns, "ipvsadm", "-C"])  # no kernel event for this: the periodic reconcile repairs it
    started = time.monotonic()
    assert wait(lambda: rules(ns) == RULES), rules(ns)
    print(f"ipvsadm -C -> repaired (reconcile_interval 0.5 s): {(time.monotonic() - started) * 1000:.0f} ms")

    def repairs() -> list[dict[str, Any]]:
        records = [json.loads(line) for line in whole_lines(tmp / "journal.jsonl")]
        return [r for r in records if r["command"] == "repair" and any(a["status"] == "applied" for a in r["actions"])]

    # the rules are back while the repair applies; its journal line is written once it has ended
    assert wait(repairs), (tmp / "journal.jsonl").read_text()
    assert "reconcile_interval" in " ".join(repairs()[-1]["trigger"])
    os.write(writer, b'INSTANCE "VI_1" BACKUP 100\n')
    assert wait(lambda: rules(ns) == []), rules(ns)
    assert proc.poll() is None
