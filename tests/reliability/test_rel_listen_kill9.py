"""Crash safety of the listener: ``kill -9`` mid-transition, 20 times, then the next listener converges.

The listener applies FIFO events that bind (MASTER) or remove (BACKUP) 60
VIPs on ``lo`` plus four ARP sysctls (reset to 0 before every round).  It is
SIGKILLed a seeded random time after the event was written (before, during or
after the transition), or, every other round, a seeded random time after the
transition's first address change (a rtnetlink event): under way for sure, however
loaded the machine (blind times alone hit 1 to 3 of 20 transitions there).  Then a new listener starts on the same state dir
(as keepalived's next fifo script would, or systemd's Restart=on-failure):
its start-up reconcile must converge the kernel to the saved state, and a
``plan --detailed-exitcode`` after it must have nothing to do.  Every journal
line stays whole and ``state.json`` parses throughout.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from kanotify.backends.netns import call_in
from rel_support import ARP_SYSCTLS, KANOTIFY, Node
from test_rel_kill9 import ZERO, on_lo, sixty_vips

pytestmark = pytest.mark.root

KILLS = 20
SEED = 11


def _start(node: Node, fifo: Path, log: Path) -> subprocess.Popen[bytes]:
    argv = ["ip", "netns", "exec", node.ns, KANOTIFY, "--config", str(node.config), "listen", str(fifo)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while "listening" not in log.read_text()[-4000:] or not (node.state_dir / "control.sock").exists():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.01)
    return proc


RTMGRP_IPV4_IFADDR = 0x10


def _address_events(node: Node) -> socket.socket:
    """A socket that hears every IPv4 address added or removed in the node's namespace."""
    def make() -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        sock.bind((0, RTMGRP_IPV4_IFADDR))
        sock.setblocking(False)
        return sock

    return call_in(node.ns, make)


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        pass


def _wanted_on_lo(node: Node) -> int:
    """How many of the 60 VIPs the saved state wants on ``lo``."""
    saved = json.loads(node.state_file.read_text())["instances"].get("VI_1", {}).get("state", "backup") \
        if node.state_file.exists() else "backup"
    return 60 if saved == "master" else 0


def _converged(node: Node) -> bool:
    """The kernel already is what the saved state wants (so a quiet run has nothing to journal)."""
    return on_lo(node) == _wanted_on_lo(node) and node.sysctls() == ARP_SYSCTLS


def test_kill_9_mid_transition_then_the_next_listener_converges(node: Node, tmp_path: Path) -> None:
    node.write_config(sixty_vips())
    fifo = tmp_path / "notify.fifo"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR)
    log = tmp_path / "listen.log"
    rng = random.Random(SEED)
    kills = partial = 0
    events = _address_events(node)
    try:
        proc = _start(node, fifo, log)
        for round_ in range(KILLS):
            state = "MASTER" if round_ % 2 == 0 else "BACKUP"
            node.set_sysctls(ZERO)
            before = len(node.records())
            # aimed: the VIPs are not yet as this event wants (a kill before the last round's state was saved
            # leaves them so), so its transition changes addresses
            aimed = round_ % 4 >= 2 and on_lo(node) != (60 if state == "MASTER" else 0)
            _drain(events)
            os.write(writer, f'INSTANCE "VI_1" {state} 100\n'.encode())
            if aimed:
                ready, _, _ = select.select([events], [], [], 20)
                assert ready, f"round {round_}: the {state} transition changed no address in 20 s"
                time.sleep(rng.uniform(0.0, 0.005))
            else:
                time.sleep(rng.uniform(0.0, 0.03))  # a 60-VIP transition takes ~15-40 ms here when idle
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            partial += 0 < on_lo(node) < 60  # killed half-way through the VIPs
            # every line whole, state.json parses
            for line in node.journal_lines():
                json.loads(line)
            recorded = node.recorded() if node.state_file.exists() else {}  # always parses when it exists
            # the next listener: its start-up reconcile converges to what was saved
            proc = _start(node, fifo, log)
            # Either run journals: the killed one (if it got that far), or the new one's start-up
            # reconcile (when it changes something).  A kill after the last change but before the
            # journal write leaves nothing to change: the quiet start-up run then writes no line.
            deadline = time.monotonic() + 20
            while len(node.records()) <= before and not _converged(node):
                assert time.monotonic() < deadline, ("the listener did not journal or converge in time",
                                                     log.read_text()[-3000:])
                time.sleep(0.02)
            time.sleep(0.05)
            want = _wanted_on_lo(node)
            deadline = time.monotonic() + 10
            while on_lo(node) != want and time.monotonic() < deadline:
                time.sleep(0.02)
            assert on_lo(node) == want, (round_, want, recorded, on_lo(node))
            assert node.sysctls() == ARP_SYSCTLS
            plan = node.run("--no-daemon", "plan", "--detailed-exitcode")
            assert plan.returncode == 0, (round_, plan.stdout, plan.stderr)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
        os.close(writer)
        events.close()
    assert kills == KILLS
    print(f"{kills} kills, {partial} of them half-way through binding or removing the 60 VIPs")
    assert partial > 0, "no kill landed mid-transition: aim better"
