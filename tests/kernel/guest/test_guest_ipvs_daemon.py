"""IPVS connection-sync daemons in a real kernel: IpvsBackend against ``ipvsadm --start-daemon`` / ``-L --daemon``.

Every test gets its own network namespace (sync daemons are per namespace)
with a veth pair ``eth0``/``eth1`` (MTU 1500, a ``nodad`` IPv6 address so an
IPv6 master has a source address at once) and ``jumbo0``/``jumbo1`` (MTU
9000).  What kanotify starts is read back with ``ipvsadm -L --daemon``, what
``ipvsadm`` starts is read back with kanotify, and both must agree.
"""

from __future__ import annotations

import errno
import re
import secrets
import subprocess
from typing import Iterator

import pytest

from ipvs_guest_support import ip, ipvsadm, run
from kanotify.backends.ipvs import IpvsBackend
from kanotify.errors import ApplyError
from kanotify.model import SyncDaemon

_LINE = re.compile(
    r"^(master|backup) sync daemon \(mcast=(\S+), syncid=(\d+), maxlen=(\d+), group=([^,]+), port=(\d+), ttl=(\d+)\)$"
)


class Ns:
    """A namespace for one test, with kanotify's backend and ipvsadm inside it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.backend = IpvsBackend(netns=name, retry_budget=0.3)  # ENODEV is retried: keep failures quick

    def ipvsadm(self, *args: str) -> str:
        return ipvsadm(*args, netns=self.name)

    def ipvsadm_fails(self, *args: str) -> str:
        proc = subprocess.run(["ip", "netns", "exec", self.name, "ipvsadm", *args], capture_output=True, text=True)
        assert proc.returncode != 0, f"ipvsadm {' '.join(args)} succeeded"
        return proc.stderr.strip()

    def listed(self) -> list[str]:
        """``ipvsadm -L --daemon``, one line per daemon."""
        return [line for line in self.ipvsadm("-L", "--daemon").splitlines() if line.strip()]

    def listed_daemons(self) -> list[SyncDaemon]:
        """``ipvsadm -L --daemon`` parsed into value types (with the kernel's maxlen)."""
        found = []
        for line in self.listed():
            match = _LINE.match(line)
            assert match, f"unexpected ipvsadm line {line!r}"
            state, ifn, syncid, maxlen, group, port, ttl = match.groups()
            found.append(SyncDaemon(state, ifn, int(syncid), int(maxlen), ip(group), int(port), int(ttl)))
        return found


@pytest.fixture
def ns() -> Iterator[Ns]:
    name = f"kt-{secrets.token_hex(3)}-sync"
    run(["ip", "netns", "add", name])
    space = Ns(name)
    try:
        for cmd in (
            "link set lo up",
            "link add eth0 type veth peer name eth1",
            "link set eth0 up",
            "link set eth1 up",
            "-6 addr add 2001:db8::1/64 dev eth0 nodad",
            "link add jumbo0 mtu 9000 type veth peer name jumbo1 mtu 9000",
            "link set jumbo0 up",
            "link set jumbo1 up",
        ):
            run(["ip", "-n", name, *cmd.split()])
        yield space
    finally:
        for state in ("master", "backup"):
            subprocess.run(["ip", "netns", "exec", name, "ipvsadm", "--stop-daemon", state], capture_output=True)
        space.backend.close()
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


# --------------------------------------------------------------------------- kanotify starts, ipvsadm reads


def test_start_master_then_again_is_a_no_op(ns: Ns) -> None:
    master = SyncDaemon("master", "eth0", 51)
    ns.backend.start_daemon(master)
    expected = ["master sync daemon (mcast=eth0, syncid=51, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)"]
    assert ns.listed() == expected
    observed = ns.backend.daemons()
    assert observed == (master,)
    assert observed[0].maxlen == 1472  # the kernel's computed default: 1500 - 20 - 8
    assert [str(d) for d in observed] == expected  # same text as ipvsadm

    ns.backend.start_daemon(master)  # converged: success, nothing changes
    assert ns.listed() == expected
    assert ns.backend.daemons() == (master,)


@pytest.mark.parametrize(
    "daemon",
    [
        SyncDaemon("master", "eth0", 7, 1400, ip("239.1.2.3"), 9000, 3),
        SyncDaemon("backup", "eth0", 255, 1024, ip("239.255.255.250"), 65535, 255),
        SyncDaemon("master", "eth0", 0, 1, ip("ff02::81"), 1, 1),
        SyncDaemon("backup", "jumbo0", 9, None, ip("ff05::1:3"), 8848, 2),
    ],
    ids=str,
)
def test_every_parameter_reaches_the_kernel(ns: Ns, daemon: SyncDaemon) -> None:
    ns.backend.start_daemon(daemon)
    (listed,) = ns.listed_daemons()
    assert listed == daemon
    if daemon.maxlen is not None:
        assert listed.maxlen == daemon.maxlen
    assert ns.backend.daemons() == (listed,)
    assert ns.backend.daemons()[0].maxlen == listed.maxlen
    ns.backend.start_daemon(daemon)
    assert ns.listed_daemons() == [daemon]


def test_default_maxlen_is_computed_from_the_mtu_and_still_equal(ns: Ns) -> None:
    """master: 1500 - headers whatever the MTU; backup: the MTU (at least 1500) - headers."""
    cases = [
        (SyncDaemon("master", "jumbo0", 1), 1472),
        (SyncDaemon("backup", "jumbo0", 1), 8972),
        (SyncDaemon("master", "eth0", 1, group=ip("ff02::81")), 1452),
        (SyncDaemon("backup", "jumbo0", 1, group=ip("ff02::81")), 8952),
    ]
    for daemon, maxlen in cases:
        ns.backend.start_daemon(daemon)
        (observed,) = ns.backend.daemons()
        assert observed.maxlen == maxlen, daemon
        assert observed == daemon
        assert ns.listed_daemons()[0].maxlen == maxlen
        ns.backend.start_daemon(daemon)  # equal, so converged: no EEXIST
        ns.backend.stop_daemon(daemon.state)


# --------------------------------------------------------------------------- ipvsadm starts, kanotify reads


def test_ipvsadm_backup_decodes_equal_to_its_parameters(ns: Ns) -> None:
    ns.ipvsadm("--start-daemon", "backup", "--mcast-interface", "eth0", "--syncid", "7")
    backup = SyncDaemon("backup", "eth0", 7)
    assert ns.backend.daemons() == (backup,)
    ns.backend.start_daemon(backup)  # kanotify sees it as converged
    assert ns.listed_daemons() == [backup]


def test_ipvsadm_with_every_option_decodes_exactly(ns: Ns) -> None:
    ns.ipvsadm(
        "--start-daemon", "master", "--mcast-interface", "eth0", "--syncid", "8", "--sync-maxlen", "1400",
        "--mcast-group", "239.0.0.9", "--mcast-port", "7777", "--mcast-ttl", "2",
    )
    ns.ipvsadm(
        "--start-daemon", "backup", "--mcast-interface", "jumbo0", "--syncid", "9",
        "--mcast-group", "ff02::81", "--mcast-port", "9000", "--mcast-ttl", "5",
    )
    observed = ns.backend.daemons()
    assert observed == (
        SyncDaemon("master", "eth0", 8, 1400, ip("239.0.0.9"), 7777, 2),
        SyncDaemon("backup", "jumbo0", 9, None, ip("ff02::81"), 9000, 5),
    )
    assert [d.maxlen for d in observed] == [1400, 8952]
    assert [str(d) for d in observed] == ns.listed()


# --------------------------------------------------------------------------- both, stop


def test_master_and_backup_together_then_stop_each_twice(ns: Ns) -> None:
    master = SyncDaemon("master", "eth0", 51)
    backup = SyncDaemon("backup", "jumbo0", 51, group=ip("ff02::81"))  # the families may differ
    ns.backend.start_daemon(backup)
    ns.backend.start_daemon(master)
    assert ns.backend.daemons() == (master, backup)
    assert ns.listed_daemons() == [master, backup]

    ns.backend.stop_daemon("master")
    assert ns.listed_daemons() == [backup]
    ns.backend.stop_daemon("master")  # already stopped: success
    assert ns.listed_daemons() == [backup]
    assert ns.ipvsadm_fails("--stop-daemon", "master") == "No daemon is running"  # what ipvsadm makes of ESRCH

    ns.backend.stop_daemon("backup")
    ns.backend.stop_daemon("backup")
    assert ns.listed() == []
    assert ns.backend.daemons() == ()


def test_stop_of_an_ipvsadm_started_daemon(ns: Ns) -> None:
    ns.ipvsadm("--start-daemon", "master", "--mcast-interface", "eth0", "--syncid", "3")
    ns.backend.stop_daemon("master")
    assert ns.listed() == []


# --------------------------------------------------------------------------- errors


def test_other_parameters_running_is_eexist_naming_both(ns: Ns) -> None:
    ns.ipvsadm("--start-daemon", "master", "--mcast-interface", "eth0", "--syncid", "9")
    wanted = SyncDaemon("master", "eth0", 51)
    with pytest.raises(ApplyError) as info:
        ns.backend.start_daemon(wanted)
    assert info.value.errno == errno.EEXIST
    running = "master sync daemon (mcast=eth0, syncid=9, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)"
    assert str(info.value) == (
        f"start {wanted}: the master sync daemon already runs with other parameters: {running} [EEXIST] "
        "(the kernel cannot change a running daemon: stop it, then start this one)"
    )
    assert ns.listed() == [running]  # untouched
    # another explicit maxlen is another configuration too
    ns.backend.stop_daemon("master")
    ns.backend.start_daemon(SyncDaemon("master", "eth0", 51, maxlen=1400))
    with pytest.raises(ApplyError) as again:
        ns.backend.start_daemon(SyncDaemon("master", "eth0", 51, maxlen=1300))
    assert again.value.errno == errno.EEXIST
    # and what ipvsadm says for the same refusal
    assert ns.ipvsadm_fails("--start-daemon", "master", "--mcast-interface", "eth0") == "Daemon has already run"


def test_no_such_interface_is_enodev(ns: Ns) -> None:
    daemon = SyncDaemon("backup", "nope0", 1)
    with pytest.raises(ApplyError) as info:
        ns.backend.start_daemon(daemon)
    assert info.value.errno == errno.ENODEV
    assert str(info.value) == f"start {daemon}: No such device [ENODEV] (no such interface nope0)"
    assert ns.listed() == []


def test_no_such_interface_wins_over_already_running(ns: Ns) -> None:
    """The kernel looks the interface up before it checks for a running daemon of that state."""
    ns.backend.start_daemon(SyncDaemon("master", "eth0", 1))
    with pytest.raises(ApplyError) as info:
        ns.backend.start_daemon(SyncDaemon("master", "nope0", 1))
    assert info.value.errno == errno.ENODEV


def test_mixed_family_destinations_are_einval(ns: Ns) -> None:
    ns.ipvsadm("-A", "-t", "192.0.2.100:80", "-s", "rr")
    ns.ipvsadm("-a", "-t", "192.0.2.100:80", "-r", "[2001:db8::21]:80", "-i")  # IPv6 real server, IPv4 service
    daemon = SyncDaemon("master", "eth0", 1)
    with pytest.raises(ApplyError) as info:
        ns.backend.start_daemon(daemon)
    assert info.value.errno == errno.EINVAL
    assert str(info.value).startswith(f"start {daemon}: Invalid argument [EINVAL] (mixed IPv4/IPv6 destinations")
    assert ns.listed() == []
    # the other way round: with a daemon running, the kernel refuses the mixed-family real server
    ns.ipvsadm("-C")
    ns.backend.start_daemon(daemon)
    ns.ipvsadm("-A", "-t", "192.0.2.100:80", "-s", "rr")
    assert "Invalid operation" in ns.ipvsadm_fails("-a", "-t", "192.0.2.100:80", "-r", "[2001:db8::21]:80", "-i")


def test_ipv6_master_without_a_source_address_is_eaddrnotavail(ns: Ns) -> None:
    """An IPv6 master sends from the interface: no usable IPv6 address there (here: none at all) fails."""
    run(["ip", "-n", ns.name, "link", "add", "bare0", "type", "veth", "peer", "name", "bare1"])
    run(["ip", "-n", ns.name, "link", "set", "bare0", "addrgenmode", "none"])
    run(["ip", "-n", ns.name, "link", "set", "bare0", "up"])
    run(["ip", "-n", ns.name, "link", "set", "bare1", "up"])
    master = SyncDaemon("master", "bare0", 1, group=ip("ff02::81"))
    with pytest.raises(ApplyError) as info:
        ns.backend.start_daemon(master)
    assert info.value.errno == errno.EADDRNOTAVAIL
    assert "(no usable IPv6 source address on bare0 yet" in str(info.value)
    ns.backend.start_daemon(SyncDaemon("backup", "bare0", 1, group=ip("ff02::81")))  # a backup only listens
    assert [d.state for d in ns.backend.daemons()] == ["backup"]


def test_master_on_a_down_link_is_enetunreach(ns: Ns) -> None:
    run(["ip", "-n", ns.name, "link", "add", "down0", "type", "veth", "peer", "name", "down1"])
    master = SyncDaemon("master", "down0", 1)
    with pytest.raises(ApplyError) as info:
        ns.backend.start_daemon(master)
    assert info.value.errno == errno.ENETUNREACH
    assert "(down0 is down or cannot reach 224.0.0.81" in str(info.value)
    assert ns.listed() == []


def test_a_deleted_interface_leaves_the_daemon_running(ns: Ns) -> None:
    """Deleting the interface does not stop the daemon: the kernel still reports it (nothing to repair here)."""
    run(["ip", "-n", ns.name, "link", "add", "gone0", "type", "veth", "peer", "name", "gone1"])
    run(["ip", "-n", ns.name, "link", "set", "gone0", "up"])
    daemon = SyncDaemon("master", "gone0", 1)
    ns.backend.start_daemon(daemon)
    run(["ip", "-n", ns.name, "link", "del", "gone0"])
    assert ns.backend.daemons() == (daemon,)
    ns.backend.stop_daemon("master")
    assert ns.backend.daemons() == ()
