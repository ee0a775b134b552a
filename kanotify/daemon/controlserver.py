"""The listener's side of the control socket: accept, check the peer, read one bounded request, queue it.

The wire format and the one-shot client are in :mod:`kanotify.daemon.control`
(imported on the notify path, so kept light); this is the server, on the
listener's event loop.  A ``run`` request becomes a
:class:`~kanotify.daemon.worker.Command` for the work queue and its
connection waits for the worker's answer; a ``yield`` (a newer listener takes
over) asks the listener to finish.  Every request is bounded: one line of at
most :data:`~kanotify.daemon.control.MAX_MESSAGE` bytes within 2 s, at most
:data:`MAX_ARGS` words.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Callable

from ..store import Ticket
from . import control
from .worker import Command, say

MAX_ARGS = 64
#: how long a client has to send its whole request
REQUEST_TIMEOUT = 2.0


class ControlServer:
    """Serves ``path`` on the running loop: ``submit`` queues a handed-over command, ``on_yield`` begins the stop.

    ``stopping()`` says whether the listener is finishing (a ``run`` is then
    refused: the client runs it in-process).
    """

    def __init__(self, path: str, *, submit: Callable[[Command], None], on_yield: Callable[[], None],
                 stopping: Callable[[], bool]) -> None:
        self.path = path
        self.submit = submit
        self.on_yield = on_yield
        self.stopping = stopping
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Bind the socket (mode 0600) and serve; before the engine's thread starts (``chdir`` is safe then)."""
        path = self.path
        try:
            os.unlink(path)  # a stale one: the listener holds its lock, nobody else serves here
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            control.at_unix_path(sock, path, "bind")
        except BaseException:
            sock.close()
            raise
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self._server = await asyncio.start_unix_server(self._client, sock=sock, limit=control.MAX_MESSAGE + 2)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            reply = await self._handle(reader, writer)
            writer.write(control.encode(reply))
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # the client went away (keepalived killed it): the work, if any, is done anyway
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> dict[str, object]:
        sock = writer.get_extra_info("socket")
        uid = control.peer_uid(sock)
        if not control.peer_allowed(uid):
            say(f"control socket: refused a peer with uid {uid} (root only)")
            return {"error": f"uid {uid} may not use the control socket (root only)"}
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=REQUEST_TIMEOUT)
        except asyncio.TimeoutError:
            return {"error": f"no whole request within {REQUEST_TIMEOUT:g} s"}
        except (ValueError, asyncio.LimitOverrunError, asyncio.IncompleteReadError):
            return {"error": f"request longer than {control.MAX_MESSAGE} bytes"}
        if not line.endswith(b"\n"):
            return {"error": "half a request (no newline)"}
        try:
            message = control.decode(line)
        except control.ProtocolError as exc:
            return {"error": str(exc)}
        op = message.get("op")
        if op == "yield":
            say("a newer listener takes over: finishing")
            self.on_yield()
            return {"ok": True}
        if op != "run":
            return {"error": f"unknown op {op!r}"}
        if self.stopping():
            return {"refused": "the listener is stopping"}
        argv, config, ticket = message.get("argv"), message.get("config"), message.get("ticket")
        if (not isinstance(argv, list) or not argv or len(argv) > MAX_ARGS
                or not all(isinstance(w, str) and len(w) <= 4096 for w in argv)):
            return {"error": f"argv must be a list of 1..{MAX_ARGS} strings"}
        if not isinstance(config, str) or not config.startswith("/"):
            return {"error": "config must be an absolute path"}
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[dict[str, object]] = loop.create_future()

        def reply(value: dict[str, object]) -> None:  # from the worker's thread; the first answer counts
            loop.call_soon_threadsafe(_resolve, answer, value)

        self.submit(Command(list(argv), config, _ticket(ticket), reply))
        return await answer


def _resolve(future: asyncio.Future[dict[str, object]], value: dict[str, object]) -> None:
    if not future.done():
        future.set_result(value)


def _ticket(value: object) -> Ticket | None:
    if (isinstance(value, list) and len(value) == 3 and isinstance(value[0], str)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value[1:])):
        return Ticket(value[0], value[1], value[2])
    return None


__all__ = ["ControlServer", "MAX_ARGS"]
