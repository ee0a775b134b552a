"""bin/kanotify, the shell launcher keepalived's notify lines run.

A STOP must leave keepalived's process group before the interpreter starts
(on a loaded host the interpreter alone outlives keepalived's one-second
grace).  Here a stand-in ``python3`` beside a copy of the launcher records the
session, process group and environment it was started with, so the tests see
exactly what the real interpreter would, without starting one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

LAUNCHER = Path(__file__).resolve().parents[2] / "bin" / "kanotify"

FAKE_PYTHON = """#!/bin/sh
# what the interpreter would see: its pid, session, group, parent's group, the environment
out=$KANOTIFY_TEST_OUT
argc=$#
{
  printf '{"pid": %s, ' "$$"
  read -r stat < /proc/$$/stat
  set -- ${stat##*) }
  printf '"ppid": %s, "pgid": %s, "sid": %s, ' "$2" "$3" "$4"
  printf '"launched": "%s", "ticket": "%s", ' "${KANOTIFY_LAUNCHED-}" "${KANOTIFY_TICKET-}"
  printf '"argc": %s}\\n' "$argc"
} > "$out.tmp"
mv "$out.tmp" "$out"
[ -n "${KANOTIFY_TEST_SLEEP-}" ] && sleep "$KANOTIFY_TEST_SLEEP"
exit "${KANOTIFY_TEST_EXIT:-0}"
"""


@pytest.fixture
def launcher(tmp_path: Path) -> Path:
    bindir = tmp_path / "venv" / "bin"
    bindir.mkdir(parents=True)
    shutil.copy(LAUNCHER, bindir / "kanotify")
    fake = bindir / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    return bindir / "kanotify"


def _run(launcher: Path, *args: str, wait: bool = True, **env: str) -> tuple[subprocess.Popen[bytes], Path]:
    out = launcher.parent.parent / f"seen-{time.monotonic_ns()}.json"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KANOTIFY_")}
    environ.update(KANOTIFY_TEST_OUT=str(out), **env)
    # keepalived starts each notify script as the leader of its own process group
    proc = subprocess.Popen([str(launcher), *args], env=environ, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    if wait:
        proc.wait(timeout=30)
    return proc, out


def _seen(out: Path) -> dict[str, object]:
    for _ in range(3000):
        if out.exists():
            return json.loads(out.read_text())  # type: ignore[no-any-return]
        time.sleep(0.01)
    raise AssertionError(f"the stand-in interpreter never ran ({out})")


@pytest.mark.parametrize("argv", [
    ["--config", "/etc/kanotify/kanotify.toml", "stop", "VI_1"],
    ["stop"],
    ["notify", "INSTANCE", "VI_1", "STOP", "0"],
    ["notify", "GROUP", "VG_1", "DELETED", "0"],
    ["-v", "Stop", "VI_1"],
])
def test_a_stop_leaves_the_process_group_before_the_interpreter_starts(launcher: Path, argv: list[str]) -> None:
    proc, out = _run(launcher, *argv)
    seen = _seen(out)
    assert proc.returncode == 0
    assert seen["sid"] == seen["pid"] and seen["pgid"] == seen["pid"], seen  # a new session of its own
    assert seen["pgid"] != proc.pid, "still in keepalived's process group"
    assert seen["launched"] == "detached"
    ticks, pid = str(seen["ticket"]).split()
    assert int(pid) == proc.pid, "the ticket is the notification's own process, not the worker's"
    assert int(ticks) > 0


@pytest.mark.parametrize("argv", [["master", "VI_1"], ["notify", "INSTANCE", "VI_1", "MASTER", "100"],
                                  ["--config", "stop.toml", "status"], ["listen", "stop"]])
def test_anything_else_runs_in_the_same_process(launcher: Path, argv: list[str]) -> None:
    proc, out = _run(launcher, *argv)
    seen = _seen(out)
    assert seen["pid"] == proc.pid and seen["pgid"] == proc.pid  # exec'd: no fork, no new session
    assert seen["launched"] == "" and seen["ticket"] == ""


def test_the_exit_code_and_arguments_are_passed_on(launcher: Path) -> None:
    proc, out = _run(launcher, "stop", "VI_1", KANOTIFY_TEST_EXIT="78")
    assert proc.returncode == 78
    assert _seen(out)["argc"] == 6  # -P -c CODE $0 stop VI_1
    proc, out = _run(launcher, "master", "VI_1", KANOTIFY_TEST_EXIT="1")
    assert proc.returncode == 1


def test_a_killed_process_group_does_not_end_the_stop(launcher: Path) -> None:
    """keepalived signals the group a second after the start: the worker carries on."""
    proc, out = _run(launcher, "stop", "VI_1", wait=False, KANOTIFY_TEST_SLEEP="0.5", KANOTIFY_TEST_EXIT="0")
    seen = _seen(out)  # the interpreter started, detached
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    worker = int(str(seen["pid"]))
    assert Path(f"/proc/{worker}").exists(), "the worker died with keepalived's process group"
    for _ in range(3000):
        if not Path(f"/proc/{worker}").exists():
            break
        time.sleep(0.01)


def test_no_detach_for_tests(launcher: Path) -> None:
    proc, out = _run(launcher, "stop", "VI_1", KANOTIFY_NO_DETACH="1")
    assert _seen(out)["pid"] == proc.pid


def test_a_symlink_finds_the_python_beside_the_real_file(launcher: Path, tmp_path: Path) -> None:
    link = tmp_path / "usr-local-bin-kanotify"
    link.symlink_to(launcher)
    proc, out = _run(link, "master", "VI_1")
    assert proc.returncode == 0 and _seen(out)["pid"] == proc.pid


def test_the_installed_command_is_the_launcher() -> None:
    """pip installs bin/kanotify itself as the ``kanotify`` command (pyproject's script-files)."""
    import sys

    installed = Path(sys.executable).parent / "kanotify"
    assert installed.read_bytes() == LAUNCHER.read_bytes(), f"{installed} is not bin/kanotify: pip install -e . again"
