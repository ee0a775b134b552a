"""Unit tests of the quorum_command plugin with kanotify's testing helpers: no root, no listener, no checks."""

from __future__ import annotations

import stat
from pathlib import Path

from kanotify.testing import load_plugin

quorum_command = load_plugin(Path(__file__).with_name("quorum_command.py"))

TOML = """
[[instance]]
name = "VI_1"
  [[instance.vip]]
  address = "192.0.2.100/32"
  dev = "lo"
  [[instance.service]]
  protocol = "tcp"
  address = "192.0.2.100"
  port = 80
  quorum = 2
  quorum_withdraw = true          # with a sorry server the VIPs stay unless asked
    [instance.service.sorry_server]
    address = "192.0.2.99"
    [[instance.service.real]]
    address = "192.0.2.21"
    [[instance.service.real]]
    address = "192.0.2.22"
"""
SERVICE = "tcp 192.0.2.100:80"


def recorder(tmp_path: Path, code: int = 0) -> tuple[Path, Path]:
    """A program that appends its arguments and KANOTIFY_SERVICE to a file, then exits ``code``."""
    out = tmp_path / "calls"
    script = tmp_path / "record"
    script.write_text(f'#!/bin/sh\necho "$* | $KANOTIFY_SERVICE" >> {out}\necho oops >&2\nexit {code}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, out


def engine(kanotify_env, script: Path):
    return kanotify_env.engine(plugins=[quorum_command], toml=TOML, hooks={
        "quorum_command": {"up": [str(script), "up"], "down": [str(script), "down"]}})


def test_quorum_down_and_up_run_the_commands_after_the_vip_moved(kanotify_env, tmp_path):
    script, out = recorder(tmp_path)
    env = engine(kanotify_env, script)
    env.transition("VI_1", "master")
    assert [v.address.with_prefixlen for v in env.backend.addresses] == ["192.0.2.100/32"]
    down = env.quorum(SERVICE, up=False)
    assert down.outcome == "converged", down.record
    assert not env.backend.addresses  # quorum given: the VIP on the service's address is withdrawn
    reals = {str(rs.address): rs.weight for rs, _ in next(iter(env.backend.services.values())).reals.values()}
    assert reals == {"192.0.2.21": 0, "192.0.2.22": 0, "192.0.2.99": 1}  # the sorry server serves
    assert out.read_text() == f"down | {SERVICE}\n"  # keepalived gives its scripts no argument either
    assert down.record["command"] == "health"
    again = env.quorum(SERVICE, up=False)
    assert not again.plan.has_changes  # the second run changes nothing (the hook runs again: it is told again)
    env.quorum(SERVICE, up=True)
    assert [v.address.with_prefixlen for v in env.backend.addresses] == ["192.0.2.100/32"]
    reals = {str(rs.address): rs.weight for rs, _ in next(iter(env.backend.services.values())).reals.values()}
    assert reals == {"192.0.2.21": 1, "192.0.2.22": 1}
    assert out.read_text().splitlines()[-1] == f"up | {SERVICE}"


def test_a_failing_command_is_a_problem_in_the_journal(kanotify_env, tmp_path):
    script, _out = recorder(tmp_path, code=3)
    env = engine(kanotify_env, script)
    env.transition("VI_1", "master")
    result = env.quorum(SERVICE, up=False)
    assert result.outcome == "failed" and not env.backend.addresses  # the withdrawal happened all the same
    [problem] = env.problems
    assert problem.hook == "quorum_command" and "exit status 3" in problem.error and "oops" in problem.error
    assert result.record["hooks"][0]["call"] == "quorum_down"


def test_a_service_of_its_own_replaces_the_common_commands(kanotify_env, tmp_path):
    script, out = recorder(tmp_path)
    env = kanotify_env.engine(plugins=[quorum_command], toml=TOML, hooks={
        "quorum_command": {"up": [str(script), "all"],
                           "per_service": {SERVICE: {"down": [str(script), "own"]}, "tcp 192.0.2.100:443": {}}}})
    env.transition("VI_1", "master")
    assert env.quorum(SERVICE, up=False).outcome == "converged"
    assert env.quorum(SERVICE, up=True).outcome == "converged"  # its own table has no "up": nothing runs
    assert out.read_text() == f"own | {SERVICE}\n"


def test_a_relative_program_is_refused(kanotify_env, tmp_path):
    env = kanotify_env.engine(plugins=[quorum_command], toml=TOML,
                              hooks={"quorum_command": {"down": ["record"]}})
    env.transition("VI_1", "master")
    result = env.quorum(SERVICE, up=False)
    assert "expected an absolute program path" in env.problems[0].error and result.outcome == "failed"
