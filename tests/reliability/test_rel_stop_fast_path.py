"""The STOP fast path: keepalived SIGKILLs a STOP script's whole process group after 1 s.

On a slow host Python may not even have finished importing by then, and a
director that keeps its VIP after keepalived stopped puts a duplicate VIP on
the LAN.  ``kanotify stop`` forks a worker into a new session before any heavy
import; that worker must finish the job after the group is killed.

Here the group is killed 100 ms after the start -- ten times less than
keepalived grants -- and the test measures how long after the kill the
worker has removed the VIP and written its journal line.  A host fast enough
to finish the whole stop within 100 ms is tried again with half the delay,
and one that killed before the fork with half as much again, so the kill lands while the worker
is at it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from rel_support import Node, process_gone, processes_mentioning

pytestmark = pytest.mark.root

KILL_AFTER = 0.100
ATTEMPTS = 8  # the kill must land after the fork (a loaded machine) and before the end (a fast one)


def vip_bound(node: Node) -> bool:
    return any(a[1] == "192.0.2.100" for a in node.addresses())


def stop_records(node: Node) -> list[dict]:
    return [r for r in node.records() if r.get("command") == "stop"]


def test_stop_survives_keepalived_killing_its_process_group_after_100ms(node: Node) -> None:
    report = []
    delay = KILL_AFTER
    for attempt in range(ATTEMPTS):
        assert node.run("master", "VI_1").returncode == 0
        assert vip_bound(node)
        seen = len(stop_records(node))
        out = open(node.tmp / f"stop{attempt}.out", "wb")
        err = open(node.tmp / f"stop{attempt}.err", "wb")
        started = time.monotonic()
        proc = node.popen("stop", "VI_1", stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                          start_new_session=True)  # its own process group, as keepalived does
        out.close()
        err.close()
        time.sleep(max(0.0, started + delay - time.monotonic()))
        if proc.poll() is not None:  # done before the kill (poll reaped it: its group is gone)
            assert proc.returncode == 0, (node.tmp / f"stop{attempt}.err").read_text()
            report.append(f"finished before the kill at {delay * 1000:.0f} ms")
            delay /= 2
            continue
        os.killpg(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        workers = processes_mentioning(str(node.config), exclude=[proc.pid])

        # wait (bounded by count and a generous time) for the detached worker to finish
        done_at = None
        for _ in range(3000):
            if len(stop_records(node)) > seen and not vip_bound(node):
                done_at = time.monotonic()
                break
            if not workers and time.monotonic() - killed > 2:
                break  # killed before the fork: nobody is left to do the work
            if time.monotonic() - killed > 60:
                break
            time.sleep(0.01)
        for pid in workers:
            for _ in range(1000):
                if process_gone(pid):
                    break
                time.sleep(0.01)
            assert process_gone(pid), f"worker {pid} still running"

        stderr = (node.tmp / f"stop{attempt}.err").read_text()
        assert "Traceback" not in stderr
        if done_at is None:
            assert not workers, f"the detached worker {workers} did not finish the stop: {stderr}"
            report.append(f"killed before the fork at {delay * 1000:.0f} ms")
            delay *= 1.5  # between "too early" and "too late"
            continue
        record = stop_records(node)[-1]
        assert record["outcome"] == "converged" and record["to"] == "stop"
        assert record["pid"] != proc.pid, "the work was done by the detached worker"
        assert not vip_bound(node)
        assert node.recorded()["instances"]["VI_1"]["state"] == "stop"
        ticket = node.recorded()["instances"]["VI_1"]["ticket"]
        assert ticket[2] == proc.pid, "the worker keeps the notification's place in keepalived's order"
        report.append(f"done {1000 * (done_at - killed):.0f} ms after the kill")
        break
    print(f"\nSTOP fast path, process group SIGKILLed {delay * 1000:.0f} ms after the start: {report}")
    assert report and report[-1].startswith("done"), report
