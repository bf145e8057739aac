"""python -m bench.cache [--entries N] [--n N] [--redis URL]

The response cache's own costs, in one process, without HTTP, with the builtin embedder:
- exact lookup (a stored request asked again);
- semantic lookup (a new question in a context holding N entries, the worst case: one
  tenant, one model, single-turn questions, so every entry shares the context);
- a miss (lookup, embedding and facts) and the store after it;
- memory per entry (tracemalloc), next to the entry's serialized size.
With --redis the same lookups against Redis. Then end to end over HTTP: a gateway on the
built-in demo model, a hit's latency against the same request with the cache bypassed.
Prints medians and p99 in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

import httpx
import orjson

from bench.procs import free_port, start, wait_ready
from gateway.app import Gateway
from gateway.cache.answer import Answer
from gateway.config import parse_config
from gateway.context import RequestContext

CONFIG = """
logging: {{level: warning}}
providers: {{mock: {{type: mock, models: [demo]}}}}
routing: {{default_model: demo}}
cache: {{max_items: {items}}}
state: {{redis_url: "{redis}", key_prefix: "bench-cache-{prefix}:"}}
"""
SUBJECTS = ["Python", "Kubernetes", "PostgreSQL", "Redis", "nginx", "Rust", "React", "Linux"]
VERBS = ["configure", "debug", "monitor", "upgrade", "secure", "scale", "test", "deploy"]
ANSWER = Answer(
    "demo",
    {"role": "assistant", "content": "An answer of about a hundred words. " * 12},
    "stop",
    {"prompt_tokens": 20, "completion_tokens": 120, "total_tokens": 140},
)


def question(i: int) -> str:
    subject, verb = SUBJECTS[i % len(SUBJECTS)], VERBS[(i // 8) % len(VERBS)]
    return f"How do I {verb} {subject} for project {i} on a small team?"


def context(gw: Gateway, text: str) -> RequestContext:
    ctx = RequestContext("rid", "chat", "/chat/completions", [], time.perf_counter())
    ctx.raw_body = orjson.dumps({"model": "demo", "messages": [{"role": "user", "content": text}]})
    return ctx


async def decide(gw: Gateway, ctx: RequestContext) -> None:
    for stage in gw.chain[:-1]:  # everything before the cache stage
        await stage(ctx)


async def timed_lookup(gw: Gateway, text: str) -> tuple[float, RequestContext]:
    assert gw.cache is not None
    ctx = context(gw, text)
    await decide(gw, ctx)
    started = time.perf_counter_ns()
    await gw.cache.lookup(ctx)
    return (time.perf_counter_ns() - started) / 1000, ctx


async def fill(gw: Gateway, entries: int) -> float:
    """Store `entries` answers; the memory they take, per entry, in bytes."""
    assert gw.cache is not None
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(entries):
        _, ctx = await timed_lookup(gw, question(i))
        await gw.cache.save(ctx, ANSWER)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return used / entries


def row(name: str, times: list[float]) -> None:
    p99 = statistics.quantiles(times, n=100)[98]
    print(f"| {name} | {statistics.median(times):.0f} | {p99:.0f} |")


async def in_process(entries: int, n: int, redis: str) -> None:
    config = parse_config(
        CONFIG.format(items=2 * entries, redis=redis, prefix=uuid.uuid4().hex[:8])
    )
    gw = Gateway(config)
    assert gw.cache is not None
    where = "Redis" if redis else "memory"
    per_entry = await fill(gw, entries)
    print(f"\n{entries:,} entries in {where}; threshold {gw.cache.threshold}")
    if not redis:
        count, size = gw.cache.store.usage() or (0, 0)
        print(
            f"memory per entry (tracemalloc): {per_entry:,.0f} B; stored size {size / count:,.0f} B"
        )
    print("| operation | p50 µs | p99 µs |")
    print("|---|---|---|")
    exact, semantic, miss, store, hits = [], [], [], [], 0
    for i in range(n):
        took, ctx = await timed_lookup(gw, question(i * 7 % entries))
        assert ctx.cache_status == "hit_exact", (i, ctx.cache_status)
        exact.append(took)
        # The same question reworded: a semantic lookup in a context of `entries` entries.
        took, ctx = await timed_lookup(gw, question(i * 7 % entries).replace("How do I", "how to"))
        semantic.append(took)
        hits += ctx.cache_status == "hit_semantic"
        took, ctx = await timed_lookup(gw, f"Something never asked before, number {i}?")
        miss.append(took)
        started = time.perf_counter_ns()
        await gw.cache.save(ctx, ANSWER)
        store.append((time.perf_counter_ns() - started) / 1000)
    row("exact hit", exact)
    row(f"semantic lookup ({hits / n:.0%} hits)", semantic)
    row("miss (lookup, embedding, facts)", miss)
    row("store after a miss", store)
    await gw.aclose()


async def end_to_end(n: int) -> None:
    """A hit against the same request with the cache bypassed, over loopback HTTP."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cache.yaml"
        path.write_text(CONFIG.format(items=10_000, redis="", prefix="e2e"))
        port = free_port()
        cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(path), "--port", str(port)]
        proc = start("gateway", cmd, Path(tmp) / "gateway.log")
        try:
            wait_ready(proc, "127.0.0.1", port, "GET", "/healthz", None, {}, 30)
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            body = {"model": "demo", "messages": [{"role": "user", "content": "What is DNS?"}]}
            async with httpx.AsyncClient(timeout=10) as client:
                await client.post(url, json=body)
                for _ in range(100):  # the answer is stored just after its last byte
                    response = await client.post(url, json=body)
                    if response.headers.get("x-gateway-cache") == "hit-exact":
                        break
                    await asyncio.sleep(0.01)
                kinds = {  # (unique question, cache-control, the header expected)
                    "hit": (False, "", "hit-exact"),
                    "bypass": (False, "no-cache, no-store", "bypass"),
                    "miss": (True, "", "miss"),  # looked up, then stored
                    "new, bypassed": (True, "no-cache, no-store", "bypass"),
                }
                results: dict[str, list[float]] = {kind: [] for kind in kinds}
                for i in range(n):
                    for kind, (new, control, expected) in kinds.items():
                        headers = {"cache-control": control} if control else {}
                        sent = body
                        if new:  # a question never asked, as the HTTP benchmark sends
                            text = f"How do I configure DNS for host {i}? ({kind})"
                            sent = body | {"messages": [{"role": "user", "content": text}]}
                        started = time.perf_counter_ns()
                        response = await client.post(url, json=sent, headers=headers)
                        took = (time.perf_counter_ns() - started) / 1000
                        seen = response.headers.get("x-gateway-cache")
                        assert seen == expected, (kind, i, seen, response.status_code)
                        if i >= 50:
                            results[kind].append(took)
        finally:
            proc.stop()
    print("\nEnd to end over loopback HTTP (httpx client, one at a time):")
    print("| request | p50 µs | p99 µs |")
    print("|---|---|---|")
    row("cache hit (demo model)", results["hit"])
    row("cache bypassed (demo model answers)", results["bypass"])
    row("a new question: a miss, looked up and stored", results["miss"])
    row("a new question, cache bypassed", results["new, bypassed"])
    added = statistics.median(results["miss"]) - statistics.median(results["new, bypassed"])
    print(f"what a miss adds at p50: {added:.0f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cache", description=__doc__)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--redis", default="", help="also measure against this Redis URL")
    args = parser.parse_args()
    asyncio.run(in_process(args.entries, args.n, ""))
    if args.redis:
        asyncio.run(in_process(min(args.entries, 20_000), args.n // 4, args.redis))
    asyncio.run(end_to_end(args.n // 2))


if __name__ == "__main__":
    main()
