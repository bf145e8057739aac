"""Limits and spend on shared state: several gateway processes on one Redis, and Redis failing.

Each test keeps its Redis keys under a prefix of its own (`state.key_prefix`), so tests
never see each other's windows or spend. Redis at 127.0.0.1:6379 is required (skipped
without it, failed under GATEWAY_TEST_STRICT=1); the outage tests start and kill a
`redis-server` of their own on a free port.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
import redis

from bench.procs import Process, free_port, start
from tests.conftest import FakeUpstream, GatewayProcess, require, start_gateway
from tests.test_policy import (
    ADMIN_KEY,
    HTTP,
    KEYS,
    REQUEST_COST,
    admin_usage,
    bearer,
    check_budget,
    check_token_settlement,
    error_of,
    key_usage,
    log_events,
    metric,
    policy_config,
    post_chat,
    wait_settled,
    wait_until,
)

_PREFIXES: dict[str, str] = {}  # gateway URL -> its key prefix


def replicas_prefix(gw: GatewayProcess) -> str:
    return _PREFIXES[gw.url]


def redis_state(url: str, prefix: str, on_error: str = "allow") -> str:
    return f'state: {{redis_url: "{url}", key_prefix: "{prefix}", on_redis_error: {on_error}}}'


def new_prefix() -> str:
    return f"test-{uuid4().hex}:"


@pytest.fixture(scope="module")
def shared_redis() -> str:
    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping()
    except redis.RedisError:
        require("redis not reachable at 127.0.0.1:6379")
    return "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="module")
def replicas(
    shared_redis: str, fake_upstream: FakeUpstream, workdir: Path
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """Two gateway processes, one Redis, one key prefix: two replicas of one deployment."""
    prefix = new_prefix()
    config = policy_config(fake_upstream, redis_state(shared_redis, prefix))
    first = start_gateway(config, workdir)
    _PREFIXES[first.url] = prefix
    try:
        second = start_gateway(config, workdir)
    except Exception:
        first.process.stop()
        raise
    yield first, second
    first.process.stop()
    second.process.stop()


async def test_two_replicas_admit_exactly_the_limit(
    replicas: tuple[GatewayProcess, GatewayProcess],
) -> None:
    """50 a minute, 200 at once across two processes: exactly 50 pass."""
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    replicas[i % 2].base_url + "/chat/completions",
                    json=body,
                    headers=bearer(KEYS["burst"]),
                )
                for i in range(200)
            )
        )
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 50 and statuses.count(429) == 150, sorted(set(statuses))
    for response in responses:
        if response.status_code == 200:
            assert response.headers["x-ratelimit-limit-requests"] == "50"
            continue
        error = error_of(response, 429, "rate_limit_exceeded")
        assert "50 requests per minute (requests_per_minute)" in error["message"]
        assert "key 'burst'" in error["message"]
        assert 1 <= int(response.headers["retry-after"]) <= 60
        assert 0 < int(response.headers["retry-after-ms"]) <= 60_000
        assert response.headers["x-ratelimit-remaining-requests"] == "0"
    # Every remaining count from 49 down to 0 was handed out exactly once.
    remaining = sorted(
        int(r.headers["x-ratelimit-remaining-requests"]) for r in responses if r.status_code == 200
    )
    assert remaining == list(range(50))


def test_token_settlement_on_redis_across_replicas(
    replicas: tuple[GatewayProcess, GatewayProcess], fake_upstream: FakeUpstream
) -> None:
    check_token_settlement(replicas[0], fake_upstream, KEYS["tokens"], "tokens", replicas[1])


def test_team_budget_across_replicas(replicas: tuple[GatewayProcess, GatewayProcess]) -> None:
    first, second = replicas
    for n in (1, 2):
        assert post_chat(first, KEYS["r1"]).status_code == 200
        wait_settled(first, "r1", n)
    for gw in replicas:
        for key in (KEYS["r1"], KEYS["r2"]):
            error = error_of(post_chat(gw, key), 429, "insufficient_quota")
            assert "team 'research'" in error["message"]
    team = next(t for t in admin_usage(second)["teams"] if t["name"] == "research")
    assert team["spend_usd"] == pytest.approx(2 * REQUEST_COST) and team["budget_left_usd"] == 0


def test_spend_survives_a_restart(
    shared_redis: str, fake_upstream: FakeUpstream, workdir: Path
) -> None:
    config = policy_config(fake_upstream, redis_state(shared_redis, new_prefix()))
    gw = start_gateway(config, workdir)
    try:
        check_budget(gw, KEYS["budget"], "budget")
        assert len([e for e in log_events(gw, "budget_warning") if e["scope"] == "key:budget"]) == 1
    finally:
        gw.process.stop()
    again = start_gateway(config, workdir)
    try:
        error = error_of(post_chat(again, KEYS["budget"]), 429, "insufficient_quota")
        assert "key 'budget'" in error["message"]
        row = key_usage(again, "budget")
        assert row["requests"] == 3 and row["spend_usd"] == pytest.approx(3 * REQUEST_COST)
        assert row["budget_left_usd"] == 0
        # Spend is per key: another key of the same gateway is untouched.
        assert post_chat(again, KEYS["basic"]).status_code == 200
    finally:
        again.process.stop()


# ------------------------------------------------------------------- Redis failing


class RedisServer:
    """A redis-server of the test's own, on a fixed port so that it can come back there."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no"]  # fmt: skip
        self.proc = start("redis", cmd, self.workdir / f"redis-{self.port}.log")
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        wait_until(lambda: self._pings(client), f"redis-server on port {self.port}")

    @staticmethod
    def _pings(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


@pytest.fixture
def own_redis(workdir: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        require("redis-server is not on PATH")
    server = RedisServer(workdir)
    server.start()
    yield server
    server.stop()


OUTAGE_CONFIG = """
auth:
  admin_keys: ["{admin}"]
  keys: [{{name: k, sha256: {digest}, tier: three}}]
tiers: {{three: {{requests_per_minute: 3}}}}
providers: {{mock: {{type: mock, models: [demo]}}}}
{state}
"""


def outage_config(url: str, on_error: str) -> str:
    digest = hashlib.sha256(KEYS["basic"].encode()).hexdigest()
    return OUTAGE_CONFIG.format(
        admin=ADMIN_KEY, digest=digest, state=redis_state(url, new_prefix(), on_error)
    )


def demo(gw: GatewayProcess) -> httpx.Response:
    return post_chat(gw, KEYS["basic"], "demo")


def redis_errors(gw: GatewayProcess) -> float:
    return metric(gw, "gateway_redis_errors_total", op="admit")


def assert_limited_again(gw: GatewayProcess) -> None:
    """After Redis is back: the first answer that went through it, then the limit of 3."""
    first = wait_until(
        lambda: (
            (r := demo(gw)).status_code == 200
            and "x-ratelimit-remaining-requests" in r.headers
            and r
        ),
        "a request admitted through Redis again",
    )
    remaining = int(first.headers["x-ratelimit-remaining-requests"])
    for _ in range(remaining):
        assert demo(gw).status_code == 200
    error = error_of(demo(gw), 429, "rate_limit_exceeded")
    assert "3 requests per minute" in error["message"]


def test_redis_stopped_mid_run(own_redis: RedisServer, workdir: Path) -> None:
    """Redis dies: `allow` serves (counted), `deny` answers 503; back, the limits apply again."""
    allow = start_gateway(outage_config(own_redis.url, "allow"), workdir)
    deny = start_gateway(outage_config(own_redis.url, "deny"), workdir)
    try:
        for gw in (allow, deny):
            ok = demo(gw)
            assert ok.status_code == 200 and ok.headers["x-ratelimit-remaining-requests"] == "2"
        own_redis.stop()
        before = redis_errors(allow)
        statuses = []
        for _ in range(5):  # more than the limit of 3: nothing limits while Redis is away
            response = demo(allow)
            statuses.append(response.status_code)
            assert "x-ratelimit-remaining-requests" not in response.headers
            refused = demo(deny)
            statuses.append(refused.status_code)
            error = error_of(refused, 503, "state_unavailable")
            assert "Redis" in error["message"] and "deny" in error["message"]
        assert statuses == [200, 503] * 5
        assert redis_errors(allow) >= before + 5
        assert redis_errors(deny) >= 5
        assert metric(allow, "gateway_usage_dropped_total") >= 1
        usage = HTTP.get(deny.url + "/admin/usage", headers=bearer(ADMIN_KEY))
        error_of(usage, 503, "state_unavailable")

        own_redis.start()  # the same port, empty
        assert_limited_again(allow)
        assert_limited_again(deny)
        for gw in (allow, deny):
            assert "internal_error" not in gw.log() and '"status":500' not in gw.log()
            errors = log_events(gw, "redis_error")
            assert 1 <= len(errors) <= 3  # one line per 10 s, not one per request
    finally:
        allow.process.stop()
        deny.process.stop()


def test_dead_redis_url(workdir: Path) -> None:
    """A Redis URL where nothing listens: `allow` serves unlimited, `deny` answers 503."""
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    allow = start_gateway(outage_config(dead, "allow"), workdir)
    deny = start_gateway(outage_config(dead, "deny"), workdir)
    try:
        for _ in range(4):
            assert demo(allow).status_code == 200
            error_of(demo(deny), 503, "state_unavailable")
        assert redis_errors(allow) >= 4 and redis_errors(deny) >= 4
        usage = HTTP.get(allow.url + "/admin/usage", headers=bearer(ADMIN_KEY))
        error_of(usage, 503, "state_unavailable")  # usage lives in Redis: an envelope, not a 500
        for gw in (allow, deny):
            assert "internal_error" not in gw.log() and '"status":500' not in gw.log()
    finally:
        allow.process.stop()
        deny.process.stop()


def test_state_lives_under_the_prefix_and_expires(
    replicas: tuple[GatewayProcess, GatewayProcess], shared_redis: str
) -> None:
    """Windows, leases and usage sit under `state.key_prefix`, each with a TTL."""
    prefix = replicas_prefix(replicas[0])
    for key in ("hourly", "serial"):
        assert post_chat(replicas[0], KEYS[key], "demo").status_code == 200
        wait_settled(replicas[0], key, 1)
    client = redis.Redis.from_url(shared_redis)
    keys = {k.decode(): client.pttl(k) for k in client.scan_iter(match=f"{prefix}*", count=1000)}
    month = time.strftime("%Y-%m", time.gmtime())
    assert f"{prefix}rl:key:hourly" in keys and f"{prefix}usage:{month}:key:hourly" in keys
    assert f"{prefix}usage:{month}:key:serial" in keys
    assert f"{prefix}cc:key:serial" not in keys  # the lease was given back (an empty set)
    assert all(ttl > 0 for ttl in keys.values()), keys  # nothing stays forever
