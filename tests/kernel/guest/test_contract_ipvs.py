"""The backend contract's IPVS cases (tests/contract/cases.py) on the system backend, in a real kernel.

Runs inside the UML guest: the given IPVS table is set up with ``ipvsadm`` (not
with kanotify), the action applied through :func:`kanotify.backends.system_backend`,
and the result compared with what the in-memory backend answers for the same
case (tests/unit/test_contract_memory.py).
"""

from __future__ import annotations

from typing import Iterator

import pytest

from contract.cases import IPVS_CASES, Case, outcome, services_of
from ipvs_guest_support import ipvsadm, run
from kanotify.backends import system_backend
from kanotify.model import format_hostport

_FORWARD = {"dr": "-g", "nat": "-m", "tun": "-i"}


@pytest.fixture
def clean_ipvs() -> Iterator[None]:
    run(["ipvsadm", "-C"])
    yield
    run(["ipvsadm", "-C"])


def _given(case: Case) -> None:
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


@pytest.mark.parametrize("case", IPVS_CASES, ids=[c.id for c in IPVS_CASES])
def test_contract(clean_ipvs: None, case: Case) -> None:
    _given(case)
    backend = system_backend()
    try:
        [error] = backend.apply_many([case.action])
        assert outcome(error) == case.error, error
        observed = backend.observe(case.scope)
        assert services_of(observed.services) == dict(case.expected.services)
        backend.apply_many([case.action])  # idempotent: the second try changes nothing
        assert backend.observe(case.scope) == observed
    finally:
        backend.close()
