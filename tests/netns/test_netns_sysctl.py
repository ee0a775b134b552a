"""SysctlBackend against a real kernel: writes land in the namespace, never on the host."""

from __future__ import annotations

import errno

import pytest

from kanotify.actions import SetSysctl
from kanotify.backends.sysctl import SysctlBackend, key_to_relpath
from kanotify.errors import ApplyError
from netns_support import Netns

pytestmark = pytest.mark.root

ARP_KEYS = (
    "net.ipv4.conf.all.arp_ignore",
    "net.ipv4.conf.all.arp_announce",
    "net.ipv4.conf.lo.arp_ignore",
    "net.ipv4.conf.lo.arp_announce",
)


def _host(relpath: str) -> str:
    with open(f"/proc/sys/{relpath}") as fh:
        return fh.read().strip()


def _apply(*actions: SetSysctl) -> list[BaseException | None]:
    return SysctlBackend().apply_many(actions)


def test_arp_sysctls_change_in_the_namespace_and_not_on_the_host(ns_a: Netns) -> None:
    host_before = {key: _host(key_to_relpath(key)) for key in ARP_KEYS}
    assert ns_a.run(lambda: SysctlBackend().read_many(ARP_KEYS)) == {key: "0" for key in ARP_KEYS}

    values = {"arp_ignore": "1", "arp_announce": "2"}
    errors = ns_a.run(_apply, *(SetSysctl(key, values[key.rsplit(".", 1)[1]], "0") for key in ARP_KEYS))
    assert errors == [None] * 4

    for key in ARP_KEYS:  # read back by another process inside the namespace
        assert ns_a.sysctl(key_to_relpath(key)) == values[key.rsplit(".", 1)[1]]
    assert {key: _host(key_to_relpath(key)) for key in ARP_KEYS} == host_before


def test_zero_is_a_value(ns_a: Netns) -> None:
    ns_a.set_sysctls({"net.ipv4.conf.eth0.arp_ignore": 2})

    def go():  # type: ignore[no-untyped-def]
        backend = SysctlBackend()
        before = backend.read("net.ipv4.conf.lo.arp_ignore")
        backend.apply(SetSysctl("net.ipv4.conf.eth0.arp_ignore", "0", "2"))
        return before, backend.read("net.ipv4.conf.eth0.arp_ignore")

    assert ns_a.run(go) == ("0", "0")
    assert ns_a.sysctl("net/ipv4/conf/eth0/arp_ignore") == "0"


def test_missing_key_is_a_clear_error(ns_a: Netns) -> None:
    def go():  # type: ignore[no-untyped-def]
        backend = SysctlBackend()
        return (
            backend.read("net.ipv4.conf.eth9.arp_ignore"),
            backend.apply_many(
                [
                    SetSysctl("net.ipv4.conf.eth9.arp_ignore", "1"),
                    SetSysctl("net.ipv4.conf.all.arp_ignor", "1"),
                    SetSysctl("net.ipv4.conf.all.arp_ignore", "1"),  # still applied after the failures
                ]
            ),
        )

    missing, (iface, typo, ok) = ns_a.run(go)
    assert missing is None
    assert isinstance(iface, ApplyError) and iface.errno == errno.ENOENT
    assert "net.ipv4.conf.eth9.arp_ignore" in str(iface) and "interface eth9 absent" in str(iface)
    assert isinstance(typo, ApplyError) and typo.errno == errno.ENOENT
    assert "net.ipv4.conf.all.arp_ignor" in str(typo) and "typo" in str(typo)
    assert ok is None
    assert ns_a.sysctl("net/ipv4/conf/all/arp_ignore") == "1"


def test_rejected_value_names_key_and_value(ns_a: Netns) -> None:
    errors = ns_a.run(_apply, SetSysctl("net.ipv4.conf.all.arp_ignore", "abc"))
    assert isinstance(errors[0], ApplyError) and errors[0].errno == errno.EINVAL
    assert "net.ipv4.conf.all.arp_ignore" in str(errors[0]) and "'abc'" in str(errors[0])


def test_multi_value_keys_are_whitespace_normalized(ns_a: Netns) -> None:
    key = "net.ipv4.ip_local_port_range"
    host_before = _host("net/ipv4/ip_local_port_range")

    def go():  # type: ignore[no-untyped-def]
        backend = SysctlBackend()
        backend.apply(SetSysctl(key, "40000   50000"))
        return backend.read(key)

    assert ns_a.run(go) == "40000 50000"  # the kernel prints a tab between them
    assert ns_a.sysctl("net/ipv4/ip_local_port_range").split() == ["40000", "50000"]
    assert _host("net/ipv4/ip_local_port_range") == host_before


def test_slash_in_a_component_is_a_dot_in_the_interface_name(ns_a: Netns) -> None:
    ns_a.ip("link", "add", "vl.100", "type", "veth", "peer", "name", "vl.101")
    key = "net.ipv4.conf.vl/100.arp_announce"
    assert key_to_relpath(key) == "net/ipv4/conf/vl.100/arp_announce"
    assert key_to_relpath("net/ipv4/conf/vl.100/arp_announce") == "net/ipv4/conf/vl.100/arp_announce"

    errors = ns_a.run(_apply, SetSysctl(key, "2"))
    assert errors == [None]
    assert ns_a.sysctl("net/ipv4/conf/vl.100/arp_announce") == "2"
    assert ns_a.sysctl("net/ipv4/conf/vl.101/arp_announce") == "0"


def test_effective_arp_is_the_max_of_all_and_the_interface(ns_a: Netns) -> None:
    ns_a.set_sysctls(
        {
            "net.ipv4.conf.all.arp_ignore": 1,
            "net.ipv4.conf.eth0.arp_ignore": 0,
            "net.ipv4.conf.lo.arp_ignore": 2,
            "net.ipv4.conf.all.arp_announce": 0,
            "net.ipv4.conf.eth0.arp_announce": 2,
            "net.ipv4.conf.lo.arp_announce": 0,
        }
    )
    effective = ns_a.run(lambda: SysctlBackend().effective_arp())
    assert effective == {
        "eth0": {"arp_ignore": 1, "arp_announce": 2},  # ignore from all, announce from eth0
        "lo": {"arp_ignore": 2, "arp_announce": 0},
    }
    assert ns_a.run(lambda: SysctlBackend().effective_arp(["lo", "eth9"])) == {
        "lo": {"arp_ignore": 2, "arp_announce": 0}
    }


def test_read_back_mismatch_is_an_error(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A value the kernel silently rewrites is reported, not taken as converged."""
    (tmp_path / "net" / "core").mkdir(parents=True)
    (tmp_path / "net" / "core" / "somaxconn").write_text("4096\n")
    backend = SysctlBackend(root=str(tmp_path))
    backend.apply(SetSysctl("net.core.somaxconn", "1024"))
    assert backend.read("net.core.somaxconn") == "1024"
    monkeypatch.setattr(backend, "read", lambda key: "65535")  # what a clamping kernel would show
    with pytest.raises(ApplyError, match=r"net.core.somaxconn: wrote '70000' but it reads back '65535'"):
        backend.apply(SetSysctl("net.core.somaxconn", "70000"))
