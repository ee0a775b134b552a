"""Metrics from the real ``kanotify listen`` in a network namespace, scraped over the namespace's loopback.

The listener runs as ``ip netns exec NS kanotify --config CONF listen FIFO``
with ``settings.metrics`` on 127.0.0.1 of that namespace; the test writes
keepalived's FIFO lines and reads ``/metrics`` from inside the namespace,
compares it with what the kernel has, and lints ``kanotify metrics`` (run in
the namespace beside the listener) with promtool.  The last test has a real
Prometheus (Debian's package) scrape the listener inside the namespace and
asks Prometheus's own query API for the values after transitions.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from netns_support import Netns, kanotify_script, wait_for
from test_netns_listen import BACKUP, MASTER, Daemon, vips

pytestmark = pytest.mark.root

PORT = 9650
CONFIG = """\
[settings]
state_dir = "{tmp}/state"
journal = "{tmp}/journal.jsonl"
hooks_dir = "{tmp}/hooks.d"
syslog = false
garp_count = 1
garp_interval = 0.05
lock_timeout = 2
reconcile_interval = 0
metrics = "{metrics}"

[sysctl]
"net.ipv4.conf.all.arp_ignore" = 1

[[instance]]
name = "VI_1"

  [[instance.vip]]
  address = "192.0.2.100/24"
  dev = "eth0"
  label = "eth0:0"

  [[instance.vip]]
  address = "192.0.2.100/32"
  dev = "lo"
  label = "lo:0"
  states = ["backup", "fault"]
"""


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(answer.status), answer.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()
    except OSError as exc:  # nobody listens (yet)
        return 0, str(exc)


def get(ns: Netns, url: str) -> tuple[int, str]:
    """GET ``url`` from a process inside ``ns`` (its 127.0.0.1 is the namespace's own)."""
    result: tuple[int, str] = ns.run(_get, url)
    return result


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric(ns: Netns, name: str, port: int = PORT, **labels: str) -> float | None:
    status, text = get(ns, f"http://127.0.0.1:{port}/metrics")
    assert status == 200, text
    return samples(text).get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def daemon(ns_a: Netns, tmp_path: Path) -> Iterator[Daemon]:
    config = tmp_path / "kanotify.toml"
    config.write_text(CONFIG.format(tmp=tmp_path, metrics=f"127.0.0.1:{PORT}"))
    config.chmod(0o600)
    d = Daemon(ns_a, tmp_path)
    try:
        wait_for(lambda: "metrics: serving" in d.log.read_text(), 10, "the metrics server")
        yield d
    finally:
        d.stop()


def test_the_listener_serves_metrics_that_follow_the_kernel(daemon: Daemon, ns_a: Netns) -> None:
    assert vips(ns_a) == BACKUP
    assert metric(ns_a, "kanotify_instance_state", vrrp_instance="VI_1", state="master") == 0
    assert metric(ns_a, "kanotify_listener_running") == 1
    daemon.write('INSTANCE "VI_1" MASTER 100')
    wait_for(lambda: metric(ns_a, "kanotify_instance_state", vrrp_instance="VI_1", state="master") == 1, 5, "master 1")
    # the state is recorded before the run applies anything; the run is counted when it has ended
    wait_for(lambda: metric(ns_a, "kanotify_transitions_total", vrrp_instance="VI_1", outcome="converged") == 1, 5,
             "the transition counted")
    assert vips(ns_a) == MASTER
    assert metric(ns_a, "kanotify_transition_duration_seconds_count") == 1
    daemon.write('INSTANCE "VI_1" BACKUP 100', 'INSTANCE "VI_1" FAULT 100')
    wait_for(lambda: metric(ns_a, "kanotify_instance_state", vrrp_instance="VI_1", state="fault") == 1, 5, "fault 1")
    assert metric(ns_a, "kanotify_instance_state", vrrp_instance="VI_1", state="master") == 0

    def counted() -> float:
        converged = metric(ns_a, "kanotify_transitions_total", vrrp_instance="VI_1", outcome="converged") or 0
        superseded = metric(ns_a, "kanotify_transitions_total", vrrp_instance="VI_1", outcome="superseded") or 0
        return converged + superseded

    wait_for(lambda: counted() == 3, 5, "three transitions counted")  # the BACKUP may be coalesced into the FAULT
    assert vips(ns_a) == BACKUP
    status, text = get(ns_a, f"http://127.0.0.1:{PORT}/")
    assert status == 404 and "/metrics" in text


def test_kanotify_metrics_beside_the_listener_shows_the_same_and_passes_promtool(
        daemon: Daemon, ns_a: Netns) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: scripts/setup installs Debian's prometheus package"
    daemon.write('INSTANCE "VI_1" MASTER 100')
    wait_for(lambda: metric(ns_a, "kanotify_transitions_total", vrrp_instance="VI_1", outcome="converged") == 1, 5,
             "the transition counted")  # ended and journaled: what `kanotify metrics` reads
    once = ns_a.exec(kanotify_script(), "--config", str(daemon.config), "metrics", check=False)
    assert once.returncode == 0 and once.stderr == "", once
    shown = samples(once.stdout)
    _status, served = get(ns_a, f"http://127.0.0.1:{PORT}/metrics")
    for name in ("kanotify_instance_state", "kanotify_transitions_total", "kanotify_listener_running"):
        assert {k: v for k, v in shown.items() if k[0] == name} == \
            {k: v for k, v in samples(served).items() if k[0] == name}, name
    lint = subprocess.run([promtool, "check", "metrics"], input=once.stdout, capture_output=True, text=True)
    assert lint.returncode == 0 and lint.stdout == lint.stderr == "", lint
    lint = subprocess.run([promtool, "check", "metrics"], input=served, capture_output=True, text=True)
    assert lint.returncode == 0 and lint.stdout == lint.stderr == "", lint


def test_a_port_in_use_is_said_loudly_and_the_listener_still_does_failovers(ns_a: Netns, tmp_path: Path) -> None:
    holder = ns_a.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", PORT))
    holder.listen()
    config = tmp_path / "kanotify.toml"
    config.write_text(CONFIG.format(tmp=tmp_path, metrics=f"127.0.0.1:{PORT}"))
    config.chmod(0o600)
    d = Daemon(ns_a, tmp_path)
    try:
        log = d.log.read_text()
        assert f"metrics: cannot serve http://127.0.0.1:{PORT}/metrics: Address already in use" in log, log
        assert "running WITHOUT metrics" in log
        d.write('INSTANCE "VI_1" MASTER 100')
        wait_for(lambda: vips(ns_a) == MASTER, 5, "the VIP on eth0")
        [record] = [r for r in d.journal() if r["command"] == "metrics"]
        assert record["outcome"] == "failed" and "Address already in use" in record["note"]
        history = d.kanotify("history")
        assert "WITHOUT metrics" in history.stdout
    finally:
        d.stop()
        holder.close()


# --------------------------------------------------------------------------- a real Prometheus


PROMETHEUS_PORT = 9090
PROMETHEUS_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: kanotify
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


def alert_expressions() -> list[str]:
    """The ``expr:`` lines of docs/metrics.md's alert rules."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    return [line.split("expr:", 1)[1].strip() for line in text.splitlines() if line.strip().startswith("expr:")]


class Prometheus:
    """Debian's ``prometheus`` inside ``ns``, with its config and TSDB in the test's directory."""

    def __init__(self, ns: Netns, tmp: Path) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is missing: scripts/setup installs Debian's prometheus package"
        self.ns = ns
        (tmp / "prometheus.yml").write_text(PROMETHEUS_CONFIG.format(port=PORT))
        self.log = tmp / "prometheus.log"
        self.base = f"http://127.0.0.1:{PROMETHEUS_PORT}"
        with open(self.log, "wb") as out:
            # `ip netns exec` execs the command: this pid is Prometheus's own
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", ns.name, binary, f"--config.file={tmp / 'prometheus.yml'}",
                 f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"],
                stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: self.proc.poll() is not None or get(ns, f"{self.base}/-/ready")[0] == 200, 60,
                     "Prometheus ready")
            assert self.proc.poll() is None, self.log.read_text()
        except BaseException:
            self.stop()  # never left running in a namespace that is about to be deleted
            raise

    def query(self, expr: str) -> list[dict[str, Any]]:
        status, text = get(self.ns, f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert status == 200, text
        answer = json.loads(text)
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def test_a_real_prometheus_scrapes_the_listener_and_sees_the_transitions(
        daemon: Daemon, ns_a: Netns, tmp_path: Path) -> None:
    prometheus = Prometheus(ns_a, tmp_path)
    try:
        wait_for(lambda: prometheus.value('up{job="kanotify"}') == 1, 30, "Prometheus scraping kanotify")
        states = prometheus.query("kanotify_instance_state")
        assert {(r["metric"]["instance"], r["metric"]["state"]) for r in states} == {
            ("127.0.0.1:9650", s) for s in ("master", "backup", "fault", "stop")}  # the target's `instance` wins
        assert all(r["metric"]["vrrp_instance"] == "VI_1" for r in states)
        daemon.write('INSTANCE "VI_1" MASTER 100')
        wait_for(lambda: vips(ns_a) == MASTER, 5, "the VIP on eth0")
        master = 'kanotify_instance_state{vrrp_instance="VI_1",state="master"}'
        wait_for(lambda: prometheus.value(master) == 1, 15, "Prometheus seeing MASTER")
        assert prometheus.value('kanotify_instance_state{vrrp_instance="VI_1",state="backup"}') == 0
        # the state is recorded before the run applies; a scrape in between has the run not yet counted
        wait_for(lambda: prometheus.value('kanotify_transitions_total{vrrp_instance="VI_1",outcome="converged"}')
                 == 1, 15, "Prometheus seeing the transition counted")
        daemon.write('INSTANCE "VI_1" BACKUP 100')
        wait_for(lambda: prometheus.value(master) == 0, 15, "Prometheus seeing BACKUP")
        assert prometheus.value('kanotify_instance_state{vrrp_instance="VI_1",state="backup"}') == 1
        wait_for(lambda: prometheus.value('sum(kanotify_transitions_total{vrrp_instance="VI_1"})') == 2, 15,
                 "Prometheus seeing two transitions counted")
        wait_for(lambda: prometheus.value("kanotify_transition_duration_seconds_count") == 2, 15, "two durations")
        assert prometheus.value("kanotify_build_info") == 1
        # every alert expression docs/metrics.md shows is one Prometheus evaluates; these must fire now
        alerts = alert_expressions()
        assert len(alerts) >= 6
        firing = {expr: bool(prometheus.query(expr)) for expr in alerts}
        assert firing['max by (vrrp_instance) (kanotify_instance_state{state="master"}) == 0']  # BACKUP now
        assert not firing['sum by (vrrp_instance) (kanotify_instance_state{state="master"}) > 1']
        assert not firing["kanotify_listener_running == 0"]
    finally:
        prometheus.stop()
    assert prometheus.proc.returncode is not None
