"""Metrics against real IPVS (in the UML guest): real-server weights and sync daemons as the kernel has them.

The host has no IPVS, so what the metrics say about weights and sync daemons is
proven here: ``kanotify listen`` in a namespace of the guest with
``settings.metrics`` on the namespace's 127.0.0.1, keepalived's lines in its
FIFO, a weight changed behind its back with ``ipvsadm``; and ``kanotify
metrics`` run beside it, which reads the kernel itself.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ipvs_guest_support import run
from nstools import run_in_netns

KANOTIFY = str(Path(sys.executable).with_name("kanotify"))
PORT = 9650

CONFIG = """
[settings]
state_dir = "{tmp}/state"
journal = "{tmp}/journal.jsonl"
hooks_dir = "{tmp}/hooks.d"
syslog = false
garp_count = 0
reconcile_interval = 1
metrics = "127.0.0.1:{port}"

[[instance]]
name = "VI_1"
  [[instance.vip]]
  address = "192.0.2.100/24"
  dev = "eth0"
  [[instance.service]]
  protocol = "tcp"
  address = "192.0.2.100"
  port = 80
  scheduler = "wrr"
    [[instance.service.real]]
    address = "192.0.2.21"
    weight = 3
    [[instance.service.real]]
    address = "192.0.2.22"

[sync_daemon]
interface = "eth0"
sync_id = 9
"""

SERVICE = "tcp 192.0.2.100:80"


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return str(answer.read().decode())


def values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels: str) -> float | None:
    return values(text).get((name, tuple(sorted(labels.items()))))


def wait(predicate: Callable[[], object], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[str, Path, int, subprocess.Popen[bytes]]]:
    ns = f"kt-m{secrets.token_hex(2)}"
    run(["ip", "netns", "add", ns])
    proc = None
    writer = -1
    try:
        run(["ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"])
        for dev in ("lo", "eth0", "peer0"):
            run(["ip", "-n", ns, "link", "set", dev, "up"])
        run(["ip", "-n", ns, "addr", "add", "192.0.2.1/24", "dev", "eth0"])
        conf = tmp_path / "kanotify.toml"
        conf.write_text(CONFIG.format(tmp=tmp_path, port=PORT))
        conf.chmod(0o600)
        fifo = tmp_path / "notify.fifo"
        os.mkfifo(fifo)
        writer = os.open(fifo, os.O_RDWR)
        with open(tmp_path / "listen.log", "wb") as log:
            proc = subprocess.Popen(["ip", "netns", "exec", ns, KANOTIFY, "--config", str(conf), "listen", str(fifo)],
                                    stdout=log, stderr=subprocess.STDOUT)
        assert wait(lambda: proc.poll() is not None or "metrics: serving" in (tmp_path / "listen.log").read_text(),
                    60), (tmp_path / "listen.log").read_text()
        assert proc.poll() is None, (tmp_path / "listen.log").read_text()
        yield ns, tmp_path, writer, proc
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        if writer >= 0:
            os.close(writer)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_weights_and_sync_daemons_are_the_kernels(
        listener: tuple[str, Path, int, subprocess.Popen[bytes]]) -> None:
    ns, tmp, writer, proc = listener
    scrape = lambda: run_in_netns(ns, _get, f"http://127.0.0.1:{PORT}/metrics")  # noqa: E731
    assert wait(lambda: value(scrape(), "kanotify_sync_daemon_running", state="backup") == 1)
    os.write(writer, b'INSTANCE "VI_1" MASTER 100\n')
    assert wait(lambda: value(scrape(), "kanotify_instance_state", vrrp_instance="VI_1", state="master") == 1)
    # the state is recorded before the run applies: the kernel's weights and daemons show once it has run
    assert wait(lambda: value(scrape(), "kanotify_real_server_weight", service=SERVICE, real="192.0.2.22:80") == 1
                and value(scrape(), "kanotify_sync_daemon_running", state="master") == 1)
    text = scrape()
    assert value(text, "kanotify_real_server_weight", service=SERVICE, real="192.0.2.21:80") == 3
    assert value(text, "kanotify_real_server_weight", service=SERVICE, real="192.0.2.22:80") == 1
    assert value(text, "kanotify_sync_daemon_running", state="master") == 1
    assert value(text, "kanotify_sync_daemon_running", state="backup") == 0
    repairs = value(text, "kanotify_drift_repairs_total")
    # behind kanotify's back: the next repair (reconcile_interval 1 s) puts weight 3 back and counts it
    run(["ip", "netns", "exec", ns, "ipvsadm", "-e", "-t", "192.0.2.100:80", "-r", "192.0.2.21:80", "-g", "-w", "7"])
    assert wait(lambda: value(scrape(), "kanotify_drift_repairs_total") == (repairs or 0) + 1)
    assert value(scrape(), "kanotify_real_server_weight", service=SERVICE, real="192.0.2.21:80") == 3
    # kanotify metrics, beside the listener, reads the kernel itself (the listener paused: it would repair it)
    proc.send_signal(signal.SIGSTOP)
    try:
        run(["ip", "netns", "exec", ns, "ipvsadm", "-e", "-t", "192.0.2.100:80", "-r", "192.0.2.22:80", "-g", "-w", "5"])
        once = subprocess.run(["ip", "netns", "exec", ns, KANOTIFY, "--config", str(tmp / "kanotify.toml"), "metrics"],
                              capture_output=True, text=True)
    finally:
        proc.send_signal(signal.SIGCONT)
    assert once.returncode == 0 and once.stderr == "", once
    assert value(once.stdout, "kanotify_real_server_weight", service=SERVICE, real="192.0.2.22:80") == 5
    assert value(once.stdout, "kanotify_sync_daemon_running", state="master") == 1
    assert value(once.stdout, "kanotify_instance_state", vrrp_instance="VI_1", state="master") == 1
    assert value(once.stdout, "kanotify_listener_running") == 1
    os.write(writer, b'INSTANCE "VI_1" BACKUP 100\n')
    assert wait(lambda: value(scrape(), "kanotify_sync_daemon_running", state="backup") == 1
                and value(scrape(), "kanotify_real_server_weight", service=SERVICE, real="192.0.2.21:80") is None)
    text = scrape()
    assert value(text, "kanotify_real_server_weight", service=SERVICE, real="192.0.2.21:80") is None  # service gone
    assert value(text, "kanotify_sync_daemon_running", state="master") == 0
