"""A small raw-socket streaming client: time to first token, gaps between chunks, open streams.

Raw asyncio sockets rather than an HTTP library, so the client adds as little as possible
on a machine whose two cores it shares with the server under test.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson


@dataclass
class StreamTiming:
    status: int = 0
    ttft_ms: float | None = None  # request written -> first non-empty content delta
    gaps_ms: list[float] = field(default_factory=list)  # between content deltas
    content_events: int = 0
    complete: bool = False  # saw data: [DONE]
    error: str = ""


class ChunkedDecoder:
    """HTTP/1.1 chunked transfer decoding, fed raw bytes, giving whole chunks' payloads."""

    def __init__(self) -> None:
        self.buffer = b""
        self.finished = False

    def feed(self, data: bytes) -> bytes:
        self.buffer += data
        out = []
        while not self.finished:
            line_end = self.buffer.find(b"\r\n")
            if line_end < 0:
                break
            size = int(self.buffer[:line_end].split(b";")[0], 16)
            if size == 0:
                self.finished = True
                break
            start = line_end + 2
            if len(self.buffer) < start + size + 2:
                break
            out.append(self.buffer[start : start + size])
            self.buffer = self.buffer[start + size + 2 :]
        return b"".join(out)


class SSEParser:
    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        """Payloads of the complete `data:` events in what has arrived so far."""
        self.buffer += data.replace(b"\r\n", b"\n")
        *events, self.buffer = self.buffer.split(b"\n\n")
        payloads = []
        for event in events:
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    payloads.append(line[5:].strip())
        return payloads


_SENT = itertools.count()


def unique(body: bytes) -> bytes:
    """The body with a counter at the end of its last message, so a response cache misses."""
    at = body.rfind(b'"}]')
    return body if at < 0 else b"%s #%d%s" % (body[:at], next(_SENT), body[at:])


def build_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    body = unique(body)
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        "Accept: text/event-stream",
        f"Content-Length: {len(body)}",
        *(f"{k}: {v}" for k, v in headers.items()),
        "Connection: close",
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + body


def content_of(payload: bytes) -> str:
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return ""
    choices = (obj.get("choices") or []) if isinstance(obj, dict) else []
    if not choices:
        return ""
    delta = choices[0].get("delta") or {}
    return str(delta.get("content") or "")


async def read_head(reader: asyncio.StreamReader) -> tuple[int, bool, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    chunked = b"transfer-encoding: chunked" in head.lower()
    return status, chunked, head


async def timed_stream(
    host: str,
    port: int,
    path: str,
    body: bytes,
    headers: dict[str, str],
    timeout_s: float,
    first_token_only: bool = False,
) -> StreamTiming:
    """Read one stream to its end, or only to its first token and then hang up."""
    result = StreamTiming()
    job = _timed_stream(host, port, path, body, headers, result, first_token_only)
    try:
        await asyncio.wait_for(job, timeout_s)
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


async def _timed_stream(
    host: str,
    port: int,
    path: str,
    body: bytes,
    headers: dict[str, str],
    result: StreamTiming,
    first_token_only: bool,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        start = time.perf_counter()
        writer.write(build_request(host, port, path, body, headers))
        result.status, chunked, _ = await read_head(reader)
        decoder = ChunkedDecoder() if chunked else None
        parser = SSEParser()
        last: float | None = None
        while not result.complete:
            data = await reader.read(65536)
            if not data:
                break
            now = time.perf_counter()
            for payload in parser.feed(decoder.feed(data) if decoder else data):
                if payload == b"[DONE]":
                    result.complete = True
                elif content_of(payload):
                    result.content_events += 1
                    if last is None:
                        result.ttft_ms = (now - start) * 1000
                    else:
                        result.gaps_ms.append((now - last) * 1000)
                    last = now
                    if first_token_only:
                        return
    finally:
        writer.close()


async def warm(
    host: str,
    port: int,
    path: str,
    body: bytes,
    headers: dict[str, str],
    count: int,
    timeout_s: float = 10,
) -> int:
    """Send `count` requests at once and read them to the end: fills the contender's pools."""

    async def one() -> int:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(build_request(host, port, path, body, headers))
            status, _, _ = await read_head(reader)
            await reader.read()  # Connection: close, so the body ends at EOF
            return status
        finally:
            writer.close()

    statuses = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))), timeout_s)
    return sum(1 for s in statuses if s == 200)


@dataclass
class OpenStreams:
    requested: int
    established: int
    seconds_to_establish: float
    peak_rss_kb: int
    failures: dict[str, int]


async def hold_open_streams(
    host: str,
    port: int,
    path: str,
    body: bytes,
    headers: dict[str, str],
    count: int,
    sample_rss: Callable[[], int],
    establish_timeout_s: float,
    hold_s: float,
) -> OpenStreams:
    """Open `count` streams at once, keep them open, and sample the server's memory."""
    release = asyncio.Event()
    established = 0
    failures: dict[str, int] = {}
    connect_slots = asyncio.Semaphore(128)  # stay under the listen backlog while connecting
    request = build_request(host, port, path, body, headers)

    async def one() -> None:
        nonlocal established
        writer = None
        try:
            async with connect_slots:
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(request)
                status, _, _ = await read_head(reader)
                if status != 200:
                    raise ValueError(f"status {status}")
                await reader.readuntil(b"data:")
            established += 1
            await release.wait()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            key = type(exc).__name__
            failures[key] = failures.get(key, 0) + 1
        finally:
            if writer is not None:
                writer.close()

    start = time.perf_counter()
    tasks = [asyncio.create_task(one()) for _ in range(count)]
    peak = sample_rss()
    deadline = start + establish_timeout_s
    while established + sum(failures.values()) < count and time.perf_counter() < deadline:
        await asyncio.sleep(0.1)
        peak = max(peak, sample_rss())
    seconds = time.perf_counter() - start
    hold_until = time.perf_counter() + hold_s
    while time.perf_counter() < hold_until:
        await asyncio.sleep(0.1)
        peak = max(peak, sample_rss())
    result = OpenStreams(count, established, seconds, peak, dict(failures))
    release.set()
    for task in tasks:
        if not task.done():
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return result
