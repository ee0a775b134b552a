"""keepalived's IPVS sync daemon as kanotify's ``[sync_daemon]`` table.

The global ``lvs_sync_daemon``, or the legacy ``lvs_sync_daemon_interface`` of a
``vrrp_instance``, becomes the ``[sync_daemon]`` table when it follows the
imported instance: the line keepalived 2.2.7 uses (the first), its sync id
resolved as keepalived resolves it, checked by kanotify's config loader on its
own first (:func:`import_sync_daemon`).  A sync daemon of another instance is a
note saying how to import it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from ..errors import ConfigError, Problem
from .conf import KeepalivedConf, Statement
from .imported import CheckLine, ImportedSyncDaemon, Note, note_at, parse_ip, toml_str, uint_in

#: lvs_sync_daemon's options with a value (global_parser.c lvs_syncd_handler), other than ``inst``:
#: option -> ([sync_daemon] key, keepalived's range; the group is an address)
SYNC_OPTIONS = {"id": ("sync_id", 0, 255), "maxlen": ("maxlen", 1, 65535 - 20 - 8), "port": ("port", 1, 65535),
                "ttl": ("ttl", 1, 255), "group": ("group", 0, 0)}
#: what keepalived passes the kernel for an option not given (nothing: the kernel's default, kanotify's too)
SYNC_KERNEL_DEFAULTS = {"maxlen": "from the MTU", "port": "8848", "ttl": "1", "group": "224.0.0.81"}


@dataclass
class _Syncd:
    """One sync daemon line as keepalived reads it: a line that sets the interface claims the daemon."""

    stmt: Statement
    interface: str
    instance: str | None  # None: no VRRP instance (only the global form can lack one)
    lines: dict[str, CheckLine] = field(default_factory=dict)  # sync_id, maxlen, port, ttl, group as given
    notes: list[Note] = field(default_factory=list)

    @property
    def legacy(self) -> bool:
        return self.stmt.keyword == "lvs_sync_daemon_interface"


def _read_lvs_sync_daemon(s: Statement) -> _Syncd | Note:
    """``lvs_sync_daemon IFACE [inst NAME] [id N] [maxlen N] [port N] [ttl N] [group IP]`` as keepalived 2.2.7 reads it.

    The older form ``lvs_sync_daemon IFACE INSTANCE [SYNC_ID]`` is understood at those
    positions.  A :class:`Note` when keepalived ignores the whole line (no interface,
    or a name of 16 bytes or more): then a later line can still give the daemon.
    """
    words = s.args
    if not words:
        return note_at(s, "keepalived ignores it: lvs_sync_daemon requires an interface")
    if len(words[0].encode("utf-8", "surrogateescape")) >= 16:  # IP_VS_IFNAME_MAXLEN
        return note_at(s, "keepalived ignores it: the interface name is 16 bytes or longer")
    sd = _Syncd(s, words[0], None)

    def ignored(what: str, why: str) -> None:
        sd.notes.append(Note(s.where, f"{s.keyword} ... {what}", why))

    i = 1  # keepalived's strvec index minus one
    while i < len(words):
        word, value = words[i], (words[i + 1] if i + 1 < len(words) else None)
        if word == "inst":
            if sd.instance is not None:
                ignored(f"inst {value or ''}", f"keepalived keeps the instance given first ({sd.instance})")
            else:
                sd.instance = value or ""  # keepalived reads "" past the end, and finds no such instance
            i += 2
        elif word in SYNC_OPTIONS:
            if value is None:
                ignored(word, "no value after it: keepalived ignores it")
            else:
                _sync_option(sd, word, value, ignored)
            i += 2
        elif i == 1:  # the older positional form: the instance, then the sync id
            sd.instance = word
            sd.lines["instance"] = CheckLine("instance", toml_str(word), "the word after the interface (keepalived's "
                                             "older form lvs_sync_daemon IFACE INSTANCE [SYNC_ID])")
            i += 1
        elif i == 2:
            number = uint_in(word, 0, 255)
            if number is None:
                ignored(word, "keepalived ignores an invalid sync id (expected 0..255) and uses the default")
            else:
                sd.lines["sync_id"] = CheckLine("sync_id", str(number), "the word after the instance (keepalived's "
                                                "older form; it asks for id N)")
            i += 1
        else:
            ignored(word, "keepalived ignores an unknown lvs_sync_daemon option")
            i += 1
    return sd


def _sync_option(sd: _Syncd, word: str, value: str, ignored: Callable[[str, str], None]) -> None:
    """One ``id``/``maxlen``/``port``/``ttl``/``group`` option with its value; the last valid one counts."""
    key, lo, hi = SYNC_OPTIONS[word]
    origin = ""
    if key == "group":
        # inet_stosockaddr(): the family from a ':', anything from a '-' or '/' on dropped, then inet_pton
        text = re.split(r"[-/]", value, maxsplit=1)[0]
        address = parse_ip(text)
        if address is None or address.version != (6 if ":" in value else 4) or not address.is_multicast:
            # keepalived leaves the group unset (AF_UNSPEC), forgetting one given before: the kernel's default
            earlier = sd.lines.pop("group", None)
            why = "an invalid address" if address is None else "not multicast"
            ignored(f"group {value}", f"keepalived ignores a group that is {why}" +
                    (f" and forgets the group {earlier.value} given before it" if earlier else ""))
            return
        result = toml_str(str(address))
        if text != value:
            origin = f"group {value}: keepalived takes the address before the {value[len(text)]}"
    else:
        number = uint_in(value, lo, hi)
        if number is None:
            ignored(f"{word} {value}", f"keepalived ignores it (expected {lo}..{hi})" +
                    (" and uses the default sync id" if key == "sync_id" else ""))
            return
        result = str(number)
    if key in sd.lines:
        ignored(f"{word} {sd.lines[key].value}", f"{word} is given again: keepalived uses the last")
    sd.lines[key] = CheckLine(key, result, origin)


def _sync_candidates(conf: KeepalivedConf) -> list[_Syncd | Note]:
    """Every sync daemon line in keepalived's parse order (the global form and the per-instance legacy one)."""
    found: list[_Syncd | Note] = []
    for top in conf.statements:
        if top.is_("global_defs"):
            found.extend(_read_lvs_sync_daemon(s) for s in top.children("lvs_sync_daemon"))
        elif top.is_("vrrp_instance"):
            for s in top.children("lvs_sync_daemon_interface"):
                # vrrp_parser.c vrrp_lvs_syncd_handler: the interface word only, no check of its length
                sd = _Syncd(s, s.arg(0) or "", top.arg(0) or "")
                sd.lines["instance"] = CheckLine("instance", toml_str(top.arg(0)), f"the vrrp_instance it is in "
                                                 f"({top.where})")
                if len(s.args) > 1:
                    sd.notes.append(Note(s.where, " ".join(s.words), "keepalived ignores the words after the "
                                                                      "interface"))
                found.append(sd)
    return found


def import_sync_daemon(conf: KeepalivedConf, instance: str) -> tuple[ImportedSyncDaemon | None, list[Note]]:
    """keepalived's sync daemon as the ``[sync_daemon]`` of *instance*, and notes for what is not imported.

    keepalived 2.2.7 uses the first line that gives an interface (global_parser.c
    lvs_syncd_handler, vrrp_parser.c: "has already been specified - ignoring")
    and ties it to its VRRP instance (vrrp.c vrrp_complete_init): the sync id not
    given is the instance's ``virtual_router_id``, except for the legacy
    ``lvs_sync_daemon_interface``, which keeps 0.  The table is written only when
    that instance is the one imported; kanotify's config loader checks it first.
    """
    notes: list[Note] = []
    chosen: _Syncd | None = None
    for found in _sync_candidates(conf):
        if isinstance(found, Note):
            notes.append(found)
        elif chosen is not None:
            notes.append(note_at(found.stmt, f"keepalived takes the sync daemon from the first line, the "
                                           f"{chosen.stmt.keyword} at {chosen.stmt.where}, and ignores this one "
                                           "(\"has already been specified\")"))
        else:
            chosen = found
            notes.extend(found.notes)
    if chosen is None:
        return None, notes
    s, name = chosen.stmt, chosen.instance
    vrrp = {block.arg(0): block for block in conf.top("vrrp_instance")}
    if name is None:
        # keepalived's checker process runs the master and the backup daemon at once, whatever the VRRP state
        # (check_daemon.c): kanotify's mode "both" (its backup listens with sync id 0, hearing every master)
        lines = [CheckLine("interface", toml_str(chosen.interface)),
                 CheckLine("mode", '"both"', "no VRRP instance (inst NAME): keepalived runs the master and the "
                                             "backup daemon at once, whatever the VRRP state")]
        if "sync_id" in chosen.lines:
            lines.append(chosen.lines["sync_id"])
        lines += [chosen.lines[key] for key in ("maxlen", "port", "ttl", "group") if key in chosen.lines]
        comments = ["IPVS sync daemons: master and backup on this director at all times, as keepalived's "
                    f"{s.keyword} without an instance ran them; the backup listens with sync id 0 (keepalived's "
                    "with the master's), which hears every director's master.",
                    f"Delete {s.keyword} from keepalived.conf when kanotify runs them (two drivers restart each "
                    "other's daemons)."]
        return _checked_sync_daemon(ImportedSyncDaemon(s.where, s.keyword, tuple(lines), tuple(comments)), notes)
    if name not in vrrp:
        notes.append(note_at(s, f"there is no vrrp_instance {name!r}: keepalived drops the sync daemon (\"Unable to "
                              "find vrrp instance\")"))
        return None, notes
    lines = [CheckLine("interface", toml_str(chosen.interface)),
             chosen.lines.get("instance", CheckLine("instance", toml_str(name)))]
    if "sync_id" in chosen.lines:
        lines.append(chosen.lines["sync_id"])
    elif chosen.legacy:
        lines.append(CheckLine("sync_id", "0", "lvs_sync_daemon_interface gives none: keepalived's default 0 (only "
                                               "lvs_sync_daemon ... inst NAME defaults to the virtual_router_id)"))
    else:
        vrids = [v for v in vrrp[name].children("virtual_router_id") if uint_in(v.arg(0), 1, 255) is not None]
        if not vrids:
            notes.append(note_at(s, f"no id, and vrrp_instance {name} has no virtual_router_id 1..255 to default to "
                                  "(keepalived's VRRP refuses such an instance)"))
            return None, notes
        vrid = vrids[-1]  # keepalived's handler overwrites: the last one counts
        lines.append(CheckLine("sync_id", str(uint_in(vrid.arg(0), 1, 255)),
                               f"no valid id: keepalived's default, the virtual_router_id of {name} ({vrid.where})"))
    lines += [chosen.lines[key] for key in ("maxlen", "port", "ttl", "group") if key in chosen.lines]
    missing = [key for key in SYNC_KERNEL_DEFAULTS if key not in chosen.lines]
    comments = [f"IPVS sync daemons: they follow {name}'s VRRP state, as keepalived's {s.keyword} made them run.",
                f"Delete {s.keyword} from keepalived.conf when kanotify runs them (two drivers restart each "
                "other's daemons)."]
    if missing:
        comments.append(f"No {', '.join(missing)}: the kernel's default, as keepalived left it (and kanotify): "
                        + ", ".join(f"{key} {SYNC_KERNEL_DEFAULTS[key]}" for key in missing) + ".")
    table = ImportedSyncDaemon(s.where, s.keyword, tuple(lines), tuple(comments))
    if name != instance:
        from ..config.schema import _NAME_RE

        how = (f"import with --instance {name} to get it as [sync_daemon]" if _NAME_RE.match(name) else
               f"{name!r} is not a kanotify instance name (letters, digits and _.:@+-, at most 64)")
        notes.append(note_at(s, f"it follows vrrp_instance {name}, and this import is for {instance}: {how}; it "
                              "would be:", tuple(table.toml()[len(comments):])))
        return None, notes
    return _checked_sync_daemon(table, notes)


def _checked_sync_daemon(table: ImportedSyncDaemon, notes: list[Note]) -> tuple[ImportedSyncDaemon | None, list[Note]]:
    """*table* as kanotify's config loader takes it, or not imported with the loader's own words.

    A refused ``maxlen`` alone is left out (it bounds the size of a sync message,
    the kernel then derives one from the MTU); any other refused value would run
    a daemon that does not talk to the other director's, so the table stays a comment.
    """
    problems = _sync_problems(table)
    if [p.path for p in problems] == ["sync_daemon.maxlen"]:
        value = next(line.value for line in table.lines if line.key == "maxlen")
        notes.append(Note(table.where, f"{table.keyword} ... maxlen {value}", f"kanotify's config refuses it: "
                          f"{problems[0].path}: {problems[0].message}; the [sync_daemon] leaves it out (the kernel "
                          "derives one from the MTU when the daemon starts)"))
        table = ImportedSyncDaemon(table.where, table.keyword, tuple(line for line in table.lines
                                                                     if line.key != "maxlen"), table.comments)
        problems = _sync_problems(table)
    if problems:
        notes.append(Note(table.where, table.keyword, "kanotify's config refuses it: " + "; ".join(
            f"{p.path}: {p.message}" for p in problems) + "; it would be:", tuple(table.toml()[len(table.comments):])))
        return None, notes
    return table, notes


def _sync_problems(table: ImportedSyncDaemon) -> list[Problem]:
    """What kanotify's config loader says about *table* on its own (with its one instance)."""
    from ..config.schema import build_config

    try:
        build_config({"instance": [{"name": table.table.get("instance", "VI_1")}], "sync_daemon": table.table},
                     "<sync_daemon>")
    except ConfigError as exc:
        return exc.problems
    return []
