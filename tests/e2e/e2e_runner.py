"""Host side of the end-to-end cluster: boot a UML guest that runs ``cluster.py run``.

Used by ``test_cluster.py`` and by ``scripts/demo``::

    python tests/e2e/e2e_runner.py [dedicated|two-node|all]
    python tests/e2e/e2e_runner.py sync [--without-sync-daemon]     # issue 13: a connection through failovers
    python tests/e2e/e2e_runner.py bgp [--connections N]            # issue 23: directors behind BGP/ECMP

streams the guest's log while it runs (the guest appends it to a file on the
host filesystem, which UML shares) and exits non-zero when a check failed.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

E2E_DIR = Path(__file__).resolve().parent
TESTS_DIR = E2E_DIR.parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))  # "import uml" (tests/ is not a package)

from uml import GuestResult, run_in_guest  # noqa: E402

TOPOLOGIES = ("dedicated", "two-node")
#: run by name only (not part of "all"): the held-connection scenarios of the sync daemon
OTHER_TOPOLOGIES = ("sync", "bgp")
CLUSTER = E2E_DIR / "cluster.py"
#: issue 23: directors behind a BGP/ECMP router (its own driver: no keepalived, no topology option)
BGP_CLUSTER = E2E_DIR / "bgp_cluster.py"


def run_cluster(
    topology: str, *, stream: Callable[[str], None] | None = None, timeout: float = 420.0,
    extra_args: Sequence[str] = (), env: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], GuestResult]:
    """Run one topology in a fresh guest; returns (the driver's JSON result, the guest result).

    Raises ``uml.GuestError`` when the guest never finished, ``RuntimeError``
    when the driver wrote no result (its output is in the message).
    """
    logdir = Path(tempfile.mkdtemp(prefix="kanotify-e2e-log-"))
    logfile = logdir / "cluster.log"
    logfile.touch()
    done = threading.Event()
    follower = None
    if stream is not None:
        follower = threading.Thread(target=_follow, args=(logfile, stream, done), daemon=True)
        follower.start()
    try:
        script, option = (BGP_CLUSTER, "") if topology == "bgp" else (CLUSTER, f"--topology {topology} ")
        argv = [
            "/bin/sh", "-c",
            f'exec {sys.executable} {script} run {option}--log {logfile} '
            f'--result "$KANOTIFY_GUEST_DIR/e2e-result.json" ' + " ".join(extra_args),
        ]
        guest = run_in_guest(argv, timeout=timeout, keep=True, env=env)
        try:
            path = guest.job_dir / "e2e-result.json"
            if not path.exists():
                raise RuntimeError(
                    f"cluster.py wrote no result (guest exit {guest.returncode}).\n--- output ---\n{guest.output[-6000:]}"
                )
            result = json.loads(path.read_text())
        finally:
            shutil.rmtree(guest.job_dir, ignore_errors=True)
        return result, guest
    finally:
        done.set()
        if follower is not None:
            follower.join(timeout=5)
        shutil.rmtree(logdir, ignore_errors=True)


def _follow(path: Path, stream: Callable[[str], None], done: threading.Event) -> None:
    with open(path, errors="replace") as fh:
        pending = ""
        while True:
            chunk = fh.read()
            if chunk:
                pending += chunk
                *lines, pending = pending.split("\n")
                for line in lines:
                    stream(line)
            elif done.is_set():
                if pending:
                    stream(pending)
                return
            else:
                time.sleep(0.2)


def main(argv: list[str]) -> int:
    which = argv[0] if argv else "all"
    extra = tuple(argv[1:])
    topologies = TOPOLOGIES if which == "all" else (which,)
    if any(t not in TOPOLOGIES + OTHER_TOPOLOGIES for t in topologies):
        print(f"usage: e2e_runner.py [{'|'.join(TOPOLOGIES + OTHER_TOPOLOGIES)}|all] [cluster.py run options]",
              file=sys.stderr)
        return 2
    failed = []
    started = time.monotonic()
    for topology in topologies:
        print(f"\n##### {topology}: booting a user-mode Linux guest (kernel with IPVS) ...", flush=True)
        result, guest = run_cluster(topology, stream=lambda line: print(line, flush=True), extra_args=extra)
        print(f"##### {topology}: {'PASS' if result['ok'] else 'FAIL'} "
              f"(guest {guest.seconds:.0f}s, cluster {result['seconds']:.0f}s)", flush=True)
        if not result["ok"]:
            failed.append(topology)
            if result.get("error"):
                print(result["error"])
    print(f"\nall done in {time.monotonic() - started:.0f}s" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
