"""IpvsBackend against the host kernel, which has no IPVS: the missing family is reported, not crashed on.

A real generic netlink socket and a real nlctrl lookup (read-only, no root
needed) of a family name that does not exist, as IPVS on a kernel without it.
"""

from __future__ import annotations

import errno

import pytest

from kanotify.actions import AddService, Noop
from kanotify.backends.netlink import ipvs_msg as m
from kanotify.backends.ipvs import IpvsBackend
from kanotify.errors import ApplyError
from kanotify.model import ServiceKey, SyncDaemon, VirtualService

SERVICES = [VirtualService(ServiceKey.mark(5), "wlc"), VirtualService(ServiceKey.mark(6, 6), "rr", 30)]


def test_missing_family_is_enoprotoopt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(m, "IPVS_GENL_NAME", "KANOTIFY_NONE")
    with IpvsBackend() as backend, pytest.raises(ApplyError) as info:
        backend.observe()
    assert info.value.errno == errno.ENOPROTOOPT
    assert str(info.value).startswith("IPVS is not available in this kernel (modprobe ip_vs)")


def test_apply_many_without_ipvs_reports_every_action(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(m, "IPVS_GENL_NAME", "KANOTIFY_NONE")
    with IpvsBackend() as backend:
        results = backend.apply_many([AddService(SERVICES[0]), Noop("nothing"), AddService(SERVICES[1])])
    assert results[1] is None
    for result in (results[0], results[2]):
        assert result is not None and getattr(result, "errno", None) == errno.ENOPROTOOPT
        assert "add ipvs service" in str(result)
    assert backend.writes == 0


def test_sync_daemons_without_ipvs_are_enoprotoopt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(m, "IPVS_GENL_NAME", "KANOTIFY_NONE")
    master = SyncDaemon("master", "eth0", 51)
    with IpvsBackend() as backend:
        for call, what in (
            (backend.daemons, "list ipvs sync daemons"),
            (lambda: backend.start_daemon(master), f"start {master}"),
            (lambda: backend.stop_daemon("backup"), "stop backup sync daemon"),
        ):
            with pytest.raises(ApplyError) as info:
                call()
            assert info.value.errno == errno.ENOPROTOOPT
            assert str(info.value) == (
                f"{what}: IPVS is not available in this kernel (modprobe ip_vs): "
                "the generic netlink family 'IPVS' does not exist [ENOPROTOOPT]"
            )
        assert backend.writes == 0
