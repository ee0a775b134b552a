"""The control socket's client: when it hands over, when it falls back, and what it tells the journal."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from kanotify.daemon import control


def _config(tmp_path: Path, lock_timeout: float = 0.3) -> Path:
    (tmp_path / "state").mkdir(mode=0o700)
    path = tmp_path / "k.toml"
    path.write_text(f'[settings]\nstate_dir = "{tmp_path}/state"\nlock_timeout = {lock_timeout}\n')
    return path


def _serve(path: str, reply: bytes | None, delay: float = 0.0) -> threading.Thread:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def run() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        time.sleep(delay)
        if reply is not None:
            conn.sendall(reply)
        time.sleep(0.5)
        conn.close()
        server.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_no_listener_means_run_here(tmp_path: Path) -> None:
    answer = control.hand_over(["master"], str(_config(tmp_path)), ("b", 1, 1))
    assert answer.code is None and answer.fallback == "no listener" and answer.note == ""


def test_a_stale_socket_means_run_here(tmp_path: Path) -> None:
    config = _config(tmp_path)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(control.socket_path(str(tmp_path / "state")))
    stale.close()  # bound, nobody listening: ECONNREFUSED
    assert control.hand_over(["master"], str(config), ("b", 1, 1)).fallback == "no listener"


def test_an_answer_is_passed_on(tmp_path: Path) -> None:
    config = _config(tmp_path)
    _serve(control.socket_path(str(tmp_path / "state")), b'{"code": 1, "stdout": "out\\n", "stderr": "err\\n"}\n')
    answer = control.hand_over(["master"], str(config), ("b", 1, 1))
    assert (answer.code, answer.stdout, answer.stderr) == (1, "out\n", "err\n")


def test_a_listener_that_does_not_answer_in_lock_timeout_is_given_up_with_a_note(tmp_path: Path) -> None:
    config = _config(tmp_path, lock_timeout=0.3)
    _serve(control.socket_path(str(tmp_path / "state")), None)
    started = time.monotonic()
    answer = control.hand_over(["master"], str(config), ("b", 1, 1))
    assert 0.25 <= time.monotonic() - started < 1.0
    assert answer.code is None and answer.fallback == "no answer"
    assert "did not answer within 0.3s (lock_timeout)" in answer.note and "applied in-process" in answer.note


@pytest.mark.parametrize("reply, fallback", [
    (b"garbage\n", "bad answer"),
    (b'{"refused": "the listener is stopping"}\n', "the listener is stopping"),
    (b'{"error": "x"}\n', "bad answer"),
])
def test_odd_answers_mean_run_here(tmp_path: Path, reply: bytes, fallback: str) -> None:
    config = _config(tmp_path)
    _serve(control.socket_path(str(tmp_path / "state")), reply)
    assert control.hand_over(["master"], str(config), ("b", 1, 1)).fallback == fallback


def test_only_the_one_shot_forms_go_to_the_listener() -> None:
    assert control.wants_listener(["master"], ["master"], False, False)
    assert control.wants_listener(["notify", "INSTANCE", "VI_1", "MASTER", "1"], ["notify"], False, False)
    assert not control.wants_listener(["master"], ["master"], True, False)  # --no-daemon
    assert not control.wants_listener(["master"], ["master"], False, True)  # --dry-run
    assert not control.wants_listener(["status"], ["status"], False, False)
    assert not control.wants_listener(["reconcile", "--help"], ["reconcile", "--help"], False, False)


def test_messages_are_bounded() -> None:
    with pytest.raises(ValueError):
        control.encode({"argv": ["x" * control.MAX_MESSAGE]})
    with pytest.raises(control.ProtocolError):
        control.decode(b"x" * (control.MAX_MESSAGE + 1))
    with pytest.raises(control.ProtocolError):
        control.decode(b"[1]")
    assert control.peer_allowed(0) and control.peer_allowed(os.geteuid())


def test_a_handed_over_one_shot_imports_neither_pyroute2_nor_typer_nor_the_engine(tmp_path: Path) -> None:
    """The hand-over client is the failover path: Python's start-up, the prescan, one socket."""
    import subprocess
    import sys

    config = _config(tmp_path)
    _serve(control.socket_path(str(tmp_path / "state")), b'{"code": 0, "stdout": "handed\\n", "stderr": ""}\n')
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "kanotify", "--config", str(config),
                           "master", "VI_1"], capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stdout) == (0, "handed\n"), proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    heavy = {name for name in imported if name.split(".")[0] in ("pyroute2", "typer", "pydantic", "tenacity",
                                                                 "pluggy", "prometheus_client")}
    assert not heavy, sorted(heavy)
    assert not {"kanotify.engine", "kanotify.config.schema", "kanotify.backends"} & imported, sorted(
        n for n in imported if n.startswith("kanotify"))
