"""Narrow retries: only transient errnos, within a bounded time, errno kept."""

from __future__ import annotations

import errno
import time

import pytest

from kanotify.backends.retry import TRANSIENT_ERRNOS, call_with_retry, errno_of, is_transient
from kanotify.errors import ApplyError


class Flaky:
    def __init__(self, failures: int, code: int) -> None:
        self.failures, self.code, self.calls = failures, code, 0

    def __call__(self, value: str = "ok") -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise OSError(self.code, "transient")
        return value


def test_a_transient_error_is_retried_until_it_succeeds() -> None:
    fn = Flaky(2, errno.EBUSY)
    assert call_with_retry(fn, "done", what="thing") == "done" and fn.calls == 3


def test_a_permanent_error_is_not_retried_and_keeps_its_errno() -> None:
    fn = Flaky(5, errno.EPERM)
    with pytest.raises(ApplyError) as info:
        call_with_retry(fn, what="set x")
    assert fn.calls == 1 and info.value.errno == errno.EPERM and str(info.value) == "set x: Operation not permitted"


def test_the_budget_bounds_the_total_time() -> None:
    fn = Flaky(10_000, errno.ENODEV)
    started = time.monotonic()
    with pytest.raises(ApplyError) as info:
        call_with_retry(fn, what="bind", budget=0.3)
    assert time.monotonic() - started < 0.6 and fn.calls > 2 and info.value.errno == errno.ENODEV


def test_budget_zero_is_one_attempt() -> None:
    fn = Flaky(1, errno.EAGAIN)
    with pytest.raises(ApplyError):
        call_with_retry(fn, what="x", budget=0)
    assert fn.calls == 1


def test_an_exception_without_errno_keeps_its_traceback() -> None:
    def buggy() -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        call_with_retry(buggy, what="x")


def test_errno_is_found_on_oserror_applyerror_and_netlink_codes() -> None:
    class NetlinkError(Exception):
        code = -errno.ENOBUFS

    assert errno_of(OSError(errno.EINTR, "x")) == errno.EINTR
    assert errno_of(ApplyError("x", errno.EEXIST)) == errno.EEXIST
    assert errno_of(NetlinkError()) == errno.ENOBUFS and is_transient(NetlinkError())
    assert errno_of(ValueError()) is None
    assert TRANSIENT_ERRNOS == {errno.EBUSY, errno.ENOBUFS, errno.EAGAIN, errno.EINTR, errno.ENODEV}
