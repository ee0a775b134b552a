"""Run the real-kernel IPVS tests (``tests/kernel/guest/``) inside ONE user-mode Linux guest.

The host kernel has no IPVS; the UML kernel does.  The guest runs pytest on
the same checkout with the same virtualenv and this test passes exactly when
the guest's pytest passes.  The guest's whole pytest output is printed, so the
real failures show in CI's log.  A missing UML kernel is a failure, not a skip:
CI installs it (``.ci/run``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from uml import GuestError, pytest_in_guest

GUEST_TESTS = Path(__file__).resolve().parent / "guest"


@pytest.mark.uml
def test_ipvs_in_a_real_kernel() -> None:
    try:
        result = pytest_in_guest([str(GUEST_TESTS)], extra_args=["-ra"], timeout=900)
    except GuestError as exc:
        pytest.fail(f"the UML guest did not run the IPVS tests:\n{exc}", pytrace=False)
    sys.stdout.write(f"\n----- guest pytest output ({result.seconds:.1f}s boot-run-poweroff) -----\n")
    sys.stdout.write(result.output)
    sys.stdout.write("----- end of guest output -----\n")
    if result.returncode != 0:
        tail = "\n".join(result.output.splitlines()[-80:])
        pytest.fail(
            f"guest pytest exited {result.returncode}\n"
            f"--- module loading ---\n{result.init_log}\n--- guest pytest (tail) ---\n{tail}",
            pytrace=False,
        )
