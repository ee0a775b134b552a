"""Unit tests of the conntrackd handover plugin: the exact commands, in order, and dry-run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kanotify.testing import load_plugin

conntrackd = load_plugin(Path(__file__).with_name("conntrackd.py"))

CONF = "/etc/conntrackd/conntrackd.conf"
BIN = "/usr/sbin/conntrackd"


@pytest.fixture
def run(mocker):
    return mocker.patch("subprocess.run", return_value=subprocess.CompletedProcess([], 0, "", ""))


def argvs(run) -> list[list[str]]:
    return [c.args[0] for c in run.call_args_list]


def test_master_commits_flushes_resyncs_and_bulk_sends_in_the_sample_order(kanotify_env, run):
    env = kanotify_env.engine(plugins=[conntrackd])
    result = env.transition("VI_1", "master")
    assert result.outcome == "converged", result.record
    assert argvs(run) == [[BIN, "-C", CONF, flag] for flag in ("-c", "-f", "-R", "-B")]
    for call in run.call_args_list:  # an argv list, never a shell
        assert call.kwargs.get("shell") in (None, False)
        assert call.kwargs["stdin"] == subprocess.DEVNULL
    journal = [a for a in env.journal[-1]["actions"] if a["action"].startswith("[conntrackd]")]
    assert [a["status"] for a in journal] == ["applied"] * 4
    assert journal[0]["action"] == f"[conntrackd] {BIN} -C {CONF} -c (commit the external cache into the kernel table)"


@pytest.mark.parametrize(
    ("state", "flags"),
    [("backup", ["-t", "-n"]), ("fault", ["-t"]), ("stop", [])],
)
def test_other_states(kanotify_env, run, state, flags):
    env = kanotify_env.engine(plugins=[conntrackd])
    env.transition("VI_1", "master")
    run.reset_mock()
    env.transition("VI_1", state)
    assert argvs(run) == [[BIN, "-C", CONF, f] for f in flags]


def test_dry_run_shows_the_commands_and_runs_none(kanotify_env, run):
    env = kanotify_env.engine(plugins=[conntrackd])
    result = env.transition("VI_1", "master", dry_run=True)
    run.assert_not_called()
    statuses = env.statuses(result)
    assert statuses[f"[conntrackd] {BIN} -C {CONF} -B (send a bulk update to the backups)"] == "pending"
    assert sum(1 for a in statuses if a.startswith("[conntrackd]")) == 4


def test_no_commands_when_the_state_does_not_change(kanotify_env, run):
    env = kanotify_env.engine(plugins=[conntrackd])
    env.transition("VI_1", "master")
    run.reset_mock()
    env.transition("VI_1", "master")  # keepalived repeating itself
    env.reconcile()  # a reconcile timer
    run.assert_not_called()


def test_options_choose_binary_and_config(kanotify_env, run):
    env = kanotify_env.engine(
        plugins=[conntrackd], hooks={"conntrackd": {"conntrackd": "/opt/ct/conntrackd", "config": "/etc/ct.conf"}}
    )
    env.transition("VI_1", "fault")
    assert argvs(run) == [["/opt/ct/conntrackd", "-C", "/etc/ct.conf", "-t"]]


def test_a_failing_command_fails_the_run_but_the_next_ones_still_run(kanotify_env, mocker):
    def fake(argv, **kwargs):
        code = 1 if argv[-1] == "-c" else 0
        return subprocess.CompletedProcess(argv, code, "", "cannot commit: no external cache\n" if code else "")

    run = mocker.patch("subprocess.run", side_effect=fake)
    env = kanotify_env.engine(plugins=[conntrackd])
    result = env.transition("VI_1", "master")
    assert [a[-1] for a in argvs(run)] == ["-c", "-f", "-R", "-B"]
    assert result.outcome == "failed" and result.exit_code == 1
    failed = [r for r in result.results if r.status == "failed"]
    assert len(failed) == 1
    assert failed[0].error == f"{BIN} -C {CONF} -c: exit status 1: cannot commit: no external cache"
    assert env.backend.addresses  # the VIP was bound all the same


def test_several_instances_need_the_instance_option(kanotify_env, run):
    toml = """
[[instance]]
name = "VI_1"
[[instance]]
name = "VI_2"
"""
    env = kanotify_env.engine(plugins=[conntrackd], toml=toml)
    result = env.transition("VI_1", "master")
    assert run.call_count == 0
    assert [p["hook"] for p in result.record["hooks"]] == ["conntrackd"]
    assert "option 'instance' is required" in result.record["hooks"][0]["error"]

    env = kanotify_env.engine(plugins=[conntrackd], toml=toml, hooks={"conntrackd": {"instance": "VI_2"}})
    env.transition("VI_1", "master")
    assert run.call_count == 0  # not the instance it follows
    env.transition("VI_2", "master")
    assert run.call_count == 4
