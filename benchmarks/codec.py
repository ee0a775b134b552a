#!/usr/bin/env python3
"""The per-object CPU costs of a big director, natively (no kernel, no root): decode, encode, plan.

    .venv/bin/python benchmarks/codec.py [--services 1000] [--reals 10] [--rounds 7]

Dest dump replies are built as Linux 7.2's ``ip_vs_genl_fill_dest`` lays
them out (attribute order and sizes, counters and both statistics nests), one
reply buffer per service as the kernel sends them.  Prints the best of
``--rounds`` for:

* decoding every real server: attribute by attribute (``dest_from_payload``,
  what ``IpvsBackend.reals`` did before) and in place
  (``decode_dests``: cold, as in a one-shot process, and with a memo, as in
  the listener's second observe);
* encoding the 11,000 messages of a sync from empty (``dest_request`` /
  ``service_request``);
* planning that sync, and the no-op plan over the table in place.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import struct
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, when run as a script

from kanotify.actions import AddReal, AddService  # noqa: E402
from kanotify.backends.netlink import ipvs_msg as m  # noqa: E402
from kanotify.backends.netlink import framing as nl  # noqa: E402
from kanotify.model import (  # noqa: E402
    Instance,
    Observed,
    ObservedService,
    RealServer,
    ServiceKey,
    ServiceSpec,
    State,
    VirtualService,
)
from kanotify.config.values import Config, Settings  # noqa: E402
from kanotify.plan import desired_for, plan  # noqa: E402

FAMILY_ID = 0x1E  # any generic netlink family id


def build(services: int, reals: int) -> tuple[Config, list[ServiceSpec]]:
    base, first_real = ipaddress.ip_address("198.51.100.1"), ipaddress.ip_address("203.0.113.1")
    specs = [
        ServiceSpec(VirtualService(ServiceKey.inet("tcp", base, 10000 + i), "wrr"),
                    tuple(RealServer(first_real + j, 10000 + i, "dr", 1 + j % 5) for j in range(reals)))
        for i in range(services)
    ]
    config = Config(path="<benchmark>", settings=Settings(syslog=False), instances=(Instance("VI_1", services=tuple(specs)),))
    return config, specs


def kernel_reply(real: RealServer, seq: int) -> bytes:
    """One dest dump part, laid out as ip_vs_genl_fill_dest writes it."""
    u32 = struct.Struct("=I").pack
    attrs = [
        nl.nla(m.IPVS_DEST_ATTR_ADDR, real.address.packed.ljust(16, b"\0")),
        nl.nla(m.IPVS_DEST_ATTR_PORT, struct.pack("!H", real.port)),
        nl.nla(m.IPVS_DEST_ATTR_FWD_METHOD, u32(m.FORWARD_CODES[real.forward])),
        nl.nla(m.IPVS_DEST_ATTR_WEIGHT, u32(real.weight)),
        nl.nla(13, b"\0"), nl.nla(14, b"\0\0"), nl.nla(15, b"\0\0"),  # tunnel type, port, flags
        nl.nla(m.IPVS_DEST_ATTR_U_THRESH, u32(real.u_threshold)),
        nl.nla(m.IPVS_DEST_ATTR_L_THRESH, u32(real.l_threshold)),
        nl.nla(m.IPVS_DEST_ATTR_ACTIVE_CONNS, u32(0)),
        nl.nla(m.IPVS_DEST_ATTR_INACT_CONNS, u32(0)),
        nl.nla(m.IPVS_DEST_ATTR_PERSIST_CONNS, u32(0)),
        nl.nla(m.IPVS_DEST_ATTR_ADDR_FAMILY, struct.pack("=H", 2)),
        nl.nla(10, b"".join(nl.nla(t, u32(0)) for t in range(1, 11))),  # statistics
        nl.nla(12, b"".join(nl.nla(t, struct.pack("=Q", 0)) for t in range(1, 11))),  # 64-bit statistics
    ]
    return nl.nlmsg(FAMILY_ID, nl.NLM_F_MULTI, seq, struct.pack("=BBH", m.IPVS_CMD_NEW_DEST, 1, 0)
                    + nl.nla(m.IPVS_CMD_ATTR_DEST, b"".join(attrs)))


def best(rounds: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--reals", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    gc.disable()  # as in a one-shot kanotify run
    config, specs = build(args.services, args.reals)
    buffers = [b"".join(kernel_reply(rs, 7) for rs in spec.reals) for spec in specs]
    dumps = [[(buf, off, length) for off, length, *_ in nl.iter_headers(buf)] for buf in buffers]
    count = sum(len(d) for d in dumps)

    def one_by_one() -> None:
        for buf in buffers:
            result = {}
            for msg in nl.iter_messages(buf):
                real, stats = m.dest_from_payload(msg.payload, 4)
                result[real.key] = (real, stats)

    def in_place(memo: m.RealsMemo | None = None) -> None:
        for replies in dumps:
            m.decode_dests(replies, 4, memo)

    def cold() -> None:
        m._LAYOUTS.clear()
        m._ADDRESSES.clear()
        m._STATS.clear()
        in_place()

    memo: m.RealsMemo = {}
    in_place(memo)
    print(f"decoding {count} real servers ({args.services} dest dumps):")
    print(f"  attribute by attribute (dest_from_payload)   {best(args.rounds, one_by_one):7.1f} ms")
    print(f"  in place, cold (decode_dests, one-shot)      {best(args.rounds, cold):7.1f} ms")
    print(f"  in place, with the listener's memo           {best(args.rounds, lambda: in_place(memo)):7.1f} ms")

    desired = desired_for(config, {"VI_1": State.MASTER})
    sync = [a for a in plan(desired, Observed(services={})).actions if not a.is_noop]

    def encode() -> None:
        for seq, action in enumerate(sync, 1):
            if isinstance(action, AddReal):
                m.dest_request(FAMILY_ID, m.IPVS_CMD_NEW_DEST, seq, action.service, action.real, nl.NLM_F_REQUEST)
            elif isinstance(action, AddService):
                m.service_request(FAMILY_ID, m.IPVS_CMD_NEW_SERVICE, seq, action.service, nl.NLM_F_REQUEST)

    print(f"encoding the {len(sync)} messages of a sync from empty  {best(args.rounds, encode):7.1f} ms")
    # the table as an observe reads it: equal values, none of them the config's own objects
    m._LAYOUTS.clear()
    observed = Observed(services={
        spec.service.key: ObservedService(
            VirtualService(ServiceKey.inet("tcp", ipaddress.ip_address(str(spec.service.key.address)),
                                           spec.service.key.port), spec.service.scheduler),
            m.decode_dests(replies, 4))
        for spec, replies in zip(specs, dumps)
    })
    print(f"planning that sync                             {best(args.rounds, lambda: plan(desired, Observed(services={}))):7.1f} ms")
    print(f"planning over the table in place (no-op)       {best(args.rounds, lambda: plan(desired, observed)):7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
