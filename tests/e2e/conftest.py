"""End-to-end tests: a keepalived + IPVS cluster inside a user-mode Linux guest.

``cluster.py`` (the guest-side driver) and ``e2e_runner.py`` (the host-side runner)
are not test modules; only ``test_cluster.py`` is collected.
"""

from __future__ import annotations

import sys
from pathlib import Path

E2E_DIR = Path(__file__).resolve().parent
for path in (E2E_DIR, E2E_DIR.parent):  # "import e2e_runner", "import uml" (tests/ is not a package)
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

collect_ignore = ["cluster.py", "e2e_runner.py", "bgp_cluster.py"]
