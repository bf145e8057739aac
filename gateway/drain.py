"""Graceful drain on SIGTERM and SIGINT, around uvicorn's own shutdown.

uvicorn alone closes the listener the moment the signal arrives, waits for open
connections (streams included) up to `timeout_graceful_shutdown`, then cancels their
tasks, which cuts a stream mid-event. Here the signal first turns /readyz to 503 and the
gateway keeps serving for `server.drain_delay_seconds`, so a load balancer that saw
readiness fail stops sending; then uvicorn closes the listener (new connections are
refused) and waits for the requests in flight. Those still running `server.drain_seconds`
later are ended here: a stream with the SSE error event the gateway sends for a broken
upstream, a request not yet answered with a 503. uvicorn's own timeout stays as a
backstop a little later (gateway/cli.py).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from gateway.asgi import Message, Receive, Scope, Send, send_response
from gateway.errors import GatewayError
from gateway.wire import sse_error_event

SignalHandler = Callable[[int, FrameType | None], Any]

SHUTTING_DOWN = "gateway_shutting_down"


def shutdown_error(seconds: float) -> GatewayError:
    return GatewayError(
        f"The gateway is shutting down and ended this request at the end of its drain "
        f"({seconds:g} s, server.drain_seconds); retry it.",
        status=503,
        code=SHUTTING_DOWN,
    )


class Drain:
    """The drain's state: whether it started, and the requests in flight to end at its deadline."""

    def __init__(self, delay: float, seconds: float, log: Any) -> None:
        self.delay = delay
        self.seconds = seconds
        self.log = log
        self.draining = False
        self.expired = False
        self.requests: set[_Response] = set()
        self._server: SignalHandler | None = None
        self._signal = signal.SIGTERM
        self._handed_over = False

    def install(self) -> bool:
        """Take SIGTERM and SIGINT over from the server that set handlers for them (uvicorn),
        and hand them back after the delay. False when no server owns them (in-process use)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            server = signal.getsignal(sig)
            if not callable(server) or server is signal.default_int_handler:
                return False
            try:
                loop.add_signal_handler(sig, self._signalled, sig, server)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                return False
        return True

    def _signalled(self, sig: int, server: SignalHandler) -> None:
        if self.draining:
            if sig == signal.SIGINT:  # Ctrl+C again: uvicorn's answer (stop now, then force)
                self._handed_over = True
                server(sig, None)
            return
        self.draining = True
        self._server, self._signal = server, signal.Signals(sig)
        self.log.info(
            "drain_started",
            signal=self._signal.name,
            in_flight=len(self.requests),
            delay_seconds=self.delay,
            drain_seconds=self.seconds,
        )
        loop = asyncio.get_running_loop()
        loop.call_later(self.delay, self._hand_over)
        loop.call_later(self.delay + self.seconds, self._expire)

    def _hand_over(self) -> None:
        """Let the server shut down: it closes the listener and waits for open connections."""
        if self._handed_over or self._server is None:
            return
        self._handed_over = True
        server = getattr(self._server, "__self__", None)
        if server is not None and hasattr(server, "should_exit"):
            # uvicorn's Server, told directly: its handler would re-raise the signal once
            # it is done, and a SIGTERM re-raised kills the process with status -15, not 0.
            server.should_exit = True
        else:
            self._server(self._signal, None)

    def _expire(self) -> None:
        self.expired = True
        left = [r for r in self.requests if not r.task.done()]
        if left:
            self.log.warning("drain_deadline", ended=len(left), drain_seconds=self.seconds)
        for response in left:
            response.task.cancel("drain deadline")


class _Response:
    """What one request has sent so far, enough to end it well at the deadline."""

    __slots__ = ("_send", "complete", "ends_event", "headers", "task")

    def __init__(self, send: Send, task: asyncio.Task[Any]) -> None:
        self._send = send
        self.task = task
        self.headers: list[tuple[bytes, bytes]] | None = None  # once the response started
        self.complete = False
        self.ends_event = True  # the body sent so far ends between two SSE events

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body":
            body = message.get("body", b"")
            if body:
                self.ends_event = body.endswith(b"\n\n")
            if not message.get("more_body", False):
                self.complete = True
        elif message["type"] == "http.response.start":
            self.headers = message.get("headers", [])
        await self._send(message)

    async def end(self, error: GatewayError) -> None:
        if self.complete:
            return
        if self.headers is None:
            headers = [(b"content-type", b"application/json")]
            await send_response(self._send, error.status, error.to_bytes(), headers)
        elif any(k == b"content-type" and v.startswith(b"text/event-stream")
                 for k, v in self.headers):  # fmt: skip
            event = (b"" if self.ends_event else b"\n\n") + sse_error_event(error.to_dict())
            await self._send({"type": "http.response.body", "body": event, "more_body": False})
        # Otherwise half a JSON body went out: nothing can end it well, and uvicorn closes
        # the connection when the request returns unfinished.


class DrainGuard:
    """Pure ASGI: keeps track of the requests in flight, and ends them at the drain's deadline."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Any], drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        if scope["type"] != "http" or task is None:
            await self.app(scope, receive, send)
            return
        response = _Response(send, task)
        requests = self.drain.requests
        requests.add(response)
        try:
            await self.app(scope, receive, response.send)
        except asyncio.CancelledError:
            if not self.drain.expired:
                raise
            task.uncancel()  # the drain cancelled it, and answers for it here
            await response.end(shutdown_error(self.drain.seconds))
        finally:
            requests.discard(response)
