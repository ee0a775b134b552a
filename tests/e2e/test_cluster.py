"""End to end: a real LVS-DR cluster with real keepalived, driven by kanotify (issue 6).

Each test boots ONE user-mode Linux guest (a real kernel with IPVS, see
``tests/uml.py``) running ``cluster.py``, which builds the cluster in network
namespaces, runs the scenarios and checks each from the client, from kernel
state (``ipvsadm-save -n``, ``ip -j addr``, sysctls) and from kanotify's
journal.  Here the host asserts on its JSON result and prints its log, so CI
shows the states, which real server answered and the failover gaps.

Needs root, ``user-mode-linux``, ``keepalived``, ``ipvsadm`` and ``iproute2``
(``scripts/setup`` installs them); a missing one fails loudly, never skips.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from e2e_runner import run_cluster

pytestmark = pytest.mark.e2e

#: a failover must not interrupt traffic for longer than this (measured: 0-0.3 s)
MAX_OUTAGE_S = 3.0


def _require_tools() -> None:
    missing = [tool for tool in ("keepalived", "ipvsadm", "ipvsadm-save", "ip", "linux")
               if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None]
    assert not missing, f"missing {', '.join(missing)}: run scripts/setup (apt-get install keepalived ipvsadm ...)"


def _run(
    topology: str, capsys: pytest.CaptureFixture[str], mode: str = "notify", extra_args: tuple[str, ...] = ()
) -> dict[str, Any]:
    _require_tools()
    result, guest = run_cluster(topology, extra_args=["--mode", mode, *extra_args])
    with capsys.disabled():
        print(f"\n----- e2e {topology} ({mode} mode) {' '.join(extra_args)}: guest {guest.seconds:.0f}s -----\n"
              f"{result['log']}\n")
    failed = [f"[{c['scenario']}] {c['check']}: {c['detail']}" for c in result["checks"] if not c["ok"]]
    assert result["error"] is None, result["error"] + _diagnosis(result)
    assert not failed, "failed checks:\n" + "\n".join(failed) + _diagnosis(result)
    assert result["ok"] and result["checks"], "the driver ran no checks" + _diagnosis(result)
    return result


def _diagnosis(result: dict[str, Any]) -> str:
    parts = []
    for name, node in result.get("nodes", {}).items():
        if node.get("keepalived_log"):
            parts.append(f"--- keepalived {name} (tail) ---\n{node['keepalived_log']}")
    return "\n" + "\n".join(parts)


def _scenarios(result: dict[str, Any]) -> set[str]:
    return {c["scenario"].split(".")[0] for c in result["checks"]}


def test_dedicated_directors(capsys: pytest.CaptureFixture[str]) -> None:
    """Scenarios 1-4 and 6: two directors, two real servers, a client."""
    result = _run("dedicated", capsys)
    assert {"1", "2", "3", "4", "6"} <= _scenarios(result)
    numbers = result["numbers"]
    assert numbers["steady"]["failed"] == 0
    for key in ("failover", "failback", "stop"):
        assert numbers[key]["gap_s"] <= MAX_OUTAGE_S, (key, numbers[key])
    _released_every_way(numbers)


def test_two_node(capsys: pytest.CaptureFixture[str]) -> None:
    """Scenarios 5 and 6: each director is also a real server."""
    result = _run("two-node", capsys)
    assert {"5", "6"} <= _scenarios(result)
    numbers = result["numbers"]
    assert numbers["steady"]["failed"] == 0
    assert set(numbers["steady"]["served"]) == {"node1", "node2"}
    assert numbers["failover"]["gap_s"] <= MAX_OUTAGE_S, numbers["failover"]


def test_dedicated_directors_fifo_mode(capsys: pytest.CaptureFixture[str]) -> None:
    """The same scenarios with keepalived's notify FIFO read by kanotify listen (vrrp_notify_fifo_script)."""
    result = _run("dedicated", capsys, "fifo")
    assert {"1", "2", "3", "4", "6"} <= _scenarios(result)
    numbers = result["numbers"]
    assert numbers["steady"]["failed"] == 0
    for key in ("failover", "failback", "stop"):
        assert numbers[key]["gap_s"] <= MAX_OUTAGE_S, (key, numbers[key])
    _released_every_way(numbers)


def test_two_node_fifo_mode(capsys: pytest.CaptureFixture[str]) -> None:
    result = _run("two-node", capsys, "fifo")
    assert {"5", "6"} <= _scenarios(result)
    assert result["numbers"]["steady"]["failed"] == 0
    assert result["numbers"]["failover"]["gap_s"] <= MAX_OUTAGE_S


def test_dedicated_directors_notify_scripts_handing_over_to_a_listener(capsys: pytest.CaptureFixture[str]) -> None:
    """Ordinary notify scripts, with kanotify listen running beside keepalived: every one-shot hands over."""
    result = _run("dedicated", capsys, "handover")
    assert {"1", "2", "3", "4", "6"} <= _scenarios(result)
    numbers = result["numbers"]
    assert numbers["steady"]["failed"] == 0
    for key in ("failover", "failback", "stop"):
        assert numbers[key]["gap_s"] <= MAX_OUTAGE_S, (key, numbers[key])
    _released_every_way(numbers)


def _released_every_way(numbers: dict[str, Any]) -> None:
    """Issue 19: SIGTERM, SIGKILL of the parent, SIGKILL of every process: the VIP and the service went each time."""
    for how in ("stop", "kill_parent", "kill_all"):
        ended = numbers[how]
        assert ended["vip_removed_exact"] is not None and ended["stop_run_done"] is not None, (how, ended)


#: the sync daemon costs two netlink requests per transition: the take-over must not take longer than
#: without it, beyond the guest's own jitter (measured: see docs/e2e.md)
FAILOVER_JITTER_S = 3.0


def test_sync_daemon_keeps_connections(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 13: ONE TCP connection through the VIP survives a failover and the fail-back -- because of the daemon.

    The same cluster (examples/kanotify-director-sync.toml on both directors) runs
    twice, each in its own guest: with ``[sync_daemon]`` no exchange fails and the
    connection is never reset; without it (the table left out) it is reset at each
    switch, so the daemon is what saves it.
    """
    with_sync = _run("sync", capsys)
    held = with_sync["numbers"]["hold"]
    assert held["sync_daemon"] and held["failed"] == 0 and held["resets"] == 0 and held["connections"] == 1, held
    assert held["windows"]["failover"]["exchanges"] > 50 and held["windows"]["failback"]["exchanges"] > 30, held

    without = _run("sync", capsys, extra_args=("--without-sync-daemon",))
    reset = without["numbers"]["hold"]
    assert not reset["sync_daemon"] and reset["windows"]["failover"]["resets"] >= 1, reset
    assert reset["windows"]["failback"]["resets"] >= 1, reset

    for key in ("failover", "failback"):
        took, baseline = with_sync["numbers"][key]["converged_s"], without["numbers"][key]["converged_s"]
        runs = held["takeover_run_ms"][key], reset["takeover_run_ms"][key]
        with capsys.disabled():
            print(f"{key}: converged {took}s with the sync daemon, {baseline}s without "
                  f"(the new master's kanotify run: {runs[0]:.0f} ms with, {runs[1]:.0f} ms without)")
        assert took is not None and baseline is not None and took <= baseline + FAILOVER_JITTER_S, (key, took, baseline)
        assert with_sync["numbers"][key]["gap_s"] <= MAX_OUTAGE_S, with_sync["numbers"][key]
