"""IPVS tests against a real kernel.

On the host, only the codec tests and ``test_ipvs_in_uml.py`` are collected:
the latter boots ONE user-mode Linux guest (see ``tests/uml.py``) that runs
``tests/kernel/guest/`` with real IPVS and reports the guest's pytest result
as its own.  The guest tests are collected only inside that guest
(``KANOTIFY_IN_GUEST=1``): on the host they would talk to a kernel without IPVS.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[1]
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))  # for "import uml" (tests/ is not a package)

IN_GUEST = os.environ.get("KANOTIFY_IN_GUEST") == "1"

collect_ignore = [] if IN_GUEST else ["guest"]
collect_ignore_glob = [] if IN_GUEST else ["guest/*"]
