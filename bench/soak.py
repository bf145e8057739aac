"""python -m bench.soak [--requests N] [--concurrency C] [--streams N] [--write-docs]

Proof under load and faults against the fake upstream (tests/fake_upstream.py), each
phase on a fresh gateway (one worker):

1. faults: 20 clients at once per fault (slow headers, stall mid-stream, reset mid-stream,
   garbage, 429 with Retry-After, 500), half of them streamed, then all faults together;
   what the clients saw, and /healthz latency meanwhile (a poller in its own process);
2. streams: N concurrent streams (default 1,000) of seeded content: every byte checked
   against the upstream's digest and the seeded text, and the gateway's peak RSS;
3. soak: N requests (default 100,000) at concurrency C (default 32), mixed stream and
   non-stream, client hang-ups mid-stream, upstream 500s and 429s: the gateway's RSS, open
   file descriptors and upstream connections after warm-up (the first 10 %) and at the
   end, and its 500s.

Prints markdown tables, exits 1 when a bound is broken; --write-docs puts them in the
"Under load and faults" section of docs/BENCHMARKS.md. tests/test_faults.py and
tests/test_soak.py run the same checks at CI size.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import multiprocessing
import os
import random
import resource
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import orjson

from bench.procs import Process, free_port, request_status, start, tree_rss_kb, wait_ready
from bench.report import replace_section
from tests.fake_upstream import seeded_text

REPO = Path(__file__).resolve().parent.parent
WORKDIR = REPO / "bench" / ".work" / "soak"
CHAT = "/v1/chat/completions"
MODEL = "gpt-4o-mini"
DONE = b"data: [DONE]\n\n"
RSS_GROWTH_MAX = 0.10
STREAMS_RSS_MAX_KB = 200 * 1024
HEALTH_TARGET_MS = 50.0
EXPIRY_IDLE_S = 10.0  # past httpx.Limits' 5 s keep-alive expiry, which aiohttp's pool obeys
# Fake-upstream options (x-fake-<name> headers) for each fault; the read timeout is 2 s.
FAULTS: dict[str, dict[str, str]] = {
    "slow headers": {"delay-ms": "3000"},
    "stall mid-stream": {"stall-after": "2", "stall-ms": "6000"},
    "reset mid-stream": {"fail-after": "2"},
    "garbage": {"garbage": "1"},
    "429 Retry-After": {"status": "429", "retry-after": "7"},
    "500": {"status": "500"},
}


def gateway_config(upstream_url: str, api_key: str = "sk-fake", log_level: str = "warning") -> str:
    """One provider at the fake, short read timeout, breaker off: a fault's own outcome
    shows instead of 503 provider_circuit_open (the breaker has its own tests)."""
    return f"""\
logging: {{level: {log_level}, format: json}}
providers:
  openai:
    type: openai
    base_url: {upstream_url}/v1
    api_key: {api_key}
    models: [{MODEL}]
    max_connections: 2048
    timeouts: {{connect: 2, read: 2, write: 5, pool: 5}}
    breaker: {{enabled: false}}
routing: {{default_model: {MODEL}}}
cache: {{enabled: false}}
"""


def chat_body(text: str, stream: bool, **extra: Any) -> bytes:
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "stream": stream}
    return orjson.dumps(body | extra)


# --- a raw HTTP/1.1 client: it must cost far less CPU than the gateway it loads ---------


class Connection:
    """One keep-alive HTTP/1.1 connection over asyncio streams."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[bytes, bytes]]:
        """POST to the chat endpoint; the status and the (lower-cased) response headers."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        lines = [f"POST {CHAT} HTTP/1.1", f"Host: {self.host}:{self.port}",
                 "Content-Type: application/json", f"Content-Length: {len(body)}",
                 *(f"{k}: {v}" for k, v in headers.items()), "", ""]  # fmt: skip
        self.writer.write("\r\n".join(lines).encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *rest = head[:-4].split(b"\r\n")
        parsed = {}
        for line in rest:
            name, _, value = line.partition(b":")
            parsed[name.strip().lower()] = value.strip()
        return int(status_line.split(b" ", 2)[1]), parsed

    async def chunks(self, headers: dict[bytes, bytes]) -> AsyncIterator[bytes]:
        """The body as it arrives: chunked transfer decoded, or one Content-Length read."""
        assert self.reader is not None
        if b"content-length" in headers:
            yield await self.reader.readexactly(int(headers[b"content-length"]))
            return
        while True:
            size = int((await self.reader.readline()).split(b";")[0], 16)
            if size == 0:
                await self.reader.readline()
                return
            yield (await self.reader.readexactly(size + 2))[:-2]

    async def body(self, headers: dict[bytes, bytes]) -> bytes:
        data = b"".join([chunk async for chunk in self.chunks(headers)])
        if headers.get(b"connection") == b"close":
            self.close()
        return data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


# --- the gateway process, seen from /proc --------------------------------------------


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def established(pid: int, remote_port: int) -> int:
    """ESTABLISHED TCP connections of `pid` to `remote_port` (its sockets in /proc/net/tcp)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if f[3] == "01" and int(f[2].rsplit(":", 1)[1], 16) == remote_port and f[9] in inodes:
                count += 1
    return count


@dataclass
class Snapshot:
    rss_kb: int
    fds: int
    upstream: int


def snapshot(pid: int, upstream_port: int) -> Snapshot:
    return Snapshot(tree_rss_kb(pid), open_fds(pid), established(pid, upstream_port))


# --- /healthz latency, polled from another process so the load client's GIL is not in it --


def poll_health(host: str, port: int, out: str, stop: Event, interval_s: float) -> None:
    """Append `monotonic_start latency_ms status` lines to `out` until `stop` is set."""
    with open(out, "w", buffering=1) as f:
        while not stop.is_set():
            started = time.monotonic()
            status = request_status(host, port, "GET", "/healthz", timeout=2.0)
            f.write(f"{started:.6f} {(time.monotonic() - started) * 1000:.3f} {status}\n")
            stop.wait(interval_s)


class HealthPoller:
    """A new connection per probe, like a load balancer's or kubelet's health check."""

    def __init__(self, host: str, port: int, out: Path, interval_s: float = 0.01) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.out = out
        self.stop_event = ctx.Event()
        args = (host, port, str(out), self.stop_event, interval_s)
        self.process = ctx.Process(target=poll_health, args=args, daemon=True)

    def start(self) -> HealthPoller:
        self.process.start()
        deadline = time.monotonic() + 30
        while not self._read() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def samples(self, since: float, until: float) -> list[float]:
        """Latencies (ms) of the probes started in [since, until]; a failed probe is inf.
        Waits (up to 5 s) for a probe started after `until`, so that a slow one is in."""
        deadline = time.monotonic() + 5
        while True:
            probes = self._read()
            done = any(start > until for start, _ in probes) or not self.process.is_alive()
            if done or time.monotonic() > deadline:
                return [latency for start, latency in probes if since <= start <= until]
            time.sleep(0.02)

    def _read(self) -> list[tuple[float, float]]:
        if not self.out.exists():
            return []
        probes = []
        for line in self.out.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                latency = float(parts[1]) if parts[2] == "200" else float("inf")
                probes.append((float(parts[0]), latency))
        return probes

    def stop(self) -> None:
        self.stop_event.set()
        self.process.join(5)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# --- faults: what each client sees -----------------------------------------------------


@dataclass
class Outcome:
    status: int = 0
    code: str | None = None  # the error envelope's code, or a stream's final error event's
    message: str = ""
    streamed: bool = False  # a 200 text/event-stream began
    done: bool = False  # the stream's last event was [DONE]
    error_event: bool = False  # the stream's last event was {"error": ...}
    content_events: int = 0  # events with a non-empty content delta
    json_body: bool = False  # a non-streamed 200 whose body is JSON with choices
    retry_after: str | None = None
    failure: str = ""  # the client's own exception, if any

    def label(self) -> str:
        if self.failure:
            return f"client error {self.failure}"
        if self.streamed:
            end = "[DONE]" if self.done else ("error event" if self.error_event else "cut")
            return f"{self.status} stream, {end}" + (f" {self.code}" if self.error_event else "")
        if self.status == 200:
            return "200 JSON" if self.json_body else "200 not JSON"
        return f"{self.status} {self.code or '(upstream code null)'}"


def read_outcome(status: int, headers: dict[bytes, bytes], body: bytes) -> Outcome:
    out = Outcome(status=status, retry_after=(headers.get(b"retry-after") or b"").decode() or None)
    if status == 200 and headers.get(b"content-type", b"").startswith(b"text/event-stream"):
        out.streamed = True
        payloads = [e[6:] for e in body.split(b"\n\n") if e.startswith(b"data: ")]
        out.done = bool(payloads) and payloads[-1] == b"[DONE]"
        out.content_events = sum(b'"content":"' in p and b'"content":""' not in p for p in payloads)
        last = loads(payloads[-1]) if payloads else None
        if isinstance(last, dict) and isinstance(last.get("error"), dict):
            out.error_event = True
            out.code, out.message = last["error"].get("code"), str(last["error"].get("message"))
        return out
    data = loads(body)
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        out.code, out.message = data["error"].get("code"), str(data["error"].get("message"))
    out.json_body = status == 200 and isinstance(data, dict) and "choices" in data
    return out


def loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


async def fault_call(host: str, port: int, fault: str, stream: bool, n: int) -> Outcome:
    """One request with `fault`'s options (a fault name from FAULTS, or "" for none)."""
    conn = Connection(host, port)
    headers = {f"x-fake-{k}": v for k, v in FAULTS.get(fault, {}).items()}
    headers["Connection"] = "close"
    try:
        async with asyncio.timeout(30):
            status, head = await conn.send(chat_body(f"fault {fault} #{n}", stream), headers)
            return read_outcome(status, head, await conn.body(head))
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
        return Outcome(failure=type(exc).__name__)
    finally:
        conn.close()


async def fault_round(
    host: str, port: int, faults: list[str], clients: int
) -> dict[str, list[tuple[bool, Outcome]]]:
    """`clients` requests per fault, all at once, every other one streamed."""
    jobs = [(f, n % 2 == 1, n) for f in faults for n in range(clients)]
    outcomes = await asyncio.gather(*(fault_call(host, port, f, s, n) for f, s, n in jobs))
    seen: dict[str, list[tuple[bool, Outcome]]] = {f: [] for f in faults}
    for (fault, stream, _), outcome in zip(jobs, outcomes, strict=True):
        seen[fault].append((stream, outcome))
    return seen


def summary(outcomes: list[tuple[bool, Outcome]], stream: bool) -> str:
    counts = Counter(o.label() for s, o in outcomes if s == stream)
    return ", ".join(f"{label} x{n}" for label, n in counts.most_common())


# --- 1,000 streams, every byte checked ---------------------------------------------------


def check_stream(seed: int, size: int, body: bytes) -> str:
    """'' if `body` is every byte the upstream sent, in order, and the seeded text."""
    if not body.endswith(DONE):
        return "no [DONE] at the end"
    at = body.rfind(b": sha256=")
    if at < 0:
        return "no digest comment"
    sent = body[at + 9 : body.index(b"\n\n", at)].decode()
    if hashlib.sha256(body[:at]).hexdigest() != sent:
        return "the bytes differ from what the upstream sent"
    text = []
    for event in body[:at].split(b"\n\n"):
        data = loads(event[6:]) if event.startswith(b"data: {") else None
        for choice in data.get("choices") or [] if isinstance(data, dict) else []:
            text.append(choice.get("delta", {}).get("content") or "")
    if "".join(text) != seeded_text(seed, size):
        return "the content differs from the seeded text"
    return ""


@dataclass
class StreamsResult:
    count: int
    ok: int = 0
    max_open: int = 0
    seconds: float = 0.0
    rss_idle_kb: int = 0
    peak_rss_kb: int = 0
    problems_seen: Counter[str] = field(default_factory=Counter)

    def problems(self) -> list[str]:
        found = [f"{n} stream(s): {what}" for what, n in self.problems_seen.items()]
        if self.ok != self.count:
            found.append(f"{self.count - self.ok} of {self.count} streams failed a check")
        if self.peak_rss_kb >= STREAMS_RSS_MAX_KB:
            found.append(f"peak RSS {self.peak_rss_kb / 1024:.1f} MB, over 200 MB")
        if self.max_open < 0.9 * self.count:  # else they were not really concurrent
            found.append(f"only {self.max_open} of {self.count} streams were open at once")
        return found

    def table(self) -> str:
        return "\n".join(
            [
                "| streams | open at once | every byte in order (digest) | seeded content "
                "| RSS idle | peak RSS (bound 200 MB) | seconds |",
                "|---|---|---|---|---|---|---|",
                f"| {self.count:,} | {self.max_open:,} | {self.ok:,}/{self.count:,} "
                f"| {self.ok:,}/{self.count:,} | {self.rss_idle_kb / 1024:.1f} MB "
                f"| {self.peak_rss_kb / 1024:.1f} MB | {self.seconds:.1f} |",
            ]
        )


async def digest_streams(
    host: str,
    port: int,
    pid: int,
    count: int = 1000,
    size: int = 2048,
    chunks: int = 40,
    interval_ms: int = 200,
) -> StreamsResult:
    """`count` streams at once, each seeded; the gateway's RSS sampled while they run."""
    result = StreamsResult(count, rss_idle_kb=tree_rss_kb(pid))
    result.peak_rss_kb = result.rss_idle_kb
    connect_slots = asyncio.Semaphore(128)  # stay under the listen backlog while connecting
    open_now = 0

    async def one(seed: int) -> None:
        nonlocal open_now
        conn = Connection(host, port)
        headers = {"x-fake-seed": str(seed), "x-fake-size": str(size), "Connection": "close"}
        headers |= {"x-fake-chunks": str(chunks), "x-fake-interval-ms": str(interval_ms)}
        # include_usage asked for by the client: the gateway then relays the bytes unchanged
        body = chat_body(f"stream {seed}", True, stream_options={"include_usage": True})
        try:
            async with asyncio.timeout(60 + chunks * interval_ms / 1000):
                async with connect_slots:
                    status, head = await conn.send(body, headers)
                open_now += 1
                result.max_open = max(result.max_open, open_now)
                try:
                    data = await conn.body(head)
                finally:
                    open_now -= 1
            problem = f"HTTP {status}" if status != 200 else check_stream(seed, size, data)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            problem = f"client error {type(exc).__name__}"
        finally:
            conn.close()
        if problem:
            result.problems_seen[problem] += 1
        else:
            result.ok += 1

    started = time.perf_counter()
    tasks = [asyncio.create_task(one(seed)) for seed in range(count)]
    while not all(t.done() for t in tasks):
        result.peak_rss_kb = max(result.peak_rss_kb, tree_rss_kb(pid))
        await asyncio.sleep(0.2)
    await asyncio.gather(*tasks)
    result.seconds = time.perf_counter() - started
    return result


# --- the soak ---------------------------------------------------------------------------

# One in 50: 22 plain, 18 streamed, 4 hung up mid-stream, 3 upstream 500s, 3 upstream 429s.
MIX = ["plain"] * 22 + ["stream"] * 18 + ["hangup"] * 4 + ["e500"] * 3 + ["e429"] * 3
random.Random(7).shuffle(MIX)
KIND_HEADERS = {
    "plain": {},
    "stream": {},
    "hangup": {"x-fake-interval-ms": "20"},
    "e500": {"x-fake-status": "500"},
    "e429": {"x-fake-status": "429", "x-fake-retry-after": "3"},
}


@dataclass
class SoakResult:
    requests: int
    concurrency: int
    warm_up: int
    kinds: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    gateway_500s: int = 0  # 500s other than an upstream 500 passed on
    unexpected: int = 0
    examples: list[str] = field(default_factory=list)
    seconds: float = 0.0
    warm: Snapshot = field(default_factory=lambda: Snapshot(0, 0, 0))
    end: Snapshot = field(default_factory=lambda: Snapshot(0, 0, 0))
    expired: Snapshot | None = None  # after the pool's keep-alive expiry, if measured
    traceback: bool = False

    def note(self, what: str) -> None:
        self.unexpected += 1
        if len(self.examples) < 10:
            self.examples.append(what)

    @property
    def growth(self) -> float:
        return self.end.rss_kb / self.warm.rss_kb - 1 if self.warm.rss_kb else 0.0

    def problems(self) -> list[str]:
        found = []
        if self.growth >= RSS_GROWTH_MAX:
            found.append(f"RSS grew {self.growth:.1%} after warm-up (bound 10 %)")
        if self.end.fds > self.warm.fds:
            found.append(f"open fds {self.warm.fds} after warm-up, {self.end.fds} at the end")
        if self.end.upstream > self.warm.upstream:
            found.append(
                f"upstream connections {self.warm.upstream} after warm-up, {self.end.upstream} "
                "at the end"
            )
        if self.expired is not None and self.expired.upstream:
            found.append(f"{self.expired.upstream} upstream connections outlived the pool's idle")
        if self.gateway_500s:
            found.append(f"{self.gateway_500s} 500s from the gateway")
        if self.unexpected:
            found.append(f"{self.unexpected} unexpected answers: {self.examples}")
        if self.traceback:
            found.append("a traceback in the gateway's log")
        return found

    def table(self) -> str:
        w, e = self.warm, self.end
        ok = {True: "ok", False: "**broken**"}
        rows = [
            "| after warm-up / at the end | after warm-up | at the end | bound | |",
            "|---|---|---|---|---|",
            f"| gateway RSS | {w.rss_kb / 1024:.1f} MB | {e.rss_kb / 1024:.1f} MB "
            f"({self.growth:+.1%}) | growth < 10 % | {ok[self.growth < RSS_GROWTH_MAX]} |",
            f"| open file descriptors | {w.fds} | {e.fds} | at most the warm-up level "
            f"| {ok[e.fds <= w.fds]} |",
            f"| upstream connections (ESTABLISHED) | {w.upstream} | {e.upstream} "
            f"| at most the warm-up level | {ok[e.upstream <= w.upstream]} |",
            *self._expired_row(),
            f"| 500s from the gateway | | {self.gateway_500s} | 0 | {ok[not self.gateway_500s]} |",
            f"| unexpected answers | | {self.unexpected} | 0 | {ok[not self.unexpected]} |",
        ]
        statuses = ", ".join(f"{s}: {n:,}" for s, n in sorted(self.statuses.items()))
        kinds = ", ".join(f"{k} {n:,}" for k, n in self.kinds.most_common())
        rate = self.requests / self.seconds if self.seconds else 0.0
        rows.append(
            f"\n{self.requests:,} requests at concurrency {self.concurrency} in "
            f"{self.seconds:.0f} s ({rate:,.0f}/s): {kinds}. Statuses: {statuses}."
        )
        return "\n".join(rows)

    def _expired_row(self) -> list[str]:
        if self.expired is None:
            return []
        n, verdict = self.expired.upstream, "ok" if self.expired.upstream == 0 else "**broken**"
        return [f"| upstream connections after {EXPIRY_IDLE_S:.0f} s more idle (the pool's "
                f"keep-alive is 5 s) | | {n} | 0 | {verdict} |"]  # fmt: skip


async def soak_request(conn: Connection, i: int, result: SoakResult) -> None:
    kind = MIX[i % len(MIX)]
    stream = kind in ("stream", "hangup") or (kind != "plain" and i % 2 == 0)
    result.kinds[kind] += 1
    try:
        async with asyncio.timeout(30):
            status, head = await conn.send(chat_body(f"soak {i}", stream), KIND_HEADERS[kind])
            result.statuses[status] += 1
            if kind == "hangup" and status == 200:
                seen = b""
                async for chunk in conn.chunks(head):  # the role chunk and a content chunk
                    seen += chunk
                    if seen.count(b"\n\n") >= 2:
                        break
                conn.close()  # hang up mid-stream
                return
            body = await conn.body(head)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
        conn.close()
        result.note(f"{kind}: client error {type(exc).__name__}")
        return
    upstream_500 = kind == "e500" and b"fake error 500" in body
    if status == 500 and not upstream_500:
        result.gateway_500s += 1
    expected = {
        "plain": status == 200 and b'"choices"' in body,
        "stream": status == 200 and body.endswith(DONE),
        "hangup": False,  # a 200 returned above
        "e500": status == 500 and upstream_500,
        "e429": status == 429 and head.get(b"retry-after") == b"3",
    }[kind]
    if not expected:
        result.note(f"{kind}: HTTP {status} {body[:160]!r}")


async def soak(
    host: str,
    port: int,
    pid: int,
    upstream_port: int,
    requests: int = 100_000,
    concurrency: int = 32,
    idle_s: float = 2.0,
    expiry_idle_s: float = 0.0,
    log: Callable[[str], None] = print,
) -> SoakResult:
    """Warm up on the first 10 %, measure, run the rest, idle, measure again; then, with
    `expiry_idle_s`, idle past the upstream pool's keep-alive expiry and count again."""
    warm_up = max(requests // 10, concurrency)
    result = SoakResult(requests, concurrency, warm_up)

    async def phase(indices: range) -> None:
        it = iter(indices)  # shared: each worker takes the next index

        async def worker() -> None:
            conn = Connection(host, port)
            try:
                for i in it:
                    await soak_request(conn, i, result)
            finally:
                conn.close()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await fill_pool(host, port, concurrency)
        await asyncio.sleep(idle_s)  # clients gone, in-flight upstream work settled

    started = time.perf_counter()
    await phase(range(warm_up))
    result.warm = snapshot(pid, upstream_port)
    log(f"warm-up: {warm_up:,} requests; {result.warm}")
    await phase(range(warm_up, requests))
    result.seconds = time.perf_counter() - started - 2 * idle_s
    result.end = snapshot(pid, upstream_port)
    log(f"end: {requests:,} requests; {result.end}")
    if expiry_idle_s > 0:
        await asyncio.sleep(expiry_idle_s)
        result.expired = snapshot(pid, upstream_port)
        log(f"after {idle_s + expiry_idle_s:.0f} s idle: {result.expired}")
    return result


async def fill_pool(host: str, port: int, concurrency: int) -> None:
    """`concurrency` slow requests at once before a measurement: the gateway's upstream pool
    then holds exactly as many idle connections each time, whatever the phase's own peak,
    so a level above the warm-up one is a leak, not luck."""

    async def slow() -> None:
        conn = Connection(host, port)
        try:
            _, head = await conn.send(chat_body("fill", False), {"x-fake-delay-ms": "300"})
            await conn.body(head)
        finally:
            conn.close()

    await asyncio.gather(*(slow() for _ in range(concurrency)))


def has_traceback(log_text: str) -> bool:
    return "Traceback" in log_text or '"event":"internal_error"' in log_text


# --- the command ------------------------------------------------------------------------


@dataclass
class Services:
    fake: Process
    fake_port: int
    workdir: Path
    running: list[Process] = field(default_factory=list)

    def gateway(self, name: str) -> tuple[Process, int]:
        port = free_port()
        config = self.workdir / f"{name}.yaml"
        config.write_text(gateway_config(f"http://127.0.0.1:{self.fake_port}"))
        cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port",
               str(port)]  # fmt: skip
        env: dict[str, str | None] = {"GATEWAY_API_KEYS": None, "OPENAI_API_KEY": None,
                                      "REDIS_URL": None, "GATEWAY_PORT": None}  # fmt: skip
        proc = start(name, cmd, self.workdir / f"{name}.log", env, REPO)
        self.running.append(proc)
        wait_ready(proc, "127.0.0.1", port, "GET", "/healthz", None, {}, 30)
        return proc, port

    def stop(self) -> None:
        for proc in [*self.running, self.fake]:
            proc.stop()


def start_services(workdir: Path) -> Services:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [sys.executable, "-m", "tests.fake_upstream", "--port", str(port)]
    fake = start("fake-upstream", cmd, workdir / "fake-upstream.log", None, REPO)
    wait_ready(fake, "127.0.0.1", port, "GET", "/health", None, {}, 30)
    return Services(fake, port, workdir)


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # 1,000 streams need ~2,000 fds in the gateway (children inherit this)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def faults_phase(services: Services) -> tuple[str, list[str]]:
    proc, port = services.gateway("gateway-faults")
    poller = HealthPoller("127.0.0.1", port, services.workdir / "health.txt").start()
    rows = ["| fault (rounds of 20 clients at once, for 2 s) | non-streamed | streamed "
            "| /healthz p50 / p95 / max ms |",
            "|---|---|---|---|"]  # fmt: skip
    problems = []
    alone: dict[str, set[str]] = {}
    try:
        for fault in [*FAULTS, "all"]:
            faults = [*FAULTS, ""] if fault == "all" else [fault]
            since = time.monotonic()
            seen: dict[str, list[tuple[bool, Outcome]]] = {f: [] for f in faults}
            while not seen[faults[-1]] or time.monotonic() < since + 2:  # enough probes
                found = asyncio.run(fault_round("127.0.0.1", port, faults, 20))
                for name, outcomes in found.items():
                    seen[name] += outcomes
            health = poller.samples(since, time.monotonic())
            for name, outcomes in seen.items():
                bad = {
                    o.label()
                    for _, o in outcomes
                    if o.failure or (o.status == 500) != (name == "500")
                }
                problems += [f"{name or 'no fault'}: {label}" for label in sorted(bad)]
            p50, p95 = percentile(health, 0.5), percentile(health, 0.95)
            if p95 >= HEALTH_TARGET_MS:
                problems.append(f"{fault}: /healthz p95 {p95:.1f} ms")
            if fault != "all":
                alone[fault] = {o.label() for _, o in seen[fault]}
                title = fault
                plain, streamed = summary(seen[fault], False), summary(seen[fault], True)
            else:
                same = [f for f in FAULTS if {o.label() for _, o in seen[f]} == alone[f]]
                title = "all six together, and 20 clients without a fault"
                plain = f"{len(same)} of {len(FAULTS)} faults answered as when alone"
                streamed = f"without a fault: {summary(seen[''], False)}; {summary(seen[''], True)}"
            health_text = f"{p50:.1f} / {p95:.1f} / {max(health, default=float('nan')):.1f}"
            rows.append(f"| {title} | {plain} | {streamed} | {health_text} |")
    finally:
        poller.stop()
        proc.stop()
    if has_traceback(proc.log_path.read_text(errors="replace")):
        problems.append("faults: a traceback in the gateway's log")
    rows += ["", "An upstream 500 reaches the client as that 500, in the envelope (docs/API.md: "
             "4xx/5xx, the upstream's), never as the gateway's own `internal_error`."]  # fmt: skip
    if any("not JSON" in label or "[DONE]" in label for label in alone.get("garbage", ())):
        problems.append("faults: garbage from the upstream reached a client")
    else:
        rows.append(
            "Garbage never reaches a client: a body or a stream event that is not JSON becomes "
            "502 `upstream_error`, or the stream's final error event."
        )
    return "\n".join(rows), problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--write-docs", action="store_true", help="update docs/BENCHMARKS.md")
    args = parser.parse_args(argv)
    raise_fd_limit()
    services = start_services(WORKDIR)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    try:
        print("faults ...", flush=True)
        faults_table, problems = faults_phase(services)
        print(faults_table, flush=True)

        print(f"\n{args.streams:,} streams ...", flush=True)
        proc, port = services.gateway("gateway-streams")
        streams = asyncio.run(digest_streams("127.0.0.1", port, proc.pid, args.streams))
        proc.stop()
        problems += streams.problems()
        print(streams.table(), flush=True)

        print(f"\nsoak of {args.requests:,} requests ...", flush=True)
        proc, port = services.gateway("gateway-soak")
        result = asyncio.run(
            soak(
                "127.0.0.1",
                port,
                proc.pid,
                services.fake_port,
                args.requests,
                args.concurrency,
                expiry_idle_s=EXPIRY_IDLE_S,
            )
        )
        proc.stop()
        result.traceback = has_traceback(proc.log_path.read_text(errors="replace"))
        problems += result.problems()
        print(result.table(), flush=True)
    finally:
        services.stop()
    minutes = (time.perf_counter() - started) / 60
    load = f"load average {load_before:.2f} at the start, {os.getloadavg()[0]:.2f} at the end"
    if args.write_docs:
        write_docs(faults_table, streams, result, f"{minutes:.1f} minutes, {load}")
    for problem in problems:
        print(f"BOUND BROKEN: {problem}", file=sys.stderr)
    return 1 if problems else 0


def write_docs(faults: str, streams: StreamsResult, soaked: SoakResult, run: str) -> None:
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    path = REPO / "docs" / "BENCHMARKS.md"
    section = "\n".join(
        [
            "## Under load and faults\n",
            f"_Written by `python -m bench.soak --write-docs` ({date}, {run}, on 2 cores "
            "shared with the load client, the fake and other jobs; `python -m bench` keeps this "
            "section as it is). Each phase on a fresh gateway, "
            "one worker, against `tests/fake_upstream.py`, provider read timeout 2 s, breaker "
            "off; tests/test_faults.py and tests/test_soak.py assert the same at CI size._\n",
            "### Faults\n",
            "What 20 concurrent clients saw per fault (every other one streamed), and /healthz "
            "latency meanwhile from a poller in its own process, a new connection per probe "
            "every 10 ms.\n",
            faults,
            "\n### 1,000 concurrent streams\n",
            "Seeded content (2,048 characters in 40 chunks 200 ms apart); each client checks "
            "the SHA-256 of every byte before the upstream's digest comment, and the content "
            "against the seeded text. Peak RSS of the gateway process, sampled every 0.2 s.\n",
            streams.table(),
            "\n### Soak\n",
            "Warm-up is the first 10 % of the requests; both measurements are taken with the "
            "clients gone after 2 s idle. RSS and open fds from /proc/<pid>; upstream "
            "connections are the gateway's ESTABLISHED sockets to the fake's port "
            "(/proc/net/tcp). A 500 from the gateway is one that is not an upstream 500 passed "
            "on, as docs/API.md documents.\n",
            soaked.table(),
            "",
        ]
    )
    path.write_text(replace_section(path.read_text(), section))


if __name__ == "__main__":
    sys.exit(main())
