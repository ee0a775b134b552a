"""The Debian package's tests: build (or take) the .deb, install it with apt, upgrade it, purge it.

``KANOTIFY_DEB`` names a .deb built already (``.ci/run`` builds it first and times the build);
without it the module builds one with ``scripts/build-deb``.  Never skipped: a machine that
cannot build or install the package fails here, with the build's or apt's own message.
"""

from __future__ import annotations

import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent
for path in (TESTS_DIR / "e2e", TESTS_DIR):  # "import e2e_runner", "import uml" (tests/ is not a package)
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
