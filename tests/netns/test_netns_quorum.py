"""Service quorum against real server processes: `kanotify listen` in namespace A, two real servers in B.

When every real server of the service stops answering, the quorum (``quorum = 1``) is lost and the VIP on
the service's address is unbound (``ip addr`` in A shows it gone); when they answer again, it is bound again
only once every real server has been checked since the loss (a full round): one real server is checked every
0.2 s, the other every 2 s, so the first one is UP well before the VIP comes back.  The host kernel has no
IPVS (the service's own actions fail here; the guest test shows IPVS): what is shown is the quorum and the VIP.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from kanotify.daemon.healthreport import read_report
from netns_support import Pair, kanotify_script, wait_for
from test_netns_health import Procs, Servers, procs, real, toml_table, write_config  # noqa: F401  (fixture)

pytestmark = pytest.mark.root

VIP = "192.0.2.100"
SERVICE = f"tcp {VIP}:80"
FAST, SLOW = "192.0.2.2:8080", "192.0.2.2:8081"


def bound(pair: Pair) -> bool:
    return any(a["local"] == VIP for a in pair.a.addresses("lo"))


def test_all_real_servers_down_unbinds_the_vip_and_it_comes_back_after_a_full_round(
        pair: Pair, procs: Procs, tmp_path: Path) -> None:
    servers = Servers(procs, pair.b, tmp_path / "servers.log", "tcp:8080", "tcp:8081")
    check: dict[str, Any] = {"type": "tcp", "timeout": 1, "retry": 0, "retry_delay": 0.2}
    text = (f'[[instance.vip]]\naddress = "{VIP}/32"\ndev = "lo"\n'
            f'[[instance.service]]\nprotocol = "tcp"\naddress = "{VIP}"\nport = 80\nquorum = 1\nhysteresis = 0\n'
            + toml_table("instance.service.check", check)
            + real("192.0.2.2", 8080, interval=0.2) + real("192.0.2.2", 8081, interval=2))
    config = write_config(tmp_path, text)
    log = tmp_path / "listen.log"
    with open(log, "wb") as out:
        listener = procs.start(["ip", "netns", "exec", pair.a.name, kanotify_script(), "--config", str(config),
                                "listen"], stdout=out, stderr=subprocess.STDOUT)
    wait_for(lambda: (tmp_path / "state" / "health.json").exists() or listener.poll() is not None, 20, "the listener")
    assert listener.poll() is None, log.read_text()
    pair.a.exec(kanotify_script(), "--config", str(config), "master", "VI_1", check=False)
    wait_for(lambda: bound(pair), 10, "the VIP bound on MASTER")

    def quorum() -> dict[str, Any]:
        report = read_report(str(tmp_path / "state"))
        assert report is not None
        found = report.quorum_of(SERVICE)
        assert found is not None
        return found

    def reals() -> dict[str, Any]:
        report = read_report(str(tmp_path / "state"))
        assert report is not None
        return {r.real: r for r in report.reals}

    assert quorum()["up"] is True and quorum()["up_weight"] == 2

    servers.signal(signal.SIGUSR1)  # both ports refuse connections now
    stopped = time.monotonic()
    wait_for(lambda: not bound(pair), 10, "the VIP unbound when no real server is UP")
    gone = time.monotonic() - stopped
    lost = quorum()
    assert (lost["up"], lost["up_weight"]) == (False, 0)
    assert not bound(pair)
    assert f"health: quorum of {SERVICE} lost: no real server UP" in log.read_text()

    restarted = time.time()
    servers.signal(signal.SIGUSR2)
    seen_fast_up_without_vip = False
    while not bound(pair):
        now = reals()
        if now[FAST].up and now[SLOW].last_check is not None and now[SLOW].last_check < restarted:
            seen_fast_up_without_vip = True  # one real server UP (weight 1 >= quorum), the round not complete
        assert time.time() - restarted < 10, "the VIP did not come back within 10 s"
        time.sleep(0.01)
    back = time.time() - restarted
    assert reals()[SLOW].last_check >= restarted  # the slow one was checked since: the round is complete
    text_log = log.read_text()
    gained = text_log.index(f"health: quorum of {SERVICE} gained")
    assert text_log.rindex(f"health: {SLOW} of {SERVICE} UP") < gained
    assert quorum()["up"] is True

    journal = [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines()]
    health = [r for r in journal if r.get("command") == "health" and r.get("record") != "started"]
    unbinds = [r for r in health if any(a["action"] == f"remove {VIP}/32 dev lo" and a["status"] == "applied"
                                        for a in r.get("actions", []))]
    binds = [r for r in health if any(a["action"].startswith(f"bind {VIP}/32 dev lo") and a["status"] == "applied"
                                      for a in r.get("actions", []))]
    assert unbinds and binds, health
    metrics = pair.a.exec(kanotify_script(), "--config", str(config), "metrics").stdout
    assert f'kanotify_service_quorum_up{{service="{SERVICE}"}} 1.0' in metrics

    listener.send_signal(signal.SIGTERM)
    listener.wait(15)
    print(f"VIP unbound {gone:.2f}s after both real servers stopped; bound again {back:.2f}s after they came back"
          f" (fast one UP before the round completed: {seen_fast_up_without_vip})")
