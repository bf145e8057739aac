"""One benchmark run: contenders interleaved round by round, every loop bounded."""

from __future__ import annotations

import asyncio
import json
import resource
import statistics
import time
import traceback
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.contenders import (
    CHAT_PATH,
    CONTENDERS,
    HOST,
    SCENARIOS,
    Contender,
    Running,
    Unavailable,
    Upstreams,
    launch,
)
from bench.procs import tree_rss_kb
from bench.streams import StreamTiming, hold_open_streams, timed_stream, warm
from bench.wrk import run_wrk, write_script

PROMPT_SIZES = {"1 KB": 1_000, "10 KB": 10_000, "100 KB": 100_000}
STREAM_PROMPT = ("Tell me about the sea, the sky and the long road home; " * 5)[:200]
WORDS = ["the", "gateway", "forwards", "each", "request", "to", "a", "model", "and", "streams",
         "the", "reply", "back"]  # fmt: skip


@dataclass(frozen=True)
class Settings:
    quick: bool
    rounds: int
    duration_s: int  # each wrk run
    warmup_s: int
    concurrency: tuple[int, ...]  # against the 0 ms upstream; also the chart's x axis
    slow_concurrency: tuple[int, ...]  # against the 20 ms upstream
    size_duration_s: int
    stream_concurrency: int
    stream_batches: int
    ttft_streams: int
    open_streams: int
    hold_s: float
    establish_timeout_s: float
    wrk_threads: int = 2

    @classmethod
    def make(cls, quick: bool, rounds: int | None = None) -> Settings:
        if quick:
            return cls(
                quick=True, rounds=rounds or 1, duration_s=1, warmup_s=1,
                concurrency=(1, 8, 32, 64), slow_concurrency=(32, 64), size_duration_s=1,
                stream_concurrency=8, stream_batches=1, ttft_streams=10,
                open_streams=1000, hold_s=1.0, establish_timeout_s=10,
            )  # fmt: skip
        return cls(
            quick=False, rounds=rounds or 3, duration_s=2, warmup_s=1,
            concurrency=(1, 8, 32, 64), slow_concurrency=(32, 64), size_duration_s=2,
            stream_concurrency=8, stream_batches=2, ttft_streams=30,
            open_streams=1000, hold_s=2.0, establish_timeout_s=20,
        )  # fmt: skip


@dataclass
class ContenderResult:
    name: str
    kind: str
    note: str
    available: bool = True
    reason: str = ""
    starts: list[dict[str, float | None]] = field(default_factory=list)
    rss_idle_mb: list[float] = field(default_factory=list)
    open_streams: dict[str, Any] = field(default_factory=dict)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def conversation(model: str, size: int) -> bytes:
    """A chat request body of about `size` bytes: alternating user and assistant turns."""
    messages: list[dict[str, str]] = []
    body = orjson.dumps({"model": model, "messages": messages})
    turn = 0
    while len(body) < size:
        words = [WORDS[(turn * 7 + i) % len(WORDS)] for i in range(80)]
        role = "user" if turn % 2 == 0 else "assistant"
        messages.append({"role": role, "content": " ".join(words)})
        body = orjson.dumps({"model": model, "messages": messages})
        turn += 1
    if messages[-1]["role"] != "user":
        messages.append({"role": "user", "content": "and so?"})
    return orjson.dumps({"model": model, "messages": messages})


class Suite:
    """The measurements of one contender in one round."""

    def __init__(self, running: Running, settings: Settings, workdir: Path) -> None:
        self.running = running
        self.settings = settings
        self.dir = workdir / running.contender.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.headers = running.contender.headers

    def script(self, label: str, body: bytes) -> Path:
        body_path = self.dir / f"{label}.json"
        body_path.write_bytes(body)
        return write_script(self.dir / f"{label}.lua", body_path, self.headers)

    def url(self, scenario: str) -> str:
        return f"http://{HOST}:{self.running.routes[scenario][0]}{CHAT_PATH}"

    def model(self, scenario: str) -> str:
        return self.running.routes[scenario][1]

    def load(
        self, scenario: str, label: str, body: bytes, conns: int, seconds: int
    ) -> dict[str, float]:
        script = self.script(label, body)
        threads = 1 if conns == 1 else self.settings.wrk_threads
        return run_wrk(self.url(scenario), script, conns, seconds, threads).as_dict()

    def run(self) -> dict[str, Any]:
        s = self.settings
        small = orjson.dumps(
            {"model": self.model("fast"), "messages": [{"role": "user", "content": "hello there"}]}
        )
        self.load("fast", "warmup", small, 8, s.warmup_s)
        out: dict[str, Any] = {"fast": {}, "slow": {}, "sizes": {}}
        for conns in s.concurrency:
            out["fast"][str(conns)] = self.load("fast", "fast", small, conns, s.duration_s)
        slow = orjson.dumps(
            {"model": self.model("slow"), "messages": [{"role": "user", "content": "hello there"}]}
        )
        for conns in s.slow_concurrency:
            out["slow"][str(conns)] = self.load("slow", "slow", slow, conns, s.duration_s)
        for label, size in PROMPT_SIZES.items():
            body = conversation(self.model("fast"), size)
            name = "size-" + label.replace(" ", "")
            out["sizes"][label] = self.load("fast", name, body, 1, s.size_duration_s)
        out["stream"] = asyncio.run(self.streams())
        return out

    async def streams(self) -> dict[str, Any]:
        port, model = self.running.routes["stream"]
        body = orjson.dumps(
            {
                "model": model,
                "stream": True,
                "messages": [{"role": "user", "content": STREAM_PROMPT}],
            }
        )
        # fill the contender's pool for this upstream first, as in steady use
        plain = orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
        await warm(HOST, port, CHAT_PATH, plain, self.headers, self.settings.stream_concurrency)
        first_tokens = []
        for _ in range(self.settings.ttft_streams):  # one at a time: added TTFT at concurrency 1
            timing = await timed_stream(HOST, port, CHAT_PATH, body, self.headers, 30, True)
            first_tokens.append(timing)
        timings: list[StreamTiming] = []
        for _ in range(self.settings.stream_batches):
            batch = [
                timed_stream(HOST, port, CHAT_PATH, body, self.headers, 30)
                for _ in range(self.settings.stream_concurrency)
            ]
            timings.extend(await asyncio.gather(*batch))
        return summarise_streams(first_tokens, timings, SCENARIOS["stream"].interval_ms)

    async def open_streams(self, upstreams: Upstreams) -> dict[str, Any]:
        port, model = self.running.routes["long"]
        body = orjson.dumps(
            {"model": model, "stream": True, "messages": [{"role": "user", "content": "hello"}]}
        )
        process = self.running.process
        assert process is not None
        held = await hold_open_streams(
            HOST,
            port,
            CHAT_PATH,
            body,
            self.headers,
            self.settings.open_streams,
            lambda: tree_rss_kb(process.pid),
            establish_timeout_s=self.settings.establish_timeout_s,
            hold_s=self.settings.hold_s,
        )
        await asyncio.sleep(2.0)  # the contender should now have closed its upstream streams
        stats = upstream_stats(upstreams.ports["long"])
        result = asdict(held)
        result["peak_rss_mb"] = held.peak_rss_kb / 1024
        result["upstream_open_2s_after_close"] = stats.get("open_streams")
        return result


def upstream_stats(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://{HOST}:{port}/_fake/stats", timeout=5) as response:
        data: dict[str, int] = json.loads(response.read())
        return data


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summarise_streams(
    first_tokens: list[StreamTiming], timings: list[StreamTiming], interval_ms: int
) -> dict[str, Any]:
    ttfts = [t.ttft_ms for t in first_tokens if t.ttft_ms is not None]
    concurrent_ttfts = [t.ttft_ms for t in timings if t.ttft_ms is not None]
    gaps = [g for t in timings for g in t.gaps_ms]
    bunched = sum(1 for g in gaps if g < interval_ms / 4)
    errors = sorted(
        {
            t.error or f"status {t.status}"
            for t in (*first_tokens, *timings)
            if t.error or t.status != 200
        }
    )
    return {
        "streams": len(timings),
        "complete": sum(1 for t in timings if t.complete),
        "content_events_per_stream": statistics.median([t.content_events for t in timings]),
        "ttft_p50_ms": percentile(ttfts, 50),
        "ttft_p99_ms": percentile(ttfts, 99),
        "ttft_concurrent_p50_ms": percentile(concurrent_ttfts, 50),
        "gap_p50_ms": percentile(gaps, 50),
        "gap_p99_ms": percentile(gaps, 99),
        "bunched_pct": 100 * bunched / len(gaps) if gaps else None,
        "errors": errors,
    }


def run(
    settings: Settings,
    upstreams: Upstreams,
    workdir: Path,
    contenders: list[Contender] | None = None,
    log: Any = print,
) -> dict[str, Any]:
    contenders = contenders or CONTENDERS
    results = {c.name: ContenderResult(c.name, c.kind, c.note) for c in contenders}
    started = time.perf_counter()
    for round_index in range(settings.rounds):
        for contender in contenders:  # A B C A B C: drift on the machine hits all alike
            result = results[contender.name]
            if not result.available:
                continue
            log(
                f"round {round_index + 1}/{settings.rounds}: {contender.name} "
                f"({time.perf_counter() - started:.0f} s)"
            )
            try:
                running = launch(contender, upstreams, workdir)
            except Unavailable as exc:
                result.available, result.reason = False, str(exc)
                log(f"  {contender.name} unavailable: {exc}")
                continue
            except Exception as exc:  # a contender that fails to start is reported, not fatal
                result.errors.append(f"round {round_index + 1}: start failed: {exc}")
                log(f"  {contender.name} failed to start: {exc}")
                if round_index == 0:
                    result.available, result.reason = False, f"failed to start: {exc}"
                continue
            try:
                if running.process:
                    result.starts.append(
                        {"ready_s": running.ready_s, "first_200_s": running.first_200_s}
                    )
                if running.process:  # idle: started and answered its first request
                    result.rss_idle_mb.append(tree_rss_kb(running.process.pid) / 1024)
                suite = Suite(running, settings, workdir)
                result.rounds.append(suite.run())
                if running.process and round_index == 0:
                    log(f"  {settings.open_streams} open streams")
                    result.open_streams = asyncio.run(suite.open_streams(upstreams))
            except Exception as exc:
                result.errors.append(f"round {round_index + 1}: {exc}")
                log(f"  {contender.name} failed: {exc}\n{traceback.format_exc(limit=3)}")
            finally:
                if running.process and not running.process.alive():
                    result.errors.append(
                        f"round {round_index + 1}: process exited: {running.process.log_tail(5)}"
                    )
                running.stop()
    return {
        "elapsed_s": time.perf_counter() - started,
        "contenders": {name: asdict(r) for name, r in results.items()},
    }
