"""The Debian package (issue 24), installed for real with apt on this machine, then purged.

In file order, on one install: what the package holds and with which modes; that the
version agrees everywhere; the end-to-end cluster with keepalived running ``/usr/bin/kanotify``
under ``enable_script_security``; the maintainer scripts' listener restart; then an
upgrade to a newer build (the edited conffile kept) and the purge (nothing left).

Needs root and apt (``scripts/setup``); ``scripts/build-deb`` installs the build's
packages.  It refuses to touch a kanotify package that it did not install itself.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from e2e_runner import run_cluster

import kanotify

pytestmark = pytest.mark.package

REPO = Path(__file__).resolve().parents[2]
BIN = Path("/usr/bin/kanotify")
VENV = Path("/usr/lib/kanotify")
CONFFILE = Path("/etc/kanotify/kanotify.toml")
UNITS = ("kanotify-listen.service", "kanotify-reconcile.service", "kanotify-reconcile.timer",
         "kanotify-anycast@.service")  # the instance no keepalived drives ([bgp], docs/bgp.md)
#: every path the package or kanotify itself creates: none may be left after the purge
LEFT_BEHIND = (BIN, VENV, Path("/etc/kanotify"), Path("/var/lib/kanotify"), Path("/run/kanotify"),
               Path("/usr/share/doc/kanotify"), Path("/usr/share/man/man1/kanotify.1.gz"),
               Path("/usr/share/man/man5/kanotify.toml.5.gz"),
               Path("/usr/share/bash-completion/completions/kanotify"),
               Path("/usr/lib/tmpfiles.d/kanotify.conf"),
               *(Path("/lib/systemd/system") / unit for unit in UNITS))
MAX_OUTAGE_S = 3.0


def sh(*argv: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def apt(*args: str) -> str:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # waits for another apt/dpkg run (a shared machine) instead of failing at once on its lock
    return sh("apt-get", "-y", "-q", "-o", "Dpkg::Use-Pty=0", "-o", "DPkg::Lock::Timeout=300", *args, env=env).stdout


def status() -> str:
    """dpkg's status of kanotify ("" when dpkg never heard of it or after a purge)."""
    proc = sh("dpkg-query", "-W", "-f=${Status}", "kanotify", check=False)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def deb_version(deb: Path) -> str:
    return sh("dpkg-deb", "-f", str(deb), "Version").stdout.strip()


def build(tmp: Path, *args: str) -> Path:
    out = sh(str(REPO / "scripts" / "build-deb"), "--out", str(tmp), *args).stdout
    return Path(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The package to test (``KANOTIFY_DEB``, else built now) and a newer build of it for the upgrade."""
    if os.geteuid() != 0:
        pytest.fail("the package tests install with apt-get: run them as root (scripts/test)")
    tmp = tmp_path_factory.mktemp("debs")
    given = os.environ.get("KANOTIFY_DEB")
    base = Path(given).resolve() if given else build(tmp)
    assert base.is_file(), f"KANOTIFY_DEB={given}: no such file"
    newer = build(tmp, "--version", deb_version(base) + "+upgrade1", "--no-lintian")
    return {"base": base, "newer": newer}


@pytest.fixture(scope="module")
def installed(debs: dict[str, Path]) -> Iterator[dict[str, Path]]:
    # One package-test run at a time on a machine (another checkout's would purge ours): wait for it.
    with open("/run/lock/kanotify-package-tests.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        before = status()
        if before and "not-installed" not in before and "config-files" not in before:
            pytest.fail(f"a kanotify package is already installed here ({before}): the package tests install, "
                        "upgrade and purge it; purge it first (apt-get purge kanotify) if it is yours to remove")
        apt("install", str(debs["base"]))
        try:
            yield debs
        finally:
            if status():
                apt("purge", "kanotify")


def test_the_package_holds_the_launcher_the_conffile_units_pages_and_examples(installed: dict[str, Path]) -> None:
    listing = sh("dpkg-deb", "-c", str(installed["base"])).stdout
    print(listing)
    # /usr/bin/kanotify is the POSIX-sh launcher itself (through a link), not a console-script wrapper
    assert BIN.is_symlink() and Path(os.path.realpath(BIN)) == VENV / "bin" / "kanotify"
    assert Path(os.path.realpath(BIN)).read_bytes() == (REPO / "bin" / "kanotify").read_bytes()
    assert os.path.realpath(VENV / "bin" / "python3").startswith("/usr/bin/python3")
    # the conffile: root's, 0600, a dpkg conffile, and an example that passes `kanotify check`
    st = CONFFILE.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o600)
    assert sh("dpkg-query", "-W", "-f=${Conffiles}", "kanotify").stdout.split()[0] == str(CONFFILE)
    assert "OK (1 instance(s)" in sh(str(BIN), "check").stdout
    for path, mode in ((Path("/var/lib/kanotify"), 0o700), (Path("/run/kanotify"), 0o700),
                       (Path("/etc/kanotify"), 0o755), (Path("/etc/kanotify/hooks.d"), 0o755)):
        assert path.is_dir() and (path.stat().st_mode & 0o7777, path.stat().st_uid) == (mode, 0), path
    # the units: installed with the package's path, never enabled behind the operator's back
    for unit in UNITS:
        text = (Path("/lib/systemd/system") / unit).read_text()
        assert "/usr/local/bin" not in text, unit
    assert "ExecStart=/usr/bin/kanotify --config /etc/kanotify/kanotify.toml listen" in \
        Path("/lib/systemd/system/kanotify-listen.service").read_text()
    assert "ExecStop=/usr/bin/kanotify --config /etc/kanotify/kanotify.toml stop %i" in \
        Path("/lib/systemd/system/kanotify-anycast@.service").read_text()
    wants = [p for p in Path("/etc/systemd/system").rglob("kanotify*")] if Path("/etc/systemd/system").exists() else []
    assert wants == [], wants
    # the keepalived.service drop-in: an example, not in /etc/systemd
    drop_in = Path("/usr/share/doc/kanotify/examples/keepalived.service.d/kanotify-stop.conf").read_text()
    assert "ExecStopPost=/usr/bin/kanotify --config /etc/kanotify/kanotify.toml reconcile --state stop" in drop_in
    assert not Path("/etc/systemd/system/keepalived.service.d/kanotify-stop.conf").exists()
    # generated man pages, the completion, the example hook plugins
    for page in ("kanotify", "kanotify.toml"):
        assert sh("man", "-w", page).stdout.strip().startswith("/usr/share/man/")
    assert "complete -F _kanotify kanotify" in Path("/usr/share/bash-completion/completions/kanotify").read_text()
    hooks = sorted(p.name for p in Path("/usr/share/doc/kanotify/examples/hooks").iterdir())
    assert hooks == sorted(p.name for p in (REPO / "hooks").glob("*.py") if not p.name.startswith("test_"))
    # no byte code shipped (the postinst compiles it), so none is left behind by the purge either
    assert "__pycache__" not in listing and ".pyc" not in listing
    assert list(VENV.rglob("kanotify/__pycache__/__main__.cpython-*.pyc")), "the postinst compiled nothing"


def test_the_version_agrees_everywhere(installed: dict[str, Path]) -> None:
    """dpkg's, ``--version``'s, ``status --json``'s and the metrics' build info: the code's __version__."""
    version = deb_version(installed["base"])
    assert version == kanotify.__version__
    assert sh(str(BIN), "--version").stdout.strip() == f"kanotify {version}"
    assert sh("dpkg-query", "-W", "-f=${Version}", "kanotify").stdout == version
    assert f'"version": "{version}"' in sh(str(BIN), "--json", "status").stdout
    assert f'kanotify_build_info{{version="{version}"}} 1.0' in sh(str(BIN), "metrics").stdout


def test_bash_completion_of_the_installed_script(installed: dict[str, Path]) -> None:
    script = "/usr/share/bash-completion/completions/kanotify"
    out = sh("bash", "-c", f'source {script}; COMP_WORDS=(kanotify rec); COMP_CWORD=1; _kanotify; '
                           'echo "${COMPREPLY[*]}"; COMP_WORDS=(kanotify plan --state b); COMP_CWORD=3; _kanotify; '
                           'echo "${COMPREPLY[*]}"').stdout.splitlines()
    assert out == ["reconcile", "backup"]


def test_e2e_cluster_with_keepalived_calling_usr_bin_kanotify(
    installed: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The dedicated-directors cluster (tests/e2e) with the package's /usr/bin/kanotify in keepalived's
    notify lines, under enable_script_security: the STOP endings prove the launcher's detach from /usr/bin."""
    for tool in ("keepalived", "ipvsadm", "linux"):
        assert shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin"), f"missing {tool}: run scripts/setup"
    result, guest = run_cluster("dedicated", extra_args=["--mode", "notify"], env={"KANOTIFY_E2E_BIN": str(BIN)})
    with capsys.disabled():
        print(f"\n----- e2e dedicated with {BIN}: guest {guest.seconds:.0f}s -----\n{result['log']}\n")
    assert f"kanotify: {BIN} ({VENV / 'bin' / 'kanotify'})" in result["log"]
    failed = [f"[{c['scenario']}] {c['check']}: {c['detail']}" for c in result["checks"] if not c["ok"]]
    assert result["error"] is None, result["error"]
    assert not failed, "failed checks:\n" + "\n".join(failed)
    assert {"1", "2", "3", "4", "6"} <= {c["scenario"].split(".")[0] for c in result["checks"]}
    numbers: dict[str, Any] = result["numbers"]
    assert numbers["steady"]["failed"] == 0
    for key in ("failover", "failback", "stop"):
        assert numbers[key]["gap_s"] <= MAX_OUTAGE_S, (key, numbers[key])
    for how in ("stop", "kill_parent", "kill_all"):
        assert numbers[how]["vip_removed_exact"] is not None and numbers[how]["stop_run_done"] is not None, how


def _run_postinst(tmp: Path, *args: str) -> list[str]:
    """The installed postinst as on a machine whose PID 1 is systemd (this one's is not): in a private
    mount namespace with a tmpfs over /run holding /run/systemd/system, and deb-systemd-invoke,
    deb-systemd-helper, systemctl and systemd-tmpfiles recording their calls.  Nothing outside the
    namespace sees the directory."""
    fake = tmp / "fakebin"
    fake.mkdir(exist_ok=True)
    log = tmp / "calls"
    log.write_text("")
    for tool in ("deb-systemd-invoke", "deb-systemd-helper", "systemctl", "systemd-tmpfiles"):
        # deb-systemd-helper was-enabled: "no", as for a unit the operator never enabled
        (fake / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\ncase "$*" in *was-enabled*) exit 1;; esac\n')
        (fake / tool).chmod(0o755)
    script = ("mount -t tmpfs kanotify-test /run && mkdir -p /run/systemd/system && "
              f'PATH={fake}:$PATH exec /var/lib/dpkg/info/kanotify.postinst "$@"')
    sh("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "postinst", *args)
    return log.read_text().splitlines()


def test_the_postinst_restarts_a_running_listener_on_upgrade_and_starts_nothing_on_install(
    installed: dict[str, Path], tmp_path: Path
) -> None:
    upgrade = _run_postinst(tmp_path, "configure", "0.0.1")
    assert [c for c in upgrade if c.startswith("deb-systemd-invoke")] == [
        "deb-systemd-invoke try-restart kanotify-listen.service"], upgrade
    fresh = _run_postinst(tmp_path, "configure")
    assert not [c for c in fresh if c.startswith("deb-systemd-invoke")], fresh  # nothing started
    # enabled only where the operator had enabled it (deb-systemd-helper's was-enabled answers "no" here)
    assert not [c for c in fresh + upgrade if c.startswith("deb-systemd-helper enable")], fresh


def test_upgrade_keeps_the_edited_conffile_then_purge_leaves_nothing(installed: dict[str, Path]) -> None:
    edited = CONFFILE.read_text().replace('address = "192.0.2.100/24"', 'address = "192.0.2.101/24"')
    CONFFILE.write_text(edited)
    journal = Path("/var/lib/kanotify/journal.jsonl")  # what kanotify writes at run time (not the package)
    journal.write_text('{"kind": "test"}\n')

    apt("install", str(installed["newer"]))
    newer = deb_version(installed["newer"])
    assert sh(str(BIN), "--version").stdout.strip() == f"kanotify {newer}"
    assert CONFFILE.read_text() == edited and (CONFFILE.stat().st_mode & 0o7777) == 0o600
    assert not list(Path("/etc/kanotify").glob("*.dpkg-*")), "dpkg asked about an unchanged conffile"
    assert journal.exists(), "the upgrade lost the journal"
    assert "OK (1 instance(s)" in sh(str(BIN), "check").stdout

    apt("purge", "kanotify")
    assert status() == ""
    left = [str(p) for p in LEFT_BEHIND if p.exists() or p.is_symlink()]
    assert left == [], f"left after the purge: {left}"
