"""``kanotify status`` on the in-memory backend: saved states, observed objects, effective ARP, drift."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from kanotify.backends.memory import MemoryBackend
from kanotify.engine import Engine
from kanotify.model import ServiceKey, State, Vip
from kanotify.run import RunKind
from kanotify.status import collect_status, format_status
from kanotify.testing import make_config

VIP_ETH0 = Vip(ipaddress.ip_interface("192.0.2.100/24"), "eth0")


def test_status_of_a_converged_master_has_no_drift(tmp_path: Path) -> None:
    config = make_config(base_dir=tmp_path)
    backend = MemoryBackend(devices={"lo", "eth0"})
    Engine(config, backend_factory=lambda: backend).transition(
        ["VI_1"], State.MASTER, argv=["kanotify", "master"], kind=RunKind.MASTER)
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


SYNC = '\n[sync_daemon]\ninterface = "eth0"\nsync_id = 51\n'


def test_status_shows_the_sync_daemons_their_parameters_and_drift(tmp_path: Path) -> None:
    from kanotify.actions import StartSyncDaemon
    from kanotify.model import SyncDaemon
    from kanotify.testing import DEFAULT_TOML

    config = make_config(DEFAULT_TOML + SYNC, base_dir=tmp_path)
    backend = MemoryBackend(devices={"lo", "eth0"})
    Engine(config, backend_factory=lambda: backend).transition(
        ["VI_1"], State.MASTER, argv=["kanotify", "master"], kind=RunKind.MASTER)
    report = collect_status(config, lambda: backend)
    running = "master sync daemon (mcast=eth0, syncid=51, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)"
    assert report["sync_daemons"] == {
        "managed": True, "mode": "follow", "instance": "VI_1", "state": "master", "available": True, "daemons": [
            {"state": "master", "running": running,
             "wanted": "master sync daemon (mcast=eth0, syncid=51, group=224.0.0.81, port=8848, ttl=1)", "ok": True},
            {"state": "backup", "running": None, "wanted": None, "ok": True},
        ]}
    text = format_status(report)
    assert f"sync daemons (follow VI_1, master):\n  ok    {running}\n  ok    backup sync daemon stopped" in text
    assert "drift: none" in text
    backend.apply(StartSyncDaemon(SyncDaemon("backup", "eth0", 7)))  # by hand
    drifted = collect_status(config, lambda: backend)
    assert "DRIFT backup sync daemon (mcast=eth0, syncid=7, maxlen=1472, group=224.0.0.81, port=8848, ttl=1) " \
           "(want it stopped)" in format_status(drifted)
    assert any(line.startswith("stop backup sync daemon") for line in drifted["drift"])


def test_status_shows_foreign_daemons_without_sync_daemon_and_no_drift_for_them(tmp_path: Path) -> None:
    from kanotify.actions import StartSyncDaemon
    from kanotify.model import SyncDaemon

    backend = MemoryBackend(devices={"lo", "eth0"})
    backend.apply(StartSyncDaemon(SyncDaemon("master", "eth0", 3)))
    report = collect_status(make_config(base_dir=tmp_path), lambda: backend)
    assert report["sync_daemons"]["managed"] is False
    assert [d["running"] for d in report["sync_daemons"]["daemons"]] == [
        "master sync daemon (mcast=eth0, syncid=3, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)"]
    assert not any("sync daemon" in line for line in report["drift"])
    assert "sync daemons (not managed: no [sync_daemon]; never touched):\n  running master" in format_status(report)


def test_status_shows_the_ipvs_connection_sysctls_and_copes_without_ipvs(tmp_path: Path) -> None:
    from kanotify.testing import DEFAULT_TOML

    toml = DEFAULT_TOML.replace("[sysctl]\n", '[sysctl]\n"net.ipv4.vs.expire_nodest_conn" = 1\n') + SYNC
    config = make_config(toml, base_dir=tmp_path)
    report = collect_status(config, lambda: MemoryBackend())
    assert report["ipvs_sysctls"] == [
        {"key": "net.ipv4.vs.expire_nodest_conn", "current": "0", "desired": "1"},
        {"key": "net.ipv4.vs.expire_quiescent_template", "current": "0", "desired": None},
        {"key": "net.ipv4.vs.sync_threshold", "current": "3 50", "desired": None},
        {"key": "net.ipv4.vs.sync_refresh_period", "current": "0", "desired": None},
    ]
    text = format_status(report)
    assert "  net.ipv4.vs.expire_nodest_conn = 0 (want 1)\n  net.ipv4.vs.expire_quiescent_template = 0\n" in text
    without = collect_status(config, lambda: MemoryBackend(ipvs_available=False))
    assert [item["current"] for item in without["ipvs_sysctls"]] == [None] * 4
    text = format_status(without)
    assert "net.ipv4.vs.sync_threshold = missing (ip_vs not loaded)" in text
    assert "sync daemons (follow VI_1, backup): not available (IPVS is not available" in text
