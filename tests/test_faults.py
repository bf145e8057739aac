"""Faults injected in the fake upstream, under concurrency: what each client sees.

A gateway (provider read timeout 2 s, breaker off so that each fault's own outcome shows
rather than 503 provider_circuit_open) in front of the fake upstream. Per fault, rounds of
20 clients at once, every other one streamed, for at least a second; a poller in its own
process times /healthz meanwhile. The expected answers are docs/API.md's (Errors, and
Streaming for a stream that already started). The clients and the fault options are
bench/soak.py's, which reports the same in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.soak import FAULTS, HealthPoller, Outcome, fault_round, gateway_config, percentile
from tests.conftest import UPSTREAM_KEY, FakeUpstream, GatewayProcess, start_gateway

CLIENTS = 20


@dataclass(frozen=True)
class Want:
    status: int
    code: str | None
    event: bool = False  # a 200 stream that ends with this error event and no [DONE]
    retry_after: str | None = None
    message: str = ""  # in the error's message: the upstream's own, passed on
    content: bool = True  # whether content events came before the error event

    def matches(self, seen: Outcome) -> bool:
        if seen.failure or seen.code != self.code or self.message not in seen.message:
            return False
        if self.event:  # the bytes before the fault arrived, then the error, never [DONE]
            content = seen.content_events > 0
            return seen.streamed and seen.error_event and not seen.done and content == self.content
        return (
            seen.status == self.status
            and not seen.streamed
            and (self.retry_after is None or seen.retry_after == self.retry_after)
        )


# (non-streamed, streamed) answers, from docs/API.md.
EXPECTED: dict[str, tuple[Want, Want]] = {
    # 504 upstream_timeout: a read timeout, here before the response head.
    "slow headers": (Want(504, "upstream_timeout"), Want(504, "upstream_timeout")),
    # A stream that started ends with one error event; a body not yet sent is a 504.
    "stall mid-stream": (Want(504, "upstream_timeout"), Want(200, "upstream_timeout", True)),
    # 502 upstream_error: "the connection broke".
    "reset mid-stream": (Want(502, "upstream_error"), Want(200, "upstream_error", True)),
    # 502 upstream_error: "or the upstream answered garbage" (never passed on).
    "garbage": (Want(502, "upstream_error"), Want(200, "upstream_error", True, content=False)),
    # "4xx/5xx: the upstream's error, in this envelope"; retry-after passes through.
    "429 Retry-After": (Want(429, "rate_limit_exceeded", retry_after="7"),) * 2,
    "500": (Want(500, None, message="fake error 500"),) * 2,
}


@pytest.fixture(scope="module")
def faulty_gateway(fake_upstream: FakeUpstream, workdir: Path) -> Iterator[GatewayProcess]:
    config = gateway_config(fake_upstream.url, api_key=UPSTREAM_KEY, log_level="info")
    gw = start_gateway(config, workdir)
    yield gw
    gw.process.stop()


@pytest.fixture(scope="module")
def health(faulty_gateway: GatewayProcess, workdir: Path) -> Iterator[HealthPoller]:
    host, port = address(faulty_gateway)
    poller = HealthPoller(host, port, workdir / f"health-{port}.txt").start()
    yield poller
    poller.stop()


def address(gw: GatewayProcess) -> tuple[str, int]:
    host, port = gw.url.removeprefix("http://").split(":")
    return host, int(port)


def run_rounds(gw: GatewayProcess, faults: list[str]) -> dict[str, list[tuple[bool, Outcome]]]:
    """Rounds of CLIENTS requests per fault at once, repeated for at least a second so that
    the /healthz poller (every 10 ms) takes enough probes during them."""
    host, port = address(gw)
    seen: dict[str, list[tuple[bool, Outcome]]] = {f: [] for f in faults}
    started = time.monotonic()
    while not seen[faults[0]] or time.monotonic() < started + 1.0:
        for fault, outcomes in asyncio.run(fault_round(host, port, faults, CLIENTS)).items():
            seen[fault] += outcomes
    return seen


def assert_stayed_healthy(
    gw: GatewayProcess, health: HealthPoller, since: float, log_at: int
) -> None:
    probes = health.samples(since, time.monotonic())
    assert len(probes) >= 10, f"the /healthz poller took only {len(probes)} probes"
    p50, p95 = percentile(probes, 0.5), percentile(probes, 0.95)
    # The median carries the target (50 ms; it measures 2-10 ms here). The tail gets
    # a generous bound and the max none: clients, fake and gateway share 2 cores with other
    # jobs, so one probe can wait on the scheduler; a loop that blocks on a fault would
    # push every percentile towards the 2 s read timeout, and a failed probe counts as inf.
    assert p50 < 50, f"/healthz p50 {p50:.1f} ms, p95 {p95:.1f} ms over {len(probes)} probes"
    assert p95 < 250, f"/healthz p50 {p50:.1f} ms, p95 {p95:.1f} ms over {len(probes)} probes"
    log = gw.log()[log_at:]
    assert "Traceback" not in log and '"internal_error"' not in log, log[-3000:]


@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_client_sees_the_documented_answer(
    fault: str, faulty_gateway: GatewayProcess, health: HealthPoller
) -> None:
    since, log_at = time.monotonic(), len(faulty_gateway.log())
    seen = run_rounds(faulty_gateway, [fault])[fault]
    wrong = [
        f"{'streamed' if stream else 'non-streamed'}: {o.label()} {o.message[:120]}"
        for stream, o in seen
        if not EXPECTED[fault][stream].matches(o)
    ]
    assert not wrong, f"{len(wrong)} of {len(seen)} clients: {sorted(set(wrong))}"
    assert {stream for stream, _ in seen} == {False, True}
    assert_stayed_healthy(faulty_gateway, health, since, log_at)


def test_all_faults_at_once_and_the_gateway_keeps_serving(
    faulty_gateway: GatewayProcess, health: HealthPoller
) -> None:
    """Every fault and clean requests together: each client gets an answer, none is the
    gateway's own 500, no stream is cut without an error event, and /healthz stays fast."""
    since, log_at = time.monotonic(), len(faulty_gateway.log())
    seen = run_rounds(faulty_gateway, [*FAULTS, ""])
    problems = []
    for fault, outcomes in seen.items():
        for stream, o in outcomes:
            if o.failure or (o.streamed and not (o.done or o.error_event)):
                problems.append(f"{fault or 'no fault'}: {o.label()}")
            elif o.status == 500 and not EXPECTED["500"][stream].matches(o):
                problems.append(f"{fault or 'no fault'}: a 500 of the gateway's own")
            elif fault == "":
                if o.label() not in ("200 JSON", "200 stream, [DONE]"):
                    problems.append(f"no fault: {o.label()}")
            elif not EXPECTED[fault][stream].matches(o):
                problems.append(f"{fault}: {o.label()} {o.message[:120]}")
    assert not problems, sorted(set(problems))
    assert_stayed_healthy(faulty_gateway, health, since, log_at)
