"""Benchmark: sync N services x M real servers with kanotify vs ``ipvsadm-restore``, in one kernel.

Needs a kernel with IPVS and root, and FLUSHES the IPVS table (``ipvsadm -C``)
between runs: run it in a throwaway kernel, i.e. the UML guest::

    python benchmarks/run_in_uml.py            # boots a guest and runs this there
    python benchmarks/run_in_uml.py --services 200 --reals 5

Every number comes from the same guest run, so ratios are meaningful even
though absolute times in UML are slower than on hardware (syscalls are slow
there).  Prints numbers; asserts only that each sync really produced the rules.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, when run as a script

from kanotify.backends.netlink import ipvs_msg as m  # noqa: E402
from kanotify.backends.netlink import framing as nl  # noqa: E402
from kanotify.backends.ipvs import IpvsBackend  # noqa: E402
from kanotify.config.values import Config, Settings  # noqa: E402
from kanotify.model import Instance, Observed, RealServer, ServiceKey, ServiceSpec, State, VirtualService  # noqa: E402
from kanotify.plan import desired_for, plan  # noqa: E402


def build_config(services: int, reals: int) -> Config:
    base = ipaddress.ip_address("198.51.100.1")
    first_real = ipaddress.ip_address("203.0.113.1")
    specs = []
    for i in range(services):
        port = 10000 + i
        key = ServiceKey.inet("tcp", base, port)
        specs.append(
            ServiceSpec(
                VirtualService(key, "wrr"),
                tuple(RealServer(first_real + j, port, "dr", 1 + j % 5) for j in range(reals)),
            )
        )
    return Config(path="<benchmark>", settings=Settings(syslog=False), instances=(Instance("VI_1", services=tuple(specs)),))


def restore_rules(config: Config) -> str:
    """The same rules as ``ipvsadm-restore`` input."""
    lines = []
    for spec in config.instances[0].services:
        key = spec.service.key
        where = f"{key.address}:{key.port}"
        lines.append(f"-A -t {where} -s {spec.service.scheduler}")
        lines.extend(f"-a -t {where} -r {rs.address}:{rs.port} -g -w {rs.weight}" for rs in spec.reals)
    return "\n".join(lines) + "\n"


def flush() -> None:
    subprocess.run(["ipvsadm", "-C"], check=True)


def count_rules() -> int:
    out = subprocess.run(["ipvsadm-save", "-n"], capture_output=True, text=True, check=True).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def kanotify_sync(config: Config, batch: bool) -> dict[str, float | int]:
    """desired_for + observe + plan + apply, as the engine does; times per phase."""
    with IpvsBackend() as backend:
        t_open, _ = timed(lambda: backend.socket)
        desired = desired_for(config, {"VI_1": State.MASTER})
        t_observe, services = timed(backend.observe)
        t_plan, the_plan = timed(lambda: plan(desired, Observed(services=services)))  # type: ignore[arg-type]
        changes = the_plan.changes  # type: ignore[attr-defined]

        def apply() -> list[BaseException | None]:
            if batch:
                return backend.apply_many(changes)
            results: list[BaseException | None] = []
            for action in changes:
                backend.apply(action)
                results.append(None)
            return results

        t_apply, results = timed(apply)
        errors = [r for r in results if r is not None]  # type: ignore[union-attr]
        if errors:
            raise SystemExit(f"sync failed: {errors[0]}")
        return {
            "open": t_open, "observe": t_observe, "plan": t_plan, "apply": t_apply,
            "total": t_open + t_observe + t_plan + t_apply,
            "writes": backend.writes, "round_trips": backend.requests,
        }


def encoder_costs(config: Config, sample: int = 2000) -> dict[str, float]:
    """CPU cost per message: kanotify's struct encoder vs pyroute2's, on the same dests."""
    reals = [(s.service.key, rs) for s in config.instances[0].services for rs in s.reals][:sample]
    start = time.perf_counter()
    for seq, (key, rs) in enumerate(reals):
        m.dest_request(0x20, m.IPVS_CMD_NEW_DEST, seq, key, rs, nl.NLM_F_REQUEST)
    ours = (time.perf_counter() - start) / len(reals)

    from pyroute2 import IPVSDest, IPVSService
    from pyroute2.netlink.generic import ipvs as pr

    start = time.perf_counter()
    for seq, (key, rs) in enumerate(reals):
        msg = pr.ipvsmsg()
        msg["cmd"] = pr.IPVS_CMD_NEW_DEST
        msg["version"] = 1
        msg["header"]["type"] = 0x20
        msg["header"]["flags"] = nl.NLM_F_REQUEST
        msg["header"]["sequence_number"] = seq
        svc = IPVSService(addr=str(key.address), port=key.port, protocol=6)
        dest = IPVSDest(addr=str(rs.address), port=rs.port, fwd_method=3, weight=rs.weight)
        msg["attrs"] = [("IPVS_CMD_ATTR_SERVICE", svc.dump_key()), ("IPVS_CMD_ATTR_DEST", dest.dump_nla())]
        msg.encode()
    theirs = (time.perf_counter() - start) / len(reals)
    return {"struct_ms_per_msg": ours * 1000, "pyroute2_ms_per_msg": theirs * 1000}


def import_cost(module: str) -> float:
    """Wall time of ``python -c 'import MODULE'`` minus bare interpreter start-up."""
    def run(code: str) -> float:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            best = min(best, time.perf_counter() - start)
        return best

    return run(f"import {module}") - run("pass")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--reals", type=int, default=10)
    parser.add_argument("--no-unbatched", action="store_true", help="skip the slow one-request-per-message sync")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root and a kernel with IPVS (run benchmarks/run_in_uml.py)")

    config = build_config(args.services, args.reals)
    objects = args.services * (1 + args.reals)
    results: dict[str, object] = {"services": args.services, "reals_per_service": args.reals, "objects": objects}

    flush()
    rules = restore_rules(config)
    t_restore, _ = timed(lambda: subprocess.run(["ipvsadm-restore"], input=rules, text=True, check=True))
    assert count_rules() == objects
    results["ipvsadm_restore_s"] = t_restore

    t_ipvsadm_list = min(
        timed(lambda: subprocess.run(["ipvsadm", "-Ln"], capture_output=True, check=True))[0] for _ in range(3)
    )
    results["ipvsadm_Ln_s"] = t_ipvsadm_list
    with IpvsBackend() as backend:
        backend.socket
        runs = [timed(backend.observe) for _ in range(3)]
        t_observe, observed = min(runs, key=lambda r: r[0])
    assert len(observed) == args.services  # type: ignore[arg-type]
    results["kanotify_observe_s"] = t_observe

    flush()
    batched = kanotify_sync(config, batch=True)
    assert count_rules() == objects
    results["kanotify_batched"] = batched
    # Cheap and repeatable: best of 3, to keep a loaded machine's noise out.
    noop = min((kanotify_sync(config, batch=True) for _ in range(3)), key=lambda r: r["total"])
    assert noop["writes"] == 0, "a second sync wrote to the kernel"
    results["kanotify_noop_resync"] = noop

    if not args.no_unbatched:
        flush()
        unbatched = kanotify_sync(config, batch=False)
        assert count_rules() == objects
        results["kanotify_unbatched"] = unbatched
    flush()

    results["encoder"] = encoder_costs(config)
    results["import_kanotify_ipvs_s"] = import_cost("kanotify.backends.ipvs")
    results["import_pyroute2_s"] = import_cost("pyroute2")

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"IPVS sync benchmark: {args.services} services x {args.reals} real servers = {objects} objects")
    print(f"  ipvsadm-restore (from empty)            {t_restore:8.3f} s")
    b = batched
    print(f"  kanotify sync, batched (from empty)     {b['total']:8.3f} s   "
          f"(observe {b['observe']:.3f}, plan {b['plan']:.3f}, apply {b['apply']:.3f}; "
          f"{b['writes']} writes in {b['round_trips']} round trips)")
    print(f"    ratio ipvsadm-restore / kanotify      {t_restore / b['total']:8.1f} x")
    if "kanotify_unbatched" in results:
        u = unbatched
        print(f"  kanotify sync, one request per message  {u['total']:8.3f} s   "
              f"(apply {u['apply']:.3f}; {u['round_trips']} round trips)")
        print(f"    ratio unbatched / batched apply       {u['apply'] / b['apply']:8.1f} x")
    print(f"  kanotify no-op re-sync (best of 3)      {noop['total']:8.3f} s   "
          f"(observe {noop['observe']:.3f}, plan {noop['plan']:.3f}; {noop['writes']} writes)")
    print(f"  ipvsadm -Ln (best of 3)                 {t_ipvsadm_list:8.3f} s")
    print(f"  kanotify observe, every service+real    {t_observe:8.3f} s   (best of 3)")
    enc = results["encoder"]
    print(f"  encode one message: struct {enc['struct_ms_per_msg']:.4f} ms, "  # type: ignore[index]
          f"pyroute2 {enc['pyroute2_ms_per_msg']:.4f} ms")  # type: ignore[index]
    print(f"  import kanotify.backends.ipvs {results['import_kanotify_ipvs_s']:.3f} s, "
          f"import pyroute2 {results['import_pyroute2_s']:.3f} s (above bare interpreter start)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
