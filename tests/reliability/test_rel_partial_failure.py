"""Partial failure: one action fails for real in the kernel, the independent ones are still applied.

Two real kernel failures, no mocks:

* the host kernel has no IPVS, so every IPVS call fails ("IPVS is not
  available", ENOPROTOOPT): a master transition of a config with a service
  still binds the VIP and sets the sysctls, exits 1 and journals the failing
  actions with their errno -- and the next backup still releases the VIP;
* an IPv6 VIP on an ``eth0`` whose ``disable_ipv6`` is 1 (inside the
  namespace): the kernel refuses it (EACCES) while the IPv4 VIP of the same run
  is bound.

``status`` shows the drift afterwards, and once the cause is gone a
``reconcile`` finishes the job.
"""

from __future__ import annotations

import errno
import json

import pytest

from rel_support import ARP_SYSCTLS, TWO_NODE, Node

pytestmark = pytest.mark.root

SERVICE = """
  [[instance.service]]
  protocol = "tcp"
  address = "192.0.2.100"
  port = 80
  scheduler = "wrr"
  states = ["master"]

    [[instance.service.real]]
    address = "192.0.2.21"
    forward = "dr"
"""

V6_VIP = """
  [[instance.vip]]
  address = "2001:db8::100/64"
  dev = "eth0"
  states = ["master"]
"""

ETH0_VIP = ("eth0", "192.0.2.100", 24, "eth0:0")
LO_VIP = ("lo", "192.0.2.100", 32, "lo:0")


def failed_actions(record: dict) -> list[dict]:
    return [a for a in record["actions"] if a["status"] == "failed"]


def status_json(node: Node) -> dict:
    result = node.run("status", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


def test_ipvs_failure_does_not_stop_vip_and_sysctls(node: Node) -> None:
    node.write_config(TWO_NODE + SERVICE)

    result = node.run("master", "VI_1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "IPVS is not available" in result.stdout + result.stderr

    # the kernel: VIP bound, sysctls set, despite the failing IPVS calls
    assert ETH0_VIP in node.addresses() and LO_VIP not in node.addresses()
    assert node.sysctls() == ARP_SYSCTLS

    # the journal names each failing action and its errno
    record = node.records()[-1]
    assert record["outcome"] == "failed" and record["to"] == "master"
    failed = failed_actions(record)
    assert [a["action"] for a in failed] == [
        "add ipvs service tcp 192.0.2.100:80 scheduler wrr",
        "add real server 192.0.2.21:80 dr weight 1 to tcp 192.0.2.100:80",
    ]
    assert all(a["errno"] == errno.ENOPROTOOPT and "IPVS is not available" in a["error"] for a in failed)
    applied = [a["action"] for a in record["actions"] if a["status"] == "applied"]
    assert "bind 192.0.2.100/24 dev eth0 label eth0:0" in applied
    assert sum(a.startswith("set sysctl") for a in applied) == len(ARP_SYSCTLS)
    assert node.recorded()["instances"]["VI_1"]["state"] == "master"

    # status shows the drift: the service is missing, the VIP is fine
    status = status_json(node)
    assert any(d.startswith("add ipvs service tcp 192.0.2.100:80") for d in status["drift"]), status["drift"]
    assert not any("192.0.2.100/24" in d for d in status["drift"])
    assert status["ipvs"]["available"] is False

    # a failing IPVS must not leave the VIP bound on a backup
    result = node.run("backup", "VI_1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert ETH0_VIP not in node.addresses() and LO_VIP in node.addresses()
    assert node.records()[-1]["outcome"] == "converged"


def test_ipv6_vip_refused_by_the_kernel_while_ipv4_vip_is_bound(node: Node) -> None:
    node.write_config(TWO_NODE + V6_VIP)
    node.set_sysctls({"net.ipv6.conf.eth0.disable_ipv6": 1})

    result = node.run("master", "VI_1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "bind 2001:db8::100/64 dev eth0" in result.stdout

    addresses = node.addresses()
    assert ETH0_VIP in addresses
    assert not any(a[1] == "2001:db8::100" for a in addresses)
    assert node.sysctls() == ARP_SYSCTLS

    record = node.records()[-1]
    assert record["outcome"] == "failed"
    [failed] = failed_actions(record)
    assert failed["action"] == "bind 2001:db8::100/64 dev eth0"
    assert failed["errno"] == errno.EACCES
    na = [a for a in record["actions"] if a["action"].startswith("send unsolicited NA for 2001:db8::100")]
    assert [a["status"] for a in na] in ([], ["skipped"]), "no announcement for a VIP that is not bound"
    assert record["verify"] == ["bind 2001:db8::100/64 dev eth0"]

    human = node.run("status")
    assert human.returncode == 0 and "Traceback" not in human.stderr
    assert "2001:db8::100/64" in human.stdout and "drift" in human.stdout
    assert status_json(node)["drift"] == ["bind 2001:db8::100/64 dev eth0"]

    # the cause goes away: reconcile finishes the job, and has nothing left to do after
    node.set_sysctls({"net.ipv6.conf.eth0.disable_ipv6": 0})
    fixed = node.run("reconcile")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert any(a[0] == "eth0" and a[1] == "2001:db8::100" and a[2] == 64 for a in node.addresses())
    assert node.run("plan", "--detailed-exitcode").returncode == 0
