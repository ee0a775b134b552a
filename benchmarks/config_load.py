#!/usr/bin/env python3
"""Benchmark: loading a large config, validated from scratch vs from the cache in state_dir.

    .venv/bin/python benchmarks/config_load.py [--services 1000] [--reals 10] [--rounds 10]
    .venv/bin/python tests/uml.py .venv/bin/python benchmarks/config_load.py   # in a UML guest

Writes a config of ``services`` x ``reals`` objects (default 1000 x 10: 11,000
services and real servers) into a temporary directory, then measures, in the
same run:

* in this process: the fresh parse + validate (``load_config``; tomllib and the
  validation also apart) and the cached load (``load_config_cached`` after one
  load wrote the entry), each the median of ``--rounds``;
* in new processes, as a one-shot notification pays it: ``python -c pass``, a
  process that imports kanotify's config and loads the file fresh, and one that
  loads it from the cache;

and prints the ratios.  Needs nothing but a writable temp dir; no root.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout, when run as a script

from kanotify.config import cache as config_cache  # noqa: E402
from kanotify.config.schema import build_config, load_config  # noqa: E402


def write_config(directory: Path, services: int, reals: int) -> Path:
    """A config as an operator writes it: one table per service and per real server."""
    state = directory / "state"
    state.mkdir(mode=0o700)
    out = [
        f'[settings]\nstate_dir = "{state}"\njournal = "{directory}/journal.jsonl"\nsyslog = false\n\n'
        '[sysctl]\n"net.ipv4.conf.all.arp_ignore" = 1\n"net.ipv4.conf.all.arp_announce" = 2\n\n'
        '[[instance]]\nname = "VI_1"\n\n  [[instance.vip]]\n  address = "198.51.100.1/24"\n  dev = "eth0"\n'
    ]
    for i in range(services):
        port = 10000 + i
        out.append(f'\n  [[instance.service]]\n  protocol = "tcp"\n  address = "198.51.100.1"\n  port = {port}\n'
                   '  scheduler = "wrr"\n')
        for j in range(reals):
            out.append(f'\n    [[instance.service.real]]\n    address = "203.0.113.{j % 250 + 1}"\n'
                       f"    port = {port}\n    weight = {1 + j % 5}\n")
    path = directory / "kanotify.toml"
    path.write_text("".join(out))
    path.chmod(0o644)
    return path


def median_ms(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def process_ms(code: str, rounds: int) -> float:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: compiled modules are cached
    env["PYTHONPATH"] = str(ROOT)

    def once() -> None:
        subprocess.run([sys.executable, "-c", code], check=True, env=env)

    once()  # warm: page cache, __pycache__
    return median_ms(once, rounds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--reals", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = write_config(Path(tmp), args.services, args.reals)
        text = path.read_text()
        size = path.stat().st_size
        objects = args.services * (1 + args.reals)
        print(f"config: {args.services} services x {args.reals} real servers = {objects} objects, "
              f"{size / 1024:.0f} KiB, {text.count(chr(10))} lines")

        toml_ms = median_ms(lambda: tomllib.loads(text), args.rounds)
        data = tomllib.loads(text)
        validate_ms = median_ms(lambda: build_config(data, str(path)), args.rounds)
        fresh_ms = median_ms(lambda: load_config(str(path)), args.rounds)
        first = config_cache.load_config_cached(str(path))  # writes the entry
        entry = Path(first.settings.state_dir) / config_cache.CACHE_FILE
        assert entry.exists(), "no cache entry was written"
        entry_size = entry.stat().st_size
        cached_ms = median_ms(lambda: config_cache.load_config_cached(str(path)), args.rounds)
        assert config_cache.load_config_cached(str(path)) == load_config(str(path))

        pass_ms = process_ms("pass", args.rounds)
        fresh_proc = process_ms(f"from kanotify.config.schema import load_config; load_config({str(path)!r})", args.rounds)
        cached_proc = process_ms(
            f"from kanotify.config.cache import load_config_cached; load_config_cached({str(path)!r})", args.rounds
        )

    print(f"cache entry: {entry_size / 1024:.0f} KiB")
    print("in one process (median of %d):" % args.rounds)
    print(f"  fresh parse + validate   {fresh_ms:8.1f} ms  (tomllib {toml_ms:.1f} ms, validation {validate_ms:.1f} ms)")
    print(f"  cached load              {cached_ms:8.1f} ms")
    print(f"  fresh / cached           {fresh_ms / cached_ms:8.1f} x")
    print("new processes (median of %d, interpreter start-up included):" % args.rounds)
    print(f"  python -c pass           {pass_ms:8.1f} ms")
    print(f"  import + fresh load      {fresh_proc:8.1f} ms  ({fresh_proc - pass_ms:.1f} ms over python -c pass)")
    print(f"  import + cached load     {cached_proc:8.1f} ms  ({cached_proc - pass_ms:.1f} ms over python -c pass)")
    print(f"  fresh / cached           {fresh_proc / cached_proc:8.1f} x  "
          f"(over python -c pass: {(fresh_proc - pass_ms) / max(cached_proc - pass_ms, 0.001):.1f} x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
