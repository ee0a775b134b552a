"""Narrow retries around single kernel calls.

Only errors that mean "try again in a moment" are retried: the kernel was
busy (EBUSY, EAGAIN, EINTR), a netlink socket buffer overflowed (ENOBUFS), or a
device is not there *yet* (ENODEV: at boot, keepalived can start before udev
has renamed or created an interface).  Everything else -- a validation error,
"no such key", "permission denied" -- propagates at once, because retrying it
only delays the same answer.  The total time spent retrying is bounded so a
notify run (which keepalived kills after 1 s for STOP) cannot hang here.

Every backend uses :func:`call_with_retry`; the IPVS backend reuses it too.
"""

from __future__ import annotations

import errno as _errno
import os
import time
from typing import Callable, Collection, TypeVar

from ..errors import ApplyError

T = TypeVar("T")

#: errnos worth another try: transient kernel conditions, and "device not there yet".
TRANSIENT_ERRNOS: frozenset[int] = frozenset(
    {_errno.EBUSY, _errno.ENOBUFS, _errno.EAGAIN, _errno.EINTR, _errno.ENODEV}
)


def errno_of(exc: BaseException) -> int | None:
    """The errno carried by an exception, whatever raised it.

    ``OSError`` has ``.errno``; pyroute2's ``NetlinkError`` has ``.code``;
    :class:`ApplyError` has ``.errno``.  Anything else has none.
    """
    code = getattr(exc, "errno", None)
    if isinstance(code, int):
        return code
    code = getattr(exc, "code", None)
    if isinstance(code, int) and not isinstance(code, bool):
        return abs(code)
    return None


def is_transient(exc: BaseException, transient: Collection[int] = TRANSIENT_ERRNOS) -> bool:
    """True if ``exc`` carries one of the ``transient`` errnos."""
    return errno_of(exc) in transient


def call_with_retry(
    fn: Callable[..., T],
    *args: object,
    what: str,
    budget: float = 2.0,
    transient: Collection[int] = TRANSIENT_ERRNOS,
    **kw: object,
) -> T:
    """Call ``fn(*args, **kw)``, retrying transient errnos for at most ``budget`` seconds.

    ``what`` names the object and the operation ("bind 192.0.2.100/24 dev
    eth0"); it starts the message of the :class:`ApplyError` raised when the
    call finally fails with an errno, e.g. ``"bind ... dev eth0: No such
    device"``, and the errno is kept on the exception so callers can still
    tell "already exists" (EEXIST) from a real failure.  Exceptions without an
    errno (programming errors) are not translated: they keep their traceback.

    The wait between attempts starts at 20 ms and doubles up to 250 ms, so a
    device that appears 100 ms late costs about 100 ms, and one that never
    appears costs at most ``budget`` (a wait that would overshoot it is not
    started).  ``budget=0`` means one attempt.
    """
    if budget <= 0:
        return _translate(fn, args, kw, what)
    started = time.monotonic()
    try:
        return fn(*args, **kw)  # the common case: no tenacity at all (building its Retrying costs)
    except Exception as exc:
        if not is_transient(exc, transient):
            error = exc if isinstance(exc, ApplyError) else _as_apply_error(exc, what)
            if error is exc:
                raise
            raise error from exc
    budget -= time.monotonic() - started
    if budget <= 0:
        return _translate(fn, args, kw, what)

    import tenacity  # only when a transient error asks for another try

    # stop_before_delay (tenacity >= 8.3) also refuses a wait that would overshoot the budget.
    stop = getattr(tenacity, "stop_before_delay", tenacity.stop_after_delay)(budget)
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(lambda exc: is_transient(exc, transient)),
        stop=stop,
        wait=tenacity.wait_exponential(multiplier=0.01, min=0.02, max=0.25),
        reraise=True,
    )
    return _translate(retrying, (fn, *args), kw, what)


def _translate(fn: Callable[..., T], args: tuple[object, ...], kw: dict[str, object], what: str) -> T:
    try:
        return fn(*args, **kw)
    except ApplyError:
        raise
    except Exception as exc:
        error = _as_apply_error(exc, what)
        if error is exc:
            raise  # a bug, not a kernel answer: keep the traceback as it is
        raise error from exc


def _as_apply_error(exc: Exception, what: str) -> Exception:
    """The :class:`ApplyError` for a kernel's answer; the exception itself for a bug (it keeps its traceback)."""
    code = errno_of(exc)
    if code is None:
        return exc
    return ApplyError(f"{what}: {os.strerror(code)}", code)


__all__ = ["TRANSIENT_ERRNOS", "call_with_retry", "errno_of", "is_transient"]
