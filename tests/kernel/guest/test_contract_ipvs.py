"""The backend contract's IPVS cases (tests/contract/cases.py) on the system backend, in a real kernel.

Runs inside the UML guest: the given IPVS table and sync daemons are set up
with ``ipvsadm`` (not with kanotify), the given sysctls written to /proc/sys,
the action applied through :func:`kanotify.backends.system.system_backend`, and the
result compared with what the in-memory backend answers for the same case
(tests/unit/test_contract_memory.py).  The sync daemons need an ``eth0`` in
the guest's root namespace, as the in-memory host has: a veth pair made for
these tests (nothing else in the guest's root namespace is called that).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from contract.cases import GUEST_CASES, Case, daemons_of, outcome, services_of
from ipvs_guest_support import ipvsadm, run
from kanotify.backends.system import system_backend
from kanotify.backends.sysctl import SysctlBackend
from kanotify.model import SyncDaemon, format_hostport

_FORWARD = {"dr": "-g", "nat": "-m", "tun": "-i"}


def _stop_daemons() -> None:
    for state in ("master", "backup"):
        run(["ipvsadm", "--stop-daemon", state], check=False)


@pytest.fixture(scope="module")
def eth0() -> Iterator[None]:
    """``eth0`` (up) in the guest's root namespace, for the sync daemons' multicast."""
    run(["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer"])
    try:
        run(["ip", "link", "set", "eth0peer", "up"])
        run(["ip", "link", "set", "eth0", "up"])
        yield
    finally:
        _stop_daemons()
        run(["ip", "link", "del", "eth0"], check=False)


@pytest.fixture
def clean_ipvs(eth0: None) -> Iterator[None]:
    run(["ipvsadm", "-C"])
    _stop_daemons()
    yield
    run(["ipvsadm", "-C"])
    _stop_daemons()


_SYSCTLS = SysctlBackend()


@pytest.fixture
def saved_sysctls() -> Iterator[dict[str, str | None]]:
    """Every sysctl a case touches, with its value before: written back afterwards."""
    saved: dict[str, str | None] = {}
    yield saved
    for key, value in saved.items():
        if value is not None:
            Path(_SYSCTLS.path(key)).write_text(value + "\n")


def _start(daemon: SyncDaemon) -> None:
    args = ["--start-daemon", daemon.state, "--mcast-interface", daemon.interface, "--syncid", str(daemon.sync_id),
            "--mcast-group", str(daemon.group), "--mcast-port", str(daemon.port), "--mcast-ttl", str(daemon.ttl)]
    if daemon.maxlen is not None:
        args += ["--sync-maxlen", str(daemon.maxlen)]
    ipvsadm(*args)


def _given(case: Case, saved: dict[str, str | None]) -> None:
    for key in {*case.given.sysctls, *case.expected.sysctls}:
        saved.setdefault(key, _SYSCTLS.read(key))
    for key, value in case.given.sysctls.items():
        Path(_SYSCTLS.path(key)).write_text(value + "\n")
    for svc, reals in case.given.services.values():
        key = svc.key
        assert key.address is not None and key.protocol == "tcp", "the contract's services are TCP"
        where = format_hostport(key.address, key.port)
        args = ["-A", "-t", where, "-s", svc.scheduler]
        if svc.persistence:
            args += ["-p", str(svc.persistence)]
        ipvsadm(*args)
        for real in reals:
            ipvsadm("-a", "-t", where, "-r", format_hostport(real.address, real.port), _FORWARD[real.forward],
                    "-w", str(real.weight), "-x", str(real.u_threshold), "-y", str(real.l_threshold))
    for daemon in sorted(case.given.daemons, key=lambda d: d.state, reverse=True):  # master first
        _start(daemon)


@pytest.mark.parametrize("case", GUEST_CASES, ids=[c.id for c in GUEST_CASES])
def test_contract(clean_ipvs: None, saved_sysctls: dict[str, str | None], case: Case) -> None:
    _given(case, saved_sysctls)
    backend = system_backend()
    try:
        [error] = backend.apply_many([case.action])
        assert outcome(error) == case.error, error
        observed = backend.observe(case.scope)
        expected = case.expected
        assert {k: observed.sysctls.get(k) for k in expected.sysctls} == dict(expected.sysctls)
        if case.about_ipvs:
            assert services_of(observed.services) == dict(expected.services)
        if case.about_sync:
            assert daemons_of(observed.daemons) == expected.daemons
        backend.apply_many([case.action])  # idempotent: the second try changes nothing
        assert backend.observe(case.scope) == observed
    finally:
        backend.close()
