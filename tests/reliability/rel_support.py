"""Helpers for the reliability tests: a namespace node running the real ``kanotify``.

Every namespace is created by the test itself (``kt7-<random>-<suffix>``) and
deleted in a fixture finalizer, even when the test fails.  Inside it: ``lo``
up and a veth pair ``eth0`` <-> ``p0`` (the ``dummy`` module is not available
on the host kernel), ``eth0`` with its own address 192.0.2.1/24 so that VIPs
on it are secondaries.  Only documentation addresses are used.

kanotify is run exactly as keepalived would run it on such a node:
``ip netns exec NS .venv/bin/kanotify --config CONF STATE``.  ``ip netns
exec`` exec()s the command, so the pid of the ``Popen`` is the pid of
kanotify itself (which is what ``kill -9`` and the journal's ``pid`` refer to).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pytest

from nstools import process_gone, run_cmd, run_in_netns  # noqa: E402,F401  (shared)

PREFIX = "kt7-"
KANOTIFY = str(Path(sys.executable).with_name("kanotify"))
ARP_SYSCTLS = {
    "net.ipv4.conf.all.arp_ignore": "1",
    "net.ipv4.conf.all.arp_announce": "2",
    "net.ipv4.conf.lo.arp_ignore": "1",
    "net.ipv4.conf.lo.arp_announce": "2",
}

SETTINGS = """\
[settings]
state_dir = "{state_dir}"
journal = "{tmp}/journal.jsonl"
hooks_dir = "{tmp}/hooks.d"
syslog = {syslog}
lock_timeout = {lock_timeout}
garp_count = 1
garp_interval = 0.05

[sysctl]
"net.ipv4.conf.all.arp_ignore" = 1
"net.ipv4.conf.all.arp_announce" = 2
"net.ipv4.conf.lo.arp_ignore" = 1
"net.ipv4.conf.lo.arp_announce" = 2
"""

#: the two-node setup of the spec: VIP on eth0 as MASTER, /32 on lo otherwise
TWO_NODE = """
[[instance]]
name = "VI_1"

  [[instance.vip]]
  address = "192.0.2.100/24"
  dev = "eth0"
  label = "eth0:0"
  states = ["master"]

  [[instance.vip]]
  address = "192.0.2.100/32"
  dev = "lo"
  label = "lo:0"
  states = ["backup", "fault"]
"""


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("tests/reliability need root (network namespaces, mounts, chown)")
    for tool in ("ip", "unshare", "mount"):
        if shutil.which(tool) is None:
            pytest.fail(f"tests/reliability need `{tool}`")
    if not os.path.exists(KANOTIFY):
        pytest.fail(f"no kanotify console script next to {sys.executable}: pip install -e . in this venv")


def make_namespace(name: str) -> None:
    """A namespace with lo up and eth0 <-> p0 (veth) up, eth0 = 192.0.2.1/24."""
    run_cmd(["ip", "netns", "add", name])
    ip = ["ip", "-n", name]
    run_cmd([*ip, "link", "add", "eth0", "type", "veth", "peer", "name", "p0"])
    # No DAD: link-local addresses would go from "tentative" to usable a second later
    # and make two `ip -j addr` snapshots differ for no reason.
    run_cmd(["ip", "netns", "exec", name, "sh", "-ec",
             "echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad; "
             "echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_dad; "
             "echo 0 > /proc/sys/net/ipv6/conf/p0/accept_dad"])
    for dev in ("lo", "eth0", "p0"):
        run_cmd([*ip, "link", "set", dev, "up"])
    run_cmd([*ip, "addr", "add", "192.0.2.1/24", "dev", "eth0"])


def delete_namespace(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


_PRELOADED = False


def preload_cli(config: str) -> None:
    """Import (and warm up) the CLI and the kernel backends once in the test process, so
    that the children forked by :meth:`Node.cli` start at once instead of importing
    typer, pyroute2 ... again."""
    global _PRELOADED
    if _PRELOADED:
        return
    import contextlib
    import io

    import pyroute2  # noqa: F401 - the address backend imports it when first used
    import kanotify.backends.address  # noqa: F401
    import kanotify.backends.sysctl  # noqa: F401
    import kanotify.backends.system  # noqa: F401
    import kanotify.engine  # noqa: F401
    import kanotify.status  # noqa: F401
    from kanotify.cli import run

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        run(["--config", config, "check"])  # read-only; imports what typer imports lazily
    _PRELOADED = True


def _cli_in_process(args: list[str]) -> tuple[int, str, str]:
    """Runs in the forked child: the real CLI, real backends, this namespace's kernel."""
    import contextlib
    import io

    from kanotify.cli import run

    sys.argv = ["kanotify", *args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(args)
    return code, out.getvalue(), err.getvalue()


def _read_sysctls(keys: Iterable[str]) -> dict[str, str]:
    result = {}
    for key in keys:
        with open("/proc/sys/" + key.replace(".", "/")) as fh:
            result[key] = fh.read().strip()
    return result


def _write_sysctls(values: dict[str, object]) -> None:
    for key, value in values.items():
        with open("/proc/sys/" + key.replace(".", "/"), "w") as fh:
            fh.write(f"{value}\n")


@dataclass
class Node:
    """One namespace with a kanotify config, state dir and journal in ``tmp``."""

    ns: str
    tmp: Path
    instances: str = TWO_NODE
    syslog: bool = False
    lock_timeout: float = 30
    state_subdir: str = "state"  # relative to tmp
    config: Path = field(init=False)

    def __post_init__(self) -> None:
        self.config = self.tmp / "kanotify.toml"
        self.write_config(self.instances)

    # ---------------------------------------------------------------- files

    def write_config(self, instances: str) -> None:
        self.instances = instances
        text = SETTINGS.format(
            tmp=self.tmp, state_dir=self.state_dir, syslog="true" if self.syslog else "false",
            lock_timeout=self.lock_timeout,
        ) + instances
        self.config.write_text(text)
        os.chmod(self.config, 0o644)

    @property
    def journal(self) -> Path:
        return self.tmp / "journal.jsonl"

    @property
    def state_dir(self) -> Path:
        return self.tmp / self.state_subdir

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    def journal_lines(self) -> list[bytes]:
        return self.journal.read_bytes().splitlines(keepends=True) if self.journal.exists() else []

    def all_records(self) -> list[dict[str, Any]]:
        """Every journal line parsed (``started`` records too): fails the test on any line that is not a
        whole JSON object."""
        records = []
        for number, raw in enumerate(self.journal_lines(), 1):
            assert raw.endswith(b"\n"), f"journal line {number} is not whole: {raw[:200]!r}"
            record = json.loads(raw)
            assert isinstance(record, dict), f"journal line {number} is not an object"
            records.append(record)
        return records

    def records(self) -> list[dict[str, Any]]:
        """The final record of each run (every line checked as :meth:`all_records` does)."""
        return [r for r in self.all_records() if r.get("record") != "started"]

    def recorded(self) -> dict[str, Any]:
        """state.json parsed (it must always parse)."""
        return json.loads(self.state_file.read_text())

    # ---------------------------------------------------------------- running kanotify

    def argv(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns, KANOTIFY, "--config", str(self.config), *args]

    def run(self, *args: str, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
        """The real console script in the namespace; waits for it."""
        return subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout, **kw)

    def popen(self, *args: str, **kw: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(*args), **kw)

    def cli(self, *args: str) -> tuple[int, str, str]:
        """The CLI in a forked child of the test process, inside the namespace (cheap)."""
        preload_cli(str(self.config))
        return run_in_netns(self.ns, _cli_in_process, ["--config", str(self.config), *args])

    # ---------------------------------------------------------------- the kernel

    def addr(self) -> list[dict[str, Any]]:
        """``ip -j addr`` of the namespace, minus lifetimes the kernel counts down."""
        data = json.loads(run_cmd(["ip", "-n", self.ns, "-j", "addr"]).stdout or "[]")
        for link in data:
            for info in link.get("addr_info", []):
                info.pop("valid_life_time", None)
                info.pop("preferred_life_time", None)
        return data

    def addresses(self) -> set[tuple[str, str, int, str]]:
        """``(dev, address, prefixlen, label)`` of every address in the namespace."""
        result = set()
        for link in self.addr():
            for info in link.get("addr_info", []):
                result.add((link["ifname"], info["local"], info["prefixlen"], info.get("label", "")))
        return result

    def sysctls(self, keys: Iterable[str] = ARP_SYSCTLS) -> dict[str, str]:
        return run_in_netns(self.ns, _read_sysctls, list(keys))

    def set_sysctls(self, values: dict[str, object]) -> None:
        run_in_netns(self.ns, _write_sysctls, values)


def processes_mentioning(text: str, exclude: Iterable[int] = ()) -> list[int]:
    """Pids of live processes whose command line contains ``text`` (our unique config path)."""
    needle = text.encode()
    skip = set(exclude) | {os.getpid()}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in skip:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            continue
        if needle in cmdline and not process_gone(int(entry)):
            found.append(int(entry))
    return found
