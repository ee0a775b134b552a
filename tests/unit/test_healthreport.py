"""health.json read as values (kanotify.daemon.healthreport): one reader for status and metrics."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

from kanotify.daemon.healthreport import HEALTH_FILE, RealHealth, parse_report, read_report
from kanotify.model import ServiceKey


def test_a_written_report_reads_back_as_values(tmp_path: Path) -> None:
    entry = {"service": "tcp 192.0.2.100:80", "real": "192.0.2.21:80", "check": "tcp connect", "up": False,
             "since": 1.5, "last_error": "connection refused", "last_check": 2, "checks": 3}
    (tmp_path / HEALTH_FILE).write_text(json.dumps({"pid": 42, "written": 3.0, "late": {"0.05": 7},
                                                    "reals": [entry]}))
    report = read_report(str(tmp_path))
    assert report is not None
    assert (report.pid, report.written, report.late) == (42, 3.0, (("0.05", 7),))
    assert report.reals == (RealHealth("tcp 192.0.2.100:80", "192.0.2.21:80", "tcp connect", False, 1.5,
                                       "connection refused", 2.0, 3),)
    assert report.reals[0].to_json() == {**entry, "last_check": 2.0}
    assert report.written_by(42) and not report.written_by(43)
    service = ServiceKey.inet("tcp", ipaddress.ip_address("192.0.2.100"), 80)
    assert str(service) == "tcp 192.0.2.100:80"
    assert report.is_down(service, (ipaddress.ip_address("192.0.2.21"), 80))
    assert not report.is_down(service, (ipaddress.ip_address("192.0.2.22"), 80))


def test_what_is_not_a_report_is_none_or_left_out(tmp_path: Path) -> None:
    assert read_report(str(tmp_path)) is None
    (tmp_path / HEALTH_FILE).write_text("{half")
    assert read_report(str(tmp_path)) is None
    assert parse_report([]) is None
    report = parse_report({"pid": True, "reals": [1, {"up": "yes"}, {"service": "s", "real": "r", "up": True}],
                           "late": {"0.05": "x"}})
    assert report is not None and report.pid is None and report.late == ()
    assert report.reals == (RealHealth("s", "r", "", True),) and report.down == frozenset()
    assert report.written_by(1)


def test_the_reader_does_not_import_the_checker() -> None:
    code = ("import sys, kanotify.status, kanotify.daemon.healthreport; "
            "print('kanotify.daemon.health' in sys.modules, 'asyncio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "False", "status imports the health checker"
