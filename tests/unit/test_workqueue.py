"""The listener's work queue without sockets or threads: order, coalescing, the worker's loop."""

from __future__ import annotations

import asyncio
import ipaddress

from kanotify.daemon.fifo import VrrpEvent, parse_line
from kanotify.daemon.health import NONE_DOWN, DownSet
from kanotify.daemon.worker import Command, HealthRun, Note, Reload, Repair, Vrrp, Work, merge
from kanotify.daemon.workqueue import WorkQueue, unique
from kanotify.model import ServiceKey
from kanotify.store import Ticket


def vrrp(line: str, tick: int) -> Vrrp:
    event = parse_line(line.encode())
    assert isinstance(event, VrrpEvent)
    return Vrrp(event, Ticket("boot", tick, 1))


def drain(queue: WorkQueue[Work]) -> list[Work]:
    out = []
    while (work := queue.pop()) is not None:
        out.append(work)
    return out


def test_a_backlog_for_one_instance_coalesces_to_its_newest_state_in_the_oldest_place() -> None:
    queue: WorkQueue[Work] = WorkQueue(merge)
    first, other, newest = vrrp('INSTANCE "VI_1" MASTER 100', 1), vrrp('INSTANCE "VI_2" MASTER 100', 2), None
    queue.submit(("INSTANCE", "VI_1"), first)
    queue.submit(("INSTANCE", "VI_2"), other)
    queue.submit(("INSTANCE", "VI_1"), vrrp('INSTANCE "VI_1" BACKUP 100', 3))
    newest = vrrp('INSTANCE "VI_1" FAULT 100', 4)
    queue.submit(("INSTANCE", "VI_1"), newest)
    assert len(queue) == 2
    work = drain(queue)
    assert work == [newest, other]  # VI_1 kept its place before VI_2
    assert [(e.state.value, t.start_ticks) for e, t in newest.coalesced] == [("master", 1), ("backup", 3)]


def test_repairs_and_reloads_collapse_health_runs_add_up_the_rest_never_coalesce() -> None:
    queue: WorkQueue[Work] = WorkQueue(merge)
    a = ServiceKey.inet("tcp", ipaddress.ip_address("192.0.2.1"), 80)
    b = ServiceKey.inet("tcp", ipaddress.ip_address("192.0.2.2"), 80)
    queue.submit("repair", Repair("first"))
    queue.submit("health", HealthRun(["a DOWN"], {a}))
    queue.submit("repair", Repair("second"))
    queue.submit("reload", Reload("SIGHUP"))
    queue.submit("reload", Reload("SIGHUP again"))
    queue.submit("health", HealthRun(["b DOWN"], {b}))
    note = parse_line(b'INSTANCE "VI_1" MASTER_PRIORITY 110')
    notes = [Note(note, Ticket("boot", n, 1)) for n in range(2)]  # type: ignore[arg-type]
    for n in notes:
        queue.submit(unique(), n)
    work = drain(queue)
    assert [type(w).__name__ for w in work] == ["Repair", "HealthRun", "Reload", "Note", "Note"]
    assert work[0] == Repair("first") and work[2] == Reload("SIGHUP")
    assert isinstance(work[1], HealthRun) and work[1].changes == ["a DOWN", "b DOWN"] and work[1].services == {a, b}
    assert work[3:] == notes


def test_a_key_taken_off_the_queue_goes_to_the_end_when_it_comes_again() -> None:
    queue: WorkQueue[Work] = WorkQueue(merge)
    queue.submit("repair", Repair("one"))
    queue.submit("reload", Reload("x"))
    assert queue.pop() == Repair("one")
    queue.submit("repair", Repair("two"))
    assert drain(queue) == [Reload("x"), Repair("two")]


def test_serve_runs_one_at_a_time_in_order_and_survives_a_failure() -> None:
    seen: list[str] = []
    answers: list[dict[str, object]] = []

    async def main() -> None:
        queue: WorkQueue[Work] = WorkQueue(merge)
        running: list[bool] = []

        async def execute(work: Work) -> None:  # inline: no thread
            running.append(queue.running)
            if isinstance(work, Command):
                raise RuntimeError("boom")
            seen.append(type(work).__name__)
            if isinstance(work, Repair) and work.reason == "first":
                queue.submit("repair", Repair("queued while running"))  # a new one: the first left the queue

        def failed(work: Work) -> None:
            if isinstance(work, Command):
                work.reply({"error": "failed"})

        idle = asyncio.Event()
        queue.submit("repair", Repair("first"))
        queue.submit(unique(), Command(["master"], "/k.toml", None, answers.append))
        queue.submit("reload", Reload("x"))
        task = asyncio.ensure_future(queue.serve(execute, failed=failed, after_each=lambda: seen.append("after"),
                                                 idle=idle.set))
        await asyncio.wait_for(idle.wait(), 5)
        task.cancel()
        assert all(running) and not queue.running and not queue

    asyncio.run(main())
    assert seen == ["Repair", "after", "after", "Reload", "after", "Repair", "after"]
    assert answers == [{"error": "failed"}]


def test_a_down_set_is_a_frozen_snapshot() -> None:
    service = ServiceKey.inet("tcp", ipaddress.ip_address("192.0.2.1"), 80)
    real = (ipaddress.ip_address("192.0.2.21"), 80)
    down = DownSet(frozenset({(service, real)}))
    assert down.is_down(service, real) and not NONE_DOWN.is_down(service, real)
    assert not down.is_down(service, (ipaddress.ip_address("192.0.2.22"), 80))
