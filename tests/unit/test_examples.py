"""Every example config in examples/ is valid (the e2e renders some of them; this checks all, cheaply)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kanotify.config.schema import load_config

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.toml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_is_a_valid_config(path: Path) -> None:
    assert load_config(str(path)).instances


def test_the_director_pair_example_runs_the_sync_daemon_with_its_instance() -> None:
    config = load_config(str(next(p for p in EXAMPLES if p.name == "kanotify-director-sync.toml")))
    assert config.sync_daemon is not None and config.sync_daemon.instance == "VI_1"
    assert dict(config.sysctls)["net.ipv4.vs.expire_nodest_conn"] == "1"


# --------------------------------------------------------------------------- the keepalived.service drop-in

DROP_IN = Path(__file__).resolve().parents[2] / "examples" / "keepalived.service.d" / "kanotify-stop.conf"
#: Debian's unit (keepalived is installed on CI); the drop-in is verified attached to it
KEEPALIVED_UNIT = Path("/lib/systemd/system/keepalived.service")


def test_the_drop_in_runs_reconcile_state_stop_after_keepalived_ends() -> None:
    lines = [line for line in DROP_IN.read_text().splitlines() if line and not line.startswith("#")]
    assert lines == ["[Service]",
                     "ExecStopPost=/usr/local/bin/kanotify --config /etc/kanotify/kanotify.toml reconcile --state stop"]


def _verify(unit_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_dir}:", "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit_dir / "keepalived.service")],
                          capture_output=True, text=True, env=env, cwd=unit_dir, timeout=60)


def test_the_drop_in_passes_systemd_analyze_verify_on_keepalived_service(tmp_path: Path) -> None:
    # a missing tool fails loudly, never skips: scripts/setup installs keepalived, systemd is on every Debian 12
    assert shutil.which("systemd-analyze") is not None and KEEPALIVED_UNIT.exists(), (
        "needs systemd-analyze and keepalived's unit: run scripts/setup (Debian's keepalived package)")
    kanotify = Path(sys.executable).with_name("kanotify")
    assert kanotify.exists(), "pip install -e . in this environment"
    shutil.copy(KEEPALIVED_UNIT, tmp_path / "keepalived.service")
    drop_ins = tmp_path / "keepalived.service.d"
    drop_ins.mkdir()
    # verify wants ExecStopPost's program to exist: this environment's kanotify instead of /usr/local/bin's
    text = DROP_IN.read_text().replace("/usr/local/bin/kanotify", str(kanotify))
    (drop_ins / DROP_IN.name).write_text(text)
    done = _verify(tmp_path)
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), done.stderr + done.stdout
    # and verify did read the drop-in: a program that does not exist there fails it
    (drop_ins / DROP_IN.name).write_text(text.replace(str(kanotify), str(tmp_path / "no-such-kanotify")))
    broken = _verify(tmp_path)
    assert broken.returncode != 0 and "no-such-kanotify" in broken.stderr, broken.stderr
