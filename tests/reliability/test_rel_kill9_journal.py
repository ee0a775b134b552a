"""No unjournaled change: ``kill -9`` at 30 seeded random points while a run changes the kernel.

Each round runs the real ``kanotify master`` (binding 300 VIPs on ``lo`` and
setting four ARP sysctls, reset to 0 before every round) or ``kanotify backup``
(removing them), and SIGKILLs it right after the kernel reported the k-th of
its address changes (an rtnetlink socket in the namespace counts them as they
happen: no sleeps, k seeded and random).  After every kill:

* every journal line is a whole JSON object;
* the kernel differs from before the run (it changed something), and the journal
  has a record of that run (its ``started`` record, or its final one when the
  kill came after it);
* ``history --json`` shows a killed run without its final record as
  ``interrupted``, and ``metrics`` counts it;
* ``reconcile`` converges and a second one changes nothing (``plan
  --detailed-exitcode`` exits 0); the killed run stays ``interrupted``.

Before the journal had started records, a kill anywhere in the apply left a
changed kernel and no journal line at all.
"""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
from collections import Counter
from typing import Any

import pytest

from rel_support import ARP_SYSCTLS, KANOTIFY, Node, run_in_netns

pytestmark = pytest.mark.root

KILLS = 30
SEED = 19
#: 300 VIPs on lo, from two documentation ranges
ADDRESSES = [f"198.51.100.{k}" for k in range(1, 201)] + [f"203.0.113.{k}" for k in range(1, 101)]
ZERO = {key: 0 for key in ARP_SYSCTLS}


def vips_config() -> str:
    lines = ['\n[[instance]]\nname = "VI_1"\n']
    for k, address in enumerate(ADDRESSES):
        lines.append(f'  [[instance.vip]]\n  address = "{address}/32"\n  dev = "lo"\n'
                     f'  label = "lo:{k}"\n  states = ["master"]\n')
    return "".join(lines)


def on_lo(node: Node) -> frozenset[str]:
    """Which of the 300 VIPs are bound on lo."""
    wanted = set(ADDRESSES)
    return frozenset(a for dev, a, prefix, _label in node.addresses() if dev == "lo" and prefix == 32 and a in wanted)


def _run_and_kill(argv: list[str], kill_after: int, removing: bool) -> tuple[int, int, int, str]:
    """In the namespace: start ``argv``, SIGKILL it once the kernel has reported ``kill_after`` address
    changes on lo (additions, or removals with ``removing``).  (pid, returncode, changes seen, stderr)."""
    from kanotify.backends.netlink import framing as nl
    from kanotify.backends.netlink import rtaddr

    wanted_type = rtaddr.RTM_DELADDR if removing else rtaddr.RTM_NEWADDR
    lo = socket.if_nametoindex("lo")
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nl.NETLINK_ROUTE)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((0, rtaddr.RTMGRP_IPV4_IFADDR))
    sock.settimeout(0.2)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = 0
    try:
        while seen < kill_after and proc.poll() is None:
            try:
                data = sock.recv(1 << 20)
            except socket.timeout:
                continue
            for msg in nl.iter_messages(data):
                if msg.type == wanted_type:
                    found = rtaddr.decode(msg.payload)
                    if found is not None and found.index == lo and found.interface.network.prefixlen == 32:
                        seen += 1
        proc.send_signal(signal.SIGKILL)  # nothing when it has already exited (it is our child: not reaped yet)
        _, err = proc.communicate(timeout=120)
    finally:
        sock.close()
        if proc.poll() is None:
            proc.kill()
    return proc.pid, proc.returncode, seen, err.decode(errors="replace")


def _history(node: Node) -> list[dict[str, Any]]:
    code, out, err = node.cli("--json", "history", "-n", "1000")
    assert code == 0, err
    return list(json.loads(out))


def test_every_run_killed_while_changing_the_kernel_is_in_the_journal(node: Node) -> None:
    node.write_config(vips_config())
    assert node.run("backup").returncode == 0
    rng = random.Random(SEED)
    kinds: Counter[str] = Counter()
    killed_runs: list[str] = []
    for n in range(KILLS):
        state = "master" if n % 2 == 0 else "backup"
        node.set_sysctls(ZERO)
        before = on_lo(node), node.sysctls()
        assert len(before[0]) == (0 if state == "master" else len(ADDRESSES))
        kill_after = rng.randint(1, len(ADDRESSES))
        pid, code, seen, err = run_in_netns(
            node.ns, _run_and_kill, [KANOTIFY, "--config", str(node.config), state], kill_after, state == "backup",
            timeout=300)
        assert "Traceback" not in err, err

        # ---- the kill left whole lines, and a record of every run that changed the kernel
        lines = node.all_records()
        after = on_lo(node), node.sysctls()
        assert after != before and seen >= 1, f"kill {n}: the run changed nothing before the kill ({seen} seen)"
        mine = [r for r in lines if r.get("pid") == pid]
        assert mine, f"kill {n}: {state} changed the kernel ({len(after[0] ^ before[0])} VIPs) and left no record"
        assert mine[0]["record"] == "started" and mine[0]["to"] == state
        run_id = mine[0]["run"]
        finished = any(r["record"] == "final" for r in mine)
        if code != -signal.SIGKILL:
            kinds["finished before the kill"] += 1
            assert code == 0 and finished, (code, err)
        elif finished:
            kinds["killed after its final record"] += 1
        else:
            kinds["killed between its started and final records"] += 1
            killed_runs.append(run_id)
            [shown] = [r for r in _history(node) if r.get("run") == run_id]
            assert shown["outcome"] == "interrupted" and shown["to"] == state, shown
            assert len({a["action"] for a in shown["actions"] if a["status"] == "pending"}) >= seen

        # ---- the next reconcile finishes the job, a second one has nothing left to do
        fix = node.run("reconcile")
        assert fix.returncode == 0 and "Traceback" not in fix.stderr, f"kill {n}: {fix.stdout}{fix.stderr}"
        assert on_lo(node) == (frozenset(ADDRESSES) if state == "master" else frozenset())
        assert node.sysctls() == ARP_SYSCTLS
        code_plan, out, err_text = node.cli("plan", "--detailed-exitcode")
        assert code_plan == 0, f"kill {n}: plan still has changes after reconcile:\n{out}{err_text}"

    # ---- in the end: history shows every killed run interrupted, metrics count them, nothing is "running"
    history = _history(node)
    outcomes = {r.get("run"): r["outcome"] for r in history}
    assert [outcomes[run] for run in killed_runs] == ["interrupted"] * len(killed_runs)
    assert "running" not in outcomes.values()
    assert sum(o == "interrupted" for o in outcomes.values()) == len(killed_runs)
    done = node.run("metrics")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    # the text format sorts a series' labels: outcome before vrrp_instance
    assert f'kanotify_transitions_total{{outcome="interrupted",vrrp_instance="VI_1"}} {float(len(killed_runs))}' in text
    assert f"kanotify_interrupted_runs_total {float(len(killed_runs))}" in text
    assert killed_runs, "no kill landed between a run's started and final records"
    print(f"\nkill -9 while changing the kernel, {KILLS} kills (300 VIPs): {dict(kinds)}")
