"""Unit tests of the systemd unit plugin: start on MASTER, stop otherwise, idempotent, dry-run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kanotify.testing import load_plugin

systemd_unit = load_plugin(Path(__file__).with_name("systemd_unit.py"))
SYSTEMCTL = "/usr/bin/systemctl"


class FakeSystemd:
    """Answers ``systemctl is-active`` from a dict and records start/stop."""

    def __init__(self, **states: str) -> None:
        self.states = {k.replace("_", "-") + ".service": v for k, v in states.items()}
        self.calls: list[list[str]] = []

    def __call__(self, argv, **kwargs):
        self.calls.append(list(argv))
        assert kwargs.get("shell") in (None, False)
        verb, unit = argv[1], argv[2]
        if verb == "is-active":
            state = self.states.get(unit, "inactive")
            return subprocess.CompletedProcess(argv, 0 if state == "active" else 3, state + "\n", "")
        self.states[unit] = "active" if verb == "start" else "inactive"
        return subprocess.CompletedProcess(argv, 0, "", "")

    def changes(self) -> list[list[str]]:
        return [c for c in self.calls if c[1] != "is-active"]


@pytest.fixture
def systemd(mocker):
    fake = FakeSystemd(haproxy="inactive")
    mocker.patch("subprocess.run", side_effect=fake)
    return fake


def engine(kanotify_env, **options):
    return kanotify_env.engine(plugins=[systemd_unit], hooks={"systemd_unit": {"unit": "haproxy.service", **options}})


def test_master_starts_the_unit(kanotify_env, systemd):
    env = engine(kanotify_env)
    result = env.transition("VI_1", "master")
    assert result.outcome == "converged", result.record
    assert systemd.calls == [[SYSTEMCTL, "is-active", "haproxy.service"], [SYSTEMCTL, "start", "haproxy.service"]]
    assert env.statuses()[f"[systemd_unit] {SYSTEMCTL} start haproxy.service (was inactive)"] == "applied"
    # it is the last step: the VIP is bound before the service starts
    assert env.actions()[-1].startswith("[systemd_unit]")


@pytest.mark.parametrize("state", ["backup", "fault", "stop"])
def test_every_other_state_stops_it(kanotify_env, systemd, state):
    systemd.states["haproxy.service"] = "active"
    env = engine(kanotify_env)
    env.transition("VI_1", state)
    assert systemd.changes() == [[SYSTEMCTL, "stop", "haproxy.service"]]


def test_already_there_is_a_noop_in_the_journal(kanotify_env, systemd):
    env = engine(kanotify_env)
    env.transition("VI_1", "master")
    systemd.calls.clear()
    result = env.reconcile()
    assert systemd.changes() == []
    assert env.statuses(result)["[systemd_unit] haproxy.service already active"] == "noop"


def test_dry_run_only_reads(kanotify_env, systemd):
    env = engine(kanotify_env)
    result = env.transition("VI_1", "master", dry_run=True)
    assert systemd.changes() == []
    assert systemd.calls == [[SYSTEMCTL, "is-active", "haproxy.service"]]
    assert env.statuses(result)[f"[systemd_unit] {SYSTEMCTL} start haproxy.service (was inactive)"] == "pending"


def test_several_units_and_another_systemctl(kanotify_env, systemd):
    env = kanotify_env.engine(
        plugins=[systemd_unit],
        hooks={"systemd_unit": {"units": ["haproxy.service", "sync.timer"], "systemctl": "/bin/systemctl"}},
    )
    env.transition("VI_1", "master")
    assert systemd.changes() == [["/bin/systemctl", "start", "haproxy.service"], ["/bin/systemctl", "start", "sync.timer"]]


@pytest.mark.parametrize("unit", ["--all", "", "a b.service", "x;reboot"])
def test_a_bad_unit_name_is_a_problem_and_nothing_runs(kanotify_env, systemd, unit):
    env = engine(kanotify_env, unit=unit)
    result = env.transition("VI_1", "master")
    assert systemd.calls == []
    assert result.record["hooks"][0]["hook"] == "systemd_unit"
    assert result.exit_code == 1
    assert env.backend.addresses  # the VIP moved regardless


def test_missing_option(kanotify_env, systemd):
    env = kanotify_env.engine(plugins=[systemd_unit])
    result = env.transition("VI_1", "master")
    assert "option 'unit'" in result.record["hooks"][0]["error"]


def test_systemctl_missing_means_unknown_and_the_start_fails_cleanly(kanotify_env, mocker):
    mocker.patch("subprocess.run", side_effect=FileNotFoundError(2, "No such file or directory"))
    env = engine(kanotify_env)
    result = env.transition("VI_1", "master")
    failed = [r for r in result.results if r.status == "failed"]
    assert [str(r.action) for r in failed] == [f"[systemd_unit] {SYSTEMCTL} start haproxy.service (was unknown)"]
    assert failed[0].error == f"{SYSTEMCTL} start haproxy.service: No such file or directory"
