"""keepalived's death noticed through its pidfile and a pidfd: real processes, no root.

The stand-in keepalived is ``sleep`` started through a symlink named
``keepalived`` (its ``comm`` is then ``keepalived``, as the real one's); a
plain ``sleep`` is "another process that got keepalived's old pid".
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from kanotify.daemon.keepalived_watch import (
    Gone, KeepalivedWatch, Reading, is_keepalived, parse_pid, process_name, read_pidfile,
)

#: the tests' pidfile check interval (the listener's is 1 s)
TICK = 0.05


@pytest.mark.parametrize("data, expected", [
    (b"1234\n", 1234),
    (b"  42 \n", 42),
    (b"1", 1),
    (b"", "expected a process id, got an empty file"),
    (b"\n", "expected a process id, got an empty file"),
    (b"junk\n", "expected a process id, got 'junk'"),
    (b"12 34\n", "expected a process id, got '12 34'"),
    (b"-5\n", "expected a process id, got '-5'"),
    (b"0\n", "expected a process id 1..4194304, got 0"),
    (b"99999999\n", "expected a process id 1..4194304, got 99999999"),
    (b"12345678901\n", "expected a process id, got '12345678901'"),
    (b"\xff\xfe\n", "expected a process id, got '\ufffd\ufffd'"),
    (b"\xd9\xa3\n", "expected a process id, got '\ufffd\ufffd'"),  # not ASCII digits (Arabic-Indic three)
    (b"7" * 65, "expected a process id, got 65 bytes"),
])
def test_parse_pid(data: bytes, expected: int | str) -> None:
    assert parse_pid(data) == expected


def test_read_pidfile_absent_junk_and_unsafe(tmp_path: Path) -> None:
    path = tmp_path / "keepalived.pid"
    assert read_pidfile(str(path)) == Reading()  # no keepalived: nothing known, nothing wrong
    path.write_text("4321\n")
    path.chmod(0o644)
    assert read_pidfile(str(path)) == Reading(pid=4321)
    path.chmod(0o666)
    problem = read_pidfile(str(path)).problem
    assert problem is not None and "not writable by group or others" in problem
    path.chmod(0o644)
    path.write_text("garbage")
    assert read_pidfile(str(path)) == Reading(problem="expected a process id, got 'garbage'")
    link = tmp_path / "link.pid"
    link.symlink_to(path)
    problem = read_pidfile(str(link)).problem
    assert problem is not None and problem.startswith("cannot open it")
    assert read_pidfile(str(tmp_path)).problem == "not a regular file"


def test_is_keepalived_by_comm_or_executable() -> None:
    assert is_keepalived("keepalived", "/usr/sbin/keepalived")
    assert is_keepalived("kl_parent", "/usr/sbin/keepalived")  # keepalived's process_name renames comm only
    assert is_keepalived("keepalived", "/usr/bin/sleep")
    assert not is_keepalived("sleep", "/usr/bin/sleep")
    assert not is_keepalived("bash", "")


# --------------------------------------------------------------------------- the watcher, with real processes


class Stage:
    """A loop, a pidfile, stand-in processes (killed at the end), and a watcher on them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.pidfile = tmp / "run" / "keepalived.pid"
        self.pidfile.parent.mkdir()
        self.fake = tmp / "bin" / "keepalived"
        self.fake.parent.mkdir()
        sleep = shutil.which("sleep")
        assert sleep is not None
        self.fake.symlink_to(sleep)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.loop = asyncio.new_event_loop()
        self.gone: list[Gone] = []
        self.said: list[str] = []
        self.watch = KeepalivedWatch(self.loop, str(self.pidfile), on_gone=self.gone.append,
                                     say=self.said.append, interval=TICK)

    def keepalived(self, *, write: bool = True) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([str(self.fake), "600"])
        self.procs.append(proc)
        wait_for(lambda: _comm(proc.pid) == "keepalived")  # exec'd: no longer a copy of pytest
        if write:
            self.write(f"{proc.pid}\n")
        return proc

    def other(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["sleep", "600"])
        self.procs.append(proc)
        wait_for(lambda: _comm(proc.pid) == "sleep")
        return proc

    def write(self, text: str) -> None:
        tmp = self.pidfile.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(0o644)
        os.replace(tmp, self.pidfile)

    def run_until(self, predicate: Callable[[], object], timeout: float = 5.0) -> float:
        """Run the loop until ``predicate`` holds; the seconds it took."""
        started = time.monotonic()

        async def wait() -> None:
            while not predicate():
                if time.monotonic() - started > timeout:
                    raise AssertionError("condition not met in time")
                await asyncio.sleep(0.005)

        self.loop.run_until_complete(wait())
        return time.monotonic() - started

    def spin(self, seconds: float) -> None:
        """Let the loop run for a while (for "nothing happens" checks)."""
        self.loop.run_until_complete(asyncio.sleep(seconds))

    def close(self) -> None:
        self.watch.close()
        self.loop.close()
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def _comm(pid: int) -> str | None:
    name = process_name(pid)
    return name[0] if name else None


def wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


@pytest.fixture
def stage(tmp_path: Path) -> Iterator[Stage]:
    s = Stage(tmp_path)
    try:
        yield s
    finally:
        s.close()


def test_started_without_keepalived_it_waits_then_watches_and_reports_a_kill_once(stage: Stage) -> None:
    stage.watch.start()
    stage.spin(3 * TICK)
    assert stage.watch.pid is None and stage.gone == [] and stage.said == []  # nothing to say: no keepalived yet
    proc = stage.keepalived()
    stage.run_until(lambda: stage.watch.pid == proc.pid)
    proc.send_signal(signal.SIGKILL)
    took = stage.run_until(lambda: stage.gone)
    assert stage.gone == [Gone(proc.pid, f"keepalived (pid {proc.pid}) exited")]
    assert took < 0.5, took  # the pidfd, not the pidfile tick
    stage.spin(5 * TICK)
    assert len(stage.gone) == 1  # the pidfile still names it: not reported again
    assert stage.watch.gone_now() is None  # nor on SIGTERM
    assert any("names pid" in s and "not running" in s for s in stage.said)


def test_a_restarted_keepalived_with_a_new_pid_is_watched(stage: Stage) -> None:
    first = stage.keepalived()
    stage.watch.start()
    assert stage.watch.pid == first.pid
    first.send_signal(signal.SIGKILL)
    stage.run_until(lambda: stage.gone)
    second = stage.keepalived()
    stage.run_until(lambda: stage.watch.pid == second.pid)
    second.send_signal(signal.SIGKILL)
    stage.run_until(lambda: len(stage.gone) == 2)
    assert [g.pid for g in stage.gone] == [first.pid, second.pid]


def test_reload_is_not_gone(stage: Stage) -> None:
    """keepalived reloads with the same pid and signals its fifo script: alive, so not gone."""
    proc = stage.keepalived()
    stage.watch.start()
    assert stage.watch.gone_now() is None
    stage.spin(3 * TICK)
    assert stage.gone == [] and stage.watch.pid == proc.pid


def test_sigterm_while_the_watched_keepalived_just_died_is_gone_at_once(stage: Stage) -> None:
    proc = stage.keepalived()
    stage.watch.start()
    proc.send_signal(signal.SIGKILL)
    proc.wait()  # dead (and reaped), but the loop has not run its pidfd callback yet
    gone = stage.watch.gone_now()
    assert gone == Gone(proc.pid, f"keepalived (pid {proc.pid}) exited") and stage.gone == [gone]
    stage.spin(3 * TICK)
    assert stage.gone == [gone]  # the pidfd callback does not report it twice


def test_a_zombie_keepalived_is_gone(stage: Stage) -> None:
    proc = stage.keepalived()
    stage.watch.start()
    proc.send_signal(signal.SIGKILL)
    stage.run_until(lambda: stage.gone)  # not reaped yet: still a zombie in /proc
    assert stage.gone[0].pid == proc.pid


def test_a_stale_pidfile_at_start_is_not_acted_on_but_sigterm_sees_keepalived_gone(stage: Stage) -> None:
    proc = stage.keepalived()
    proc.kill()
    proc.wait()
    stage.watch.start()
    stage.spin(5 * TICK)
    assert stage.gone == [] and stage.watch.pid is None
    assert len([s for s in stage.said if "not running" in s]) == 1  # said once, not every tick
    gone = stage.watch.gone_now()  # FIFO mode: keepalived started us, and its pid is dead
    assert gone is not None and gone.pid == proc.pid and "which is not running" in gone.why
    assert stage.gone == [gone]


def test_a_reused_pid_is_not_keepalived_and_does_not_blind_the_watch(stage: Stage) -> None:
    other = stage.other()
    stage.write(f"{other.pid}\n")  # keepalived's old pidfile; its pid now belongs to `sleep`
    stage.watch.start()
    stage.spin(3 * TICK)
    assert stage.watch.pid is None and stage.gone == []
    assert any("'sleep'" in s and "not keepalived" in s for s in stage.said)
    gone = stage.watch.gone_now()
    assert gone is not None and gone.pid == other.pid and "which is now 'sleep'" in gone.why
    proc = stage.keepalived()  # keepalived starts again
    stage.run_until(lambda: stage.watch.pid == proc.pid)
    proc.send_signal(signal.SIGKILL)
    stage.run_until(lambda: len(stage.gone) == 2)
    assert stage.gone[1].pid == proc.pid
    assert other.poll() is None  # the other process was never watched as keepalived


@pytest.mark.parametrize("content", ["junk\n", "", "0\n", "1234 5678\n"])
def test_a_bad_pidfile_is_said_once_and_nothing_happens(stage: Stage, content: str) -> None:
    stage.write(content)
    stage.watch.start()
    stage.spin(5 * TICK)
    bad = [s for s in stage.said if "expected a process id" in s]
    assert len(bad) == 1, stage.said
    assert str(stage.pidfile) in bad[0] and "not watched" in bad[0]
    assert stage.gone == [] and stage.watch.pid is None
    assert stage.watch.gone_now() is None  # junk tells nothing: a SIGTERM is a reload
    proc = stage.keepalived()  # fixed: watched
    stage.run_until(lambda: stage.watch.pid == proc.pid)


def test_junk_written_over_a_watched_keepalived_keeps_watching_it(stage: Stage) -> None:
    proc = stage.keepalived()
    stage.watch.start()
    stage.write("junk\n")
    stage.run_until(lambda: any("expected a process id" in s for s in stage.said))
    assert stage.watch.pid == proc.pid
    proc.send_signal(signal.SIGKILL)
    stage.run_until(lambda: stage.gone)


def test_a_removed_pidfile_keeps_the_watch(stage: Stage) -> None:
    """keepalived removes its pidfile as it exits cleanly; the pidfd still tells when it is gone."""
    proc = stage.keepalived()
    stage.watch.start()
    stage.pidfile.unlink()
    stage.spin(3 * TICK)
    assert stage.watch.pid == proc.pid
    proc.send_signal(signal.SIGTERM)
    stage.run_until(lambda: stage.gone)
    assert stage.watch.gone_now() is None  # no pidfile: nothing more to say


def test_another_pidfile_after_a_reload(stage: Stage, tmp_path: Path) -> None:
    proc = stage.keepalived()
    stage.watch.start()
    elsewhere = tmp_path / "other.pid"
    stage.watch.set_path(str(elsewhere))
    assert stage.watch.pid is None  # that keepalived is not the one configured any more
    elsewhere.write_text(f"{proc.pid}\n")
    stage.run_until(lambda: stage.watch.pid == proc.pid)
