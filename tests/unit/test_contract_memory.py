"""The backend contract (tests/contract/cases.py) on the in-memory backend: the twin must not lie.

The same cases run on the system backend in a namespace (tests/netns/test_contract_system.py)
and in a UML guest with real IPVS (tests/kernel/guest/test_contract_ipvs.py).
"""

from __future__ import annotations

import pytest

from contract.cases import CASES, Case, Host, daemons_of, outcome, services_of
from kanotify.backends.memory import MemoryBackend
from kanotify.model import ObservedService, RealServerStats


def _host(given: Host) -> MemoryBackend:
    services = {
        key: ObservedService(svc, {rs.key: (rs, RealServerStats()) for rs in reals})
        for key, (svc, reals) in given.services.items()
    }
    return MemoryBackend(devices={"lo", "eth0"}, sysctls=given.sysctls, addresses=given.addresses,
                         services=services, ipvs_available=given.ipvs, daemons=given.daemons)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_contract(case: Case) -> None:
    backend = _host(case.given)
    [error] = backend.apply_many([case.action])
    assert outcome(error) == case.error, error
    observed = backend.observe(case.scope)
    expected = case.expected
    assert {k: observed.sysctls.get(k) for k in expected.sysctls} == dict(expected.sysctls)
    assert observed.vips == expected.addresses
    if case.about_ipvs:
        assert services_of(observed.services) == dict(expected.services)
    if case.about_sync:
        assert daemons_of(observed.daemons) == expected.daemons
    again = backend.apply_many([case.action])  # every action is idempotent: the second try changes nothing
    assert backend.observe(case.scope) == observed, again
