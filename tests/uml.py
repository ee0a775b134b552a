"""Run a command inside a user-mode Linux guest that has IPVS: a real kernel for tests.

The host kernel of CI and of these machines has no IPVS; Debian's
``user-mode-linux`` kernel does, as modules.  It runs as an ordinary process
and uses the host's own filesystem as its root (hostfs), so the guest sees the
same Python, virtualenv and checkout -- no image to build::

    from tests.uml import run_in_guest

    result = run_in_guest([sys.executable, "-c", "print('hello')"])
    assert result.returncode == 0, result.output

The guest runs ``tests/guest-init.sh`` as PID 1: it mounts proc/sys/tmpfs,
loads the modules asked for, runs the command, writes its output and exit code
into a fresh job directory on the host, and powers off.  The console (kernel
log) is kept only for diagnosis: when the guest never writes a result,
:class:`GuestError` carries its tail.

Reusable by any test that needs a real kernel: pass ``env``, ``cwd``,
``modules`` and ``timeout``.  Everything the guest writes outside its tmpfs
mounts (``/run``, ``/dev/shm``, ``/lib/modules``) lands on the host: keep
writes inside ``result.job_dir`` (``$KANOTIFY_GUEST_DIR`` in the guest).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
GUEST_INIT = TESTS_DIR / "guest-init.sh"

#: What IPVS tests need: ip_vs with every scheduler this kernel ships, plus veth, bridge and dummy ([bgp]).
IPVS_MODULES: tuple[str, ...] = (
    "ip_vs",
    "ip_vs_rr", "ip_vs_wrr", "ip_vs_lc", "ip_vs_wlc", "ip_vs_lblc", "ip_vs_lblcr",
    "ip_vs_dh", "ip_vs_sh", "ip_vs_sed", "ip_vs_nq", "ip_vs_fo", "ip_vs_ovf", "ip_vs_mh",
    "veth", "bridge", "dummy",
)

#: Environment variables passed from the host to the guest command unless overridden.
_PASSED_ENV = ("LANG", "LC_ALL", "TERM", "PYTHONHASHSEED")


class GuestError(RuntimeError):
    """The guest did not produce a result (missing UML, crash, timeout)."""


@dataclass(frozen=True)
class GuestResult:
    """What a guest run produced.

    ``returncode``/``output`` are the guest command's; ``console`` is the
    kernel console (boot log), ``init_log`` the module loading log.
    ``seconds`` is the whole boot-run-poweroff wall time.
    """

    returncode: int
    output: str
    console: str
    init_log: str
    seconds: float
    job_dir: Path


#: Where ``scripts/uml-kernel`` unpacks a kernel that boots on hosts Debian 12's cannot (AMX CPUs).
LOCAL_UML = REPO_ROOT / ".uml"


def find_uml() -> tuple[str, Path]:
    """The UML kernel binary and its modules directory (``<dir>/<version>/``); fail loudly if missing.

    ``.uml/linux`` (from ``scripts/uml-kernel``) comes first, then Debian's ``/usr/bin/linux``.  CI
    installs both itself (``scripts/setup``); a missing kernel is a broken test environment, never a
    reason to skip.
    """
    local = LOCAL_UML / "linux"
    if os.access(local, os.X_OK) and (LOCAL_UML / "modules").is_dir():
        return str(local), (LOCAL_UML / "modules").resolve()
    if LOCAL_UML.is_symlink() or LOCAL_UML.exists():  # there, but unusable: say so, do not fall back quietly
        raise GuestError(f"{LOCAL_UML} is there but holds no usable kernel (a symlink? half built?): "
                         "remove it and run scripts/uml-kernel")
    kernel = shutil.which("linux") or shutil.which("linux", path="/usr/bin:/usr/local/bin")
    if kernel is None:
        raise GuestError(
            "user-mode Linux kernel not found (.uml/linux or 'linux' on PATH): run scripts/setup "
            "(apt-get install -y user-mode-linux kmod ipvsadm iproute2; scripts/uml-kernel)"
        )
    modules_root = Path("/usr/lib/uml/modules")
    versions = sorted(p for p in modules_root.glob("*") if p.is_dir()) if modules_root.is_dir() else []
    if not versions:
        raise GuestError(f"no UML kernel modules under {modules_root}: reinstall user-mode-linux")
    return kernel, modules_root


def _prepare_host() -> None:
    """The guest mounts a tmpfs on /lib/modules: the directory must exist on the host."""
    modules = Path("/lib/modules")
    if not modules.exists():
        try:
            modules.mkdir(mode=0o755)
        except OSError as exc:
            raise GuestError(f"cannot create {modules} (needed as a UML mount point): {exc}") from exc
    if not os.access(GUEST_INIT, os.X_OK):
        raise GuestError(f"{GUEST_INIT} is not executable (git mode 755 expected)")


def _job_script(argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> str:
    lines = ["#!/bin/sh", "# written by tests/uml.py: the command the guest runs"]
    lines.append(f"cd {shlex.quote(str(cwd))} || exit 125")
    for key, value in env.items():
        lines.append(f"export {key}={shlex.quote(value)}")
    lines.append("exec " + " ".join(shlex.quote(a) for a in argv))
    return "\n".join(lines) + "\n"


def guest_env(extra: Mapping[str, str] | None = None, job_dir: Path | None = None) -> dict[str, str]:
    """The environment of the guest command: venv first on PATH, private TMPDIR."""
    venv_bin = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "PYTHONUNBUFFERED": "1",
        "KANOTIFY_IN_GUEST": "1",
    }
    for key in _PASSED_ENV:
        if key in os.environ:
            env[key] = os.environ[key]
    if job_dir is not None:
        # The guest's /tmp *is* the host's /tmp (hostfs): never share it.
        env["TMPDIR"] = str(job_dir / "tmp")
        env["KANOTIFY_GUEST_DIR"] = str(job_dir)
    env.update(extra or {})
    return env


def run_in_guest(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 300.0,
    mem: str = "768M",
    modules: Sequence[str] = IPVS_MODULES,
    keep: bool = False,
    kernel_args: Sequence[str] = (),
) -> GuestResult:
    """Boot a UML guest, run ``argv`` in it, power it off; return its exit code and output.

    ``argv`` runs with ``cwd`` (default: the repository root) and
    :func:`guest_env` plus ``env``.  The job directory is removed afterwards
    unless ``keep``.  ``kernel_args`` go on the kernel command line (e.g.
    ``seccomp=on``: syscalls of the guest's processes caught by a seccomp
    filter instead of ptrace, about half the cost per syscall).  Raises :class:`GuestError` with the console tail when the
    guest never wrote an exit code (the ``linux`` process's own exit code says
    nothing about the guest command).
    """
    kernel, modules_dir = find_uml()
    _prepare_host()
    job_dir = Path(tempfile.mkdtemp(prefix="kanotify-uml-"))
    os.chmod(job_dir, 0o755)
    (job_dir / "tmp").mkdir()
    umid = f"kanotify-{uuid.uuid4().hex[:12]}"
    full_env = guest_env(env, job_dir)
    (job_dir / "run.sh").write_text(_job_script(argv, full_env, Path(cwd or REPO_ROOT)))
    (job_dir / "modules").write_text("".join(m + "\n" for m in modules))
    console_path = job_dir / "console.log"
    cmdline = [
        kernel,
        f"mem={mem}",
        "rootfstype=hostfs",
        "rootflags=/",
        "rw",
        f"init={GUEST_INIT}",
        f"umid={umid}",
        f"uml_dir={job_dir}",
        "con=null",
        "con0=fd:0,fd:1",
        f"KANOTIFY_GUEST_DIR={job_dir}",
        f"KANOTIFY_UML_MODULES={modules_dir}",
        *kernel_args,
    ]
    started = time.monotonic()
    with open(console_path, "wb") as console, open(os.devnull, "rb") as devnull:
        # Own session: every helper process UML forks is in this process group,
        # so cleanup kills exactly what this call started and nothing else.
        proc = subprocess.Popen(
            cmdline,
            stdin=devnull,
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TMPDIR": str(job_dir)},
        )
        try:
            timed_out = not _wait_unreaped(proc.pid, timeout)
        finally:
            _kill_group(proc)
    seconds = time.monotonic() - started
    try:
        rc_file = job_dir / "rc"
        console_text = _read(console_path)
        if not rc_file.exists():
            why = f"timed out after {timeout:g}s" if timed_out else f"exited with {proc.returncode}"
            hint = ("\nThis UML kernel cannot run on this CPU (AMX): run scripts/uml-kernel for one that does.\n"
                    if "ptrace set fp regs failed" in console_text else "")
            raise GuestError(
                f"UML guest {why} without writing an exit code.{hint}\n"
                f"--- init log ---\n{_read(job_dir / 'init.log')}\n"
                f"--- command output (tail) ---\n{_tail(_read(job_dir / 'output'), 60)}\n"
                f"--- console (tail) ---\n{_tail(console_text, 60)}"
            )
        return GuestResult(
            returncode=int(rc_file.read_text().strip()),
            output=_read(job_dir / "output"),
            console=console_text,
            init_log=_read(job_dir / "init.log"),
            seconds=seconds,
            job_dir=job_dir,
        )
    finally:
        if not keep:
            shutil.rmtree(job_dir, ignore_errors=True)


def _wait_unreaped(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` exits, WITHOUT reaping it; False on timeout.

    While our child is an unreaped zombie its pid -- the id of the process
    group of UML's helpers -- cannot be reused, so :func:`_kill_group` can
    never hit an unrelated group.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        time.sleep(0.05)
    return False


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the process group of the ``linux`` process we started (its pid is the pgid), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:  # pragma: no cover - a zombie UML: report, do not hang
        raise GuestError(f"UML process {proc.pid} did not die after SIGKILL") from None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def pytest_in_guest(
    paths: Sequence[str], *, extra_args: Sequence[str] = (), timeout: float = 600.0,
    env: Mapping[str, str] | None = None,
) -> GuestResult:
    """Run ``python -m pytest PATHS`` in a guest without cache writes to the checkout.

    pytest's temporary directories land under the guest's private ``TMPDIR``
    (inside the job directory), never in the host's shared ``/tmp/pytest-of-root``.
    """
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *paths, *extra_args]
    return run_in_guest(argv, env=env, timeout=timeout)


if __name__ == "__main__":  # manual use: python tests/uml.py CMD ARGS...
    res = run_in_guest(sys.argv[1:] or ["uname", "-a"])
    sys.stdout.write(res.output)
    print(f"[guest exit {res.returncode}, {res.seconds:.1f}s]", file=sys.stderr)
    sys.exit(res.returncode)
