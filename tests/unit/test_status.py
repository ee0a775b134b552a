"""``kanotify status`` on the in-memory backend: saved states, observed objects, effective ARP, drift."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from kanotify.backends.memory import MemoryBackend
from kanotify.engine import Engine
from kanotify.model import ServiceKey, State, Vip
from kanotify.status import collect_status, format_status
from kanotify.testing import make_config

VIP_ETH0 = Vip(ipaddress.ip_interface("192.0.2.100/24"), "eth0")


def test_status_of_a_converged_master_has_no_drift(tmp_path: Path) -> None:
    config = make_config(base_dir=tmp_path)
    backend = MemoryBackend(devices={"lo", "eth0"})
    Engine(config, backend_factory=lambda: backend).transition(
        ["VI_1"], State.MASTER, argv=["kanotify", "master"], command="master")
    report = collect_status(config, lambda: backend)
    assert report["instances"][0]["state"] == "master" and report["instances"][0]["since"]
    assert {v["vip"]: (v["desired"], v["bound"]) for v in report["vips"]} == {
        "192.0.2.100/24 dev eth0": (True, True), "192.0.2.100/32 dev lo": (False, False)}
    assert report["ipvs"]["available"] and report["ipvs"]["services"][0]["managed"]
    assert report["arp"]["eth0"] == {"arp_ignore": 1, "arp_announce": 2}  # max(all, eth0)
    assert report["drift"] == [] and report["warnings"] == []
    text = format_status(report)
    assert "drift: none" in text and "bound  192.0.2.100/24 dev eth0 (VI_1: wanted)" in text


def test_status_shows_drift_an_unrecorded_instance_and_foreign_services(tmp_path: Path) -> None:
    config = make_config(base_dir=tmp_path)
    backend = MemoryBackend(devices={"lo", "eth0"}, addresses=[VIP_ETH0])
    backend.add_foreign_service(ServiceKey.inet("udp", ipaddress.ip_address("198.51.100.1"), 53))
    report = collect_status(config, lambda: backend)
    assert report["instances"][0]["state"] is None and report["instances"][0]["effective"] == "backup"
    assert "remove 192.0.2.100/24 dev eth0" in report["drift"]
    assert [s["managed"] for s in report["ipvs"]["services"]] == [False]
    text = format_status(report)
    assert "unrecorded (treated as backup)" in text and "<- drift" in text and "foreign udp 198.51.100.1:53" in text


def test_status_reads_a_corrupt_state_file_without_moving_it(tmp_path: Path) -> None:
    config = make_config(base_dir=tmp_path)
    state_dir = Path(config.settings.state_dir)
    state_dir.mkdir(mode=0o700)
    (state_dir / "state.json").write_text("{corrupt")
    report = collect_status(config, lambda: MemoryBackend())
    assert "corrupt" in report["warnings"][0] and (state_dir / "state.json").exists()


def test_status_without_ipvs_says_so(tmp_path: Path) -> None:
    report = collect_status(make_config(base_dir=tmp_path), lambda: MemoryBackend(ipvs_available=False))
    assert report["ipvs"]["available"] is False and "not available" in format_status(report)
