"""Run a benchmark inside a user-mode Linux guest (a kernel with IPVS).

    python benchmarks/run_in_uml.py [ipvs_sync.py options...]
    python benchmarks/run_in_uml.py --script scale.py [scale.py options...]

Uses the test harness ``tests/uml.py``: same checkout, same virtualenv, a fresh
kernel whose IPVS table the benchmark may flush freely.  Also reports the
guest's boot-run-poweroff time.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from uml import GuestError, run_in_guest  # noqa: E402


def run_script(argv: list[str], *, timeout: float = 3600, mem: str = "2G", kernel_args: tuple[str, ...] = ()) -> int:
    """Run ``argv`` in a fresh guest, print its output and the guest's boot-run-poweroff time; its exit status."""
    try:
        result = run_in_guest(argv, timeout=timeout, mem=mem, kernel_args=kernel_args)
    except GuestError as exc:
        print(exc, file=sys.stderr)
        return 1
    sys.stdout.write(result.output)
    print(f"[UML guest: exit {result.returncode}, boot-run-poweroff {result.seconds:.1f} s]")
    return result.returncode


def main() -> int:
    args = sys.argv[1:]
    script = "ipvs_sync.py"
    if args[:1] == ["--script"] and len(args) > 1:
        script, args = args[1], args[2:]
    argv = [sys.executable, str(ROOT / "benchmarks" / script), *args]
    return run_script(argv)


if __name__ == "__main__":
    sys.exit(main())
