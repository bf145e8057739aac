"""python -m bench.routing [--n N]

The routing decision's cost in one process, without HTTP: the privacy scan, the
complexity score and the rules (the privacy, complexity and router stages) with the
shipped policy, on a realistic 4 KB conversation (with and without findings) and on
100 KB. The body is parsed before the clock starts. Prints p50 and p99 in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time

import orjson

from gateway.app import Gateway
from gateway.config import load_config
from gateway.context import RequestContext

SYSTEM = (
    "You are a helpful assistant for an internal engineering team. Answer concisely, cite "
    "the relevant runbook section when there is one, and never invent configuration keys. "
) * 12
HISTORY = [
    {"role": "user", "content": "Our deploy failed with a readiness probe timeout on staging."},
    {"role": "assistant", "content": "Check the probe's path and timeout, then the pod logs."},
    {"role": "user", "content": "The logs show the app binding to port 8081 instead of 8080."},
    {"role": "assistant", "content": "Then the container port and the Service disagree. " * 8},
]
CLEAN = "Could you explain why a mismatched port makes the probe fail, and how to fix it? " * 12
PRIVATE = (
    CLEAN
    + " Contact me at jane.doe@example.com or +44 20 7946 0958; the staging key is "
    + "sk-proj-4f9Qx2LmZ8rT1vB6nW3yK7pD0sA5hJcE and card 4111 1111 1111 1111."
)


def body(last: str) -> bytes:
    messages = [{"role": "system", "content": SYSTEM}, *HISTORY, {"role": "user", "content": last}]
    return orjson.dumps({"model": "auto", "messages": messages, "max_tokens": 256})


async def measure(gw: Gateway, raw: bytes, n: int) -> list[float]:
    parse, *stages = gw.decision_stages
    out = []
    for i in range(n + 200):
        ctx = RequestContext("rid", "chat", "/chat/completions", [], time.perf_counter())
        ctx.raw_body = raw
        ctx.key = gw.auth.anonymous
        await parse(ctx)
        started = time.perf_counter_ns()
        for stage in stages:
            await stage(ctx)
        if i >= 200:  # after a warm-up
            out.append((time.perf_counter_ns() - started) / 1000)
    return out


async def run(n: int) -> None:
    gw = Gateway(load_config("config.yaml", {}))
    gc.collect()
    gc.freeze()  # as the server does once it has started (gateway/app.py)
    cases = [
        # "configuration keys" in the system prompt: 12 keyword hits, not acted on at `standard`.
        ("4 KB conversation, keyword hits only", body(CLEAN), n),
        ("4 KB conversation, 4 PII and secret findings", body(PRIVATE), n),
        ("100 KB in the last user message", body(CLEAN * 95), max(n // 20, 50)),
    ]
    print("| request | bytes | p50 µs | p99 µs |")
    print("|---|---|---|---|")
    for name, raw, count in cases:
        times = await measure(gw, raw, count)
        p99 = statistics.quantiles(times, n=100)[98]
        print(f"| {name} | {len(raw):,} | {statistics.median(times):.0f} | {p99:.0f} |")
    await gw.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.routing", description=__doc__)
    parser.add_argument("--n", type=int, default=5000)
    asyncio.run(run(parser.parse_args().n))


if __name__ == "__main__":
    main()
