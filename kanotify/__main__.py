"""Entry point: ``kanotify`` and ``python -m kanotify``."""

from __future__ import annotations

import sys


def main() -> None:
    from .cli import run

    sys.exit(run())


if __name__ == "__main__":
    main()
