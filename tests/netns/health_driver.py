"""Run :class:`kanotify.daemon.health.Health` on its own, for the netns health-check tests.

``python health_driver.py CONFIG`` (under ``ip netns exec A``: the director) checks
the real servers of CONFIG on an asyncio loop, with ``health.json`` in the config's
``state_dir``, and prints one JSON line per event on stdout, ``t`` being
``time.monotonic()`` (one clock for every namespace, so the test compares it with
its own and its servers' times):

- ``configured`` (with ``targets``) after ``configure()``,
- ``change`` for every :class:`~kanotify.daemon.health.Change` (``real``, ``service``, ``up``, ``why``),
- ``snapshot`` (``reals``: :meth:`Health.snapshot`) when asked.

Commands on stdin, one a line: ``snapshot``; ``reload PATH`` (``configure()`` with the
config in PATH); ``stop`` (``Health.stop()``, then the loop ends as ``asyncio.run`` ends
the listener's: tasks still running are cancelled).  End of input is ``stop`` too.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from kanotify.config.schema import load_config
from kanotify.daemon.health import Change, Health
from kanotify.model import format_hostport


def say(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"t": time.monotonic(), "event": event, **fields}) + "\n")
    sys.stdout.flush()


def on_change(changes: list[Change]) -> None:
    for change in changes:
        service, real = change.key
        say("change", service=str(service), real=format_hostport(*real), up=change.up, why=change.why)


async def main(config_path: str) -> None:
    loop = asyncio.get_running_loop()
    config = load_config(config_path)
    health = Health(loop, on_change, config.settings.state_dir)
    health.configure(config)
    say("configured", targets=len(health.targets))
    done = asyncio.Event()
    pending = b""

    def on_input() -> None:
        nonlocal pending
        data = os.read(sys.stdin.fileno(), 65536)
        if not data:
            done.set()
            return
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            words = line.decode().split(maxsplit=1)
            if not words:
                continue
            if words[0] == "snapshot":
                say("snapshot", reals=health.snapshot())
            elif words[0] == "reload":
                health.configure(load_config(words[1]))
                say("configured", targets=len(health.targets))
            elif words[0] == "stop":
                done.set()

    loop.add_reader(sys.stdin.fileno(), on_input)
    await done.wait()
    loop.remove_reader(sys.stdin.fileno())
    health.stop()
    say("stopped")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
