"""Verify only what was changed: the read-back after applying covers what the run touched, nothing else."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Sequence

import pytest

from kanotify.actions import Action, AddReal, HookAction, SendGarp, SetSysctl
from kanotify.backends.memory import MemoryBackend
from kanotify.config.schema import parse_config
from kanotify.engine import Engine
from kanotify.model import Observed, RealServer, Scope, ServiceKey, State
from kanotify.plan import desired_for
from kanotify.run import RunKind
from kanotify.store import StateStore, Ticket
from kanotify.verify import merged, touched_scope

SERVICES = 5
CONFIG = """
[settings]
state_dir = "{tmp}/state"
journal = "{tmp}/journal.jsonl"
syslog = false
drain_timeout = 60

[sysctl]
"net.ipv4.conf.all.arp_ignore" = 1
"net.ipv4.conf.all.arp_announce" = 2

[[instance]]
name = "VI_1"
  [[instance.vip]]
  address = "192.0.2.100/24"
  dev = "eth0"
  [[instance.vip]]
  address = "192.0.2.100/32"
  dev = "lo"
  states = ["backup"]
""" + "".join(
    f"""
  [[instance.service]]
  protocol = "tcp"
  address = "192.0.2.100"
  port = {8000 + i}
    [[instance.service.real]]
    address = "192.0.2.21"
    weight = {{w{i}}}
    [[instance.service.real]]
    address = "192.0.2.22"
"""
    for i in range(SERVICES)
)


def key(port: int) -> ServiceKey:
    return ServiceKey.inet("tcp", ipaddress.ip_address("192.0.2.100"), port)


class Recording(MemoryBackend):
    """The memory backend, remembering every scope it was asked to observe."""

    def __init__(self) -> None:
        super().__init__(devices={"lo", "eth0"})
        self.scopes: list[Scope] = []

    def observe(self, scope: Scope) -> Observed:
        self.scopes.append(scope)
        return super().observe(scope)


def text_for(tmp: Path, **weights: int) -> str:
    values = {f"w{i}": weights.get(f"w{i}", 1) for i in range(SERVICES)}
    return CONFIG.replace("{tmp}", str(tmp)).format(**values)


def config_for(tmp: Path, **weights: int):  # type: ignore[no-untyped-def]
    return parse_config(text_for(tmp, **weights), str(tmp / "k.toml"))


@pytest.fixture
def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    backend = Recording()
    engine = Engine(config_for(tmp_path), backend_factory=lambda: backend)
    first = engine.transition(["VI_1"], State.MASTER, argv=["t"], kind=RunKind.MASTER, ticket=Ticket("boot", 1, 1))
    assert first.outcome == "converged"
    return engine, backend, tmp_path


def test_first_run_reads_back_what_it_wrote(setup) -> None:  # type: ignore[no-untyped-def]
    _engine, backend, _tmp = setup
    full, verify = backend.scopes
    assert not full.services_only
    assert verify.services_only and verify.services == {key(8000 + i) for i in range(SERVICES)}
    assert set(verify.sysctls) == {"net.ipv4.conf.all.arp_ignore", "net.ipv4.conf.all.arp_announce"}
    assert {v.key for v in verify.vips} == {("192.0.2.100/24", "eth0")}  # the lo VIP was absent already


def test_one_weight_edit_reads_back_one_service(setup) -> None:  # type: ignore[no-untyped-def]
    engine, backend, tmp = setup
    backend.scopes.clear()
    engine.config = config_for(tmp, w3=7)
    result = engine.reconcile(argv=["t"])
    assert result.outcome == "converged" and not result.verify
    applied = [str(r.action) for r in result.results if r.status == "applied"]
    assert applied == ["edit real server 192.0.2.21:8003 of tcp 192.0.2.100:8003: weight 1 -> 7"]
    _full, verify = backend.scopes
    assert verify == Scope(services=frozenset({key(8003)}), ipvs=True, services_only=True)
    # the second run changes nothing and reads nothing back
    backend.scopes.clear()
    again = engine.reconcile(argv=["t"])
    assert not again.plan.has_changes and len(backend.scopes) == 1


def test_a_change_that_did_not_take_is_still_reported(setup) -> None:  # type: ignore[no-untyped-def]
    engine, backend, tmp = setup

    class Deaf(Recording):
        """Says yes to every write and keeps nothing: the kernel that verify exists for."""

        def apply_many(self, actions: Sequence[Action]) -> list[BaseException | None]:
            return [None for _ in actions]

    deaf = Deaf()
    deaf.services = backend.services
    deaf.addresses = set(backend.addresses)
    deaf.sysctls = dict(backend.sysctls)
    engine = Engine(config_for(tmp, w1=9), backend_factory=lambda: deaf)
    result = engine.reconcile(argv=["t"])
    assert result.outcome == "failed"
    assert result.verify == ["edit real server 192.0.2.21:8001 of tcp 192.0.2.100:8001: weight 1 -> 9"]


def test_untouched_drains_are_kept(setup) -> None:  # type: ignore[no-untyped-def]
    engine, backend, tmp = setup
    real22 = (ipaddress.ip_address("192.0.2.22"), 8000)
    backend.set_connections(key(8000), real22, active=2)
    def dropped(**weights: int) -> str:  # 192.0.2.22 removed from :8000 only
        return text_for(tmp, **weights).replace('    [[instance.service.real]]\n    address = "192.0.2.22"\n', "", 1)

    engine.config = parse_config(dropped(), str(tmp / "k.toml"))
    engine.reconcile(argv=["t"])  # drains 192.0.2.22 of :8000
    assert list(StateStore(str(tmp / "state")).load()[0].draining) == [("tcp 192.0.2.100:8000", "192.0.2.22:8000")]
    # now another service changes: :8000 is not read back, its drain must survive
    engine.config = parse_config(dropped(w3=4), str(tmp / "k.toml"))
    result = engine.reconcile(argv=["t"])
    assert any(r.status == "applied" for r in result.results)
    assert backend.scopes[-1].services == {key(8003)} and backend.scopes[-1].services_only
    assert list(StateStore(str(tmp / "state")).load()[0].draining) == [("tcp 192.0.2.100:8000", "192.0.2.22:8000")]


def test_touched_scope_widens_for_unknown_effects(tmp_path: Path) -> None:
    desired = desired_for(config_for(tmp_path), {"VI_1": State.MASTER})
    hook = HookAction("p", "does something", lambda: None)
    assert touched_scope(desired, [SetSysctl("net.ipv4.conf.all.arp_ignore", "1"), hook]) == desired.scope
    garp_only = touched_scope(desired, [SendGarp(desired.vips[0].vip)])
    assert garp_only == Scope(services_only=True)  # an announcement changes nothing to read back
    real = RealServer(ipaddress.ip_address("192.0.2.30"), 8002)
    assert touched_scope(desired, [AddReal(key(8002), real)]).services == {key(8002)}


def test_merged_keeps_what_was_not_read_again() -> None:
    before = Observed(sysctls={"a": "1", "b": "0"}, services={})
    again = Observed(sysctls={"b": "2"}, services={})
    scope = Scope(sysctls=("b",), services_only=True)
    assert merged(before, again, scope).sysctls == {"a": "1", "b": "2"}
    assert merged(before, again, Scope(sysctls=("b",))) is again  # a full read-back replaces everything


def test_a_sync_daemon_change_reads_back_the_daemons_only(tmp_path: Path) -> None:
    from dataclasses import replace

    from kanotify.actions import StartSyncDaemon
    from kanotify.model import SyncDaemon

    desired = replace(desired_for(config_for(tmp_path), {"VI_1": State.MASTER}), manage_sync_daemons=True)
    scope = touched_scope(desired, [StartSyncDaemon(SyncDaemon("master", "eth0", 51))])
    assert scope == Scope(sync_daemons=True, services_only=True)
    assert desired.restricted(scope).manage_sync_daemons and not desired.restricted(scope).services
    unmanaged = replace(desired, manage_sync_daemons=False)
    assert not touched_scope(unmanaged, [StartSyncDaemon(SyncDaemon("master", "eth0", 51))]).sync_daemons
