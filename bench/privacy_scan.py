"""python -m bench.privacy_scan [--iterations N]

Micro-benchmark of the privacy scanner on the request hot path: `texts_of` + `scan` for a
realistic 4 KB chat conversation (without and with findings), p50 and p99 over many
iterations; then one text of 100 KB and one of 1 MB (best of a few runs).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from gateway.privacy import Finding, PrivacyScanner, redact, texts_of

SYSTEM = (
    "You are a helpful assistant for the engineering team at a mid-sized logistics company. "
    "Answer concisely, show code when it helps, and say so when you are not sure. Prefer the "
    "standard library; our services run Python 3.11 on Kubernetes 1.29 behind nginx 1.25."
)
USER_1 = (
    "I have a FastAPI service that reads orders from a queue and writes them to Postgres. "
    "Under load (about 1,200 messages per second) the p99 latency jumps from 40 ms to 900 ms "
    "and the CPU sits at 100% on one core. The consumer looks like this:\n\n"
    "```python\nasync def consume(queue, pool):\n    async for message in queue:\n"
    "        order = json.loads(message.body)\n        async with pool.acquire() as conn:\n"
    "            await conn.execute(INSERT_ORDER, order['id'], order['items'], order['total'])\n"
    "        await message.ack()\n```\n\nWhat is the first thing you would look at? We moved to "
    "version 2.4.1 of the driver last week, on 2024-05-14, if that matters."
)
ASSISTANT_1 = (
    "The loop handles one message at a time: each iteration waits for a pool connection, an "
    "INSERT round trip and the ack before it reads the next message, so throughput is bounded "
    "by latency, and json.loads on large bodies runs on the event loop thread. Three things "
    "to try, in order:\n\n1. Batch the inserts: collect up to 500 messages or 20 ms, then use "
    "`executemany` or `COPY` in one transaction.\n2. Run a few consumers concurrently with a "
    "semaphore sized to the pool (for example 8 tasks for a pool of 10).\n3. Move the JSON "
    "decoding off the loop for bodies over about 64 KB, or switch to orjson.\n\n"
    "```python\nasync def consume(queue, pool, batch_size=500, max_wait=0.02):\n"
    "    batch = []\n    deadline = time.monotonic() + max_wait\n    async for message in "
    "queue:\n        batch.append(message)\n        if len(batch) >= batch_size or "
    "time.monotonic() > deadline:\n            await flush(pool, batch)\n            batch = "
    "[]\n            deadline = time.monotonic() + max_wait\n```\n\nAlso check the pool size "
    "against max_connections on the server; with 12 replicas and a pool of 20 each you can "
    "exhaust the default of 100 and every acquire then waits."
)
USER_2 = (
    "Batching helped a lot: p99 is now 120 ms. Two follow-ups. First, how do I make sure a "
    "message is not acked before its batch is committed, so a crash does not lose orders? "
    "Second, our on-call runbook says to restart the consumer when lag exceeds 50,000 "
    "messages. Is there a better signal for autoscaling than lag, and what would the HPA "
    "look like? We have 3 to 10 replicas and target 70% CPU today."
)
ASSISTANT_2 = (
    "Ack after commit: keep the messages of a batch in the list and ack them only after the "
    "transaction returns; if the insert raises, nack them (or let the visibility timeout "
    "expire) so they are redelivered, and make the insert idempotent with ON CONFLICT (id) DO "
    "NOTHING so a redelivery after a partial failure is harmless. For scaling, lag alone "
    "reacts late; the rate of change of lag (messages in minus messages out per second) tells "
    "you earlier that consumers are falling behind. Export both as metrics and scale on "
    "lag per replica with a target such as 5,000, using KEDA or the external metrics API."
)
ASSISTANT_3 = (
    "The HPA can read that metric directly once it is exported:\n\n```yaml\napiVersion: "
    "autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: orders-consumer\nspec:\n"
    "  minReplicas: 3\n  maxReplicas: 10\n  metrics:\n  - type: External\n    external:\n"
    "      metric:\n        name: queue_lag_per_replica\n      target:\n        type: "
    'AverageValue\n        averageValue: "5000"\n```\n\nKeep the CPU target as a second '
    "metric so a slow database still scales you out, and add a stabilization window of about "
    "300 seconds on scale-down so a short burst does not make the replica count oscillate."
)
USER_3 = (
    "Thanks. Last question: the staging database is shared with the analytics team and they "
    "keep running heavy queries at 09:00 UTC. Can we protect our writes with a separate role "
    "and statement timeouts, and how would you set that up?"
)
FINDINGS = (
    " For context, my login is maria.gonzalez@northwind-logistics.com, my phone is "
    "+1 (415) 555-0132, and the staging DSN is postgres://svc_orders:Tr0ub4dor&3x@"
    "staging-db.internal:5432/orders with api_key = '"
    + "sk-"
    + "proj-Q7w3Xk9LmN2pR5tV8yB1cD4fG6hJ0kZ'."
    " The corporate card on file is 4539 1488 0343 6467."
)


def conversation(with_findings: bool) -> dict[str, Any]:
    last = USER_3 + (FINDINGS if with_findings else "")
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": USER_1},
        {"role": "assistant", "content": ASSISTANT_1},
        {"role": "user", "content": USER_2},
        {"role": "assistant", "content": ASSISTANT_2},
        {"role": "user", "content": "Could you show the HPA for that?"},
        {"role": "assistant", "content": ASSISTANT_3},
        {"role": "user", "content": [{"type": "text", "text": last}]},
    ]
    return {"model": "auto", "messages": messages, "stream": True}


def scan_body(scanner: PrivacyScanner, body: dict[str, Any]) -> list[Finding]:
    """What the privacy stage will run per request."""
    return scanner.scan(texts_of("chat", body))


def chars(body: dict[str, Any]) -> int:
    return sum(len(t.text) for t in texts_of("chat", body))


def timings(fn: Callable[[], object], iterations: int) -> list[int]:
    for _ in range(min(iterations, 200)):
        fn()
    out = []
    clock = time.perf_counter_ns
    for _ in range(iterations):
        started = clock()
        fn()
        out.append(clock() - started)
    return out


def percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] / 1000


def big_text(size: int) -> str:
    """Mostly prose and code with a sprinkle of findings, repeated to `size` characters."""
    unit = "\n".join((USER_1, ASSISTANT_1, USER_2, ASSISTANT_2, FINDINGS))
    return (unit * (size // len(unit) + 1))[:size]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.privacy_scan", description=__doc__)
    parser.add_argument("--iterations", type=int, default=20_000)
    args = parser.parse_args(argv)
    scanner = PrivacyScanner()
    calibration = min(timings(lambda: sum(range(100)), 20_000)) / 1000
    print(f"machine: sum(range(100)) takes {calibration:.2f} µs (a recent laptop: about 0.6)")
    print(f"{'case':44s} {'chars':>9s} {'findings':>8s} {'p50 µs':>8s} {'p99 µs':>8s}")
    for with_findings in (False, True):
        body = conversation(with_findings)
        texts = texts_of("chat", body)
        found = scanner.scan(texts)
        name = "4 KB chat, " + ("with findings" if with_findings else "no findings")
        cases: list[tuple[str, Callable[[], object]]] = [
            (f"{name}: texts_of + scan", partial(scan_body, scanner, body)),
        ]
        if with_findings:
            cases.append((f"{name}: redact", partial(redact, body, texts, found)))
        for label, fn in cases:
            runs = timings(fn, args.iterations)
            print(
                f"{label:44s} {chars(body):9d} {len(found):8d} "
                f"{percentile(runs, 0.5):8.1f} {percentile(runs, 0.99):8.1f}"
            )
    print(f"{'case':44s} {'chars':>9s} {'findings':>8s} {'best ms':>8s} {'median ms':>9s}")
    for size in (100_000, 1_000_000):
        text = big_text(size)
        runs = timings(partial(scanner.scan_text, text), 5 if size > 200_000 else 30)
        found = scanner.scan_text(text)
        print(
            f"{f'{size // 1000} KB text: scan':44s} {len(text):9d} {len(found):8d} "
            f"{min(runs) / 1e6:8.2f} {statistics.median(runs) / 1e6:9.2f}"
        )
    # Restore of a streamed answer: 400 chunks of ~10 characters with placeholders in them.
    body = conversation(True)
    texts = texts_of("chat", body)
    redaction = redact(copy.deepcopy(body), texts, scanner.scan(texts))
    answer = ("Sure, I will email [EMAIL_1] and store [SECRET_1] safely. " * 70)[:4000]
    chunks = [answer[i : i + 10] for i in range(0, len(answer), 10)]

    def stream() -> None:
        restorer = redaction.restorer()
        for chunk in chunks:
            restorer.feed(chunk)
        restorer.flush()

    runs = timings(stream, 2000)
    print(
        f"{'restore 4 KB answer in 400 chunks':44s} {len(answer):9d} {'-':>8s} "
        f"{percentile(runs, 0.5):8.1f} {percentile(runs, 0.99):8.1f}  (µs)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
