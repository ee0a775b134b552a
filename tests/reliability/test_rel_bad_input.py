"""Bad input everywhere: a clear message, the documented exit code, nothing half-applied.

Real ``kanotify`` processes in a namespace of their own.  "Nothing applied" is
checked where it counts: the namespace's addresses, ``state.json`` and the
journal are byte-for-byte what they were.

* command line: unknown states, too many/few words, instance names with shell
  metacharacters, path separators or control characters, 100 kB words;
* the journal corrupted on disk: garbage, binary junk, JSON that is not a
  record, a torn last line (also one longer than the repair window);
* ``state.json`` corrupted in many ways: recovered, the bad copy kept aside;
* no ``/dev/log`` (or a plain file there) with ``syslog = true``: a mount
  namespace with a tmpfs over ``/dev``;
* a read-only state dir: a read-only tmpfs in a mount namespace;
* a state dir that is a symlink, a state dir or lock file owned by another
  user, a config file others could change.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from typing import Any

import pytest

from rel_support import KANOTIFY, Node

pytestmark = pytest.mark.root

ETH0_VIP = ("eth0", "192.0.2.100", 24, "eth0:0")
LO_VIP = ("lo", "192.0.2.100", 32, "lo:0")
NOBODY = 65534


def snapshot(node: Node) -> tuple[Any, ...]:
    state = node.state_file.read_bytes() if node.state_file.exists() else None
    journal = node.journal.read_bytes() if node.journal.exists() else None
    return node.addresses(), state, journal


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return result


def in_mount_namespace(node: Node, setup: str, *runs: list[str]) -> list[tuple[int, str, str]]:
    """Run ``setup`` (shell, as root) then each kanotify command line in a private mount namespace
    inside the node's network namespace; returns (exit code, stdout, stderr) per command."""
    out = node.tmp / "mntns-out"
    out.mkdir(exist_ok=True)
    lines = ["set -e", setup, "set +e"]
    for i, args in enumerate(runs):
        cmd = " ".join(shlex.quote(w) for w in [KANOTIFY, "--config", str(node.config), *args])
        lines.append(f"{cmd} >{out}/{i}.out 2>{out}/{i}.err; echo $? >{out}/{i}.rc")
    script = "\n".join(lines)
    proc = subprocess.run(
        ["ip", "netns", "exec", node.ns, "unshare", "-m", "--propagation", "private", "sh", "-c", script],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, f"mount namespace setup failed: {proc.stderr}"
    return [
        (int((out / f"{i}.rc").read_text()), (out / f"{i}.out").read_text(), (out / f"{i}.err").read_text())
        for i in range(len(runs))
    ]


# --------------------------------------------------------------------------- the command line


def test_bad_command_lines_are_usage_errors_and_change_nothing(node: Node) -> None:
    ok(node.run("backup", "VI_1"))
    pwned = node.tmp / "pwned"
    huge = "A" * 100_000
    cases = [
        (["notify", "INSTANCE", "VI_1", "BOGUS", "100"], "unknown state 'BOGUS'"),
        (["reconcile", "--state", "bogus"], "unknown state 'bogus'"),
        (["plan", "--state", "sideways"], "unknown state 'sideways'"),
        (["master", "VI_1", "extra"], "unexpected extra argument"),
        (["notify", "INSTANCE", "VI_1"], "exactly 4 words"),
        (["notify", "INSTANCE", "VI_1", "MASTER", "100", "more"], "exactly 4 words"),
        (["notify", "VS", "VI_1", "MASTER", "100"], "TYPE must be INSTANCE or GROUP"),
        (["notify", "INSTANCE", "VI_1", "MASTER", "1" * 5000], "PRIORITY"),
        (["notify", "INSTANCE", "VI_1", "MASTER", "256"], "PRIORITY must be an integer 0..255"),
        (["master", f"VI_1; touch {pwned}"], "unknown instance"),
        (["backup", f"$(touch {pwned})"], "unknown instance"),
        (["fault", f"`touch {pwned}`"], "unknown instance"),
        (["stop", "../../etc/passwd"], "unknown instance"),  # the STOP fast path, detached worker
        (["master", "VI_1/../VI_1"], "unknown instance"),
        (["master", "VI_1\x1b[2J"], "is not valid"),
        (["master", huge], "is not valid"),
        (["notify", "INSTANCE", huge, "MASTER", "100"], "is not valid"),
        (["reconcile", "--instance", "/etc/shadow"], "unknown instance"),
        (["history", "-n", "0"], "Invalid value"),
        (["frobnicate"], "No such command"),
    ]
    before = snapshot(node)
    for args, message in cases:
        result = node.run(*args)
        shown = f"{[a[:40] for a in args]}: {result.returncode}\n{result.stdout[:500]}{result.stderr[:500]}"
        assert result.returncode == 2, shown
        assert message in result.stdout + result.stderr, shown
        assert "Traceback" not in result.stdout + result.stderr, shown
        assert len(result.stdout + result.stderr) < 2000, "a huge word is not echoed back whole"
        assert snapshot(node) == before, f"{shown}: something changed"
    assert not pwned.exists(), "a shell ran an instance name"

    # keepalived runs the generic notify for every instance, managed or not: journaled, ignored, exit 0
    for kind, name in (("INSTANCE", f"x; touch {pwned}"), ("GROUP", "../VG_9")):
        result = ok(node.run("notify", kind, name, "MASTER", "100"))
        assert "ignored" in result.stdout
        record = node.records()[-1]
        assert record["actions"] == [] and name[:40] in record["note"] and "not managed" in record["note"]
    addresses, state, _ = snapshot(node)
    assert (addresses, state) == before[:2] and LO_VIP in addresses
    assert not pwned.exists()


# --------------------------------------------------------------------------- the journal


def test_corrupt_journal_history_still_works_and_the_next_run_appends_a_whole_line(node: Node) -> None:
    ok(node.run("backup", "VI_1"))
    good = node.journal.read_bytes()
    junk = (
        b"garbage line\n"
        b"\x00\xff\xfe\x80 binary junk \x1b[2J\n"
        b"[1, 2]\n\"a string\"\n5\nnull\n{}\n"
        + b"[" * 50_000 + b"]" * 50_000 + b"\n"
        + b'{"actions": 5, "duration_ms": "x", "instances": 5, "ts": 7}\n'
        + b'{"actions": [5, {"status": 3}], "instance": {"a": 1}, "trigger": 5, "outcome": [1]}\n'
    )
    torn = b'{"ts":"2030-01-01T00:00:00.000Z","trigger":["kanotify","master"],"outcome":"conv'
    node.journal.write_bytes(good + junk + torn)

    history = ok(node.run("history"))
    assert "backup" in history.stdout and "2030" not in history.stdout
    as_json = json.loads(ok(node.run("history", "--json")).stdout)
    assert [r["outcome"] for r in as_json if r.get("ts")] == ["converged"]

    ok(node.run("master", "VI_1"))
    data = node.journal.read_bytes()
    assert data.startswith(good + junk), "earlier lines are kept as they were"
    assert torn not in data, "the torn tail was dropped"
    last = json.loads(data.splitlines()[-1])
    assert data.endswith(b"\n") and last["to"] == "master" and last["outcome"] == "converged"
    assert ETH0_VIP in node.addresses()
    history = ok(node.run("history", "-n", "1"))
    assert "backup -> master" in history.stdout

    # a torn line longer than the repair window (64 kB) is ended, not searched for ever
    with open(node.journal, "ab") as fh:
        fh.write(b'{"torn": "' + b"x" * 70_000)
    ok(node.run("backup", "VI_1"))
    lines = node.journal.read_bytes().splitlines(keepends=True)
    assert lines[-1].endswith(b"\n") and json.loads(lines[-1])["to"] == "backup"
    assert ok(node.run("history", "-n", "2")).stdout.count("->") == 2


# --------------------------------------------------------------------------- state.json


CORRUPT_STATES = [
    b"{not json",
    b"",
    b"\x00\xff\xfe binary",
    b"[]",
    b"null",
    b'{"instances": [1]}',
    b'{"instances": "abc"}',
    b'{"instances": {"VI_1": "master"}}',
    b'{"instances": {"VI_1": {"state": "sideways"}}}',
    b'{"instances": {"VI_1": {"state": "master", "trigger": 5}}}',
    b'{"draining": {"a": 1}}',
    b'{"draining": [[1]]}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"instances": {"VI_1": {"state": "mas',  # torn by something that is not kanotify
]


def test_corrupt_state_file_is_moved_aside_and_the_run_recovers(node: Node) -> None:
    """The first two through the console script; the rest through the CLI in a forked child
    (same code, same kernel, no interpreter start-up)."""
    ok(node.run("backup", "VI_1"))
    for n, content in enumerate(CORRUPT_STATES):
        for old in node.state_dir.glob("state.json.corrupt-*"):
            old.unlink()
        state = "master" if n % 2 == 0 else "backup"
        node.state_file.write_bytes(content)
        if n < 2:
            status = node.run("--json", "status")
            status_code, status_out, status_err = status.returncode, status.stdout, status.stderr
        else:
            status_code, status_out, status_err = node.cli("--json", "status")
        assert status_code == 0 and "Traceback" not in status_out + status_err, status_out + status_err
        assert "is corrupt" in "".join(json.loads(status_out)["warnings"])
        assert node.state_file.read_bytes() == content, "status is read-only: it leaves the file to the next run"
        if n < 2:
            run = ok(node.run(state, "VI_1"))
            code, stderr = run.returncode, run.stderr
        else:
            code, out, stderr = node.cli(state, "VI_1")
            assert code == 0 and "Traceback" not in out + stderr, out + stderr
        assert "is corrupt" in stderr, f"{content[:40]!r}: {stderr}"
        assert node.recorded()["instances"]["VI_1"]["state"] == state
        kept = list(node.state_dir.glob("state.json.corrupt-*"))
        assert kept and any(p.read_bytes() == content for p in kept), "the bad copy is kept for a human"
        assert (ETH0_VIP in node.addresses()) == (state == "master")
        assert node.records()[-1]["outcome"] == "converged"
    assert ok(node.run("plan", "--detailed-exitcode"))


# --------------------------------------------------------------------------- /dev/log


def test_syslog_enabled_without_dev_log(node: Node) -> None:
    node.syslog = True
    node.write_config(node.instances)
    tmpfs_dev = "mount -t tmpfs -o mode=0755 tmpfs /dev && test ! -e /dev/log"
    [(code, out, err)] = in_mount_namespace(node, tmpfs_dev, ["master", "VI_1"])
    assert code == 0 and "Traceback" not in out + err, out + err
    assert ETH0_VIP in node.addresses() and node.records()[-1]["outcome"] == "converged"

    plain_file = "mount -t tmpfs -o mode=0755 tmpfs /dev && echo x > /dev/log"  # not a socket
    [(code, out, err)] = in_mount_namespace(node, plain_file, ["backup", "VI_1"])
    assert code == 0 and "Traceback" not in out + err, out + err
    assert LO_VIP in node.addresses() and node.records()[-1]["to"] == "backup"


# --------------------------------------------------------------------------- read-only state dir


def test_read_only_state_dir_fails_cleanly_and_applies_nothing(node: Node) -> None:
    node.state_subdir = "rofs/state"
    node.write_config(node.instances)
    rofs = node.tmp / "rofs"
    rofs.mkdir()
    before = node.addresses()

    # the state dir cannot even be created
    [(code, out, err)] = in_mount_namespace(node, f"mount -t tmpfs -o ro tmpfs {rofs}", ["master", "VI_1"])
    assert code == 1 and "Traceback" not in out + err, out + err
    assert "Read-only file system" in out + err and str(node.state_dir) in out + err
    assert node.addresses() == before, "nothing may be applied without recording the state first"
    record = node.records()[-1]
    assert record["outcome"] == "failed" and "Read-only file system" in record["note"]

    # it exists (recorded backup), then the file system turns read-only
    results = in_mount_namespace(
        node,
        f"mount -t tmpfs tmpfs {rofs} && {KANOTIFY} --config {node.config} backup VI_1 >/dev/null"
        f" && mount -o remount,ro {rofs}",
        ["master", "VI_1"],
        ["status"],
        ["history"],
    )
    (code, out, err), status, history = results
    assert code == 1 and "Traceback" not in out + err, out + err
    assert "Read-only file system" in out + err
    assert ETH0_VIP not in node.addresses() and LO_VIP in node.addresses(), "still the recorded backup"
    assert status[0] == 0 and "backup" in status[1] and "Traceback" not in status[2]
    assert history[0] == 0 and "Traceback" not in history[2]


# --------------------------------------------------------------------------- ownership and symlinks


def test_symlinked_state_dir_is_refused(node: Node) -> None:
    elsewhere = node.tmp / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    node.state_dir.symlink_to(elsewhere)
    before = node.addresses()
    result = node.run("master", "VI_1")
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert "symlink is refused" in result.stdout + result.stderr
    assert node.addresses() == before
    assert list(elsewhere.iterdir()) == [], "nothing written through the link"


def test_state_dir_or_lock_owned_by_another_user_is_refused(node: Node) -> None:
    ok(node.run("backup", "VI_1"))
    before = snapshot(node)[:2]

    lock = node.state_dir / "lock"
    os.chown(lock, NOBODY, NOBODY)
    result = node.run("master", "VI_1")
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert "owned by someone else" in result.stdout + result.stderr
    assert snapshot(node)[:2] == before
    os.chown(lock, 0, 0)

    lock.unlink()
    lock.symlink_to(node.tmp / "target")
    result = node.run("master", "VI_1")
    assert result.returncode == 1 and "is a symlink: refused" in result.stdout + result.stderr
    assert snapshot(node)[:2] == before and not (node.tmp / "target").exists()
    lock.unlink()

    os.chown(node.state_dir, NOBODY, NOBODY)
    result = node.run("master", "VI_1")
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert f"owned by uid {NOBODY}" in result.stdout + result.stderr
    assert snapshot(node)[:2] == before
    os.chown(node.state_dir, 0, 0)

    ok(node.run("master", "VI_1"))  # and with everything back in order, it works
    assert ETH0_VIP in node.addresses()


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda node: os.chown(node.config, NOBODY, NOBODY), f"owned by uid {NOBODY}"),
        (lambda node: os.chmod(node.config, 0o664), "writable by group or others (mode 0664)"),
        (lambda node: os.chmod(node.config, 0o646), "writable by group or others (mode 0646)"),
        (lambda node: os.chmod(node.tmp, 0o777), "writable by group or others (mode 0777)"),
    ],
    ids=["owner", "group-writable", "world-writable", "writable-directory"],
)
def test_config_others_could_change_is_refused(node: Node, damage: Any, reason: str) -> None:
    before = node.addresses()
    mode = node.tmp.stat().st_mode & 0o7777
    damage(node)
    try:
        result = node.run("master", "VI_1")
        assert result.returncode == 78, result.stdout + result.stderr
        assert reason in result.stderr and "refused" in result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        assert node.addresses() == before and not node.state_file.exists() and not node.journal.exists()
        forced = ok(node.run("--allow-insecure", "master", "VI_1"))
        assert "converged" in forced.stdout and ETH0_VIP in node.addresses()
    finally:
        os.chmod(node.tmp, mode)
