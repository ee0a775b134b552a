"""``kanotify import``: keepalived's health checkers -> ``[check]`` tables that behave as keepalived's did.

Every case imports a small keepalived.conf, loads the TOML with kanotify's own
config loader (the checks compared are the loader's :class:`HealthCheck`
values) and looks at the comments that say where each value came from.  The
cascade and the defaults are keepalived 2.2.7's (check_data.c alloc_vs and
check_check_config, check_api.c queue_checker, check_misc.c, check_http.c).
"""

from __future__ import annotations

import ipaddress
import random

from kanotify.config.schema import parse_config
from kanotify.keepalived.conf import parse_text
from kanotify.keepalived.imported import ImportResult
from kanotify.keepalived.importer import import_conf, render
from kanotify.model import HealthCheck


def imported(text: str) -> tuple[ImportResult, str, dict[str, HealthCheck]]:
    """The import of *text*, its TOML, and the checks the config loader reads from it, by "address:port"."""
    result = import_conf(parse_text(text, "k.conf"))
    toml = render(result)
    config = parse_config(toml, "imported.toml")
    checks: dict[str, HealthCheck] = {}
    for spec in config.instances[0].services:
        for (a, p), check in spec.checks:
            checks.setdefault(f"{a}:{p}", check)  # the first; every one: every_check
    return result, toml, checks


def every_check(toml: str, real: str) -> list[HealthCheck]:
    """All the checks the config loader reads for the real server ``real`` ("address:port")."""
    config = parse_config(toml, "imported.toml")
    return [check for spec in config.instances[0].services for (a, p), check in spec.checks if f"{a}:{p}" == real]


def reasons(result: ImportResult) -> str:
    notes = list(result.notes) + [n for s in result.services for n in s.notes] + [
        n for s in result.services for r in s.reals for n in r.notes]
    return "\n".join(f"{n.keyword} ({n.where}): {n.reason}" for n in notes)


def at(text: str, needle: str, nth: int = 0) -> str:
    """``k.conf:LINE`` of the *nth* line of *text* that contains *needle*."""
    lines = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    return f"k.conf:{lines[nth]}"


def vs(body: str, *reals: str, head: str = "192.0.2.100 80") -> str:
    return f"virtual_server {head} {{\n protocol TCP\n lvs_method DR\n{body}" + "".join(reals) + "}\n"


def rs(address: str, body: str, port: int | None = 80) -> str:
    return f" real_server {address}{'' if port is None else f' {port}'} {{\n{body} }}\n"


TCP = "  TCP_CHECK {\n  }\n"


def test_keepalived_defaults_for_each_checker() -> None:
    _, toml, checks = imported(vs(
        "",
        rs("192.0.2.21", TCP),
        rs("192.0.2.22", "  HTTP_GET {\n   url {\n    path /\n   }\n  }\n"),
        rs("192.0.2.23", "  SSL_GET {\n   url {\n    path /\n   }\n  }\n"),
        rs("192.0.2.24", '  MISC_CHECK {\n   misc_path "/bin/true"\n  }\n'),
    ))
    # keepalived: delay_loop 60, connect_timeout 5, retry 1, delay_before_retry 1, removal on failure;
    # HTTP_GET/SSL_GET retry after 3 s; MISC_CHECK does not retry and times out after the delay_loop
    assert checks == {
        "192.0.2.21:80": HealthCheck("tcp", interval=60, timeout=5, retry=1, retry_delay=1, on_failure="remove"),
        "192.0.2.22:80": HealthCheck("http", path="/", interval=60, timeout=5, retry=1, retry_delay=3,
                                     on_failure="remove"),
        "192.0.2.23:80": HealthCheck("https", path="/", verify=False, interval=60, timeout=5, retry=1, retry_delay=3,
                                     on_failure="remove"),
        "192.0.2.24:80": HealthCheck("command", command=("/bin/true",), interval=60, timeout=60, retry=0,
                                     retry_delay=1, on_failure="remove"),
    }
    assert "retry_delay = 3    # keepalived's HTTP_GET default" in toml
    assert "retry = 0    # keepalived's MISC_CHECK default" in toml
    assert "timeout = 60    # no misc_timeout: keepalived uses the virtual_server's delay_loop, default 60" in toml
    assert 'on_failure = "remove"    # no inhibit_on_failure: keepalived removes a failed real server' in toml
    assert "interval = 60    # keepalived's default" in toml


def test_options_cascade_from_virtual_server_to_real_server_to_checker() -> None:
    text = vs(
        " delay_loop 20\n connect_timeout 7\n retry 3\n delay_before_retry 4\n",
        rs("192.0.2.21", TCP),  # everything from the virtual_server
        rs("192.0.2.22", "  delay_loop 10\n  retry 2\n" + TCP),  # the real server's own, else the virtual_server's
        rs("192.0.2.23", "  delay_loop 10\n  TCP_CHECK {\n   delay_loop 5\n   connect_timeout 1.5\n   retry 0\n"
                         "   delay_before_retry 0\n  }\n"),  # the checker's own
    )
    _, toml, checks = imported(text)
    assert checks["192.0.2.21:80"] == HealthCheck("tcp", interval=20, timeout=7, retry=3, retry_delay=4,
                                                  on_failure="remove")
    assert checks["192.0.2.22:80"] == HealthCheck("tcp", interval=10, timeout=7, retry=2, retry_delay=4,
                                                  on_failure="remove")
    assert checks["192.0.2.23:80"] == HealthCheck("tcp", interval=5, timeout=1.5, retry=0, retry_delay=0,
                                                  on_failure="remove")
    assert f"interval = 20    # virtual_server delay_loop ({at(text, 'delay_loop 20')})" in toml
    assert f"interval = 10    # real_server delay_loop ({at(text, 'delay_loop 10')})" in toml
    assert f"retry = 2    # real_server retry ({at(text, 'retry 2')})" in toml
    assert f"interval = 5    # delay_loop ({at(text, 'delay_loop 5')})" in toml
    assert f"timeout = 1.5    # connect_timeout ({at(text, 'connect_timeout 1.5')})" in toml


def test_the_virtual_servers_retry_overrides_misc_checks_default_and_misc_timeout_is_its_delay_loop() -> None:
    text = vs(" delay_loop 8\n retry 2\n", rs("192.0.2.21", '  delay_loop 3\n  MISC_CHECK {\n   misc_path /bin/true\n  }\n'))
    _, toml, checks = imported(text)
    # check_misc.c: no misc_timeout -> checker->vs->delay_loop, the virtual_server's (not the real server's 3)
    assert checks["192.0.2.21:80"] == HealthCheck("command", command=("/bin/true",), interval=3, timeout=8, retry=2,
                                                  retry_delay=1, on_failure="remove")
    assert f"timeout = 8    # no misc_timeout: keepalived uses virtual_server delay_loop ({at(text, 'delay_loop 8')})" \
        in toml
    _, _, checks = imported(vs("", rs("192.0.2.21", '  MISC_CHECK {\n   misc_path /bin/true\n   misc_timeout 0\n'
                                                    '  }\n')))
    assert checks["192.0.2.21:80"].timeout == 60  # misc_timeout 0: the delay_loop too


def test_alpha_starts_down_and_inhibit_on_failure_drains() -> None:
    text = vs(
        " alpha\n inhibit_on_failure\n",
        rs("192.0.2.21", TCP),
        rs("192.0.2.22", "  alpha off\n  inhibit_on_failure false\n" + TCP),
        rs("192.0.2.23", "  TCP_CHECK {\n   alpha no\n  }\n"),
    )
    _, toml, checks = imported(text)
    assert (checks["192.0.2.21:80"].initial, checks["192.0.2.21:80"].on_failure) == ("down", "drain")
    assert (checks["192.0.2.22:80"].initial, checks["192.0.2.22:80"].on_failure) == ("up", "remove")
    assert (checks["192.0.2.23:80"].initial, checks["192.0.2.23:80"].on_failure) == ("up", "drain")
    assert f'initial = "down"    # virtual_server alpha ({at(text, "alpha")})' in toml
    assert f'on_failure = "drain"    # virtual_server inhibit_on_failure ({at(text, "inhibit_on_failure")})' in toml
    assert f'on_failure = "remove"    # real_server inhibit_on_failure ({at(text, "inhibit_on_failure false")})' in toml
    assert f'initial = "up"    # alpha ({at(text, "alpha no")})' in toml
    # without alpha anywhere: no initial key (kanotify's "up" is keepalived's default)
    _, toml, checks = imported(vs("", rs("192.0.2.21", TCP)))
    assert "initial" not in toml and checks["192.0.2.21:80"].initial == "up"


def test_the_virtual_servers_flags_take_no_value() -> None:
    result, _, checks = imported(vs(" inhibit_on_failure off\n", rs("192.0.2.21", TCP)))
    assert checks["192.0.2.21:80"].on_failure == "drain"  # vs_inhibit_handler ignores its argument
    assert "takes no value: it turns inhibit_on_failure on" in reasons(result)


def test_connect_port_and_the_real_servers_port() -> None:
    text = vs("", rs("192.0.2.21", "  TCP_CHECK {\n   connect_port 8080\n  }\n"),
              rs("192.0.2.22", "  TCP_CHECK {\n   connect_port 80\n  }\n"),
              rs("192.0.2.23", TCP, port=8081))  # DR: IPVS uses port 80, keepalived's checker the port written
    result, toml, checks = imported(text)
    assert [checks[f"192.0.2.{n}:80"].port for n in (21, 22, 23)] == [8080, 0, 8081]
    assert f"port = 8080    # connect_port ({at(text, 'connect_port 8080')})" in toml
    assert f"port = 8081    # the port of real_server ({at(text, '8081')})" in toml
    assert f"connect_port ({at(text, 'connect_port 80', 1)}): the real server's port, kanotify's default" in toml
    # no port written, no connect_port: keepalived 2.2.7's checker connects to port 0
    _, toml, checks = imported(vs("", rs("192.0.2.21", TCP, port=None)))
    assert checks["192.0.2.21:80"].port == 0 and "keepalived 2.2.7 connects to port 0" in toml


def test_a_fwmark_real_server_needs_connect_port() -> None:
    text = vs("", rs("192.0.2.21", TCP, port=None), rs("192.0.2.22", "  TCP_CHECK {\n   connect_port 443\n  }\n",
                                                        port=None), head="fwmark 7")
    result, toml, checks = imported(text)
    assert checks == {"192.0.2.22:0": HealthCheck("tcp", port=443, interval=60, timeout=5, retry=1, retry_delay=1,
                                                  on_failure="remove")}
    assert "no port to check: a fwmark real server has none" in reasons(result)
    assert "#   [instance.service.real.check]" in toml  # what it would be, commented out


def test_http_urls_status_codes_host_and_what_is_not_compared() -> None:
    text = vs(
        " virtualhost vs.example\n",
        rs("192.0.2.21", "  virtualhost rs.example\n  HTTP_GET {\n   url {\n    digest 0123456789abcdef0123456789abcdef\n"
                         "   }\n   url {\n    path /health\n    status_code 200 301-302 abc\n    regex ok\n   }\n"
                         "   url {\n    path /second\n   }\n  }\n"),
        rs("192.0.2.22", "  HTTP_GET {\n   virtualhost chk.example\n   url {\n    path /\n    status_code 200-299\n"
                         "    virtualhost url.example\n   }\n  }\n"),
        rs("192.0.2.23", "  HTTP_GET {\n   url {\n    path /\n   }\n  }\n"),
        rs("192.0.2.24", "  HTTP_GET {\n   virtualhost chk.example\n   url {\n    path /\n   }\n  }\n"),
    )
    result, toml, checks = imported(text)
    first = checks["192.0.2.21:80"]
    assert (first.path, first.status, first.host) == ("/health", (200, 301, 302), "rs.example")
    assert (checks["192.0.2.22:80"].status, checks["192.0.2.22:80"].host) == ((), "url.example")
    assert checks["192.0.2.23:80"].host == "vs.example"
    assert checks["192.0.2.24:80"].host == "chk.example"
    why = reasons(result)
    assert "keepalived ignores a url without a path" in why  # the first url has none: keepalived drops it
    # every url keepalived keeps is a check of its own: UP only while all pass
    assert [c.path for c in every_check(toml, "192.0.2.21:80")] == ["/health", "/second"]
    assert "[[instance.service.real.check]]" in toml
    assert "keepalived skips the status code 'abc'" in why
    assert "not the page's contents" in why
    assert f"status_code 200-299 ({at(text, 'status_code 200-299')}): kanotify's default" in toml
    assert f'host = "rs.example"    # real_server virtualhost ({at(text, "rs.example")})' in toml
    assert f'host = "url.example"    # url virtualhost ({at(text, "url.example")})' in toml


def test_an_http_check_without_a_url_is_not_run_by_keepalived() -> None:
    result, toml, checks = imported(vs("", rs("192.0.2.21", "  HTTP_GET {\n   connect_timeout 2\n  }\n")))
    assert checks == {} and "keepalived skips a HTTP_GET without a url with a path" in reasons(result)
    assert result.services[0].checkers == ()  # not a checker keepalived runs (for doctor)


def test_several_checkers_on_one_real_server_are_all_checks() -> None:
    text = vs("", rs("192.0.2.21", "  SMTP_CHECK {\n  }\n  TCP_CHECK {\n   connect_port 8080\n  }\n"
                                   "  HTTP_GET {\n   url {\n    path /\n   }\n  }\n  BFD_CHECK {\n  }\n"),
              rs("192.0.2.22", TCP))
    result, toml, _ = imported(text)
    every = every_check(toml, "192.0.2.21:80")
    assert [(c.type, c.port) for c in every] == [("smtp", 0), ("tcp", 8080), ("http", 0)]
    assert toml.count("[[instance.service.real.check]]") == 3  # the other real server: its own one table
    assert "kanotify has no BFD_CHECK equivalent: keepalived's BFD_CHECK follows the sessions of its own BFD" \
           in reasons(result)
    assert len(result.services[0].checkers) == 5  # every checker keepalived runs (for doctor), the TCP_CHECK of .22 too


def test_one_service_check_when_every_real_server_has_the_same() -> None:
    same = vs(" delay_loop 6\n", rs("192.0.2.21", TCP, port=8080), rs("192.0.2.22", TCP, port=8081))
    nat = same.replace("lvs_method DR", "lvs_method NAT")
    _, toml, checks = imported(nat)
    assert toml.count("[instance.service.check]") == 1 and "[instance.service.real.check]" not in toml
    assert checks["192.0.2.21:8080"] == checks["192.0.2.22:8081"]  # each checks its own port
    # one real server without a checker: per real server
    _, toml, checks = imported(vs("", rs("192.0.2.21", TCP), rs("192.0.2.22", "")))
    assert toml.count("[instance.service.real.check]") == 1 and list(checks) == ["192.0.2.21:80"]
    # own option values on each real server, the same values: one table naming both lines
    text = vs("", rs("192.0.2.21", "  retry 2\n" + TCP), rs("192.0.2.22", "  retry 2\n" + TCP))
    _, toml, _ = imported(text)
    assert f"retry = 2    # real_server retry ({at(text, 'retry 2')}, {at(text, 'retry 2', 1)})" in toml


def test_misc_path_is_split_as_keepalived_splits_it() -> None:
    text = vs("",
              rs("192.0.2.21", "  MISC_CHECK {\n   misc_path \"/usr/local/bin/check --name 'a b' -x\\\\ y\"\n  }\n"),
              rs("192.0.2.22", "  MISC_CHECK {\n   misc_path /usr/local/bin/check 192.0.2.22\n  }\n"),
              rs("192.0.2.23", "  MISC_CHECK {\n   misc_path \"/bin/sh -c 'curl -s x | grep -q ok'\"\n  }\n"),
              rs("192.0.2.24", "  MISC_CHECK {\n   misc_path \"</etc/hosts\"\n  }\n"))
    _, toml, checks = imported(text)
    assert checks["192.0.2.21:80"].command == ("/usr/local/bin/check", "--name", "a b", "-x y")
    # unquoted: keepalived takes the first word only
    assert checks["192.0.2.22:80"].command == ("/usr/local/bin/check",)
    assert "keepalived runs only its first word (quote the whole command); 192.0.2.22 ignored" in toml
    assert checks["192.0.2.23:80"].command == ("/bin/sh", "-c", "curl -s x | grep -q ok")  # the shell's own syntax
    assert checks["192.0.2.24:80"].command == ("/bin/sh", "-c", "</etc/hosts")  # keepalived's file test: system()


def test_a_misc_path_with_shell_syntax_runs_as_keepalived_runs_it() -> None:
    for script, word in (('/usr/bin/curl -s http://x/ | grep ok', "|"), ("/usr/bin/check > /tmp/out", ">"),
                         ("/usr/bin/check $HOST", "$HOST"), ("/usr/bin/check a; /bin/false", "a;")):
        text = vs("", rs("192.0.2.21", f'  MISC_CHECK {{\n   misc_path "{script}"\n  }}\n'))
        result, toml, checks = imported(text)
        # keepalived execs the words without a shell: the program gets them as arguments, as here
        assert checks["192.0.2.21:80"].command == tuple(script.split()), script
        assert f"{word!r} looks like shell syntax, but keepalived runs misc_path without a shell" in toml
        assert f'command = ["/bin/sh", "-c", "{script}"]' in toml
        assert result.services[0].checkers


def test_misc_paths_kanotify_cannot_run() -> None:
    result, _, checks = imported(vs("", rs("192.0.2.21", '  MISC_CHECK {\n   misc_path "check-it now"\n  }\n'),
                                    rs("192.0.2.22", "  MISC_CHECK {\n   misc_path \"/bin/x 'open\n  }\n"),
                                    rs("192.0.2.23", "  MISC_CHECK {\n   misc_dynamic\n  }\n")))
    assert checks == {}
    why = reasons(result)
    assert "check-it is not a path and is in none of /usr/local/sbin:" in why
    assert "keepalived cannot parse this command" in why
    assert "keepalived skips a MISC_CHECK without misc_path" in why


def test_misc_dynamic_and_user() -> None:
    text = vs("", rs("192.0.2.21", "  MISC_CHECK {\n   misc_path /usr/local/bin/weight\n   misc_dynamic\n  }\n"),
              rs("192.0.2.22", "  MISC_CHECK {\n   misc_path /usr/local/bin/check\n   user nobody\n  }\n"))
    result, toml, checks = imported(text)
    assert checks["192.0.2.21:80"].dynamic and not checks["192.0.2.22:80"].dynamic
    assert f"dynamic = true    # misc_dynamic ({at(text, 'misc_dynamic')}): exit 2-255 is UP with weight exit-2" in toml
    why = reasons(result)
    assert "kanotify runs the command as root, as its listener runs, not as nobody" in why


def test_values_keepalived_ignores_and_kanotifys_limits() -> None:
    text = vs(" delay_loop abc\n retry 0\n delay_before_retry 5000\n",
              rs("192.0.2.21", "  delay_loop 100000\n  connect_timeout 0\n  TCP_CHECK {\n   retry 250\n"
                               "   inhibit_on_failure\n   warmup 5\n  }\n"))
    result, toml, checks = imported(text)
    assert checks["192.0.2.21:80"] == HealthCheck("tcp", interval=86400, timeout=5, retry=100, retry_delay=3600,
                                                  on_failure="remove")
    why = reasons(result)
    assert f"delay_loop abc ({at(text, 'abc')}): keepalived ignores it: expected a number of seconds > 0" in why
    assert f"retry 0 ({at(text, 'retry 0')}): keepalived ignores it: expected an integer 1..4294967295" in why
    assert f"connect_timeout 0 ({at(text, 'connect_timeout 0')}): keepalived ignores it" in why
    assert f"inhibit_on_failure ({at(text, 'inhibit')}): not a TCP_CHECK option keepalived 2.2.7 knows" in why
    assert f"warmup 5 ({at(text, 'warmup')}): kanotify has no warmup" in why
    assert f"real_server delay_loop ({at(text, '100000')}): 100000, above kanotify's maximum 86400" in toml


def test_connect_ip_bindto_bind_port() -> None:
    text = vs("", rs("192.0.2.21", "  TCP_CHECK {\n   connect_ip 198.51.100.9\n   bindto 192.0.2.5\n"
                                   "   bind_port 4000\n  }\n"),
              rs("192.0.2.22", "  TCP_CHECK {\n   connect_ip 192.0.2.22\n   bindto 2001:db8::5\n  }\n"))
    result, toml, checks = imported(text)
    first = checks["192.0.2.21:80"]
    assert (str(first.address), str(first.source), first.source_port) == ("198.51.100.9", "192.0.2.5", 4000)
    assert f'address = "198.51.100.9"    # connect_ip ({at(text, "198.51.100.9")})' in toml
    second = checks["192.0.2.22:80"]
    assert second.address is None and second.source is None  # its own address: kanotify's default
    assert "the real server's own address, kanotify's default" in toml
    assert "an IPv6 source for an IPv4 check: keepalived's bind() fails" in reasons(result)


def test_options_no_check_takes_are_noted() -> None:
    text = vs(" delay_loop 6\n retry 2\n", rs("192.0.2.21", "  TCP_CHECK {\n   retry 1\n  }\n"),
              rs("192.0.2.22", "  connect_timeout 3\n"))
    result, _, _ = imported(text)
    why = reasons(result)
    assert f"retry 2 ({at(text, 'retry 2')}): only health checkers use it, and none below it takes it" in why
    assert f"connect_timeout 3 ({at(text, 'connect_timeout 3')}): only health checkers use it" in why
    assert "delay_loop 6" not in why  # the TCP_CHECK takes it


def test_a_group_gives_every_service_the_checks() -> None:
    text = ("virtual_server_group G {\n 192.0.2.100 80\n 192.0.2.101 80\n}\n"
            "virtual_server group G {\n protocol TCP\n lvs_method DR\n real_server 192.0.2.21 80 {\n" + TCP + " }\n}\n")
    result, _, checks = imported(text)
    assert len(result.services) == 2 and all(s.checkers for s in result.services)
    assert list(checks) == ["192.0.2.21:80"] and len(
        [c for spec in parse_config(render(result)).instances[0].services for c in spec.checks]) == 2
    assert all(ipaddress.ip_address("192.0.2.21") == r.real.address for s in result.services for r in s.reals)


def test_random_checker_blocks_always_import_to_a_config_the_loader_accepts() -> None:
    """Whatever options and values (valid or not for keepalived), import never writes a check kanotify refuses."""
    values = ["0", "1", "2.5", "abc", "-1", "100000", "4294967296", "on", "off", "", "7", "/x", "x/y", "é", "$X", "|"]
    options = ["delay_loop", "connect_timeout", "retry", "nb_get_retry", "delay_before_retry", "warmup", "alpha",
               "inhibit_on_failure", "virtualhost", "connect_port", "connect_ip", "misc_timeout", "misc_dynamic", "user",
               "bindto", "http_protocol", "bogus"]
    commands = ["/bin/true", '"/bin/x a|b"', "rel", '"/bin/sh -c \\"x\\""', '"</etc/hosts"', "\"/bin/a ''\"", "/bin/é",
                '"/bin/a \\x7f"', '"/bin/a \\000"']
    rnd = random.Random(12)
    checked = 0
    for _ in range(400):
        def option() -> str:
            name = rnd.choice(options + ["misc_path"])
            return f"misc_path {rnd.choice(commands)}" if name == "misc_path" else f"{name} {rnd.choice(values)}"

        def url() -> str:
            keys = ["path", "status_code", "virtualhost", "digest"]
            lines = "".join(f"   {rnd.choice(keys)} {rnd.choice(values + ['200', '200-299', '/h', '600'])}\n"
                            for _ in range(rnd.randint(0, 4)))
            return f"  url {{\n{lines}  }}\n"

        def checker() -> str:
            body = "".join(f"  {option()}\n" for _ in range(rnd.randint(0, 5))) + "".join(
                url() for _ in range(rnd.randint(0, 2)))
            return f"  {rnd.choice(['TCP_CHECK', 'HTTP_GET', 'SSL_GET', 'MISC_CHECK', 'SMTP_CHECK'])} {{\n{body}  }}\n"

        head = rnd.choice(["192.0.2.100 80", "fwmark 5", "2001:db8::1 443"])
        reals = [rs(f"2001:db8::{i + 2}" if ":" in head else f"192.0.2.{i + 2}",
                    "".join(f"  {option()}\n" for _ in range(rnd.randint(0, 3)))
                    + "".join(checker() for _ in range(rnd.randint(0, 2))), port=rnd.choice([None, 80, 8080]))
                 for i in range(rnd.randint(1, 3))]
        text = vs("".join(f" {option()}\n" for _ in range(rnd.randint(0, 4))), *reals, head=head)
        checked += len(imported(text)[2])  # imported() loads the TOML with kanotify's config loader
    assert checked > 100  # the generator does reach importable checks


def test_dns_udp_ping_smtp_checkers() -> None:
    text = vs(" delay_loop 10\n",
              rs("192.0.2.21", "  DNS_CHECK {\n   type aaaa\n   name www.example.com\n  }\n", port=53),
              rs("192.0.2.22", "  DNS_CHECK {\n   retry 1\n  }\n", port=53),
              rs("192.0.2.23", "  UDP_CHECK {\n   payload 01 2 0a0b\n   require_reply 6b x1\n"
                               "   min_reply_length 2\n  }\n", port=53),
              rs("192.0.2.24", "  PING_CHECK {\n   connect_ip 198.51.100.4\n   bindto 192.0.2.5\n  }\n", port=53),
              rs("192.0.2.25", "  SMTP_CHECK {\n   helo_name director.example.org\n   connect_port 25\n  }\n",
                 port=53), head="192.0.2.100 53")
    result, toml, checks = imported(text)
    dns = checks["192.0.2.21:53"]
    assert (dns.type, dns.dns_type, dns.dns_name, dns.retry, dns.retry_delay) == ("dns", "AAAA", "www.example.com", 3, 10)
    assert "retry_delay = 10    # keepalived's DNS_CHECK default: the delay_loop" in toml
    assert (checks["192.0.2.22:53"].dns_type, checks["192.0.2.22:53"].dns_name) == ("SOA", "")
    udp = checks["192.0.2.23:53"]
    assert (udp.payload, udp.require_reply, udp.reply) == (b"\x01\x02\x0a\x0b", True, b"\x6b")
    assert "the 1 byte(s) before the first one are compared" in toml
    assert "min_reply_length 2" in reasons(result)
    ping = checks["192.0.2.24:53"]
    assert (ping.type, str(ping.address), str(ping.source), ping.port) == ("ping", "198.51.100.4", "192.0.2.5", 0)
    smtp = checks["192.0.2.25:53"]
    assert (smtp.type, smtp.helo_name, smtp.port) == ("smtp", "director.example.org", 25)


def test_file_check_reads_its_track_file() -> None:
    text = ("track_file maint {\n file /run/maint\n weight -10\n}\n"
            "track_file other {\n file /run/other\n}\n"
            + vs("", rs("192.0.2.21", "  FILE_CHECK {\n   track_file maint\n  }\n"),
                 rs("192.0.2.22", "  FILE_CHECK {\n   track_file other\n   weight 0 reverse\n  }\n"),
                 rs("192.0.2.23", "  FILE_CHECK {\n   track_file nowhere\n  }\n")))
    result, toml, checks = imported(text)
    first = checks["192.0.2.21:80"]
    assert (first.type, first.file, first.weight, first.reverse, first.retry) == ("file", "/run/maint", -10, False, 0)
    second = checks["192.0.2.22:80"]
    assert (second.file, second.weight, second.reverse) == ("/run/other", 0, True)
    assert "192.0.2.23:80" not in checks
    assert "track_file nowhere" in reasons(result) and "is not defined" in reasons(result)


def test_misc_path_relative_and_from_path() -> None:
    text = vs("", rs("192.0.2.21", '  MISC_CHECK {\n   misc_path "scripts/check.sh -v"\n  }\n'),
              rs("192.0.2.22", '  MISC_CHECK {\n   misc_path "true --x"\n  }\n'))
    _, toml, checks = imported(text)
    assert checks["192.0.2.21:80"].command == ("/scripts/check.sh", "-v")
    assert "keepalived runs it from its working directory, /" in toml
    assert checks["192.0.2.22:80"].command[0] in ("/usr/bin/true", "/bin/true")
    assert "keepalived searches PATH; found as" in toml


def test_smtp_host_blocks_are_checkers_of_their_own() -> None:
    text = vs("", rs("192.0.2.21", "  SMTP_CHECK {\n   helo_name d.example\n   host {\n    connect_ip 192.0.2.31\n"
                                   "    connect_port 25\n   }\n   host {\n    connect_ip 192.0.2.32\n"
                                   "    connect_port 587\n   }\n  }\n"))
    _, toml, _ = imported(text)
    every = every_check(toml, "192.0.2.21:80")
    assert [(str(c.address), c.port, c.helo_name) for c in every] == [
        ("192.0.2.31", 25, "d.example"), ("192.0.2.32", 587, "d.example")]
