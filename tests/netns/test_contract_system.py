"""The backend contract (tests/contract/cases.py) on the system backend, in a network namespace.

Sysctls, VIPs and GARP against the real kernel of this host; IPVS is absent here
(as on the host), so the IPVS cases of the contract run in the UML guest
(tests/kernel/guest/test_contract_ipvs.py).  The in-memory backend runs every
case in tests/unit/test_contract_memory.py: both must give the same answers.
"""

from __future__ import annotations

import pytest

from contract.cases import HOST_CASES, Case, daemons_of, outcome, services_of
from kanotify.backends.system import system_backend
from kanotify.model import Observed
from netns_support import Netns


def _given(ns: Netns, case: Case) -> None:
    for key, value in case.given.sysctls.items():
        ns.set_sysctls({key: value})
    for vip in sorted(case.given.addresses, key=lambda v: (v.family, v.address.network.prefixlen)):
        extra = ["label", vip.label] if vip.label else []
        extra += ["nodad"] if vip.family == 6 else []
        ns.ip("addr", "add", vip.address.with_prefixlen, "dev", vip.dev, *extra)


def _apply_and_observe(case: Case) -> tuple[int, Observed, int, Observed]:
    backend = system_backend()
    try:
        [error] = backend.apply_many([case.action])
        first = backend.observe(case.scope)
        [again] = backend.apply_many([case.action])
        return outcome(error), first, outcome(again), backend.observe(case.scope)
    finally:
        backend.close()


@pytest.mark.parametrize("case", HOST_CASES, ids=[c.id for c in HOST_CASES])
def test_contract(ns_a: Netns, case: Case) -> None:
    _given(ns_a, case)
    error, observed, _again, second = ns_a.run(_apply_and_observe, case)
    assert error == case.error
    expected = case.expected
    assert {k: observed.sysctls.get(k) for k in expected.sysctls} == dict(expected.sysctls)
    assert observed.vips == expected.addresses
    if case.about_ipvs:
        assert services_of(observed.services) == dict(expected.services)
    if case.about_sync:
        assert daemons_of(observed.daemons) == expected.daemons
    assert second == observed  # idempotent: the second try changes nothing
