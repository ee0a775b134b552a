"""The fingerprint of an IPVS service: equal on two directors exactly when they schedule alike.

Directors behind ECMP share flows only if each picks the same real server for
the same flow.  For mh and sh the kernel builds the table from the scheduler,
its flags and the service's destination list *in the kernel's order*, each
destination with its last non-zero weight.  The fingerprint hashes exactly
that, as the kernel lists it (never sorted), so two directors that print the
same one build the same table; ``status --json``, the metric
``kanotify_ipvs_fingerprint{service}`` and ``kanotify doctor --peer-fingerprint``
compare them (docs/ipvs.md, "Active-active directors").

The kernel does not report a destination's last non-zero weight.  While its
weight is above 0 it is that weight; at weight 0 (drained) it is the weight
kanotify adds that real server at (its configured weight: kanotify never adds
one at 0 and drains by an edit, which keeps it), and 0 for a destination the
config does not know.  Pure: no I/O here.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Mapping

from .config.values import Config
from .model import ObservedService, RealKey, RealServer, ServiceKey

#: bumped whenever the hashed text changes: directors on different versions then simply differ
FORMAT = "kanotify-fingerprint-1"
#: bits of the fingerprint the metric carries: exact in a float64 (53 bits of mantissa)
METRIC_BITS = 48


def added_weights(config: Config) -> dict[ServiceKey, dict[RealKey, int]]:
    """For every configured service: the weight kanotify adds each real server at."""
    return {
        spec.service.key: {rs.key: spec.add_weight(rs) for rs in spec.reals}
        for inst in config.instances for spec in inst.services
    }


def _tunnel(real: RealServer) -> str:
    """The tunnel fields of a ``tun`` destination (``tun_type``/``tun_port``/``tun_flags``), ``""`` for others.

    They decide how packets reach the real server, so two directors that differ
    there do not serve a flow alike; for dr and nat the kernel ignores them.
    """
    if real.forward != "tun":
        return ""
    return f"{real.tun_type}/{real.tun_port}/{real.tun_flags}"


def fingerprint(service: ObservedService, added: Mapping[RealKey, int] | None = None) -> str:
    """The hex fingerprint of ``service`` as observed; ``added``: the weights its real servers are added at.

    >>> import ipaddress
    >>> from kanotify.model import VirtualService
    >>> key = ServiceKey.inet("tcp", ipaddress.ip_address("192.0.2.10"), 80)
    >>> a = RealServer(ipaddress.ip_address("198.51.100.1"), 80)
    >>> b = RealServer(ipaddress.ip_address("198.51.100.2"), 80)
    >>> one = ObservedService(VirtualService(key, "mh"), {a.key: (a, None), b.key: (b, None)})
    >>> two = ObservedService(VirtualService(key, "mh"), {b.key: (b, None), a.key: (a, None)})
    >>> fingerprint(one) == fingerprint(two)  # another order: another table
    False
    """
    svc = service.service
    parts = [FORMAT, svc.scheduler, ",".join(sorted(svc.flags))]
    known = added or {}
    for real, _stats in service.reals.values():
        last = real.weight or known.get(real.key, 0)
        parts.append(f"{real.address}|{real.port}|{real.forward}|{_tunnel(real)}|{real.weight}|{last}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def metric_value(hexdigest: str) -> int:
    """The first :data:`METRIC_BITS` bits of a fingerprint, as the metric's value."""
    return int(hexdigest[: METRIC_BITS // 4], 16)


def fingerprints(
    config: Config, services: Mapping[ServiceKey, ObservedService], keys: Iterable[ServiceKey] | None = None,
) -> dict[ServiceKey, str]:
    """The fingerprint of each service in ``keys`` (default: every configured one) that exists."""
    added = added_weights(config)
    wanted = added.keys() if keys is None else keys
    return {key: fingerprint(services[key], added.get(key)) for key in wanted if key in services}


__all__ = ["FORMAT", "METRIC_BITS", "added_weights", "fingerprint", "fingerprints", "metric_value"]
