"""The numbers behind kanotify's Prometheus metrics: what only kanotify knows.

node_exporter's ipvs collector already exports the kernel's IPVS counters and
weights; these are the facts only kanotify has -- each instance's recorded
VRRP state, the transitions it ran and how long they took, its drift repairs,
the listener's health checks, the weights of the real servers it manages and
the sync daemons it runs.  docs/metrics.md lists every metric.

Two producers fill in the same :class:`Facts`, which :mod:`kanotify.metrics.exposition`
turns into the text format:

* ``kanotify listen`` (:class:`ListenerMetrics`): the engine hands it every
  run's result (``Engine(on_result=...)``); counters count since the listener
  started; weights and sync daemons are the ones its last run of each instance
  observed (no kernel read per scrape); health is its own checks.
* ``kanotify metrics`` (:func:`collect_facts`), once, for node_exporter's
  textfile collector: counters count the journal's records since boot,
  incrementally (a cursor in ``state_dir`` remembers how far the journal was
  read, so each run reads only what is new, at most :data:`MAX_READ` bytes);
  weights and sync daemons are read from the kernel; health is what the running
  listener reports in ``health.json`` (none without a listener: no check runs).

Both count the same things in the same journal records (:meth:`Tally.add`), and
both read the instance states from ``state.json``.  This module does not import
``prometheus_client``: the listener imports it only when ``settings.metrics``
is set, and no notification ever does.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterator, Mapping, Sequence

from .. import __version__
from ..errors import KanotifyError
from ..actions import ActionStatus
from ..fingerprint import fingerprints, metric_value
from ..journal import Journal, RecordKind, kind_of, pair_runs, process_alive
from ..model import SYNC_STATES, Observed, Outcome, RealKey, Scope, ServiceKey, State, SyncDaemon, format_hostport
from ..procinfo import ticket_fields
from ..run import RunKind
from ..store import SavedStates, StateStore, listener_pid

if TYPE_CHECKING:
    from ..backends.base import Backend
    from ..config.values import Config
    from ..plan import HealthView
    from ..run import RunResult

log = logging.getLogger("kanotify.metrics")

#: upper bounds (seconds) of ``kanotify_transition_duration_seconds``: a notification takes
#: tens of ms natively, a second or more in a slow VM, a big IPVS sync several seconds
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: a run's outcomes (the journal's ``outcome``, and ``interrupted``: a started record that never got its
#: final one), each counted per instance from 0
OUTCOMES = (Outcome.CONVERGED, Outcome.FAILED, Outcome.SUPERSEDED, Outcome.INTERRUPTED)
#: the runs that converge to the recorded states by hand or on a timer: drift repairs when they change something
REPAIR_KINDS = (RunKind.REPAIR, RunKind.RECONCILE)
_TRANSITIONS = tuple(s.value for s in State)
#: the journal cursor of ``kanotify metrics`` in ``state_dir``
CURSOR_FILE = "metrics.cursor"
#: at most this many bytes of the journal are read by one ``kanotify metrics``
MAX_READ = 16 * 1024 * 1024
#: the listener reads the journal's last this many bytes at start-up for the runs its predecessor left interrupted
PREDECESSOR_READ = 1024 * 1024


# --------------------------------------------------------------------------- counting journal records


def run_kind(record: Mapping[str, Any]) -> RunKind | None:
    """A journal record's :class:`~kanotify.run.RunKind`: its ``kind``, else (a line written before the
    journal had ``kind``) read from its free-text ``command`` by :func:`kind_of_command`; ``None`` when
    this version does not know it."""
    kind = record.get("kind")
    if kind is not None:
        return _known_kind(kind)
    command = record.get("command")
    return kind_of_command(command) if isinstance(command, str) else None


def kind_of_command(command: str) -> RunKind | None:
    """The kind of a run from its journal ``command``: only for lines written before ``kind`` was journaled.

    ``master``..``stop``, ``reconcile``, ``plan`` and the listener's own runs (``repair``,
    ``keepalived-gone`` ...) are their kind; ``notify INSTANCE master`` is a ``notify``;
    ``fifo GROUP backup`` and ``fifo INSTANCE master_rx_lower_pri`` a ``fifo`` state line,
    ``fifo INSTANCE master_priority`` a ``priority`` line.  A kind's own value reads as that
    kind too (the metrics cursor keeps its waiting started records' kinds that way).
    """
    known = _known_kind(command)
    if known is not None:
        return known
    word, _, rest = command.partition(" ")
    if word == "notify":
        return RunKind.NOTIFY
    if word == "fifo":
        return RunKind.FIFO if rest.rpartition(" ")[2] in (*_TRANSITIONS, "master_rx_lower_pri") else RunKind.PRIORITY
    return None


def _known_kind(value: object) -> RunKind | None:
    try:
        return RunKind(value) if isinstance(value, str) else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Started:
    """A ``started`` journal record not yet paired with its final one: the run may still be under way."""

    run: str
    kind: RunKind | None
    instances: tuple[str, ...]
    process: tuple[object, ...]

    def to_json(self) -> list[Any]:
        return [self.run, self.kind.value if self.kind else None, list(self.instances), list(self.process)]

    @classmethod
    def from_json(cls, data: Any) -> "Started":
        run, kind, instances, process = data  # kind: a command in a cursor written before kinds were journaled
        return cls(str(run), kind_of_command(kind) if isinstance(kind, str) else None,
                   tuple(str(i) for i in instances), tuple(process))


@dataclass(frozen=True)
class Counts:
    """What the counters say: transitions per (instance, outcome), their durations, drift repairs.

    ``buckets`` holds one count per :data:`DURATION_BUCKETS` bound and one for
    +Inf, each run counted once (not cumulative).  ``interrupted`` counts every
    run (any command) that started changing the system and never wrote its final
    record; ``pending`` holds the started records read whose final record may
    still come (their process runs).
    """

    transitions: tuple[tuple[str, str, int], ...] = ()
    buckets: tuple[int, ...] = (0,) * (len(DURATION_BUCKETS) + 1)
    duration_sum: float = 0.0
    repairs: int = 0
    interrupted: int = 0
    pending: tuple[Started, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"transitions": [list(t) for t in self.transitions], "buckets": list(self.buckets),
                "duration_sum": self.duration_sum, "repairs": self.repairs, "interrupted": self.interrupted,
                "pending": [p.to_json() for p in self.pending]}

    @classmethod
    def from_json(cls, data: Any) -> "Counts":
        """Raises ValueError (or TypeError, KeyError) for anything that is not what :meth:`to_json` wrote."""
        transitions = tuple((str(i), str(o), int(n)) for i, o, n in data["transitions"])
        buckets = tuple(int(n) for n in data["buckets"])
        if len(buckets) != len(DURATION_BUCKETS) + 1:
            raise ValueError("another set of buckets")
        pending = tuple(Started.from_json(p) for p in data.get("pending", ()))  # a cursor from before 0.x has none
        return cls(transitions, buckets, float(data["duration_sum"]), int(data["repairs"]),
                   int(data.get("interrupted", 0)), pending)


class Tally:
    """Counts journal records as the metrics count them; thread-safe (the worker adds, a scrape reads).

    A notification counts once per instance the config declares (a GROUP line
    for each of its instances) under its outcome, and its duration once when it
    ran (converged or failed; a superseded one did nothing).  A ``repair`` or
    ``reconcile`` that applied something counts as a drift repair.  Dry-runs
    and notifications for instances kanotify does not manage count nowhere.

    A ``started`` record waits for its final record (same ``run``); it counts
    as interrupted (a notification also under outcome ``interrupted`` per
    instance, without a duration) once a later run has started or, at
    :meth:`settle`, its process is gone.  A started record is never a transition.
    """

    def __init__(self, counts: Counts = Counts()) -> None:
        self._lock = threading.Lock()
        self._transitions = {(i, o): n for i, o, n in counts.transitions}
        self._buckets = list(counts.buckets)
        self._sum = counts.duration_sum
        self._repairs = counts.repairs
        self._interrupted = counts.interrupted
        self._pending = {p.run: p for p in counts.pending}

    def add(self, record: Mapping[str, Any], declared: Collection[str]) -> None:
        if record.get("dry_run") is not False:
            return
        kind = run_kind(record)
        record_kind = kind_of(record)
        run = record.get("run")
        if record_kind is RecordKind.STARTED:
            if isinstance(run, str):
                with self._lock:  # runs that change anything are serialized: the ones before it are over
                    for earlier in list(self._pending.values()):
                        self._count_interrupted(earlier)
                    process = record.get("process")
                    self._pending[run] = Started(run, kind, _names(record, declared),
                                                 tuple(process) if isinstance(process, list) else ())
            return
        if record_kind is None:
            return
        if isinstance(run, str) and self._pending:
            with self._lock:
                self._pending.pop(run, None)
        outcome = record.get("outcome")
        if kind is None or outcome not in OUTCOMES or outcome == Outcome.INTERRUPTED:
            return
        if kind in REPAIR_KINDS:
            if any(isinstance(a, dict) and a.get("status") == ActionStatus.APPLIED for a in record.get("actions", ())):
                with self._lock:
                    self._repairs += 1
            return
        if not kind.is_notification:
            return
        # an ignored notification (an instance not managed) has no target state and converged
        names: list[str] = []
        for entry in record.get("instances", ()):
            name = entry.get("instance") if isinstance(entry, dict) else None
            if isinstance(name, str) and name in declared and (
                    entry.get("to") is not None or outcome != Outcome.CONVERGED):
                names.append(name)
        if not names:
            return
        ms = record.get("duration_ms")
        seconds = float(ms) / 1000.0 if isinstance(ms, (int, float)) and not isinstance(ms, bool) else None
        with self._lock:
            for name in names:
                self._transitions[(name, str(outcome))] = self._transitions.get((name, str(outcome)), 0) + 1
            if seconds is not None and outcome != Outcome.SUPERSEDED:  # a superseded one did nothing
                index = next((i for i, bound in enumerate(DURATION_BUCKETS) if seconds <= bound),
                             len(DURATION_BUCKETS))
                self._buckets[index] += 1
                self._sum += seconds

    def add_interrupted(self, record: Mapping[str, Any], declared: Collection[str]) -> None:
        """Count a started record known to have no final record (:func:`~kanotify.journal.pair_runs` said so)."""
        run, process = record.get("run"), record.get("process")
        if record.get("dry_run") is False and isinstance(run, str):
            with self._lock:
                self._pending.pop(run, None)
                self._count_interrupted(Started(run, run_kind(record), _names(record, declared),
                                                tuple(process) if isinstance(process, list) else ()))

    def settle(self, alive: Callable[[object], bool] = process_alive) -> None:
        """Count the waiting started records whose process is gone as interrupted (their final record never comes)."""
        with self._lock:
            for started in list(self._pending.values()):
                if not alive(list(started.process)):
                    self._count_interrupted(started)

    def _count_interrupted(self, started: Started) -> None:
        """(lock held)"""
        self._pending.pop(started.run, None)
        self._interrupted += 1
        if started.kind is not None and started.kind.is_notification:
            for name in started.instances:
                key = (name, Outcome.INTERRUPTED.value)
                self._transitions[key] = self._transitions.get(key, 0) + 1

    def counts(self) -> Counts:
        with self._lock:
            return Counts(tuple((i, o, n) for (i, o), n in sorted(self._transitions.items())),
                          tuple(self._buckets), self._sum, self._repairs, self._interrupted,
                          tuple(self._pending.values()))


def _names(record: Mapping[str, Any], declared: Collection[str]) -> tuple[str, ...]:
    """The declared instances a started record is about."""
    names = []
    for entry in record.get("instances", ()):
        name = entry.get("instance") if isinstance(entry, dict) else None
        if isinstance(name, str) and name in declared:
            names.append(name)
    return tuple(names)


# --------------------------------------------------------------------------- what is shown


@dataclass(frozen=True)
class Facts:
    """Everything one exposition shows (see docs/metrics.md).

    ``instances``: each declared instance with its recorded state (``None``:
    never notified).  ``reals_up``/``weights``: (service, real server, value)
    in kanotify's spellings (``tcp 192.0.2.100:80``, ``192.0.2.21:80``).
    ``sync_daemons``: (state, running) for ``master`` and ``backup``; empty
    without ``[sync_daemon]`` or when they could not be observed.
    """

    instances: tuple[tuple[str, State | None], ...] = ()
    counts: Counts = Counts()
    reals_up: tuple[tuple[str, str, bool], ...] = ()
    weights: tuple[tuple[str, str, int], ...] = ()
    sync_daemons: tuple[tuple[str, bool], ...] = ()
    listener: bool = False
    version: str = __version__
    #: (service, quorum up) of each service whose quorum the listener keeps (keepalived's quorum)
    quorum_up: tuple[tuple[str, bool], ...] = ()
    #: (service, first 48 bits of its fingerprint) of each managed service observed (kanotify.fingerprint)
    fingerprints: tuple[tuple[str, int], ...] = ()


def instance_states(config: Config, saved: SavedStates) -> tuple[tuple[str, State | None], ...]:
    recorded = saved.states()
    return tuple((name, recorded.get(name)) for name in config.instance_names)


def checked_reals(config: Config) -> Iterator[tuple[ServiceKey, RealKey]]:
    """The real servers the config gives a health check, in the config's order."""
    for inst in config.instances:
        for spec in inst.services:
            for real in spec.reals:
                if spec.check_for(real.key) is not None:
                    yield spec.service.key, real.key


def quorum_services(config: Config) -> Iterator[ServiceKey]:
    """The services whose quorum the listener keeps (:attr:`~kanotify.model.ServiceSpec.quorum_tracked`)."""
    seen: set[ServiceKey] = set()
    for inst in config.instances:
        for spec in inst.services:
            if spec.quorum_tracked and spec.service.key not in seen:
                seen.add(spec.service.key)
                yield spec.service.key


def weight_rows(config: Config, observed: Mapping[str, Observed]) -> tuple[tuple[str, str, int], ...]:
    """The weight of every real server of each instance's managed services, as ``observed[instance]`` saw them.

    An instance without an observation, or whose IPVS could not be read, has no rows:
    no number is better than a guessed one.
    """
    rows: list[tuple[str, str, int]] = []
    for inst in config.instances:
        seen = observed.get(inst.name)
        if seen is None or seen.services is None:
            continue
        for spec in inst.services:
            have = seen.services.get(spec.service.key)
            if have is None:
                continue
            service = str(spec.service.key)
            for real, _stats in have.reals.values():
                rows.append((service, format_hostport(real.address, real.port), real.weight))
    rows.sort()
    return tuple(rows)


def fingerprint_rows(config: Config, observed: Mapping[str, Observed]) -> tuple[tuple[str, int], ...]:
    """(service, metric value of its fingerprint) of the managed services, as ``observed[instance]`` saw them."""
    rows: dict[str, int] = {}
    for inst in config.instances:
        seen = observed.get(inst.name)
        if seen is None or seen.services is None:
            continue
        keys = [spec.service.key for spec in inst.services]
        for key, value in fingerprints(config, seen.services, keys).items():
            rows[str(key)] = metric_value(value)
    return tuple(sorted(rows.items()))


def _made_from(memo: tuple[Config, tuple[tuple[str, Observed], ...], object], config: Config,
               seen: tuple[tuple[str, Observed], ...]) -> bool:
    """Whether rows memoized as ``(config, seen, rows)`` were made from this very config and these very
    observations (by identity, namespace by namespace): if so they stand, else they are made again."""
    return memo[0] is config and len(memo[1]) == len(seen) and all(
        a[0] == b[0] and a[1] is b[1] for a, b in zip(memo[1], seen))


def daemon_rows(config: Config, daemons: Sequence[SyncDaemon] | None) -> tuple[tuple[str, bool], ...]:
    if config.sync_daemon is None or daemons is None:
        return ()
    running = {d.state for d in daemons}
    return tuple((state, state in running) for state in SYNC_STATES)


# --------------------------------------------------------------------------- the listener's


class ListenerMetrics:
    """The listener's numbers: fed by the engine in the worker thread, read by scrapes in theirs.

    Feeding is cheap on purpose (a count and a reference per run): a transition
    must never wait for metrics.  Formatting happens in the scrape's thread.
    """

    def __init__(self) -> None:
        self.tally = Tally()
        self._lock = threading.Lock()
        self._observed: dict[str, Observed] = {}
        self._daemons: tuple[SyncDaemon, ...] | None = None
        # formatted once, not per scrape: 10,000 real servers' labels cost ~50 ms to build (with the GIL held,
        # which the worker wants too); rebuilt when the config or an observation changes
        self._labels: tuple[Config, tuple[tuple[ServiceKey, RealKey, str, str], ...]] | None = None
        self._weights: tuple[Config, tuple[tuple[str, Observed], ...], tuple[tuple[str, str, int], ...]] | None = None
        self._fingerprints: tuple[Config, tuple[tuple[str, Observed], ...], tuple[tuple[str, int], ...]] | None = None

    def on_result(self, result: RunResult) -> None:
        """``Engine(on_result=...)``: count the run, keep what it observed.  Never raises."""
        try:
            ctx = result.context
            self.tally.add(result.record, ctx.config.instance_names)
            observed = result.observed
            if observed is None:
                return
            sync = ctx.config.sync_daemon
            with self._lock:
                for name in ctx.instances:
                    self._observed[name] = observed
                if observed.daemons is not None:
                    self._daemons = observed.daemons
                elif observed.ipvs_error and sync is not None and (sync.mode == "both" or sync.instance in ctx.instances):
                    self._daemons = None  # it tried and could not read them: unknown now
        except Exception:  # noqa: BLE001 - metrics must never fail a run
            log.exception("kanotify listen: metrics could not count a run")

    def count_predecessor(self, journal: Journal, pid: int, declared: Collection[str]) -> int:
        """At start-up: count the runs the listener before this one (``pid``, gone) left interrupted.

        Its counters went with it; what it was doing when it was killed is the one
        thing it could not count itself.  Only its own started records of this boot
        among the journal's last :data:`PREDECESSOR_READ` bytes, so a restart never
        counts another listener's (or a one-shot's) run again.  Returns how many.
        """
        boot = ticket_fields()[0]
        found = 0
        for record in pair_runs(journal.last_records(PREDECESSOR_READ)):
            process = record.get("process")
            if (record.get("record") == RecordKind.STARTED.value and record.get("outcome") == Outcome.INTERRUPTED
                    and isinstance(process, list) and len(process) == 3 and process[0] == boot
                    and process[2] == pid):
                self.tally.add_interrupted(record, declared)
                found += 1
        return found

    def facts(self, config: Config, health: HealthView | None) -> Facts:
        """The numbers now (any thread): states from ``state.json``, health from ``health``."""
        saved, _warnings = StateStore(config.settings.state_dir).load(repair=False)
        with self._lock:
            observed = {name: self._observed[name] for name in config.instance_names if name in self._observed}
            daemons = self._daemons
        up: tuple[tuple[str, str, bool], ...] = ()
        if health is not None:
            up = tuple((service, real, not health.is_down(s, r)) for s, r, service, real in self._checked(config))
        lost = getattr(health, "quorum_lost", None)
        quorum = tuple((str(s), not lost(s)) for s in quorum_services(config)) if lost is not None else ()
        return Facts(instance_states(config, saved), self.tally.counts(), up, self._weight_rows(config, observed),
                     daemon_rows(config, daemons), listener=True, quorum_up=quorum,
                     fingerprints=self._fingerprint_rows(config, observed))

    def _checked(self, config: Config) -> tuple[tuple[ServiceKey, RealKey, str, str], ...]:
        memo = self._labels
        if memo is None or memo[0] is not config:
            memo = self._labels = (config, tuple((s, r, str(s), format_hostport(*r)) for s, r in checked_reals(config)))
        return memo[1]

    def _fingerprint_rows(self, config: Config, observed: Mapping[str, Observed]) -> tuple[tuple[str, int], ...]:
        seen = tuple(observed.items())
        memo = self._fingerprints
        if memo is None or not _made_from(memo, config, seen):
            memo = self._fingerprints = (config, seen, fingerprint_rows(config, observed))
        return memo[2]

    def _weight_rows(self, config: Config, observed: Mapping[str, Observed]) -> tuple[tuple[str, str, int], ...]:
        seen = tuple(observed.items())
        memo = self._weights
        if memo is None or not _made_from(memo, config, seen):
            memo = self._weights = (config, seen, weight_rows(config, observed))
        return memo[2]


# --------------------------------------------------------------------------- kanotify metrics (one-shot)


def collect_facts(config: Config, backend_factory: Callable[[], Backend] | None = None) -> tuple[Facts, list[str]]:
    """The numbers for ``kanotify metrics``, and warnings about what could not be had."""
    warnings: list[str] = []
    store = StateStore(config.settings.state_dir)
    saved, problems = store.load(repair=False)
    warnings.extend(problems)
    counts, problems = count_journal(config)
    warnings.extend(problems)
    listener = listener_pid(store.dir)
    up, quorum = _reported_health(config, store.dir, listener)
    observed: dict[str, Observed] = {}
    daemons: tuple[SyncDaemon, ...] | None = None
    managed = frozenset(spec.service.key for inst in config.instances for spec in inst.services)
    scope = Scope(services=managed, ipvs=bool(managed), sync_daemons=config.sync_daemon is not None)
    if scope.ipvs or scope.sync_daemons:
        if backend_factory is None:
            from ..backends.system import system_backend

            backend_factory = system_backend
        backend = backend_factory()
        try:
            seen = backend.observe(scope)
        finally:
            backend.close()
        if seen.ipvs_error:
            warnings.append(f"weights and sync daemons not shown: {seen.ipvs_error}")
        observed = {name: seen for name in config.instance_names}
        daemons = seen.daemons
    facts = Facts(instance_states(config, saved), counts, up, weight_rows(config, observed),
                  daemon_rows(config, daemons), listener=listener is not None, quorum_up=quorum,
                  fingerprints=fingerprint_rows(config, observed))
    return facts, warnings


def _reported_health(config: Config, state_dir: str, listener: int | None
                     ) -> tuple[tuple[tuple[str, str, bool], ...], tuple[tuple[str, bool], ...]]:
    """The running listener's health checks and quorums, from its ``health.json``; none without a listener."""
    if listener is None:
        return (), ()
    from ..daemon.healthreport import read_report

    report = read_report(state_dir)
    if report is None or (listener and not report.written_by(listener)):
        return (), ()  # not written by the listener that runs now
    reported = {(r.service, r.real): r.up for r in report.reals}
    rows = []
    for service, real in checked_reals(config):
        key = (str(service), format_hostport(*real))
        value = reported.get(key)
        if isinstance(value, bool):
            rows.append((key[0], key[1], value))
    kept = {str(q.get("service")): q.get("up") for q in report.quorum}
    quorum = tuple((str(s), kept[str(s)]) for s in quorum_services(config) if isinstance(kept.get(str(s)), bool))
    return tuple(rows), quorum  # type: ignore[return-value]  # filtered to bool just above


@dataclass(frozen=True)
class _Cursor:
    """How far ``kanotify metrics`` has counted the journal, and what it counted (since ``boot``)."""

    boot: str
    dev: int
    ino: int
    offset: int
    counts: Counts

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, "boot": self.boot, "dev": self.dev, "ino": self.ino, "offset": self.offset,
                "counts": self.counts.to_json()}

    @classmethod
    def from_bytes(cls, raw: bytes) -> "_Cursor | None":
        try:
            data = json.loads(raw)
            if data.get("version") != 1:
                return None
            return cls(str(data["boot"]), int(data["dev"]), int(data["ino"]), int(data["offset"]),
                       Counts.from_json(data["counts"]))
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            return None


def count_journal(config: Config) -> tuple[Counts, list[str]]:
    """The journal's counts since boot, read on from where the last ``kanotify metrics`` stopped.

    The cursor (``<state_dir>/metrics.cursor``, under an ``flock`` so two runs
    do not interleave) holds the boot id, the journal's device and inode, the
    offset read up to and the counts so far.  A new boot (or no cursor) starts
    from the records written since boot; a rotated or truncated journal is read
    from its start, the counts kept.  One run reads at most :data:`MAX_READ`
    bytes: what lies before is not counted (a warning says how much).
    """
    declared = config.instance_names
    boot = ticket_fields()[0]
    path = os.path.join(config.settings.state_dir, CURSOR_FILE)
    try:
        StateStore(config.settings.state_dir).ensure_dir()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except (KanotifyError, OSError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else str(exc)
        counts, _cursor, warnings = _read_journal(config.settings.journal, None, boot, declared)
        return counts, [f"journal counted without a cursor ({path}: {why}): counters may go back", *warnings]
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        cursor = _Cursor.from_bytes(os.pread(fd, 1 << 20, 0))
        counts, cursor, warnings = _read_journal(config.settings.journal, cursor, boot, declared)
        data = (json.dumps(cursor.to_json(), separators=(",", ":")) + "\n").encode()
        try:
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        except OSError as exc:
            warnings.append(f"cannot save {path}: {exc.strerror}")
        return counts, warnings
    finally:
        os.close(fd)


def _boot_iso() -> str:
    """When this boot started, as the journal writes times (so the two compare as strings)."""
    btime = 0
    try:
        with open("/proc/stat", "rb") as fh:
            for line in fh:
                if line.startswith(b"btime "):
                    btime = int(line.split()[1])
                    break
    except (OSError, ValueError):
        pass
    moment = datetime.fromtimestamp(btime, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _read_journal(
    path: str, cursor: _Cursor | None, boot: str, declared: Collection[str]
) -> tuple[Counts, _Cursor, list[str]]:
    warnings: list[str] = []
    fresh = cursor is None or cursor.boot != boot
    tally = Tally() if fresh or cursor is None else Tally(cursor.counts)
    since = _boot_iso() if fresh else None
    try:
        fh = open(path, "rb")
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            warnings.append(f"cannot read the journal {path}: {exc.strerror}")
        counts = tally.counts()
        return counts, _Cursor(boot, 0, 0, 0, counts), warnings
    with fh:
        st = os.fstat(fh.fileno())
        start = 0
        if cursor is not None and not fresh and (cursor.dev, cursor.ino) == (st.st_dev, st.st_ino) \
                and cursor.offset <= st.st_size:
            start = cursor.offset
        skipped = max(0, st.st_size - MAX_READ - start)
        start += skipped
        fh.seek(start)
        data = fh.read(st.st_size - start)
    first = 0
    if skipped:
        first = data.find(b"\n") + 1  # the window starts inside a record: from the next one
        if not first:
            first = len(data)
        warnings.append(f"journal {path}: {skipped + first} bytes not counted "
                        f"(at most {MAX_READ // (1024 * 1024)} MiB are read per run)")
    end = data.rfind(b"\n") + 1  # a last line without its newline is still being written
    for line in data[first:end].splitlines():
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if not isinstance(record, dict):
            continue
        if since is not None and not str(record.get("ts", "")) >= since:
            continue  # written before this boot
        tally.add(record, declared)
    tally.settle()  # started records whose process is gone: their final record will never come
    counts = tally.counts()
    return counts, _Cursor(boot, st.st_dev, st.st_ino, start + max(end, first), counts), warnings


__all__ = [
    "CURSOR_FILE", "Counts", "DURATION_BUCKETS", "Facts", "ListenerMetrics", "MAX_READ", "OUTCOMES", "Tally",
    "collect_facts", "count_journal", "kind_of_command", "run_kind",
]
