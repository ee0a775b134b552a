"""``kanotify doctor``: keepalived.conf and this host checked for the LVS pitfalls of the seeds.

Every check is a small function of a :class:`Context` returning :class:`Row`
values (``pass``/``warn``/``fail``, what was found, a one-line fix, the
``FILE:LINE`` it applies to, and -- where a shell command is the fix -- that
command).  :data:`CHECKS` lists them in the order they are shown.  The
command (:func:`kanotify.commands.cmd_doctor`) prints them and exits 1 when any row fails.

keepalived.conf is read with :mod:`kanotify.keepalived.conf` (keepalived's own
grammar); the kanotify config is optional (without one, keepalived.conf and the
host are checked).  Host facts come from a :class:`~kanotify.keepalived.hostfacts.Host`
-- the real one (:mod:`kanotify.keepalived.hostfacts`) reads the network
namespace the process runs in, a fake one serves the unit tests.  The sysctl.d search starts at ``sysctl_root``
(``/``; tests point it at a directory of their own).
"""

from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from ..config.values import Config
from ..model import IPInterface, ServiceKey
from ..security import insecure_component
from .conf import KeepalivedConf, Statement
from .hostfacts import Host
from .scripts import (Script, find_in_path, is_executable, kanotify_command, resolved_paths, script_identity,
                      scripts, uid_gid)

if TYPE_CHECKING:
    from .doctor_bgp import BgpFacts
    from .imported import ImportResult

PASS, WARN, FAIL = "pass", "warn", "fail"

#: keepalived messages from ``keepalived -t`` that are expected when kanotify owns the VIPs
BENIGN_KEEPALIVED = ("No VIP specified; at least one is sensible",)
#: ``keepalived -t`` lines that are warnings, not errors
WARNING_KEEPALIVED = ("deprecated", "WARNING", "Please use", "SECURITY VIOLATION")

FIFOS = ("notify_fifo", "vrrp_notify_fifo", "lvs_notify_fifo")
SPECIFIC = {"notify_master": "master", "notify_backup": "backup", "notify_fault": "fault", "notify_stop": "stop"}


@dataclass(frozen=True)
class Row:
    """One line of the doctor's table."""

    status: str  # pass | warn | fail
    check: str
    what: str
    fix: str = ""
    where: str = ""
    command: str | None = None  # a shell command that applies the fix, when one does


@dataclass
class Context:
    """Everything the checks look at."""

    kconf: KeepalivedConf
    config: Config | None
    host: Host
    config_path: str | None = None
    config_problems: list[str] = field(default_factory=list)
    sysctl_root: str = "/"
    config_given: bool = False
    config_id: str | None = None
    #: the [bgp] link and daemon (None: this host's, :class:`~kanotify.keepalived.doctor_bgp.SystemBgpFacts`)
    bgp_facts: "BgpFacts | None" = None
    _imported: "ImportResult | None" = None

    def imported(self) -> "ImportResult":
        """keepalived's virtual_servers as kanotify would import them (:class:`~kanotify.keepalived.imported.ImportResult`)."""
        if self._imported is None:
            from .importer import import_conf

            self._imported = import_conf(self.kconf)
        return self._imported


# --------------------------------------------------------------------------- helpers


def _w(stmt: Statement | None) -> str:
    return str(stmt.where) if stmt is not None else ""


def _global_flag(ctx: Context, keyword: str) -> Statement | None:
    found = ctx.kconf.global_(keyword)
    return found[-1] if found else None


# --------------------------------------------------------------------------- checks


def check_keepalived_conf(ctx: Context) -> list[Row]:
    """keepalived.conf can be read; what keepalived's parser would complain about."""
    conf = ctx.kconf
    if not conf.readable:
        text = conf.messages[0].text if conf.messages else "cannot read it"
        return [Row(FAIL, "keepalived.conf", text, f"point --keepalived-conf at keepalived's config "
                                                   f"(default {conf.path})", conf.path)]
    rows = [Row(PASS, "keepalived.conf", f"read {len(conf.files)} file(s)"
                + (f" with config id {conf.config_id!r}" if conf.config_id else ""), where=conf.path)]
    for message in conf.messages[:20]:
        rows.append(Row(WARN, "keepalived.conf", message.text, "correct the line (keepalived reports it too)",
                        str(message.where or "")))
    return rows


def check_kanotify_config(ctx: Context) -> list[Row]:
    """The kanotify config, if any, is valid."""
    if ctx.config_problems:
        return [Row(FAIL, "config", problem, "kanotify check shows every problem; fix them",
                    ctx.config_path or "") for problem in ctx.config_problems[:10]]
    if ctx.config is None:
        return [Row(PASS, "config", "none: keepalived.conf and the host are checked alone",
                    where=ctx.config_path or "")]
    return [Row(PASS, "config", f"valid ({len(ctx.config.instances)} instance(s))", where=ctx.config.path)]


def check_keepalived_test(ctx: Context) -> list[Row]:
    """keepalived's own verdict: ``keepalived -t -f FILE``."""
    if not ctx.kconf.readable:
        return []
    result = ctx.host.keepalived_test(ctx.kconf.path, ctx.config_id)
    if result is None:
        return [Row(WARN, "keepalived -t", "keepalived is not installed here: its own config test did not run",
                    "install keepalived, or run doctor where it runs")]
    code, lines = result
    if code == 0:
        return [Row(PASS, "keepalived -t", "keepalived accepts the config", where=ctx.kconf.path)]
    benign = [line for line in lines if any(b in line for b in BENIGN_KEEPALIVED)]
    place = _keepalived_place(ctx.kconf.path)
    warnings = [line for line in lines if line not in benign and any(w in line for w in WARNING_KEEPALIVED)]
    errors = [line for line in lines if line not in benign and line not in warnings]
    rows = []
    for status, chosen in ((FAIL, errors[:15]), (WARN, warnings[:10])):
        for line in chosen:
            text, where = place(line)
            rows.append(Row(status, "keepalived -t", text, "correct what keepalived reports", where))
    if not errors and not warnings:
        rows.append(Row(PASS, "keepalived -t", f"keepalived accepts the config (exit {code}: "
                        + "; ".join(benign) + " -- expected when kanotify owns the VIPs)", where=ctx.kconf.path))
    elif not errors:
        pass
    elif not lines:
        rows.append(Row(FAIL, "keepalived -t", f"keepalived -t exited {code}", "run keepalived -t -f FILE",
                        ctx.kconf.path))
    return rows


def _keepalived_place(main: str) -> Callable[[str], tuple[str, str]]:
    """keepalived's ``(FILE: Line N) text`` / ``(Line N) text`` -> (text, FILE:N)."""
    import re

    def split(line: str) -> tuple[str, str]:
        m = re.match(r"\((?:(.+?): )?Line (\d+)\) ?(.*)\Z", line)
        if not m:
            return line, main
        file = m.group(1) or main
        if os.path.abspath(file) == os.path.abspath(main):
            file = main
        return m.group(3), f"{file}:{m.group(2)}"
    return split


def check_vrrp_strict(ctx: Context) -> list[Row]:
    """vrrp_strict (global) or strict_mode (instance) is off."""
    rows = []
    for s in ctx.kconf.global_("vrrp_strict"):
        rows.append(Row(FAIL, "vrrp_strict", "vrrp_strict is on: no unicast peers, no GARP repeats, and (priority "
                        "< 255) firewall rules that drop traffic to the VIPs", "delete the vrrp_strict line from "
                        "global_defs", _w(s)))
    for inst in ctx.kconf.top("vrrp_instance"):
        for s in inst.children("strict_mode"):
            if (s.arg(0) or "on") in ("on", "true", "yes"):
                rows.append(Row(FAIL, "vrrp_strict", f"strict_mode is on in vrrp_instance {inst.arg(0)}: the same "
                                "firewall rules as vrrp_strict", "delete the strict_mode line", _w(s)))
    return rows or [Row(PASS, "vrrp_strict", "vrrp_strict and strict_mode are off")]


def check_scripts(ctx: Context) -> list[Row]:
    """Each script exists, is executable and passes keepalived's script-security rule."""
    security = _global_flag(ctx, "enable_script_security")
    rows: list[Row] = []
    refs = scripts(ctx.kconf)
    if security is None and refs:
        rows.append(Row(WARN, "script security", "enable_script_security is off: keepalived runs root scripts that "
                        "others could replace", "add enable_script_security to global_defs",
                        _w(ctx.kconf.top("global_defs")[0]) if ctx.kconf.top("global_defs") else ctx.kconf.path))
    if security is not None and refs and _global_flag(ctx, "script_user") is None and not uid_gid("keepalived_script"):
        rows.append(Row(WARN, "script security", "enable_script_security without script_user and no keepalived_script "
                        "user: keepalived complains ('Unable to set default user') and runs the scripts as root",
                        "add 'script_user root' to global_defs", _w(security)))
    for ref in refs:
        rows.append(_check_script(ctx, ref, security is not None))
    if not refs:
        rows.append(Row(PASS, "scripts", "keepalived.conf runs no scripts"))
    return rows


def _check_script(ctx: Context, ref: Script, security: bool) -> Row:
    what = ref.stmt.keyword
    where = _w(ref.stmt)
    if not ref.argv:
        return Row(FAIL, "scripts", f"{what}: keepalived cannot parse the command (an unclosed quote?)",
                   "quote the whole command once: notify \"/path/script args\"", where)
    path = ref.argv[0]
    if path.startswith("<") and path[1:].lstrip().startswith("/"):
        return Row(PASS, "scripts", f"{what}: a file test ({path}), not run", where=where)
    name, uid, gid = script_identity(ctx.kconf, ref)
    if uid < 0:
        return Row(FAIL, "scripts", f"{what}: user {name!r} does not exist, keepalived ignores the script",
                   "create the user or fix script_user / the user word", where)
    if ref.kanotify is not None and uid != 0:
        return Row(FAIL, "scripts", f"{what}: runs kanotify as {name} (uid {uid}); kanotify changes addresses "
                   "and IPVS and needs root", "add 'script_user root' to global_defs (or 'root' after the command)",
                   where)
    note = ""
    if "/" not in path:
        found = find_in_path(path)
        if found is None:
            return Row(FAIL, "scripts", f"{what}: {path} is not in PATH", "give the script's full path", where)
        note = f" (found by PATH search: keepalived warns; give the full path {found})"
        path = found
    try:
        st = os.stat(path)
    except OSError as exc:
        return Row(FAIL, "scripts", f"{what}: {path} {exc.strerror.lower() if exc.strerror else 'is missing'}",
                   "install it there, or correct the path", where)
    if not stat.S_ISREG(st.st_mode):
        return Row(FAIL, "scripts", f"{what}: {path} is not a regular file", "correct the path", where)
    if not is_executable(st, uid, gid):
        return Row(FAIL, "scripts", f"{what}: {path} is not executable for {name}: keepalived disables it",
                   f"chmod 0755 {path}", where, command=f"chmod 0755 {_sh(path)}")
    checked, real = resolved_paths(path)
    problem = insecure_component(checked) or (insecure_component(real) if real else None)
    if problem is not None:
        component, why = problem
        fix = f"chown root:root {component} && chmod go-w {component}"
        if security:
            return Row(FAIL, "scripts", f"{what}: refused by enable_script_security: {component} {why}", fix,
                       where, command=f"chown root:root {_sh(component)} && chmod go-w {_sh(component)}")
        return Row(WARN, "scripts", f"{what}: {component} {why}: keepalived runs it but logs a SECURITY VIOLATION "
                   "(enable_script_security would refuse it)", fix, where,
                   command=f"chown root:root {_sh(component)} && chmod go-w {_sh(component)}")
    return Row(PASS, "scripts", f"{what}: {path} runs as {name}{note}", where=where)


def _sh(word: str) -> str:
    import shlex

    return shlex.quote(word)


def check_fifo(ctx: Context) -> list[Row]:
    """The notify FIFOs: one reader per FIFO, the right keyword for kanotify listen, states after reload."""
    rows: list[Row] = []
    names: dict[str, Statement] = {}
    for keyword in FIFOS:
        found = ctx.kconf.global_(keyword)
        for extra in found[1:]:
            rows.append(Row(WARN, "fifo", f"{keyword} given twice: keepalived ignores this one", f"delete it "
                            f"(the first is at {found[0].where})", _w(extra)))
        if found and found[0].args:
            name = found[0].args[0]
            if name in names:
                rows.append(Row(FAIL, "fifo", f"{keyword} and {names[name].keyword} ({names[name].where}) are the "
                                f"same FIFO {name}: two fifo scripts read it and split each other's lines",
                                f"give {keyword} its own path", _w(found[0])))
            else:
                names[name] = found[0]
    fifo_scripts = {s.stmt.keyword: s for s in scripts(ctx.kconf) if s.stmt.keyword.endswith("notify_fifo_script")}
    for keyword, script in fifo_scripts.items():
        fifo = keyword[: -len("_script")]
        if fifo not in {s.keyword for s in names.values()}:
            rows.append(Row(FAIL, "fifo", f"{keyword} without {fifo}: keepalived starts no fifo script",
                            f"add '{fifo} /run/keepalived/{fifo.replace('notify_', '')}.fifo' to global_defs",
                            _w(script.stmt)))
    listen = {k: s for k, s in fifo_scripts.items() if s.kanotify is not None}
    if "notify_fifo_script" in listen:
        rows.append(Row(FAIL, "fifo", "kanotify listen is the global notify_fifo_script: keepalived starts it twice "
                        "(VRRP and checker processes), two listeners on one FIFO", "use vrrp_notify_fifo and "
                        "vrrp_notify_fifo_script instead of notify_fifo and notify_fifo_script",
                        _w(listen["notify_fifo_script"].stmt)))
    if "lvs_notify_fifo_script" in listen:
        rows.append(Row(WARN, "fifo", "kanotify listen reads the LVS FIFO: it only logs VS/RS lines", "use "
                        "vrrp_notify_fifo_script for kanotify listen", _w(listen["lvs_notify_fifo_script"].stmt)))
    if listen and _global_flag(ctx, "fifo_write_vrrp_states_on_reload") is None:
        first = next(iter(listen.values()))
        rows.append(Row(WARN, "fifo", "no fifo_write_vrrp_states_on_reload: after a reload the new kanotify "
                        "listener is not told the current states", "add fifo_write_vrrp_states_on_reload to "
                        "global_defs (keepalived >= 2.2.5)", _w(first.stmt)))
    if not rows:
        rows.append(Row(PASS, "fifo", "notify FIFOs: " + (", ".join(f"{s.keyword} {n}" for n, s in names.items())
                                                          or "none configured")))
    return rows


def _ka_instances(conf: KeepalivedConf) -> dict[str, Statement]:
    return {s.arg(0) or "": s for s in conf.top("vrrp_instance") if s.arg(0)}


def check_instances(ctx: Context) -> list[Row]:
    """kanotify's instances and keepalived's: the same names, and keepalived tells kanotify about each."""
    ka = _ka_instances(ctx.kconf)
    refs = [s for s in scripts(ctx.kconf) if s.kanotify is not None]
    rows: list[Row] = []
    config = ctx.config
    names = set(config.instance_names) if config is not None else None
    notified: set[str] = set()
    listen = any(s.stmt.keyword == "vrrp_notify_fifo_script" or s.stmt.keyword == "notify_fifo_script"
                 for s in refs)
    groups = {g.arg(0): g for g in ctx.kconf.top("vrrp_sync_group")}
    for ref in refs:
        command, args, cfg = kanotify_command(ref.kanotify or [])
        block = ref.block
        where = _w(ref.stmt)
        if cfg and ctx.config_path and os.path.abspath(cfg) != os.path.abspath(ctx.config_path):
            rows.append(Row(WARN, "instances", f"{ref.stmt.keyword} runs kanotify with --config {cfg}, doctor "
                            f"checked {ctx.config_path}", f"run kanotify doctor --config {cfg}", where))
        if block is not None and block.keyword == "vrrp_instance":
            inst = block.arg(0) or ""
            if command == "notify":
                notified.add(inst)
            elif command in ("master", "backup", "fault", "stop"):
                target = args[0] if args else None
                expected = SPECIFIC.get(ref.stmt.keyword)
                if expected and command != expected:
                    rows.append(Row(FAIL, "instances", f"{ref.stmt.keyword} runs 'kanotify {command}'",
                                    f"make it 'kanotify {expected} {inst}'", where))
                if target is None and names is not None and len(names) != 1:
                    rows.append(Row(FAIL, "instances", f"'kanotify {command}' without an instance: the config has "
                                    f"{len(names)} instances, kanotify exits 2", f"add the instance: "
                                    f"'kanotify {command} {inst}'", where))
                elif target is not None and target != inst:
                    rows.append(Row(WARN, "instances", f"vrrp_instance {inst} runs 'kanotify {command} {target}'",
                                    f"use 'kanotify {command} {inst}'", where))
                who = target or inst
                if names is not None and target is not None and target not in names:
                    rows.append(Row(FAIL, "instances", f"'kanotify {command} {target}': the kanotify config has no "
                                    f"instance {target}, kanotify exits 2", f"add [[instance]] name = \"{target}\" "
                                    "to the kanotify config", where))
                notified.add(who)
            elif command is not None and command != "listen":
                rows.append(Row(FAIL, "instances", f"{ref.stmt.keyword} runs 'kanotify {command}', not a notify "
                                "command", "use 'kanotify notify' (keepalived appends the state)", where))
        elif block is not None and block.keyword == "vrrp_sync_group" and command == "notify":
            for member in _group_members(groups.get(block.arg(0))):
                notified.add(member)
    for inst, stmt in ka.items():
        kinds = {s.stmt.keyword for s in refs if s.block is stmt}
        specific = kinds & set(SPECIFIC)
        if specific and "notify" not in kinds and not listen:
            missing = sorted(set(SPECIFIC) - specific)
            if missing:
                rows.append(Row(WARN, "instances", f"vrrp_instance {inst} has no {', '.join(missing)} for kanotify: "
                                "it does not hear those states", "add them, or use the generic notify instead",
                                _w(stmt)))
    if names is None:
        if not rows:
            rows.append(Row(PASS, "instances", f"{len(ka)} vrrp_instance(s); no kanotify config to compare with"))
        return rows
    for inst, stmt in ka.items():
        if inst not in names and any(s.block is stmt for s in refs):
            rows.append(Row(WARN, "instances", f"vrrp_instance {inst} runs kanotify, but the kanotify config has no "
                            f"instance {inst}: its notifications are journaled and ignored",
                            f"add [[instance]] name = \"{inst}\" to the kanotify config, or drop the notify line",
                            _w(stmt)))
    ka_groups = set(groups)
    for group in config.groups if config is not None else ():
        if group.name not in ka_groups:
            rows.append(Row(WARN, "instances", f"kanotify group {group.name} is not a vrrp_sync_group of "
                            "keepalived.conf: GROUP notifications for it never come", "use the vrrp_sync_group's "
                            "name in [[group]] name", ctx.config_path or ""))
    for name in sorted(names):
        if name not in ka:
            known = ", ".join(sorted(ka)) or "none"
            rows.append(Row(FAIL, "instances", f"kanotify instance {name} is not a vrrp_instance of keepalived.conf "
                            f"(it has: {known}): keepalived never notifies it", "use the vrrp_instance's name in "
                            "[[instance]] name", ctx.config_path or ""))
        elif name not in notified and not listen:
            rows.append(Row(FAIL, "instances", f"vrrp_instance {name} never runs kanotify", f"add notify "
                            f"\"/usr/local/bin/kanotify notify\" to vrrp_instance {name}", _w(ka[name])))
    if not any(r.status == FAIL for r in rows):
        rows.append(Row(PASS, "instances", f"kanotify's instances ({', '.join(sorted(names)) or 'none'}) are "
                        "vrrp_instances that notify kanotify"))
    return rows


def _group_members(grp: Statement | None) -> list[str]:
    if grp is None:
        return []
    block = grp.child("group")
    if block is None:
        return []
    return [s.keyword for s in block.block or ()] + list(block.args)


def _ka_vips(conf: KeepalivedConf) -> list[tuple[Statement, Statement, IPInterface, str | None]]:
    """(instance, line, address, dev) for every virtual_ipaddress(_excluded) entry."""
    found = []
    for inst in conf.top("vrrp_instance"):
        for block in inst.children("virtual_ipaddress") + inst.children("virtual_ipaddress_excluded"):
            for line in block.block or ():
                try:
                    address = ipaddress.ip_interface(line.keyword)
                except ValueError:
                    continue
                words = list(line.words)
                dev = words[words.index("dev") + 1] if "dev" in words[:-1] else None
                found.append((inst, line, address, dev))
    return found


def check_vips(ctx: Context) -> list[Row]:
    """One owner per VIP: not in keepalived's virtual_ipaddress and kanotify's config both."""
    if ctx.config is None:
        return [Row(PASS, "vips", "no kanotify config: VIP owners not compared")]
    mine = {spec.vip.address.ip: inst.name for inst in ctx.config.instances for spec in inst.vips}
    rows = []
    for inst, line, address, _dev in _ka_vips(ctx.kconf):
        if address.ip in mine:
            rows.append(Row(FAIL, "vips", f"{address.ip} is in keepalived's virtual_ipaddress (vrrp_instance "
                            f"{inst.arg(0)}) and in kanotify's instance {mine[address.ip]}: two owners add and "
                            "remove it", "delete the line from virtual_ipaddress (kanotify binds it, GARP included)",
                            _w(line)))
    return rows or [Row(PASS, "vips", "no VIP is managed by both keepalived and kanotify")]


def check_services(ctx: Context) -> list[Row]:
    """One owner per IPVS service: no keepalived virtual_server for a service kanotify manages."""
    if ctx.config is None:
        return [Row(PASS, "services", "no kanotify config: IPVS service owners not compared")]
    mine = {spec.service.key: inst.name for inst in ctx.config.instances for spec in inst.services}
    rows = []
    for svc in ctx.imported().services:
        if svc.service.key in mine:
            rows.append(Row(FAIL, "services", f"{svc.service.key} is a keepalived virtual_server and a kanotify "
                            f"service (instance {mine[svc.service.key]}): two owners fight over its real servers",
                            "delete the virtual_server block (kanotify import shows it as TOML) or the "
                            "[[instance.service]]", str(svc.where)))
    return rows or [Row(PASS, "services", "no IPVS service is managed by both keepalived and kanotify")]


def _checked(ctx: Context) -> dict[ServiceKey, tuple[str, int]]:
    """kanotify's health-checked services: key -> (instance, how many real servers are checked)."""
    return {spec.service.key: (inst.name, len(spec.checks)) for inst in (ctx.config.instances if ctx.config else ())
            for spec in inst.services if spec.checks}


def check_health_twice(ctx: Context) -> list[Row]:
    """One checker per service: keepalived's checkers and kanotify's [check] would fight over the weight."""
    if ctx.config is None:
        return [Row(PASS, "health checked twice", "no kanotify config: health checkers not compared")]
    checked = _checked(ctx)
    rows = []
    for svc in ctx.imported().services:
        if svc.checkers and svc.service.key in checked:
            instance, count = checked[svc.service.key]
            rows.append(Row(WARN, "health checked twice", f"{svc.service.key}: keepalived's virtual_server "
                            f"({svc.where}) runs {len(svc.checkers)} health checker(s) on its real servers and "
                            f"kanotify's config checks {count} of them (instance {instance})",
                            "remove the checkers from keepalived.conf or the [check] from kanotify's config: two "
                            "checkers would fight over the weight", str(svc.checkers[0])))
    return rows or [Row(PASS, "health checked twice", "no service is health-checked by both keepalived and kanotify")]


def check_health_listener(ctx: Context) -> list[Row]:
    """kanotify's checks run only in ``kanotify listen``: is one started by keepalived?"""
    checked = _checked(ctx)
    if not checked:
        return [Row(PASS, "health checks", "kanotify's config has no health checks")]
    reals = sum(count for _, count in checked.values())
    fifos = {s.keyword for s in ctx.kconf.global_defs() if s.keyword in FIFOS and s.args}
    for ref in scripts(ctx.kconf):
        keyword = ref.stmt.keyword
        if keyword.endswith("notify_fifo_script") and keyword[: -len("_script")] in fifos and ref.kanotify is not None \
                and kanotify_command(ref.kanotify)[0] == "listen":
            return [Row(PASS, "health checks", f"{reals} real server(s) health-checked by kanotify listen, which "
                        f"{keyword} starts", where=_w(ref.stmt))]
    return [Row(WARN, "health checks", f"kanotify's config health-checks {reals} real server(s), but keepalived.conf "
                "starts no kanotify listen (vrrp_notify_fifo_script): the checks run only in the listener, so "
                "unless it runs as a systemd service no real server is checked",
                "add vrrp_notify_fifo and vrrp_notify_fifo_script \"/usr/local/bin/kanotify listen\" to global_defs, "
                "or run kanotify listen as a service (examples/kanotify-listen.service)",
                ctx.config.path if ctx.config else "")]


def _real_server_role(ctx: Context) -> tuple[bool, str]:
    """Does this host hold a VIP on lo (the real-server role), and why we think so."""
    if ctx.config is not None:
        for inst in ctx.config.instances:
            for spec in inst.vips:
                if spec.vip.dev == "lo":
                    return True, f"kanotify puts {spec.vip.address.ip} on lo"
    for _vrrp, _line, address, dev in _ka_vips(ctx.kconf):
        if dev == "lo":
            return True, f"keepalived puts {address.ip} on lo"
    for address in _lo_vips(ctx):
        return True, f"lo has {address.with_prefixlen}"
    return False, "no VIP on lo"


def _lo_vips(ctx: Context) -> list[IPInterface]:
    try:
        found = ctx.host.addresses("lo")
    except Exception:  # noqa: BLE001 - no rtnetlink: no host facts about lo
        return []
    return [a for a in found if not a.ip.is_loopback]


def check_lo_prefix(ctx: Context) -> list[Row]:
    """A VIP on lo is a /32 (/128): a wider prefix makes the host answer for the whole subnet."""
    rows = []
    for inst, line, address, dev in _ka_vips(ctx.kconf):
        if dev == "lo" and address.network.prefixlen != address.max_prefixlen:
            rows.append(Row(FAIL, "vip on lo", f"{address.with_prefixlen} on lo (vrrp_instance {inst.arg(0)}): the "
                            "host claims the whole subnet as local", f"use {address.ip}/{address.max_prefixlen}",
                            _w(line)))
    for address in _lo_vips(ctx):
        if address.network.prefixlen != address.max_prefixlen:
            full = f"{address.ip}/{address.max_prefixlen}"
            rows.append(Row(FAIL, "vip on lo", f"lo has {address.with_prefixlen}: the host claims "
                            f"{address.network} as local", f"ip addr del {address.with_prefixlen} dev lo; "
                            f"ip addr add {full} dev lo", command=f"ip addr del {address.with_prefixlen} dev lo && "
                            f"ip addr add {full} dev lo"))
    return rows or [Row(PASS, "vip on lo", "every VIP on lo is a /32 (/128)")]


def _int(value: str | None) -> int:
    try:
        return int(value or "0")
    except ValueError:
        return 0


def check_arp(ctx: Context) -> list[Row]:
    """arp_ignore/arp_announce for the real-server role: max(all, interface) is what counts."""
    rows: list[Row] = []
    if ctx.config is not None:
        keys = dict(ctx.config.sysctls)
        for name in ("arp_ignore", "arp_announce"):
            lo, all_ = f"net.ipv4.conf.lo.{name}", f"net.ipv4.conf.all.{name}"
            want = 1 if name == "arp_ignore" else 2
            if lo in keys and all_ not in keys:
                rows.append(Row(FAIL, "arp", f"the config sets {lo} but not {all_}: ARP arrives on eth0, where the "
                                f"kernel uses max(all, eth0); lo's value does nothing there",
                                f"add \"{all_}\" = {want} to [sysctl]", ctx.config.path))
    role, why = _real_server_role(ctx)
    if not role:
        return rows + [Row(PASS, "arp", f"not a real server ({why}): ARP policy not needed")]
    interfaces = [i for i in ctx.host.interfaces() if i != "lo"]
    for name, want, good in (("arp_ignore", 1, (1, 2, 3)), ("arp_announce", 2, (2,))):
        base = _int(ctx.host.sysctl(f"net.ipv4.conf.all.{name}"))
        bad: list[str] = []
        ok: list[str] = []
        for iface in interfaces:
            own = ctx.host.sysctl(f"net.ipv4.conf.{iface.replace('.', '/')}.{name}")
            if own is None:
                continue
            effective = max(base, _int(own))
            (ok if effective in good else bad).append(f"{iface}={effective} (all {base}, {iface} {own})")
        if bad:
            rows.append(Row(FAIL, "arp", f"real server ({why}), effective {name} = max(all, interface): "
                            + ", ".join(bad) + f"; it must be {want}",
                            f"sysctl -w net.ipv4.conf.all.{name}={want} (persist it: kanotify sysctl --persist)",
                            command=f"sysctl -q -w net.ipv4.conf.all.{name}={want}"))
        else:
            rows.append(Row(PASS, "arp", f"effective {name}: " + (", ".join(ok) or "no interface")))
    return rows


def _forwards(ctx: Context) -> dict[str, set[int]]:
    """forward method -> address families, over kanotify's services and keepalived's virtual_servers."""
    found: dict[str, set[int]] = {}
    specs = [spec for inst in (ctx.config.instances if ctx.config else ()) for spec in inst.services]
    specs += [svc.spec for svc in ctx.imported().services]
    for spec in specs:
        for real in spec.reals:
            found.setdefault(real.forward, set()).add(spec.service.key.family)
    return found


def check_rp_filter(ctx: Context) -> list[Row]:
    """Reverse-path filtering for DR and TUN real servers (effective = max(all, interface))."""
    forwards = _forwards(ctx)
    role, why = _real_server_role(ctx)
    if not role and not ({"dr", "tun"} & set(forwards)):
        return [Row(PASS, "rp_filter", "no DR or TUN service and no VIP on lo")]
    interfaces = [i for i in ctx.host.interfaces() if i != "lo"]
    base = _int(ctx.host.sysctl("net.ipv4.conf.all.rp_filter"))
    rows: list[Row] = []
    tunnels = [i for i in interfaces if i.startswith(("tunl", "ip6tnl"))]
    if "tun" in forwards and role:
        if not tunnels:
            rows.append(Row(FAIL, "rp_filter", "a TUN real server without a tunnel device: the IPIP packets are "
                            "not decapsulated", "modprobe ipip (tunl0 appears); put the VIP on lo or tunl0",
                            command="modprobe ipip"))
        for iface in tunnels:
            effective = max(base, _int(ctx.host.sysctl(f"net.ipv4.conf.{iface}.rp_filter")))
            if effective == 1:
                rows.append(Row(FAIL, "rp_filter", f"effective rp_filter on {iface} is 1 (strict): decapsulated "
                                "packets from clients fail the reverse-path check and are dropped",
                                f"sysctl -w net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.{iface}.rp_filter=0",
                                command=f"sysctl -q -w net.ipv4.conf.all.rp_filter=0 "
                                        f"net.ipv4.conf.{iface}.rp_filter=0"))
    strict = []
    for iface in interfaces:
        if iface in tunnels:
            continue
        own = ctx.host.sysctl(f"net.ipv4.conf.{iface.replace('.', '/')}.rp_filter")
        if own is not None and max(base, _int(own)) == 1:
            strict.append(iface)
    if strict and ("dr" in forwards or role):
        settings = " ".join(f"net.ipv4.conf.{i.replace('.', '/')}.rp_filter=2" for i in strict)
        rows.append(Row(WARN, "rp_filter", f"strict rp_filter (1) on {', '.join(strict)}: DR traffic is dropped "
                        "whenever the route back to a client leaves by another interface",
                        f"sysctl -w net.ipv4.conf.all.rp_filter=2 {settings} (loose)",
                        command=f"sysctl -q -w net.ipv4.conf.all.rp_filter=2 {settings}"))
    return rows or [Row(PASS, "rp_filter", f"rp_filter is not strict where DR/TUN traffic arrives (all={base})")]


def check_ip_forward(ctx: Context) -> list[Row]:
    """A NAT director routes the replies: IP forwarding must be on."""
    families = _forwards(ctx).get("nat", set())
    if not families:
        return [Row(PASS, "ip_forward", "no NAT service")]
    rows = []
    for family in sorted(families):
        key = "net.ipv4.ip_forward" if family == 4 else "net.ipv6.conf.all.forwarding"
        value = ctx.host.sysctl(key)
        if value != "1":
            rows.append(Row(FAIL, "ip_forward", f"{key} = {value}: a NAT director must forward the real servers' "
                            "replies", f"sysctl -w {key}=1 (and add it to [sysctl], then kanotify sysctl --persist)",
                            command=f"sysctl -q -w {key}=1"))
        else:
            rows.append(Row(PASS, "ip_forward", f"{key} = 1 for NAT"))
    return rows


def check_ip_vs(ctx: Context) -> list[Row]:
    """IPVS is in the kernel when a service needs it."""
    wanted = bool(ctx.imported().services) or any(inst.services for inst in (ctx.config.instances if ctx.config
                                                                              else ()))
    if not wanted:
        return [Row(PASS, "ip_vs", "no IPVS service configured")]
    state, detail = ctx.host.ipvs()
    if state == "loaded":
        return [Row(PASS, "ip_vs", detail)]
    if state == "loadable":
        return [Row(WARN, "ip_vs", detail, "modprobe ip_vs (and list it in /etc/modules-load.d/ipvs.conf)",
                    command="modprobe ip_vs")]
    return [Row(FAIL, "ip_vs", detail, "use a kernel with IPVS (CONFIG_IP_VS), e.g. the distribution's")]


def _kanotify_sync_interface(config: Config | None) -> str | None:
    """The ``[sync_daemon]`` interface of the kanotify config, if it has one."""
    return config.sync_daemon.interface if config is not None and config.sync_daemon is not None else None


def check_sync_daemon(ctx: Context) -> list[Row]:
    """The sync daemon's multicast interface exists here."""
    present = set(ctx.host.interfaces())
    rows = []
    wanted: list[tuple[str, str, str]] = []
    for s in ctx.kconf.global_("lvs_sync_daemon"):
        if s.args:
            wanted.append((s.args[0], "lvs_sync_daemon", _w(s)))
    for inst in ctx.kconf.top("vrrp_instance"):
        for s in inst.children("lvs_sync_daemon_interface"):
            if s.args:
                wanted.append((s.args[0], "lvs_sync_daemon_interface", _w(s)))
    mine = _kanotify_sync_interface(ctx.config)
    if mine and wanted:
        keyword, where = wanted[0][1], wanted[0][2]
        rows.append(Row(WARN, "sync daemon", f"keepalived's {keyword} and kanotify's [sync_daemon] both drive the "
                        "IPVS sync daemon: each stops and restarts the other's on every transition",
                        f"delete {keyword} (kanotify's [sync_daemon] follows the VRRP state)", where))
    if mine:
        wanted.append((mine, "[sync_daemon] interface", ctx.config.path if ctx.config else ""))
    for iface, what, where in wanted:
        if iface not in present:
            rows.append(Row(FAIL, "sync daemon", f"{what} names {iface}, which does not exist here: the kernel "
                            "refuses to start the daemon (ENODEV)", f"use an existing interface "
                            f"({', '.join(sorted(present)) or 'none'})", where))
        else:
            rows.append(Row(PASS, "sync daemon", f"{what} {iface} exists", where=where))
    return rows or [Row(PASS, "sync daemon", "no sync daemon configured")]


def check_persisted(ctx: Context) -> list[Row]:
    """Sysctls set now are also in sysctl.d, so a reboot keeps them."""
    from ..backends.sysctld import DEFAULT_PATH, persisted

    if ctx.config is not None:
        wanted = list(ctx.config.sysctls)
    else:
        wanted = []
        for key in ("net.ipv4.conf.all.arp_ignore", "net.ipv4.conf.all.arp_announce", "net.ipv4.conf.lo.arp_ignore",
                    "net.ipv4.conf.lo.arp_announce"):
            value = ctx.host.sysctl(key)
            if value not in (None, "0"):
                wanted.append((key, value))
    if not wanted:
        return [Row(PASS, "persisted", "no sysctl to persist")]
    boot = persisted(ctx.sysctl_root)
    lost, drift, kept = [], [], []
    for key, value in wanted:
        current = ctx.host.sysctl(key)
        saved = boot.lookup(key)
        if current != value:
            drift.append(f"{key} = {current} (want {value})")
        elif saved is None or saved.value != value:
            lost.append(f"{key} = {value}" + (f" (boot sets {saved.value} at {saved.where})" if saved else ""))
        else:
            kept.append(key)
    rows = []
    target = DEFAULT_PATH if os.path.abspath(ctx.sysctl_root) == "/" else os.path.join(
        ctx.sysctl_root, DEFAULT_PATH.lstrip("/"))
    if lost:
        config_opt = f"--config {_sh(ctx.config.path)} " if ctx.config is not None and ctx.config_given else ""
        path_opt = "" if target == DEFAULT_PATH else f" --path {_sh(target)}"
        if ctx.config is not None:
            fix = f"kanotify {config_opt}sysctl --persist{path_opt}"
            command: str | None = fix
        else:
            fix = f"write them to {DEFAULT_PATH} (or put them in a kanotify config's [sysctl] and run kanotify " \
                  "sysctl --persist)"
            command = None
        rows.append(Row(WARN, "persisted", "set now but lost at reboot: " + "; ".join(lost), fix, command=command))
    if drift:
        rows.append(Row(WARN, "persisted", "not set now: " + "; ".join(drift), "kanotify reconcile sets them"
                        if ctx.config is not None else "set them with sysctl -w"))
    if kept:
        rows.append(Row(PASS, "persisted", f"{len(kept)} sysctl(s) persisted in sysctl.d"))
    return rows


def check_bgp(ctx: Context) -> list[Row]:
    """The ``[bgp]`` wiring (:mod:`kanotify.keepalived.doctor_bgp`): link, daemon exports, no graceful
    restart, BFD, a hashing scheduler (sloppy_tcp and the sync mode: their own rows, doctor_active)."""
    from .doctor_bgp import bgp_rows

    return [Row(*row) for row in bgp_rows(ctx.config, ctx.host, ctx.bgp_facts)]


CHECKS: tuple[Callable[[Context], list[Row]], ...] = (
    check_keepalived_conf,
    check_kanotify_config,
    check_keepalived_test,
    check_vrrp_strict,
    check_scripts,
    check_fifo,
    check_instances,
    check_vips,
    check_services,
    check_health_twice,
    check_health_listener,
    check_lo_prefix,
    check_arp,
    check_rp_filter,
    check_ip_forward,
    check_ip_vs,
    check_sync_daemon,
    check_persisted,
    check_bgp,
)


def run_checks(ctx: Context, checks: Iterable[Callable[[Context], list[Row]]] = CHECKS) -> list[Row]:
    """Every check's rows; a check that breaks is one fail row, never a traceback."""
    rows: list[Row] = []
    for check in checks:
        try:
            rows.extend(check(ctx))
        except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others
            name = check.__name__.removeprefix("check_")
            rows.append(Row(FAIL, name, f"the check itself failed: {type(exc).__name__}: {exc}",
                            "report this as a kanotify bug"))
    return rows


def format_rows(rows: Sequence[Row]) -> str:
    """The table: status, check, what (with the place), and the fix under it."""
    width = max((len(r.check) for r in rows), default=5)
    lines = []
    for row in rows:
        where = f"  [{row.where}]" if row.where else ""
        lines.append(f"{row.status.upper():<4}  {row.check:<{width}}  {row.what}{where}")
        if row.fix and row.status != PASS:
            lines.append(f"{'':<4}  {'':<{width}}  fix: {row.fix}")
    counts = {s: sum(r.status == s for r in rows) for s in (PASS, WARN, FAIL)}
    lines.append(f"{counts[PASS]} pass, {counts[WARN]} warn, {counts[FAIL]} fail")
    return "\n".join(lines)

