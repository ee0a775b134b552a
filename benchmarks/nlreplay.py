#!/usr/bin/env python3
"""Profile a big kanotify run natively on the real kernel's answers: record them in a guest, replay them here.

    sudo .venv/bin/python benchmarks/run_in_uml.py --script nlreplay.py record /tmp/rec   # in a UML guest
    .venv/bin/python benchmarks/nlreplay.py replay /tmp/rec master [--profile out.prof]  # natively
    .venv/bin/python benchmarks/nlreplay.py replay /tmp/rec reconcile

``record`` (root, a kernel with IPVS: it flushes the IPVS table) runs
``kanotify master`` of 1000 services x 10 real servers from an empty table
and then a no-op ``kanotify reconcile``, and saves every buffer the kernel
answered on each netlink socket, in order.  ``replay`` runs the same command
in this process against those buffers (nothing is sent anywhere; the
sequence numbers match because the run asks the same questions in the same
order), so its Python work -- decode, plan, journal -- can be timed and
profiled where the profiler's clock is cheap (in the guest every clock read
is a host round trip).  Replay ``master`` first: it saves the state the
reconcile converges to (and, the first time, the config cache).  Code that
asks other questions than the recorded run did fails: record again.
"""

from __future__ import annotations

import argparse
import atexit
import cProfile
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import kanotify.backends.netlink.nlsock as nlsock  # noqa: E402


class _Recording:
    """A netlink socket that keeps a copy of everything received on it."""

    def __init__(self, real: Any, log: list[bytes]) -> None:
        self.real, self.log = real, log

    def recvmsg(self, size: int) -> Any:
        answer = self.real.recvmsg(size)
        self.log.append(answer[0])
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class _Replaying:
    """Answers every receive with the next recorded buffer; sends go nowhere."""

    def __init__(self, log: list[bytes]) -> None:
        self.log, self.next = log, 0

    def recvmsg(self, size: int) -> tuple[bytes, list[Any], int, None]:
        if self.next >= len(self.log):
            raise SystemExit("the replayed run asked more than the recorded one: record again")
        self.next += 1
        return self.log[self.next - 1], [], 0, None

    def recv(self, size: int) -> bytes:
        raise BlockingIOError

    def send(self, data: bytes) -> int:
        return len(data)

    def setsockopt(self, *args: Any) -> None:
        pass

    def bind(self, *args: Any) -> None:
        pass

    def setblocking(self, flag: bool) -> None:
        pass

    def close(self) -> None:
        pass


def _child_record(out: str) -> None:
    """In the kanotify process: record every netlink socket's answers into ``out`` at exit."""
    streams: list[list[bytes]] = []
    opened = nlsock._open_socket

    def recording(*args: Any) -> Any:
        streams.append([])
        return _Recording(opened(*args), streams[-1])

    nlsock._open_socket = recording  # type: ignore[assignment]
    atexit.register(lambda: Path(out).write_bytes(pickle.dumps(streams)))


def _child_replay(path: str) -> None:
    streams = iter(pickle.loads(Path(path).read_bytes()))
    nlsock._open_socket = lambda *args: _Replaying(next(streams))  # type: ignore[assignment]


def record(directory: Path) -> int:
    import scale

    directory.mkdir(parents=True, exist_ok=True)
    work = directory / "work"
    (work / "state").mkdir(parents=True, mode=0o700, exist_ok=True)
    conf = scale.write_config(work, "kanotify.toml", scale.config_text(work, 1000, 10, vip=False, sysctls=False))
    scale.sh("ipvsadm", "-C")
    for command in ("master", "reconcile"):
        if command == "master":
            scale.sh("ipvsadm", "-C")
        code = (f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import nlreplay; "
                f"nlreplay._child_record({str(directory / (command + '.pkl'))!r}); "
                f"sys.argv = ['kanotify', '--config', {conf!r}, {command!r}]; "
                "from kanotify.__main__ import main; main()")
        subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)
        print(f"recorded {command} into {directory / (command + '.pkl')}")
    return 0


def replay(directory: Path, command: str, profile: str | None) -> int:
    import scale

    work = directory / "replay"
    (work / "state").mkdir(parents=True, mode=0o700, exist_ok=True)
    if command == "reconcile" and not (work / "state" / "state.json").exists():
        raise SystemExit("replay master first: the reconcile converges to the state it saves")
    conf = scale.write_config(work, "kanotify.toml", scale.config_text(work, 1000, 10, vip=False, sysctls=False))
    _child_replay(str(directory / f"{command}.pkl"))
    sys.argv = ["kanotify", "--config", conf, command]
    from kanotify.__main__ import main

    profiler = cProfile.Profile() if profile is not None else None
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    try:
        main()
    except SystemExit:
        pass
    finally:
        if profiler is not None and profile is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        print(f"{command}: {1000 * (time.perf_counter() - started):.1f} ms in process", file=sys.stderr)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("directory", type=Path)
    rep = sub.add_parser("replay")
    rep.add_argument("directory", type=Path)
    rep.add_argument("command", choices=("master", "reconcile"))
    rep.add_argument("--profile", metavar="OUT.prof")
    args = parser.parse_args()
    if args.what == "record":
        return record(args.directory)
    return replay(args.directory, args.command, args.profile)


if __name__ == "__main__":
    sys.exit(main())
