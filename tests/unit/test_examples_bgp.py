"""examples/ for [bgp] (issue 23): the systemd units pass ``systemd-analyze verify`` beside Debian's
bird.service and frr.service, the BIRD config is one BIRD 2 accepts (``bird -p``), the FRR config
carries what doctor checks.  Live daemons: tests/kernel/guest/test_guest_bgp_daemons.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from kanotify.backends.bgpd import parse_frr_running

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
UNITS = Path("/lib/systemd/system")


def _verify(unit_dir: Path, unit: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_dir}:", "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit_dir / unit)],
                          capture_output=True, text=True, env=env, cwd=unit_dir, timeout=60)


def test_units_and_drop_ins_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    # a missing tool fails loudly: scripts/setup installs bird2 and frr, systemd is on every Debian 12
    assert shutil.which("systemd-analyze") is not None, "systemd-analyze missing"
    for name in ("bird.service", "frr.service"):
        assert (UNITS / name).exists(), f"{UNITS / name} missing: run scripts/setup (apt-get install bird2 frr)"
        shutil.copy(UNITS / name, tmp_path / name)
    kanotify = str(Path(sys.executable).with_name("kanotify"))
    for path in [EXAMPLES / "kanotify-listen.service", EXAMPLES / "kanotify-anycast@.service",
                 *EXAMPLES.glob("*.service.d/kanotify-*.conf")]:
        if path.name == "kanotify-stop.conf":
            continue  # keepalived's: test_examples.py
        target = tmp_path / path.relative_to(EXAMPLES)
        target.parent.mkdir(exist_ok=True)
        target.write_text(path.read_text().replace("/usr/local/bin/kanotify", kanotify))
    for unit in ("kanotify-anycast@ANYCAST.service", "bird.service", "frr.service", "kanotify-listen.service"):
        done = _verify(tmp_path, unit)
        # frr.service's own ExecStart may warn about its helper on a host without it running: only errors count
        assert done.returncode == 0, (unit, done.stderr + done.stdout)
    # and verify reads the drop-ins: a unit they bind to that does not exist fails it
    fate = tmp_path / "bird.service.d" / "kanotify-fate.conf"
    fate.write_text(fate.read_text().replace("BindsTo=kanotify-listen.service", "BindsTo=no-such-unit.service"))
    broken = _verify(tmp_path, "bird.service")
    assert broken.returncode != 0 and "no-such-unit" in broken.stderr + broken.stdout, broken.stderr


def test_anycast_unit_announces_at_start_and_withdraws_at_stop() -> None:
    lines = (EXAMPLES / "kanotify-anycast@.service").read_text().splitlines()
    assert "ExecStart=/usr/local/bin/kanotify --config /etc/kanotify/kanotify.toml reconcile --state master " \
           "--instance %i" in lines
    assert "ExecStop=/usr/local/bin/kanotify --config /etc/kanotify/kanotify.toml stop %i" in lines
    assert "Type=oneshot" in lines and "RemainAfterExit=yes" in lines


def test_bird_example_is_accepted_by_bird() -> None:
    bird = shutil.which("bird", path="/usr/sbin:/usr/bin:/sbin:/bin")
    assert bird is not None, "bird missing: run scripts/setup (apt-get install bird2)"
    done = subprocess.run([bird, "-p", "-c", str(EXAMPLES / "bird-director.conf")], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    text = (EXAMPLES / "bird-director.conf").read_text()
    assert "graceful restart off;" in text and "bfd on;" in text and 'interface "kav0";' in text


def test_frr_example_has_what_doctor_checks() -> None:
    running = parse_frr_running((EXAMPLES / "frr-director.conf").read_text(), "kav0")
    assert running["graceful_restart"] is False and running["exports_interface"] is True
    assert running["bfd_neighbors"] == {"192.0.2.1"} and not running["redistributes_everything"]
