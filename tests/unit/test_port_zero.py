"""Port-0 services (every port of the address, persistent): keepalived's ``virtual_server IP 0``."""

from __future__ import annotations

import pytest

from kanotify.config.schema import parse_config
from kanotify.errors import ConfigError

BASE = '[[instance]]\nname = "VI_1"\n[[instance.service]]\nprotocol = "tcp"\naddress = "192.0.2.120"\nport = 0\n'


def test_a_persistent_port_0_service_and_its_real_servers() -> None:
    spec = parse_config(BASE + "persistence = 50\n"
                        '[[instance.service.real]]\naddress = "192.0.2.71"\n'
                        '[[instance.service.real]]\naddress = "192.0.2.73"\nport = 5353\nforward = "nat"\n'
                        ).instances[0].services[0]
    assert str(spec.service.key) == "tcp 192.0.2.120:0" and spec.service.persistence == 50
    assert [str(r) for r in spec.reals] == ["192.0.2.71:0 dr weight 1", "192.0.2.73:5353 nat weight 1"]


@pytest.mark.parametrize(("extra", "path", "message"), [
    ("", "instance[0].service[0].port", "expected a port 1..65535, or persistence > 0: a port-0 service"),
    ('persistence = 50\n[[instance.service.real]]\naddress = "192.0.2.71"\nport = 80\n',
     "instance[0].service[0].real[0].port", "expected 0 (the service's port)"),
    ('persistence = 50\n[[instance.service.real]]\naddress = "192.0.2.71"\n[instance.service.real.check]\n'
     'type = "tcp"\n', "instance[0].service[0].real[0].check.port", "the real server of a fwmark or port-0 service"),
])
def test_what_a_port_0_service_needs_is_said(extra: str, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + extra)
    assert [(p.path, message in p.message) for p in caught.value.problems] == [(path, True)], caught.value.problems
