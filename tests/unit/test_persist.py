"""``kanotify sysctl --persist`` (atomic, idempotent, lo twins) and the systemd-sysctl style reader doctor uses."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from kanotify.backends.sysctld import boot_files, persisted, render, write_if_changed
from kanotify.config.schema import parse_config

KANOTIFY = str(Path(sys.executable).with_name("kanotify"))

CONFIG = """
[settings]
state_dir = "{tmp}/state"
journal = "{tmp}/journal.jsonl"
syslog = false
[sysctl]
"net.ipv4.conf.all.arp_ignore" = 1
"net.ipv4.conf.all.arp_announce" = 2
"net.ipv4.conf.lo.arp_announce" = 2
"net.ipv4.ip_forward" = 1
[[instance]]
name = "VI_1"
"""


def test_render_adds_only_the_missing_lo_twins_and_explains() -> None:
    config = parse_config(CONFIG.format(tmp="/x"), "/etc/kanotify/kanotify.toml")
    text = render(config.sysctls, config.path)
    assert text is not None
    body = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert body == [
        "net.ipv4.conf.all.arp_ignore = 1", "net.ipv4.conf.all.arp_announce = 2",
        "net.ipv4.conf.lo.arp_announce = 2", "net.ipv4.ip_forward = 1",
        "net.ipv4.conf.lo.arp_ignore = 1",  # added: the config had all but not lo
    ]
    assert "/etc/kanotify/kanotify.toml" in text
    for words in ("systemd-networkd", "NetworkManager", "kanotify reconcile", "added for lo"):
        assert words in text


def test_no_sysctl_table_renders_nothing() -> None:
    assert render(parse_config('[[instance]]\nname = "VI_1"\n').sysctls, "kanotify.toml") is None


def test_write_is_atomic_0644_and_idempotent(tmp_path: Path) -> None:
    target = tmp_path / "etc/sysctl.d/90-kanotify.conf"
    assert write_if_changed(str(target), "a = 1\n") is True
    assert stat.S_IMODE(target.stat().st_mode) == 0o644 and target.read_text() == "a = 1\n"
    os.utime(target, (1_000_000, 1_000_000))
    assert write_if_changed(str(target), "a = 1\n") is False
    assert target.stat().st_mtime == 1_000_000  # left alone
    assert write_if_changed(str(target), "a = 2\n") is True
    assert target.read_text() == "a = 2\n"
    assert [p.name for p in target.parent.iterdir()] == ["90-kanotify.conf"]  # no temp file left behind


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KANOTIFY, "--allow-insecure", *args], capture_output=True, text=True, timeout=60)


def test_cli_writes_then_reports_unchanged(tmp_path: Path) -> None:
    cfg = tmp_path / "kanotify.toml"
    cfg.write_text(CONFIG.format(tmp=tmp_path))
    target = tmp_path / "sysctl.d/90-kanotify.conf"
    first = run("--config", str(cfg), "sysctl", "--persist", "--path", str(target))
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"wrote {target} (5 key(s)")
    mtime = target.stat().st_mtime_ns
    second = run("--config", str(cfg), "sysctl", "--persist", "--path", str(target))
    assert second.returncode == 0 and second.stdout.startswith("unchanged:")
    assert target.stat().st_mtime_ns == mtime
    dry = run("--config", str(cfg), "--dry-run", "sysctl", "--persist", "--path", str(tmp_path / "other.conf"))
    assert dry.returncode == 0 and "would be written" in dry.stdout and not (tmp_path / "other.conf").exists()


def test_cli_without_sysctl_writes_nothing_and_says_so(tmp_path: Path) -> None:
    cfg = tmp_path / "kanotify.toml"
    cfg.write_text('[[instance]]\nname = "VI_1"\n')
    target = tmp_path / "90-kanotify.conf"
    done = run("--config", str(cfg), "sysctl", "--persist", "--path", str(target))
    assert done.returncode == 0 and "no [sysctl] table" in done.stdout and not target.exists()
    usage = run("--config", str(cfg), "sysctl")
    assert usage.returncode == 2 and "--persist" in usage.stderr


def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_reader_follows_systemd_sysctl_order(tmp_path: Path) -> None:
    _tree(tmp_path, {
        "usr/lib/sysctl.d/50-default.conf": "net.ipv4.conf.all.rp_filter = 2\nnet.ipv4.conf.*.arp_ignore = 1\n",
        "usr/lib/sysctl.d/90-kanotify.conf": "net.ipv4.conf.all.arp_announce = 0\n",  # hidden by /etc's
        "etc/sysctl.d/90-kanotify.conf": "net.ipv4.conf.all.arp_announce = 2\n; comment\n# comment\n",
        "run/sysctl.d/10-early.conf": "net/ipv4/conf/lo/arp_announce = 2\n-net.ipv4.conf.lo.arp_ignore\n",
        "lib/sysctl.d/60-x.conf": "-net.ipv4.ip_forward = 1\n",
        "etc/sysctl.conf": "net.ipv4.conf.all.rp_filter = 1\n",  # applied last
    })
    files = [os.path.relpath(f, tmp_path) for f in boot_files(str(tmp_path))]
    assert files == ["run/sysctl.d/10-early.conf", "usr/lib/sysctl.d/50-default.conf", "lib/sysctl.d/60-x.conf",
                     "etc/sysctl.d/90-kanotify.conf", "etc/sysctl.conf"]
    boot = persisted(str(tmp_path))
    assert boot.lookup("net.ipv4.conf.all.arp_announce").value == "2"  # type: ignore[union-attr]
    assert boot.lookup("net.ipv4.conf.all.rp_filter").where == "/etc/sysctl.conf:1"  # type: ignore[union-attr]
    assert boot.lookup("net.ipv4.conf.lo.arp_announce").value == "2"  # type: ignore[union-attr]  # '/' form
    assert boot.lookup("net.ipv4.conf.eth0.arp_ignore").value == "1"  # type: ignore[union-attr]  # glob
    assert boot.lookup("net.ipv4.conf.lo.arp_ignore") is None  # excluded from the glob
    assert boot.lookup("net.ipv4.ip_forward").value == "1"  # type: ignore[union-attr]  # '-' prefix
    assert boot.lookup("net.ipv4.conf.eth0/100.arp_announce") is None


def test_a_dev_null_link_masks_a_vendor_file(tmp_path: Path) -> None:
    _tree(tmp_path, {"usr/lib/sysctl.d/50-x.conf": "net.ipv4.ip_forward = 1\n"})
    (tmp_path / "etc/sysctl.d").mkdir(parents=True)
    os.symlink("/dev/null", tmp_path / "etc/sysctl.d/50-x.conf")
    assert boot_files(str(tmp_path)) == []
    assert persisted(str(tmp_path)).lookup("net.ipv4.ip_forward") is None
