"""Graceful drain: on SIGTERM /readyz turns 503, new connections are refused after the
delay, in-flight streams finish whole, those still running at the deadline are ended with
an error event, and the process exits 0."""

from __future__ import annotations

import signal
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from tests.conftest import CLIENT_KEY, UPSTREAM_KEY, FakeUpstream, start_gateway

AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}
CHAT = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


def drain_config(upstream: FakeUpstream, delay: float, seconds: float) -> str:
    return f"""
    server: {{drain_delay_seconds: {delay}, drain_seconds: {seconds}}}
    auth: {{api_keys: "{CLIENT_KEY}"}}
    providers:
      openai:
        type: openai
        base_url: {upstream.base_url}
        api_key: {UPSTREAM_KEY}
        models: [gpt-4o-mini]
    routing: {{default_model: gpt-4o-mini}}
    """


class Request(threading.Thread):
    """One request read to its end in the background, as a client sees it."""

    def __init__(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.url, self.body, self.headers = url, body, headers
        self.started = threading.Event()  # the first body bytes arrived
        self.status = 0
        self.data = b""
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with httpx.stream("POST", self.url + "/v1/chat/completions", json=self.body,
                              headers=AUTH | self.headers, timeout=60) as response:  # fmt: skip
                self.status = response.status_code
                for chunk in response.iter_raw():
                    self.data += chunk
                    self.started.set()
        except httpx.HTTPError as exc:  # a cut connection: what the drain must not do
            self.error = exc
        finally:
            self.started.set()

    def events(self) -> list[Any]:
        """The SSE events, without the fields that differ between two runs (id, created)."""
        out: list[Any] = []
        for event in self.data.split(b"\n\n"):
            if not event.startswith(b"data: "):
                continue
            payload = event[len(b"data: ") :]
            if payload == b"[DONE]":
                out.append("[DONE]")
                continue
            parsed = orjson.loads(payload)
            parsed.pop("id", None)
            parsed.pop("created", None)
            out.append(parsed)
        return out


def stream(url: str, fake: dict[str, str], body: dict[str, Any] = CHAT) -> Request:
    """A request under way: its first bytes have arrived."""
    request = Request(url, body, fake)
    request.start()
    assert request.started.wait(30), "the stream never started"
    assert request.status == 200 and request.error is None, (request.status, request.error)
    return request


def refuses_connections(url: str) -> bool:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_lets_an_in_flight_stream_finish_whole(
    fake_upstream: FakeUpstream, workdir: Path
) -> None:
    gw = start_gateway(drain_config(fake_upstream, delay=1.0, seconds=30), workdir)
    slow = {"x-fake-chunks": "16", "x-fake-interval-ms": "300"}  # about 5 s
    try:
        reference = stream(gw.url, slow)
        reference.join(60)
        expected = reference.events()
        assert len(expected) >= 16 and expected[-1] == "[DONE]"

        in_flight = stream(gw.url, slow)
        gw.process.popen.send_signal(signal.SIGTERM)
        ready = httpx.get(gw.url + "/readyz", timeout=5)  # a new connection, still accepted
        assert ready.status_code == 503 and ready.json()["status"] == "draining"
        assert httpx.get(gw.url + "/healthz", timeout=5).status_code == 200  # still alive

        deadline = time.monotonic() + 15
        while not refuses_connections(gw.url):
            assert time.monotonic() < deadline, "new connections were still accepted"
            time.sleep(0.1)
        # Refused by a process that is still serving, not by one that has gone.
        assert in_flight.is_alive() and gw.process.alive()

        in_flight.join(60)
        assert in_flight.error is None
        assert in_flight.events() == expected  # every chunk, then [DONE]
        assert gw.process.popen.wait(timeout=30) == 0
    finally:
        gw.process.stop()


def test_streams_past_the_drain_deadline_end_with_an_error_event(
    fake_upstream: FakeUpstream, workdir: Path
) -> None:
    gw = start_gateway(drain_config(fake_upstream, delay=0.2, seconds=1), workdir)
    try:
        long_stream = stream(gw.url, {"x-fake-chunks": "60", "x-fake-interval-ms": "250"})  # 15 s
        run = uuid.uuid4().hex  # the client's header reaches the upstream, which records it
        unanswered = Request(
            gw.url, CHAT | {"stream": False}, {"x-fake-delay-ms": "15000", "x-test-run": run}
        )
        unanswered.start()
        deadline = time.monotonic() + 30  # a bound: it ends once the upstream has it
        while not any(r["headers"].get("x-test-run") == run for r in fake_upstream.requests()):
            assert time.monotonic() < deadline, "the request never reached the upstream"
            time.sleep(0.02)
        signalled = time.monotonic()
        gw.process.popen.send_signal(signal.SIGTERM)
        assert gw.process.popen.wait(timeout=15) == 0
        took = time.monotonic() - signalled
        assert took < 1.2 + 8, f"exit took {took:.1f} s"  # delay + drain_seconds + a margin

        long_stream.join(10)
        events = long_stream.events()
        assert long_stream.error is None  # ended, not cut
        assert "[DONE]" not in events and 2 <= len(events) < 60
        assert events[-1]["error"]["code"] == "gateway_shutting_down"
        assert all("choices" in event for event in events[:-1])

        unanswered.join(10)
        assert unanswered.error is None and unanswered.status == 503
        assert orjson.loads(unanswered.data)["error"]["code"] == "gateway_shutting_down"
        # The access log says how each ended: no status 0, the drain's code as the error.
        ended = [
            (event["stream"], event["status"], event["error"])
            for event in map(orjson.loads, filter(None, gw.log().splitlines()))
            if event.get("event") == "access"
        ]
        assert sorted(ended) == [
            (False, 503, "gateway_shutting_down"),
            (True, 200, "gateway_shutting_down"),
        ], ended
    finally:
        gw.process.stop()
