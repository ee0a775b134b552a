"""Fuzzing the command line with generated config files and notify arguments.

A seeded generator (every case is reproducible from its number) builds config
files -- mostly well-formed TOML with good and bad values mixed, sometimes
truncated, spliced with junk or binary -- and argument vectors: every command,
keepalived's ``notify`` with 0-6 words, global options before and after,
words with shell metacharacters, path separators, control characters,
unicode, 100 kB.

For every case:

* never a traceback, always a documented exit code (0, 1, 2, 78);
* exit 2 or 78: nothing applied (no backend write, no GARP, ``state.json``
  untouched) and a message saying why;
* exit 1: a message too.

Most cases run in-process against the in-memory backend, half of them
through ``kanotify.cli.run`` (typer) and half the way ``kanotify.__main__``
does (the typer-free fast path for keepalived's forms first); a smaller number run the real console script inside a namespace
of their own, against the real kernel.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest

from kanotify.backends.memory import MemoryBackend
from rel_support import KANOTIFY

IN_PROCESS_CASES = 800
SUBPROCESS_CASES = 16
DOCUMENTED = {0, 1, 2, 78}

# --------------------------------------------------------------------------- the generator

WEIRD = [
    "VI_1; rm -rf /", "$(touch /tmp/kt7-pwned)", "`id`", "VI_1 && reboot", "a|b", "x>y", "../../etc/passwd",
    "/etc/shadow", "a/b", "VI 1", "-", "--", "--bogus", "-x", "\t", "é", "VI_1\n", "%s%n%x", "{}", "'", '"',
    "\\", "*", "?", "", " ", "\x1b[2J", "\x7f", "null", "None", "0", "-1", "VI_1" * 70, "x" * 100_000,
    "☃" * 50, "\u202eevil", "VI_1\x00x",
]
STATES = ["MASTER", "BACKUP", "FAULT", "STOP", "DELETED", "master", "Backup", "bogus", "MASTER_RX_LOWER_PRI", ""]
SAFE_SYSCTL_KEYS = [  # per network namespace only: real subprocesses may apply them
    "net.ipv4.conf.all.arp_ignore", "net.ipv4.conf.all.arp_announce", "net.ipv4.conf.lo.arp_ignore",
    "net.ipv4.conf.eth0.arp_announce", "net.ipv4.conf.eth9.arp_ignore", "net.ipv4.conf.all.bogus_key",
]
BAD_SYSCTL_KEYS = ["not a key", "net..x", "net/ipv4/../../x", "", ".", "net.ipv4.conf.all.arp_ignore\n"]


def _pick(rng: random.Random, pool: list[Any]) -> Any:
    return pool[rng.randrange(len(pool))]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(value)


def _table(header: str, items: dict[str, Any]) -> str:
    lines = [header]
    lines += [f"{key} = {_toml_value(v)}" for key, v in items.items() if v is not None]
    return "\n".join(lines) + "\n"


class Rng(random.Random):
    """A seeded generator with a per-case error rate: ``badness`` 0 makes only good values."""

    badness = 1.0


def _maybe(rng: Rng, good: Any, bad: list[Any], p_bad: float = 0.15) -> Any:
    return _pick(rng, bad) if rng.random() < p_bad * rng.badness else good


NAMES = ["VI_1", "VI_2", "VI_3"]


def gen_config(rng: Rng, tmp: Path, *, real_kernel: bool) -> tuple[bytes, list[str]]:
    """A config file's bytes and the instance names it (probably) declares."""
    rng.badness = _pick(rng, [0.0, 0.0, 0.0, 0.1, 0.3, 1.0])  # half of the configs are valid
    settings = {
        "state_dir": str(tmp / "state"),
        "journal": str(tmp / "journal.jsonl"),
        "hooks_dir": str(tmp / "hooks.d"),
        "syslog": False,
        "garp_count": _maybe(rng, 1, [0, -1, 1000, "3", 2.5]),
        "garp_interval": _maybe(rng, 0.01, [-1, "x", 0]),
        "lock_timeout": _maybe(rng, 5, [0, -1, "ten", 1e9, True]),
    }
    if rng.random() < 0.1 * rng.badness:
        settings[_pick(rng, ["bogus", "State_Dir", "ipvs_exclusive"])] = _pick(rng, [1, "x", True, [1]])
    parts = [_table("[settings]", settings)]

    sysctls: dict[str, Any] = {}
    for _ in range(rng.randrange(4)):
        key = _maybe(rng, _pick(rng, SAFE_SYSCTL_KEYS), BAD_SYSCTL_KEYS, 0.2)
        sysctls[key] = _maybe(rng, rng.randrange(3), ["1", "abc", -1, True, 1.5, [1], ""], 0.2)
    if sysctls or rng.random() < 0.5:
        parts.append("[sysctl]\n" + "".join(f"{json.dumps(k)} = {_toml_value(v)}\n" for k, v in sysctls.items()))

    names = []
    for i in range(_maybe(rng, rng.choice([1, 1, 1, 2, 3]), [0], 0.2)):
        name = _maybe(rng, NAMES[i], ["VI_1", "", "vi 3", "VI;rm", "../x", "Ünï", "A" * 300, 5], 0.1)
        if isinstance(name, str):
            names.append(name)
        parts.append(_table("[[instance]]", {"name": name}))
        for k in range(rng.randrange(4)):
            dev = _maybe(rng, _pick(rng, ["eth0", "lo"]), ["eth9", "", "eth0;x", "a" * 20, 0], 0.15)
            wide = dev != "lo"
            address = _pick(rng, [
                f"192.0.2.{100 + 10 * i + k}/24" if wide else f"192.0.2.{100 + 10 * i + k}/32",
                f"2001:db8::{100 + 10 * i + k}/64" if wide else f"2001:db8::{100 + 10 * i + k}/128",
            ])
            address = _maybe(rng, address, ["192.0.2.300/24", "not-an-ip", "192.0.2.100",
                                            "198.51.100.7/33", "::/0", 7, "192.0.2.0/24"])
            v4 = isinstance(address, str) and ":" not in address
            label = _pick(rng, [None, None, f"{dev}:{k}" if isinstance(dev, str) and v4 else None])
            label = _maybe(rng, label, ["x:1", "eth0:" + "z" * 20, "lo:0", 3], 0.1)
            states = _maybe(rng, _pick(rng, [None, ["master"], ["backup", "fault"], ["master", "stop"]]),
                            [["bogus"], [], "master", ["MASTER"], [1]], 0.15)
            vip = {"address": address, "dev": dev, "label": label, "states": states,
                   "garp": _maybe(rng, None, [True, False, "no"], 0.2)}
            if rng.random() < 0.05 * rng.badness:
                vip["colour"] = "blue"
            parts.append(_table("  [[instance.vip]]", vip))
        for s_index in range(rng.choice([0, 0, 0, 1, 2])):
            service = {
                "protocol": _maybe(rng, _pick(rng, ["tcp", "udp", "sctp"]), ["icmp", 6], 0.3),
                "address": _maybe(rng, "192.0.2.100", ["2001:db8::100", "x", "192.0.2.256"], 0.2),
                "port": _maybe(rng, 80 + 10 * i + s_index, [0, 65536, -1, "80"], 0.2),
                "scheduler": _maybe(rng, "wrr", ["rr", "mh", "bogus", ""], 0.2),
                "states": _maybe(rng, None, [["master"], ["bogus"]], 0.2),
            }
            if rng.random() < 0.1 * rng.badness:
                service["fwmark"] = _pick(rng, [5, -1, 0])
            parts.append(_table("  [[instance.service]]", service))
            for r_index in range(rng.randrange(3)):
                parts.append(_table("    [[instance.service.real]]", {
                    "address": _maybe(rng, f"192.0.2.{21 + r_index}", ["192.0.2.21", "2001:db8::21", "nope"], 0.3),
                    "port": _maybe(rng, None, [80, 0, 70000], 0.3),
                    "forward": _maybe(rng, "dr", ["nat", "tun", "x"], 0.3),
                    "weight": _maybe(rng, 1, [0, 65535, 65536, -1], 0.3),
                }))
    if rng.random() < 0.3:
        parts.append(_table("[[group]]", {
            "name": _maybe(rng, "VG_1", ["", "VG 1", 3], 0.2),
            "instances": _maybe(rng, names or ["VI_1"], [names + ["VI_9"], [], "VI_1"], 0.3),
        }))
    text = "\n".join(parts)

    # sometimes break the file itself
    roll = rng.random() if rng.badness else 0.5
    if roll < 0.06:
        text = text[: rng.randrange(len(text) + 1)]
    elif roll < 0.10:
        at = rng.randrange(len(text) + 1)
        text = text[:at] + _pick(rng, ["[", "]]", "=", '"', "\x00", "\\u12", "[[instance]", "\n= 1\n"]) + text[at:]
    elif roll < 0.12:
        text = text + "\n" + text  # everything declared twice
    if real_kernel:
        assert "kernel." not in text and "vm." not in text  # only per-namespace sysctls, ever
    if roll > 0.985:
        return bytes(rng.randrange(256) for _ in range(200)), names  # binary junk
    return text.encode(), names


def gen_argv(rng: Rng, names: list[str], *, real_kernel: bool) -> list[str]:
    rng.badness = _pick(rng, [0.0, 0.0, 0.5, 1.0])  # half of the command lines are well-formed

    def word(good: list[str], bad: list[str], p_bad: float = 0.2) -> str:
        w = _maybe(rng, _pick(rng, good), bad + WEIRD, p_bad)
        return w.replace("\x00", "") if real_kernel else w  # execve() cannot pass a NUL

    instances = names or ["VI_1"]
    kind = rng.randrange(20)
    if kind < 7:
        args = [word(["master", "backup", "fault", "stop"], ["MASTER", "Stop", "masters"])]
        args += [word(instances, ["VI_9"]) for _ in range(_maybe(rng, rng.choice([0, 1, 1, 1]), [2, 3]))]
    elif kind < 13:
        pool = [
            lambda: word(["INSTANCE", "GROUP"], ["instance", "VS", "RS"]),
            lambda: word(instances + ["VG_1"], ["VI_9"]),
            lambda: word(["MASTER", "BACKUP", "FAULT", "STOP", "DELETED"], STATES),
            lambda: word(["100", "0", "255"], ["256", "-1", "x", "1e3", "+5", " 7"]),
        ]
        count = _maybe(rng, 4, [0, 1, 3, 5, 6], 0.3)
        args = ["notify"] + [pool[i % 4]() for i in range(count)]
    elif kind < 17:
        args = [_pick(rng, ["reconcile", "plan"])]
        if rng.random() < 0.5:
            args += ["--state", word(["master", "backup", "FAULT", "Stop"], STATES)]
        if rng.random() < 0.4:
            args += ["--instance", word(instances, ["VI_9"])]
        if args[0] == "plan" and rng.random() < 0.5:
            args.append("--detailed-exitcode")
    elif kind < 19:
        args = [_pick(rng, ["status", "history", "check"])]
        if args[0] == "history" and rng.random() < 0.6:
            args += ["-n", word(["1", "5"], ["0", "-3", "x", "99999999999999999999"])]
    else:
        args = [word(["frobnicate", "listen-now", "help?"], [], 0.5)]
    for option in ("--dry-run", "--json", "-v", "--allow-insecure"):
        if rng.random() < 0.1:
            args.insert(rng.randrange(len(args) + 1), option)
    return args


# --------------------------------------------------------------------------- checking one case


def _state_snapshot(tmp: Path) -> bytes | None:
    path = tmp / "state" / "state.json"
    return path.read_bytes() if path.exists() else None


READ_ONLY = {"plan", "status", "history", "check"}


def _check(case: str, args: list[str], code: int, out: str, err: str, changed: bool) -> None:
    assert code in DOCUMENTED, f"{case}: exit {code}\n{out}\n{err}"
    assert "Traceback" not in out + err, f"{case}: traceback\n{out}\n{err}"
    if code in (2, 78):
        assert not changed, f"{case}: exit {code} but something was applied\n{out}\n{err}"
    if "--dry-run" in args or READ_ONLY & set(args):
        assert not changed, f"{case}: a dry-run or read-only command changed something\n{out}\n{err}"
    if code != 0:
        assert err.strip() or out.strip(), f"{case}: exit {code} without a word"


def _prepare(tmp: Path, rng: Rng) -> None:
    """Some cases start with a recorded state and a journal, so that 'untouched' means something."""
    if rng.random() < 0.4:
        (tmp / "state").mkdir(mode=0o700)
        (tmp / "state" / "state.json").write_text(json.dumps({
            "version": 1, "draining": [],
            "instances": {"VI_1": {"state": "backup", "ticket": None, "since": "", "trigger": []}},
        }))
        (tmp / "journal.jsonl").write_text('{"outcome":"converged","ts":"2020-01-01T00:00:00Z"}\n')


def test_fuzz_cli_in_process_with_memory_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kanotify.cli import run
    from kanotify.commands import run_fast

    backends: list[MemoryBackend] = []

    def fresh() -> MemoryBackend:
        return backends[-1]

    monkeypatch.setattr("kanotify.backends.system.system_backend", fresh)
    codes: dict[int, int] = {}
    for n in range(IN_PROCESS_CASES):
        rng = Rng(f"kt7-fuzz-{n}")
        tmp = tmp_path / str(n)
        tmp.mkdir()
        text, names = gen_config(rng, tmp, real_kernel=False)
        conf = tmp / "kanotify.toml"
        conf.write_bytes(text)
        _prepare(tmp, rng)
        args = ["--config", str(conf), *gen_argv(rng, names, real_kernel=False)]
        backends.append(MemoryBackend(devices={"lo", "eth0"}))
        before = _state_snapshot(tmp)
        monkeypatch.setattr("sys.argv", ["kanotify", *args])
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if n % 2:  # what kanotify.__main__ does (minus the STOP fork): the fast path, then typer
                code = run_fast(args)
                code = run(args) if code is None else code
            else:
                code = run(args)
        backend = backends[-1]
        changed = bool(backend.writes or backend.garps) or _state_snapshot(tmp) != before
        _check(f"case {n}: {args!r}"[:2000], args, code, out.getvalue(), err.getvalue(), changed)
        codes[code] = codes.get(code, 0) + 1
    # the generator must reach every documented outcome, or it is not testing much
    assert set(codes) == DOCUMENTED, codes
    print(f"\nfuzz in-process: {IN_PROCESS_CASES} cases, exit codes {dict(sorted(codes.items()))}")


@pytest.mark.root
def test_fuzz_cli_real_processes_in_a_namespace(
    netns_factory: Callable[[str], str], tmp_path: Path
) -> None:
    ns = netns_factory("fz")
    codes: dict[int, int] = {}
    for n in range(SUBPROCESS_CASES):
        rng = Rng(f"kt7-fuzz-real-{n}")
        tmp = tmp_path / str(n)
        tmp.mkdir()
        text, names = gen_config(rng, tmp, real_kernel=True)
        conf = tmp / "kanotify.toml"
        conf.write_bytes(text)
        _prepare(tmp, rng)
        args = ["--config", str(conf), *gen_argv(rng, names, real_kernel=True)]
        before_state = _state_snapshot(tmp)
        before_addr = subprocess.run(["ip", "-n", ns, "-j", "addr"], capture_output=True, text=True).stdout
        proc = subprocess.run(["ip", "netns", "exec", ns, KANOTIFY, *args],
                              capture_output=True, text=True, errors="replace", timeout=60, env=_env())
        after_addr = subprocess.run(["ip", "-n", ns, "-j", "addr"], capture_output=True, text=True).stdout
        changed = _state_snapshot(tmp) != before_state or _addr_set(before_addr) != _addr_set(after_addr)
        _check(f"real case {n}: {args!r}"[:2000], args, proc.returncode, proc.stdout, proc.stderr, changed)
        codes[proc.returncode] = codes.get(proc.returncode, 0) + 1
    print(f"\nfuzz real processes: {SUBPROCESS_CASES} cases, exit codes {dict(sorted(codes.items()))}")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("KANOTIFY_CONFIG", None)
    return env


def _addr_set(text: str) -> set[tuple[str, str, int]]:
    return {
        (link["ifname"], info["local"], info["prefixlen"])
        for link in json.loads(text or "[]")
        for info in link.get("addr_info", [])
    }
