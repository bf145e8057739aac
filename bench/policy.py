"""python -m bench.policy [--n N] [--redis URL]

The cost of the policy stages in one process, without HTTP: AuthStage (a virtual key)
and LimitStage (three windows, a token budget, a concurrency lease, a monthly budget),
admission and settlement, per request, with the memory store and with Redis.
Prints medians and p99 in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import time
import uuid

import orjson

from gateway.app import Gateway
from gateway.config import parse_config
from gateway.context import RequestContext

CONFIG = """
auth:
  keys: [{{name: bench, sha256: {digest}, tier: bench, team: t, monthly_budget_usd: 1000000}}]
tiers:
  bench: {{requests_per_minute: 1000000000, requests_per_hour: 1000000000,
          tokens_per_minute: 1000000000000, max_concurrent: 100000}}
teams: {{t: {{monthly_budget_usd: 1000000}}}}
pricing: {{gpt-4o-mini: {{input_per_1m: 0.15, output_per_1m: 0.6}}}}
state: {{redis_url: "{redis}", key_prefix: "bench-{prefix}:"}}
logging: {{level: warning}}
providers:
  openai: {{type: openai, base_url: "http://127.0.0.1:9/v1", api_key: sk, models: [gpt-4o-mini]}}
routing: {{default_model: gpt-4o-mini}}
"""
BODY = orjson.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi " * 200}],
     "max_tokens": 64}
)  # fmt: skip
HEADERS = [(b"authorization", b"Bearer sk-bench"), (b"content-type", b"application/json")]
USAGE = {"prompt_tokens": 210, "completion_tokens": 64, "total_tokens": 274}


BASELINE = """
logging: {level: warning}
providers:
  openai: {type: openai, base_url: "http://127.0.0.1:9/v1", api_key: sk, models: [gpt-4o-mini]}
routing: {default_model: gpt-4o-mini}
"""


async def one(gw: Gateway) -> tuple[float, float]:
    ctx = RequestContext("rid", "chat", "/chat/completions", HEADERS, time.perf_counter())
    ctx.raw_body = BODY
    started = time.perf_counter_ns()
    for stage in gw.chain:
        await stage(ctx)
    admitted = time.perf_counter_ns()
    ctx.usage, ctx.status = USAGE, 200
    await gw.limits.settle(ctx)
    settled = time.perf_counter_ns()
    return (admitted - started) / 1000, (settled - admitted) / 1000


async def measure(redis: str | None, n: int) -> dict[str, float]:
    """redis: None for no policy at all (the baseline), "" for the memory store, or a URL."""
    digest = hashlib.sha256(b"sk-bench").hexdigest()
    text = CONFIG.format(digest=digest, redis=redis, prefix=uuid.uuid4().hex[:8])
    gw = Gateway(parse_config(BASELINE if redis is None else text, {}))
    for _ in range(200):  # warm-up: plans, price lookups, script loading
        await one(gw)
    admit, settle = [], []
    for _ in range(n):
        a, s = await one(gw)
        admit.append(a)
        settle.append(s)
    await gw.aclose()
    q = statistics.quantiles
    return {
        "chain_p50_us": statistics.median(admit),
        "chain_p99_us": q(admit, n=100)[98],
        "settle_p50_us": statistics.median(settle),
        "settle_p99_us": q(settle, n=100)[98],
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.policy", description=__doc__)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    print("whole chain (auth, parse, router, limits) then settlement, per request, in µs")
    print("| store | chain p50 | chain p99 | settle p50 | settle p99 |")
    print("|---|---|---|---|---|")
    rows: tuple[tuple[str, str | None], ...] = (
        ("no keys, no limits (baseline)", None),
        ("memory", ""),
        ("redis", args.redis),
    )
    for name, url in rows:
        n = args.n if not url else max(args.n // 4, 1000)
        try:
            r = asyncio.run(measure(url, n))
        except Exception as exc:  # no Redis here: say so, keep the memory row
            print(f"| {name} | unavailable: {exc} | | | |")
            continue
        print(f"| {name} | {r['chain_p50_us']:.1f} | {r['chain_p99_us']:.1f} | "
              f"{r['settle_p50_us']:.1f} | {r['settle_p99_us']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
