"""Health through the planner and the engine: drain, removal and restore are ordinary, journaled, idempotent runs."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from kanotify.backends.memory import MemoryBackend
from kanotify.config.schema import parse_config
from kanotify.engine import Engine
from kanotify.model import RealKey, ServiceKey, State
from kanotify.run import RunKind

CONFIG = """
[settings]
state_dir = "{tmp}/state"
journal = "{tmp}/journal.jsonl"
syslog = false

[[instance]]
name = "VI_1"
  [[instance.service]]
  protocol = "tcp"
  address = "192.0.2.100"
  port = 80
    [instance.service.check]
    type = "http"
    [[instance.service.real]]
    address = "192.0.2.21"
    weight = 3
    [[instance.service.real]]
    address = "192.0.2.22"
      [instance.service.real.check]
      on_failure = "remove"
    [[instance.service.real]]
    address = "192.0.2.23"
"""

SERVICE = ServiceKey.inet("tcp", ipaddress.ip_address("192.0.2.100"), 80)


def real(last: int) -> RealKey:
    return (ipaddress.ip_address(f"192.0.2.{last}"), 80)


class FakeHealth:
    """The listener's checks as a request carries them (passed to each run, as the listener does)."""

    def __init__(self) -> None:
        self.down: set[tuple[ServiceKey, RealKey]] = set()
        self.weights: dict[tuple[ServiceKey, RealKey], int] = {}

    def is_down(self, service: ServiceKey, real: RealKey) -> bool:
        return (service, real) in self.down

    def weight_of(self, service: ServiceKey, real: RealKey) -> int | None:
        return self.weights.get((service, real))


def setup(tmp: Path) -> tuple[Engine, MemoryBackend, FakeHealth]:
    config = parse_config(CONFIG.format(tmp=tmp))
    backend = MemoryBackend()
    health = FakeHealth()
    return Engine(config, backend_factory=lambda: backend), backend, health


def weights(backend: MemoryBackend) -> dict[str, int]:
    state = backend.services.get(SERVICE)
    return {} if state is None else {str(rs.address): rs.weight for rs, _ in state.reals.values()}


def test_a_down_real_server_is_drained_or_removed_and_restored_when_up(tmp_path: Path) -> None:
    engine, backend, health = setup(tmp_path)
    engine.transition(["VI_1"], State.MASTER, argv=["t"], kind=RunKind.MASTER, health=health)
    assert weights(backend) == {"192.0.2.21": 3, "192.0.2.22": 1, "192.0.2.23": 1}
    health.down = {(SERVICE, real(21)), (SERVICE, real(22))}
    result = engine.reconcile(argv=["kanotify", "listen", "health: ..."], kind=RunKind.HEALTH, quiet=True, health=health)
    assert weights(backend) == {"192.0.2.21": 0, "192.0.2.23": 1}
    changed = [str(r.action) for r in result.results if r.status == "applied"]
    assert changed == ["edit real server 192.0.2.21:80 of tcp 192.0.2.100:80: weight 3 -> 0 (health check: DOWN)",
                       "delete real server 192.0.2.22:80 from tcp 192.0.2.100:80 (health check: DOWN)"]
    assert result.record["command"] == "health" and result.outcome == "converged"
    again = engine.reconcile(argv=["t"], kind=RunKind.HEALTH, health=health)
    assert not again.plan.has_changes  # the second run changes nothing
    health.down = set()
    engine.reconcile(argv=["t"], kind=RunKind.HEALTH, health=health)
    assert weights(backend) == {"192.0.2.21": 3, "192.0.2.22": 1, "192.0.2.23": 1}


def test_a_dynamic_weight_is_applied_and_taken_back(tmp_path: Path) -> None:
    engine, backend, health = setup(tmp_path)
    engine.transition(["VI_1"], State.MASTER, argv=["t"], kind=RunKind.MASTER, health=health)
    health.weights = {(SERVICE, real(23)): 7}  # a misc_dynamic exit 9, or a file check's number
    result = engine.reconcile(argv=["t"], kind=RunKind.HEALTH, quiet=True, health=health)
    assert weights(backend) == {"192.0.2.21": 3, "192.0.2.22": 1, "192.0.2.23": 7}
    assert [str(r.action) for r in result.results if r.status == "applied"] == [
        "edit real server 192.0.2.23:80 of tcp 192.0.2.100:80: weight 1 -> 7"]
    assert not engine.reconcile(argv=["t"], kind=RunKind.HEALTH, health=health).plan.has_changes  # idempotent
    health.down = {(SERVICE, real(23))}  # DOWN wins over its weight
    engine.reconcile(argv=["t"], kind=RunKind.HEALTH, health=health)
    assert weights(backend)["192.0.2.23"] == 0
    health.down, health.weights = set(), {}
    engine.reconcile(argv=["t"], kind=RunKind.HEALTH, health=health)
    assert weights(backend) == {"192.0.2.21": 3, "192.0.2.22": 1, "192.0.2.23": 1}


def test_a_new_master_applies_known_health_at_once(tmp_path: Path) -> None:
    engine, backend, health = setup(tmp_path)
    health.down = {(SERVICE, real(21))}
    engine.transition(["VI_1"], State.MASTER, argv=["t"], kind=RunKind.MASTER, health=health)
    assert weights(backend) == {"192.0.2.21": 0, "192.0.2.22": 1, "192.0.2.23": 1}


def test_on_a_backup_director_health_changes_write_nothing(tmp_path: Path) -> None:
    engine, backend, health = setup(tmp_path)
    engine.transition(["VI_1"], State.BACKUP, argv=["t"], kind=RunKind.BACKUP, health=health)
    lines = (tmp_path / "journal.jsonl").read_text().splitlines()
    health.down = {(SERVICE, real(21))}
    result = engine.reconcile(argv=["t"], kind=RunKind.HEALTH, quiet=True, health=health)
    assert backend.services == {} and not result.plan.has_changes
    assert (tmp_path / "journal.jsonl").read_text().splitlines() == lines  # quiet: nothing to journal


def test_a_dry_run_shows_the_drain_as_pending(tmp_path: Path) -> None:
    engine, backend, health = setup(tmp_path)
    engine.transition(["VI_1"], State.MASTER, argv=["t"], kind=RunKind.MASTER, health=health)
    health.down = {(SERVICE, real(23))}
    result = engine.reconcile(argv=["t"], kind=RunKind.PLAN, dry_run=True, health=health)
    assert [(str(r.action), r.status) for r in result.results if r.status != "noop"] == [
        ("edit real server 192.0.2.23:80 of tcp 192.0.2.100:80: weight 1 -> 0 (health check: DOWN)", "pending")]
    assert weights(backend)["192.0.2.23"] == 1


TWO_SERVICES = CONFIG + """
  [[instance.service]]
  protocol = "tcp"
  address = "192.0.2.100"
  port = 443
    [instance.service.check]
    type = "tcp"
    [[instance.service.real]]
    address = "192.0.2.21"
"""


def test_a_health_run_reads_and_plans_only_the_services_it_names(tmp_path: Path) -> None:
    config = parse_config(TWO_SERVICES.format(tmp=tmp_path))
    backend, health = MemoryBackend(), FakeHealth()
    engine = Engine(config, backend_factory=lambda: backend)
    engine.transition(["VI_1"], State.MASTER, argv=["t"], kind=RunKind.MASTER, health=health)
    other = ServiceKey.inet("tcp", ipaddress.ip_address("192.0.2.100"), 443)
    del backend.services[other]  # drift in the other service: a health run of SERVICE is not its business
    scopes = []
    observe = backend.observe
    backend.observe = lambda scope: scopes.append(scope) or observe(scope)  # type: ignore[method-assign]
    health.down = {(SERVICE, real(23))}
    result = engine.reconcile(argv=["t"], kind=RunKind.HEALTH, quiet=True, services=[SERVICE], health=health)
    assert [str(r.action) for r in result.results if r.status == "applied"] == [
        "edit real server 192.0.2.23:80 of tcp 192.0.2.100:80: weight 1 -> 0 (health check: DOWN)"]
    assert scopes and all(s.services_only and s.services == {SERVICE} and not s.vips and not s.sysctls
                          for s in scopes)  # read back: that service only, never the whole table
    assert other not in backend.services and result.outcome == "converged"
    again = engine.reconcile(argv=["t"], kind=RunKind.HEALTH, quiet=True, services=[SERVICE], health=health)
    assert not again.plan.has_changes  # the second run changes nothing
    engine.reconcile(argv=["t"], kind=RunKind.RECONCILE, health=health)  # the drift is the full reconcile's (the listener's repair)
    assert other in backend.services and weights(backend)["192.0.2.23"] == 0
