"""The package and the example plugins type-check (style: "type everything"); mypy runs in the suite.

The configuration is pyproject.toml's ``[tool.mypy]``: untyped definitions are
errors in the package, unused ``type: ignore`` comments too, and the plugins in
hooks/ must do without ``Any`` (they use :mod:`kanotify.plugin` alone).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_finds_no_errors_in_the_package() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
