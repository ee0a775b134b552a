"""The command line: exit codes, global options in both positions, usage errors, JSON.

Runs the CLI in-process with the in-memory backend (``kanotify.backends.system.system_backend``
patched), plus a few real subprocesses for the installed console script.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kanotify.backends.memory import MemoryBackend
from kanotify.cli import run

ONE = """
[settings]
state_dir = "{tmp}/state"
journal = "{tmp}/journal.jsonl"
syslog = false

[sysctl]
"net.ipv4.conf.all.arp_ignore" = 1

[[instance]]
name = "VI_1"
  [[instance.vip]]
  address = "192.0.2.100/24"
  dev = "eth0"
  label = "eth0:0"
  [[instance.vip]]
  address = "192.0.2.100/32"
  dev = "lo"
  states = ["backup"]

[[group]]
name = "VG_1"
instances = ["VI_1"]
"""

TWO = ONE + """
[[instance]]
name = "VI_2"
"""

KANOTIFY = str(Path(sys.executable).with_name("kanotify"))


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> MemoryBackend:
    fake = MemoryBackend(devices={"lo", "eth0"})
    monkeypatch.setattr("kanotify.backends.system.system_backend", lambda: fake)
    return fake


@pytest.fixture
def conf(tmp_path: Path) -> str:
    path = tmp_path / "kanotify.toml"
    path.write_text(ONE.format(tmp=tmp_path))
    return str(path)


@pytest.fixture
def conf2(tmp_path: Path) -> str:
    path = tmp_path / "two.toml"
    path.write_text(TWO.format(tmp=tmp_path))
    return str(path)


def journal_lines(conf: str) -> list[dict]:
    """Every journal record, ``started`` ones too."""
    path = Path(conf).parent / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def journal(conf: str) -> list[dict]:
    """The final record of each run."""
    return [r for r in journal_lines(conf) if r.get("record") != "started"]


def test_help_lists_the_commands() -> None:
    out = subprocess.run([KANOTIFY, "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("master", "backup", "fault", "stop", "notify", "reconcile", "plan", "status", "history", "check"):
        assert command in out
    assert subprocess.run([sys.executable, "-m", "kanotify", "--help"], capture_output=True).returncode == 0


def test_global_options_in_both_positions_do_the_same(backend, conf, capsys) -> None:  # type: ignore[no-untyped-def]
    assert run(["--config", conf, "--dry-run", "--json", "master"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert run(["master", "--dry-run", "--config", conf, "--json"]) == 0
    after = json.loads(capsys.readouterr().out)
    assert [a["action"] for a in before["actions"]] == [a["action"] for a in after["actions"]]
    assert before["dry_run"] and after["dry_run"]
    assert backend.writes == []


def test_master_then_master_again(backend, conf, capsys) -> None:  # type: ignore[no-untyped-def]
    assert run(["--config", conf, "master"]) == 0
    out = capsys.readouterr().out
    assert "+ bind 192.0.2.100/24 dev eth0 label eth0:0" in out
    writes = len(backend.writes)
    assert run(["--config", conf, "master", "VI_1"]) == 0
    assert len(backend.writes) == writes
    assert len(journal(conf)) == 2
    assert {a["status"] for a in journal(conf)[1]["actions"]} == {"noop"}
    # the first run changed the system: a started record before its final one; the second only its final
    assert [r["record"] for r in journal_lines(conf)] == ["started", "final", "final"]
    assert journal_lines(conf)[0]["run"] == journal_lines(conf)[1]["run"] != journal_lines(conf)[2]["run"]


def test_states_are_case_insensitive_from_keepalived(backend, conf) -> None:  # type: ignore[no-untyped-def]
    assert run(["--config", conf, "notify", "INSTANCE", "VI_1", "MASTER", "100"]) == 0
    assert run(["--config", conf, "notify", "instance", "VI_1", "Backup", "90"]) == 0
    assert [(r["to"], r.get("priority")) for r in journal(conf)] == [("master", 100), ("backup", 90)]


def test_notify_deleted_is_stop(backend, conf, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert run(["--config", conf, "notify", "INSTANCE", "VI_1", "DELETED", "0"]) == 0
    assert journal(conf)[-1]["to"] == "stop"


def test_group_notification(backend, conf) -> None:  # type: ignore[no-untyped-def]
    assert run(["--config", conf, "notify", "GROUP", "VG_1", "MASTER", "0"]) == 0
    assert journal(conf)[-1]["instance"] == "VI_1"
    assert run(["--config", conf, "notify", "GROUP", "VG_9", "MASTER", "0"]) == 0
    assert "not managed" in journal(conf)[-1]["note"]


def test_notify_for_an_undeclared_instance_is_journaled_and_ignored(backend, conf) -> None:  # type: ignore[no-untyped-def]
    assert run(["--config", conf, "notify", "INSTANCE", "VI_OTHER", "MASTER", "100"]) == 0
    record = journal(conf)[-1]
    assert record["outcome"] == "converged" and "VI_OTHER" in record["note"]
    assert backend.writes == []


@pytest.mark.parametrize("argv, message", [
    (["master", "VI_9"], "unknown instance 'VI_9'"),
    (["backup", "VI_1; rm -rf /"], "unknown instance"),
    (["backup", "../../etc/passwd"], "unknown instance"),
    (["backup", "x" * 100000], "is not valid"),
    (["backup", "VI_\x1b[31m"], "is not valid"),
    (["notify", "INSTANCE", "VI_1", "SLEEPY", "100"], "unknown state 'SLEEPY'"),
    (["notify", "INSTANCE", "VI_1", "MASTER"], "exactly 4 words"),
    (["notify", "INSTANCE", "VI_1", "MASTER", "100", "extra"], "exactly 4 words"),
    (["notify", "VRRP", "VI_1", "MASTER", "100"], "TYPE must be INSTANCE or GROUP"),
    (["notify", "INSTANCE", "VI_1", "MASTER", "high"], "PRIORITY must be an integer"),
    (["notify", "INSTANCE", "VI_1", "MASTER", "256"], "PRIORITY must be an integer"),
    (["reconcile", "--state", "primary"], "unknown state 'primary'"),
    (["reconcile", "--instance", "nope"], "unknown instance 'nope'"),
    (["frobnicate"], "No such command"),
    (["master", "VI_1", "VI_2"], "unexpected extra argument"),
])
def test_usage_errors_exit_2_and_change_nothing(backend, conf, capsys, argv, message) -> None:  # type: ignore[no-untyped-def]
    assert run(["--config", conf, *argv]) == 2
    err = capsys.readouterr().err
    assert message.lower() in err.lower()
    assert len(err) < 2000
    assert backend.writes == []
    assert journal(conf) == []


def test_instance_required_when_the_config_has_several(backend, conf2, capsys) -> None:  # type: ignore[no-untyped-def]
    assert run(["--config", conf2, "master"]) == 2
    assert "INSTANCE is required" in capsys.readouterr().err
    assert run(["--config", conf2, "master", "VI_2"]) == 0


def test_config_errors_exit_78_with_key_path(backend, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.toml"
    bad.write_text('[[instance]]\nname = "VI_1"\n[[instance.service]]\nprotocol = "tcp"\naddress = "192.0.2.1"\n'
                   'port = 0\n[[instance.service.real]]\naddress = "192.0.2.2"\nport = 65536\n')
    for command in (["check"], ["master"], ["reconcile"], ["status"], ["plan"]):
        assert run(["--config", str(bad), *command]) == 78
        err = capsys.readouterr().err
        assert "instance[0].service[0].port" in err and "instance[0].service[0].real[0].port" in err
        assert str(bad) in err
    assert backend.writes == []


def test_missing_config_file_is_a_config_error(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert run(["--config", str(tmp_path / "nope.toml"), "check"]) == 78
    assert "nope.toml" in capsys.readouterr().err


def test_config_from_environment(monkeypatch, conf, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("KANOTIFY_CONFIG", conf)
    assert run(["check"]) == 0
    assert "OK" in capsys.readouterr().out


def test_world_writable_config_is_refused(conf, capsys) -> None:  # type: ignore[no-untyped-def]
    os.chmod(conf, 0o666)
    assert run(["--config", conf, "check"]) == 78
    assert "writable by group or others" in capsys.readouterr().err
    assert run(["--config", conf, "--allow-insecure", "check"]) == 0


def test_plan_detailed_exitcode(backend, conf, capsys) -> None:  # type: ignore[no-untyped-def]
    assert run(["--config", conf, "plan", "--detailed-exitcode"]) == 2  # lo VIP pending (unrecorded = backup)
    assert "+ bind 192.0.2.100/32 dev lo" in capsys.readouterr().out
    assert backend.writes == []
    assert run(["--config", conf, "reconcile"]) == 0
    assert run(["--config", conf, "plan", "--detailed-exitcode"]) == 0
    assert run(["--config", conf, "plan", "--state", "master", "--detailed-exitcode"]) == 2
    assert [r["dry_run"] for r in journal(conf)] == [True, False, True, True]


def test_failed_action_exits_1(backend, conf, capsys) -> None:  # type: ignore[no-untyped-def]
    backend.devices.discard("eth0")
    assert run(["--config", conf, "master"]) == 1
    out = capsys.readouterr().out
    assert "! bind 192.0.2.100/24 dev eth0 label eth0:0" in out and "does not exist" in out
    assert journal(conf)[-1]["outcome"] == "failed"


def test_status_history_and_json(backend, conf, capsys) -> None:  # type: ignore[no-untyped-def]
    run(["--config", conf, "master"])
    run(["--config", conf, "backup"])
    capsys.readouterr()
    assert run(["--config", conf, "status"]) == 0
    out = capsys.readouterr().out
    assert "VI_1" in out and "backup" in out and "bound  192.0.2.100/32 dev lo" in out
    assert run(["--config", conf, "--json", "status"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["instances"][0]["state"] == "backup" and report["drift"] == []
    assert run(["--config", conf, "history", "-n", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].split()[:3] == ["TIME", "(UTC)", "INSTANCE"]
    assert "VI_1" in lines[1] and "master -> backup" in lines[1] and "converged" in lines[1]
    assert run(["--config", conf, "history", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2


def test_check_json(conf, capsys) -> None:  # type: ignore[no-untyped-def]
    assert run(["--config", conf, "--json", "check"]) == 0
    assert json.loads(capsys.readouterr().out)["instances"] == ["VI_1"]


def test_stop_detection_for_the_fast_path() -> None:
    from kanotify.__main__ import _is_stop_notification as is_stop

    assert is_stop(["stop"]) and is_stop(["--config", "stop.toml", "stop", "VI_1"])
    assert is_stop(["notify", "INSTANCE", "VI_1", "STOP", "0"]) and is_stop(["notify", "GROUP", "G", "deleted", "0"])
    assert not is_stop(["--config", "stop", "master"]) and not is_stop(["notify", "INSTANCE", "stop", "MASTER", "1"])
    assert not is_stop([]) and not is_stop(["backup"])


def test_stop_runs_detached_and_relays_the_exit_code(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The real console script: a STOP notification forks a worker in its own session."""
    conf = tmp_path / "k.toml"
    conf.write_text(ONE.format(tmp=tmp_path).replace('dev = "eth0"', 'dev = "lo"\n  garp = false').replace(
        '"192.0.2.100/24"', '"203.0.113.1/32"').replace('label = "eth0:0"', ''))
    # dry-run keeps the host untouched; the detach path is the same
    proc = subprocess.run([KANOTIFY, "--config", str(conf), "--dry-run", "stop"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    record = journal(str(conf))[-1]
    assert record["to"] == "stop" and record["pid"] != proc.args  # journaled by the worker
    bad = subprocess.run([KANOTIFY, "--config", str(conf), "notify", "INSTANCE", "VI_1", "STOP", "x"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "PRIORITY" in bad.stderr


@pytest.mark.parametrize("argv", [
    ["master"], ["master", "VI_1"], ["backup", "--dry-run"], ["stop", "VI_1", "--json"],
    ["master", "VI_9"], ["backup", "VI_1; rm -rf /"], ["fault", "x" * 300],
    ["notify", "INSTANCE", "VI_1", "MASTER", "100"], ["notify", "GROUP", "VG_1", "BACKUP", "0"],
    ["notify", "INSTANCE", "OTHER", "MASTER", "100"], ["notify", "INSTANCE", "VI_1", "SLEEPY", "100"],
    ["notify", "INSTANCE", "VI_1", "MASTER", "256"], ["notify", "VRRP", "VI_1", "MASTER", "1"],
])
def test_fast_path_behaves_like_the_typer_cli(backend, conf, capsys, argv) -> None:  # type: ignore[no-untyped-def]
    """keepalived's forms skip typer (start-up cost); the outcome must be identical."""
    from kanotify.commands import run_fast

    slow = run(["--config", conf, "--dry-run", *argv])  # dry-run: both see the same starting point
    slow_out = capsys.readouterr()
    fast = run_fast(["--config", conf, "--dry-run", *argv])
    fast_out = capsys.readouterr()
    assert fast == slow
    assert fast_out.err == slow_out.err
    strip = lambda text: [l for l in text.splitlines() if " in " not in l and '"ts"' not in l  # noqa: E731
                          and "duration_ms" not in l and '"pid"' not in l and '"run"' not in l]
    assert strip(fast_out.out) == strip(slow_out.out)


@pytest.mark.parametrize("argv", [["--help"], ["master", "a", "b"], ["notify", "INSTANCE", "VI_1"], ["status"],
                                  ["--config"], ["master", "--frob"]])
def test_fast_path_leaves_everything_else_to_typer(argv) -> None:  # type: ignore[no-untyped-def]
    from kanotify.commands import run_fast

    assert run_fast(argv) is None


def _broken_configs():  # type: ignore[no-untyped-def]
    from tests.unit.test_config import BROKEN

    return BROKEN


@pytest.mark.parametrize("case", _broken_configs(), ids=[c[0] for c in _broken_configs()])
def test_check_exits_78_with_the_key_path_on_every_broken_config(tmp_path, capsys, case) -> None:  # type: ignore[no-untyped-def]
    """Every broken config of the loader's table, through the command line."""
    _, text, path, word, _ = case
    conf = tmp_path / "broken.toml"
    conf.write_text(text)
    assert run(["--config", str(conf), "check"]) == 78
    err = capsys.readouterr().err
    assert str(conf) in err
    if path:
        assert path in err
    assert word.lower() in err.lower()


def test_state_commands_are_case_insensitive(backend, conf) -> None:  # type: ignore[no-untyped-def]
    from kanotify.commands import run_fast

    assert run(["--config", conf, "MASTER"]) == 0
    assert run_fast(["--config", conf, "Backup", "VI_1"]) == 0
    assert [r["to"] for r in journal(conf)] == ["master", "backup"]


def test_a_journal_that_cannot_be_written_is_reported(backend, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    conf = tmp_path / "k.toml"
    (tmp_path / "journal-is-a-dir").mkdir()
    conf.write_text(ONE.format(tmp=tmp_path).replace("journal.jsonl", "journal-is-a-dir"))
    assert run(["--config", str(conf), "master"]) == 0  # the host converged; the log line is what failed
    assert "cannot write journal" in capsys.readouterr().err


def test_the_cheap_plugin_probe_finds_an_installed_entry_point(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from kanotify.commands import _has_hook_sources
    from kanotify.config.schema import parse_config

    config = parse_config(f'[settings]\nhooks_dir = "{tmp_path}/none"\n[[instance]]\nname = "VI_1"\n', "k.toml")
    site = tmp_path / "site"
    (site / "myplugin-1.0.dist-info").mkdir(parents=True)
    monkeypatch.setattr("sys.path", [str(site)])
    assert not _has_hook_sources(config)
    (site / "myplugin-1.0.dist-info" / "entry_points.txt").write_text("[kanotify.hooks]\nmine = myplugin\n")
    assert _has_hook_sources(config)


def test_check_lists_hook_plugins_and_their_load_problems(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    hooks_dir = tmp_path / "hooks.d"
    hooks_dir.mkdir()
    (hooks_dir / "good.py").write_text("def kanotify_after_transition(ctx, result):\n    pass\n")
    (hooks_dir / "broken.py").write_text("import no_such_module_here\n")
    conf = tmp_path / "k.toml"
    conf.write_text(ONE.format(tmp=tmp_path).replace("syslog = false", f'syslog = false\nhooks_dir = "{hooks_dir}"'))
    assert run(["--config", str(conf), "check"]) == 1
    captured = capsys.readouterr()
    assert "hook plugins: good" in captured.out
    assert "broken" in captured.err and "no_such_module_here" in captured.err
    (hooks_dir / "broken.py").unlink()
    assert run(["--config", str(conf), "--json", "check"]) == 0
    assert json.loads(capsys.readouterr().out)["plugins"] == ["good"]


def test_a_run_killed_mid_apply_is_journaled_and_history_shows_it_interrupted(
        backend, conf, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL in a forked run, after its first change: its started record is there, history says interrupted."""
    import signal

    from kanotify.metrics.facts import count_journal
    from kanotify.config.schema import load_config

    assert run(["--config", conf, "backup"]) == 0
    applied = []

    def apply_then_die(action):  # type: ignore[no-untyped-def]
        MemoryBackend.apply(backend, action)
        applied.append(action)
        if len(applied) == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child dies in apply
        try:
            monkeypatch.setattr(backend, "apply", apply_then_die)
            run(["--config", conf, "master"])
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    lines = journal_lines(conf)
    assert [r["record"] for r in lines] == ["started", "final", "started"]
    assert lines[-1]["to"] == "master" and lines[-1]["process"][2] == pid
    capsys.readouterr()
    assert run(["--config", conf, "history"]) == 0
    out = capsys.readouterr().out.splitlines()
    # nothing known to be applied, no duration
    assert "backup -> master" in out[2] and re.search(r" interrupted +0 +0 +- ", out[2]), out[2]
    assert "interrupted: no final record" in out[3] and f"pid {pid}" in out[3]
    assert run(["--config", conf, "--json", "history"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [(r["to"], r["outcome"]) for r in runs] == [("backup", "converged"), ("master", "interrupted")]
    counts, _ = count_journal(load_config(conf))
    assert ("VI_1", "interrupted", 1) in counts.transitions and counts.interrupted == 1 and not counts.pending
    # the next run finishes the job; it is a run of its own, the interrupted one stays interrupted
    assert run(["--config", conf, "reconcile"]) == 0
    assert run(["--config", conf, "reconcile"]) == 0  # and the second one changes nothing
    assert [r["record"] for r in journal_lines(conf)] == ["started", "final", "started", "started", "final", "final"]
    assert {a["status"] for a in journal(conf)[-1]["actions"]} == {"noop"}
    capsys.readouterr()
    assert run(["--config", conf, "--json", "history"]) == 0
    assert [r["outcome"] for r in json.loads(capsys.readouterr().out)] == ["converged", "interrupted", "converged",
                                                                           "converged"]


def test_a_run_stopped_by_an_exception_still_writes_its_final_record(backend, conf, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """KeyboardInterrupt (or SystemExit) mid-apply: the process lives on, so its run must not look under way."""
    def interrupt(action):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(backend, "apply", interrupt)
    assert run(["--config", conf, "master"]) != 0  # click turns it into "Aborted!"
    started, final = journal_lines(conf)
    assert started["record"] == "started" and final["run"] == started["run"]
    assert final["outcome"] == "failed" and "KeyboardInterrupt" in final["note"]
