"""Ordering: a flap storm of 200 notifications, each its own process, started as fast as possible.

keepalived starts notify scripts fire-and-forget, concurrently and unordered
(domain.md).  Whatever order the 200 processes get the lock in, the host must
end up in the state of the notification that was *started* last, and every run
must leave exactly one whole journal line.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from rel_support import ARP_SYSCTLS, Node

pytestmark = pytest.mark.root

RUNS = 200

MASTER_VIP = ("eth0", "192.0.2.100", 24, "eth0:0")
BACKUP_VIP = ("lo", "192.0.2.100", 32, "lo:0")


def test_flap_storm_ends_in_the_state_of_the_last_notification_started(node: Node, tmp_path: Path) -> None:
    node.lock_timeout = 120  # 200 runs queue on the lock; none may give up
    node.write_config(node.instances)
    outdir = tmp_path / "out"
    outdir.mkdir()
    before = node.addresses()

    started = time.monotonic()
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        for i in range(RUNS):
            state = "master" if i % 2 == 0 else "backup"
            with open(outdir / f"{i}.out", "wb") as out, open(outdir / f"{i}.err", "wb") as err:
                procs.append((state, node.popen(state, stdin=subprocess.DEVNULL, stdout=out, stderr=err)))
        spawn_s = time.monotonic() - started
        codes = [proc.wait(timeout=600) for _, proc in procs]
    finally:
        for _, proc in procs:  # only on failure: never leave our own processes behind
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    total_s = time.monotonic() - started

    # ---- every process: exit 0, no traceback anywhere
    stderr = [(outdir / f"{i}.err").read_text() for i in range(RUNS)]
    stdout = [(outdir / f"{i}.out").read_text() for i in range(RUNS)]
    assert codes == [0] * RUNS, [(i, c, stderr[i]) for i, c in enumerate(codes) if c != 0][:5]
    assert not [i for i in range(RUNS) if "Traceback" in stderr[i] + stdout[i]]

    # ---- the journal: exactly one whole final record per run, only converged/superseded
    records = node.records()
    assert len(records) == RUNS
    outcomes = Counter(r["outcome"] for r in records)
    assert set(outcomes) <= {"converged", "superseded"}, outcomes
    index = {proc.pid: i for i, (_, proc) in enumerate(procs)}
    assert sorted(index[r["pid"]] for r in records) == list(range(RUNS)), "one line per process"
    assert all(not r["dry_run"] and r["trigger"][-1] == procs[index[r["pid"]]][0] for r in records)
    # a run that changed something wrote a started record first, and (holding the lock) nothing came in between
    lines = node.all_records()
    for position, record in enumerate(lines):
        if record["record"] == "started":
            assert lines[position + 1]["run"] == record["run"] and lines[position + 1]["record"] == "final"
        elif any(a["status"] != "noop" for a in record["actions"]):
            assert lines[position - 1]["run"] == record["run"], f"journal line {position}: no started record"
        else:
            assert position == 0 or lines[position - 1]["run"] != record["run"]

    # ---- ordering, proven from the journal: in the order the lock was taken, a run
    # converges only if it was started after every run applied before it, and is
    # superseded exactly when a run started later had already been applied.
    newest_applied = -1
    out_of_order = 0
    for position, record in enumerate(records):
        i = index[record["pid"]]
        if record["outcome"] == "converged":
            assert i > newest_applied, f"run {i} converged after run {newest_applied} (journal line {position})"
            newest_applied = i
        else:
            assert i < newest_applied, f"run {i} superseded although nothing newer was applied"
            assert record["actions"] == [] and "newer notification" in record["note"]
        if position and index[records[position - 1]["pid"]] > i:
            out_of_order += 1
    assert newest_applied == RUNS - 1

    # ---- the state recorded and the kernel are those of the last run started (backup)
    last_state, last_proc = procs[-1]
    assert last_state == "backup"
    recorded = node.recorded()["instances"]["VI_1"]
    assert recorded["state"] == "backup" and recorded["ticket"][2] == last_proc.pid
    after = node.addresses()
    assert BACKUP_VIP in after
    assert not any(a[1] == "192.0.2.100" and a[0] == "eth0" for a in after)
    assert after - {BACKUP_VIP} == before, "nothing but the VIP may differ from the start"
    assert node.sysctls() == ARP_SYSCTLS

    # ---- and it is converged: a reconcile has nothing to do, the kernel stays as it is
    snapshot = node.addr()
    code, out, err = node.cli("plan", "--detailed-exitcode")
    assert code == 0, out + err
    assert node.addr() == snapshot

    print(
        f"\nflap storm: {RUNS} processes spawned in {spawn_s:.1f}s, all done after {total_s:.1f}s; "
        f"{outcomes['converged']} converged, {outcomes['superseded']} superseded; "
        f"{out_of_order} took the lock before an older run"
    )


def test_a_run_that_cannot_get_the_lock_in_time_gives_up_cleanly(node: Node) -> None:
    """``lock_timeout`` bounds the wait: exit 1, journaled as failed, nothing applied."""
    import fcntl
    import os

    node.lock_timeout = 1
    node.write_config(node.instances)
    assert node.run("backup", "VI_1").returncode == 0
    before = node.addresses(), node.state_file.read_bytes()
    fd = os.open(node.state_dir / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another run holds the lock
        result = node.run("master", "VI_1")
    finally:
        os.close(fd)
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert "lock_timeout" in result.stdout + result.stderr
    assert (node.addresses(), node.state_file.read_bytes()) == before
    record = node.records()[-1]
    assert record["outcome"] == "failed" and record["actions"] == [] and "lock_timeout" in record["note"]
    assert node.run("master", "VI_1").returncode == 0  # once the lock is free again
    assert MASTER_VIP in node.addresses()
