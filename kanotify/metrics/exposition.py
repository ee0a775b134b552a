"""Prometheus text for kanotify's :class:`~kanotify.metrics.facts.Facts`.

The exposition format is prometheus_client's (the official client: the text
and OpenMetrics encoders, content negotiation, escaping); the families are
built from a :class:`~kanotify.metrics.facts.Facts` at each scrape by a custom
collector, so the listener and ``kanotify metrics`` print the same families
from the same kind of value.  Only the listener and ``kanotify metrics``
import this module (prometheus_client costs ~45 ms to import); a notification
never does.  The listener's HTTP server is :mod:`kanotify.metrics.server`.
"""

from __future__ import annotations

from typing import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from .facts import DURATION_BUCKETS, OUTCOMES, Facts
from ..model import State


def families(facts: Facts) -> list[Metric]:
    """The metric families of ``facts`` (docs/metrics.md has each one's meaning)."""
    info = InfoMetricFamily("kanotify_build", "kanotify's version.", value={"version": facts.version})

    state = GaugeMetricFamily(
        "kanotify_instance_state",
        "1 for the VRRP state recorded for the instance, 0 for the others (all 0: never notified).",
        labels=["vrrp_instance", "state"])
    for name, current in facts.instances:
        for each in State:
            state.add_metric([name, each.value], 1.0 if current is each else 0.0)

    transitions = CounterMetricFamily(
        "kanotify_transitions", "VRRP notifications run, per instance and outcome.",
        labels=["vrrp_instance", "outcome"])
    counted = {(i, o): n for i, o, n in facts.counts.transitions}
    for name, _current in facts.instances:
        for outcome in OUTCOMES:
            transitions.add_metric([name, outcome], counted.get((name, outcome), 0))

    duration = HistogramMetricFamily(
        "kanotify_transition_duration_seconds",
        "Time a notification took, from its start to its journal line (superseded ones not counted).")
    cumulative, buckets = 0, []
    for bound, count in zip((*DURATION_BUCKETS, float("inf")), facts.counts.buckets):
        cumulative += count
        buckets.append((floatToGoString(bound), float(cumulative)))
    duration.add_metric([], buckets, facts.counts.duration_sum)

    repairs = CounterMetricFamily(
        "kanotify_drift_repairs", "Drift repairs (listener repair runs, kanotify reconcile) that changed something.",
        value=facts.counts.repairs)

    interrupted = CounterMetricFamily(
        "kanotify_interrupted_runs",
        "Runs (any command) that journaled their start of changing the system and never their end: killed.",
        value=facts.counts.interrupted)

    up = GaugeMetricFamily(
        "kanotify_real_server_up", "1 when the listener's health check finds the real server UP, 0 when DOWN.",
        labels=["service", "real"])
    for service, real, value in facts.reals_up:
        up.add_metric([service, real], 1.0 if value else 0.0)

    weight = GaugeMetricFamily(
        "kanotify_real_server_weight",
        "IPVS weight of each real server of a managed service, as kanotify last observed it.",
        labels=["service", "real"])
    for service, real, w in facts.weights:
        weight.add_metric([service, real], float(w))

    sync = GaugeMetricFamily(
        "kanotify_sync_daemon_running", "1 when the IPVS sync daemon of that state runs (with [sync_daemon]).",
        labels=["state"])
    for daemon, running in facts.sync_daemons:
        sync.add_metric([daemon], 1.0 if running else 0.0)

    listener = GaugeMetricFamily(
        "kanotify_listener_running", "1 when a kanotify listen serves this state_dir.",
        value=1.0 if facts.listener else 0.0)

    quorum = GaugeMetricFamily(
        "kanotify_service_quorum_up",
        "1 while the service's quorum holds (sum of the weights of its UP real servers), 0 when lost.",
        labels=["service"])
    for service, held in facts.quorum_up:
        quorum.add_metric([service], 1.0 if held else 0.0)
    return [info, state, transitions, duration, repairs, interrupted, up, weight, sync, listener, quorum]


class FactsCollector(Collector):
    """A collector whose families are built from ``source()`` at every collection."""

    def __init__(self, source: Callable[[], Facts]) -> None:
        self.source = source

    def collect(self) -> Iterable[Metric]:
        return families(self.source())


def registry_for(source: Callable[[], Facts]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FactsCollector(source))
    return registry


def render(facts: Facts) -> bytes:
    """``facts`` in the Prometheus text format."""
    return generate_latest(registry_for(lambda: facts))


__all__ = ["FactsCollector", "families", "registry_for", "render"]
