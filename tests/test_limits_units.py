"""The limit stage in process: tiers, provider limits, token budgets, leases and monthly spend.

A LimitStage is built from a parsed config the way gateway/runtime.py builds it (the
store, Pricing, Metrics, the logger), its requests are RequestContexts as the chain leaves
them, and what is checked is what docs/CONFIG.md (`tiers`, `teams`, `provider_limits`,
`limits`, `pricing`, `state`) and docs/API.md (429s, 503 `state_unavailable`, the
x-ratelimit-* headers, the budget metrics) promise: the refusal a client sees with its
headers, the reservation and its settlement, spend per key and team. The memory store
runs on a fake wall clock so retry times are exact. tests/test_policy.py and
tests/test_redis_limits.py check the same through gateway processes; these let a mutation
run of gateway/chain/limits.py (docs/TESTING.md) go without them.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

import pytest
import redis
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from structlog.testing import capture_logs

from bench.procs import free_port
from gateway.chain import limits as limits_module
from gateway.chain.auth import AuthStage, key_name
from gateway.chain.limits import (
    LimitStage,
    duration,
    month_now,
    rate_limit_headers,
    usd,
    windows_of,
)
from gateway.config import ProviderLimitConfig, TierConfig, parse_config
from gateway.context import RequestContext
from gateway.errors import GatewayError, QuotaExceeded, RateLimited, StateUnavailable
from gateway.observability import Metrics, get_logger
from gateway.pricing import Pricing
from gateway.stores import NANO, Admission, Check, Store, Window, WindowState, build_store
from tests.conftest import redis_or_skip

NOW_MS = 1_800_000_000_000
PLAIN = "sk-limits-plain"
KEYS = {
    "free": "{}",
    "std": "{tier: standard}",
    "std2": "{tier: standard}",
    "hourly": "{tier: hourly}",
    "daily": "{tier: daily}",
    "tok": "{tier: tokens}",
    "serial": "{tier: serial}",
    "pair": "{tier: pair}",
    "quiet": "{tier: quiet}",
    "bud": "{monthly_budget_usd: 0.024}",
    "fifty": "{monthly_budget_usd: 0.05}",
    "r1": "{team: research}",
    "r2": "{team: research, monthly_budget_usd: 1}",
    "loner": "{team: solo}",
    "ops:eve": "{monthly_budget_usd: 0.02}",
}


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


ENTRIES = "\n".join(
    f"    - {{name: '{name}', sha256: {sha('sk-' + name)}, {opts[1:-1]}}}".replace(", }", "}")
    for name, opts in KEYS.items()
)
CONFIG = f"""
auth:
  api_keys: ["{PLAIN}"]
  keys:
{ENTRIES}
tiers:
  standard: {{requests_per_minute: 2, requests_per_hour: 100}}
  hourly: {{requests_per_minute: 100, requests_per_hour: 2}}
  daily: {{requests_per_day: 1}}
  tokens: {{tokens_per_minute: 2000, requests_per_minute: 100}}
  serial: {{max_concurrent: 1}}
  pair: {{max_concurrent: 2, requests_per_minute: 50}}
  quiet: {{privacy_level: high}}
teams:
  research: {{monthly_budget_usd: 0.015}}
providers:
  openai:
    type: openai
    base_url: http://127.0.0.1:9/v1
    api_key: sk-upstream
    models: [gpt-4o-mini, unpriced-model]
  mock: {{type: mock, models: [demo]}}
  metered: {{type: mock, models: [metered-demo]}}
  gauged: {{type: mock, models: [gauged-demo]}}
provider_limits:
  metered: {{requests_per_minute: 2, tokens_per_minute: 3000}}
  gauged: {{requests_per_minute: 1}}
limits: {{default_completion_tokens: 100, lease_seconds: 30}}
routing: {{default_model: demo}}
pricing:
  gpt-4o-mini: {{input_per_1m: 1000, output_per_1m: 2000}}
"""
# At those prices 4 prompt and 3 completion tokens cost 4,000 + 6,000 per 1M: $0.01.
USAGE = {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
COST = 0.01
_CLOCK = [0]


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The memory store's wall clock, frozen at NOW_MS until a test moves it."""
    _CLOCK[0] = NOW_MS * 1_000_000
    monkeypatch.setattr(time, "time_ns", lambda: _CLOCK[0])
    yield


def later(ms: int) -> None:
    _CLOCK[0] += ms * 1_000_000


class Parts:
    """What gateway/runtime.py builds for limits: config, auth, store, pricing, metrics."""

    def __init__(self, extra: str = "", store: Store | None = None) -> None:
        self.config = parse_config(CONFIG + extra, env={})
        self.store = store or build_store(None, self.config.state.key_prefix)
        self.metrics = Metrics()
        self.auth = AuthStage(self.config.auth)
        self.limits = LimitStage(
            self.config, self.store, Pricing(self.config), self.metrics, get_logger()
        )

    def request(
        self,
        key: str | None,
        provider: str = "mock",
        model: str = "demo",
        body: dict[str, Any] | None = None,
        endpoint: str = "chat",
        prompt: int = 10,
    ) -> RequestContext:
        ctx = RequestContext("req_1", endpoint, "/chat/completions", [], 0.0)
        ctx.body = {"model": model} if body is None else body
        name = key_name(PLAIN) if key == "plain" else key
        ctx.key = None if name is None else self.auth.principal_named(name)
        assert key is None or ctx.key is not None
        ctx.provider, ctx.model = provider, model
        ctx.prompt_tokens_estimate = prompt
        return ctx

    async def admit(self, key: str | None, **kwargs: Any) -> RequestContext:
        ctx = self.request(key, **kwargs)
        await self.limits(ctx)
        return ctx

    async def refused(self, key: str, **kwargs: Any) -> GatewayError:
        ctx = self.request(key, **kwargs)
        with pytest.raises(GatewayError) as caught:
            await self.limits(ctx)
        assert ctx.admission is None
        await self.limits.settle(ctx)  # what the proxy does after a refusal: nothing held
        return caught.value

    async def finish(
        self, ctx: RequestContext, status: int = 200, usage: dict[str, Any] | None = None
    ) -> None:
        ctx.status, ctx.usage = status, usage
        await self.limits.settle(ctx)

    async def served(
        self, key: str, usage: dict[str, Any] | None = None, **kw: Any
    ) -> RequestContext:
        ctx = await self.admit(key, **kw)
        await self.finish(ctx, 200, usage)
        return ctx

    async def usage(self, scope: str) -> dict[str, int]:
        return (await self.store.usage([scope], month_now()))[scope]

    def metric(self, sample: str, /, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(sample, labels) or 0.0


def headers(ctx: RequestContext) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in ctx.limit_headers}


def rate_limited(error: GatewayError, kind: str, message: str, sent: dict[str, str]) -> None:
    assert isinstance(error, RateLimited)
    assert (error.status, error.code, error.type) == (429, "rate_limit_exceeded", kind)
    assert error.message == message
    assert error.headers == sent


# ------------------------------------------------------------------------------ units


def test_windows_of_a_tier_or_provider_limit() -> None:
    tier = TierConfig(requests_per_minute=1, requests_per_hour=2, requests_per_day=3,
                      tokens_per_minute=4, max_concurrent=5)  # fmt: skip
    assert windows_of(tier) == (
        Window("requests_per_minute", 60, 1),
        Window("requests_per_hour", 3600, 2),
        Window("requests_per_day", 86400, 3),
        Window("tokens_per_minute", 60, 4, tokens=True),
    )
    assert windows_of(TierConfig(requests_per_day=7)) == (Window("requests_per_day", 86400, 7),)
    assert windows_of(TierConfig()) == ()  # an absent limit is unlimited
    assert windows_of(ProviderLimitConfig(tokens_per_minute=9)) == (
        Window("tokens_per_minute", 60, 9, tokens=True),
    )


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (-5, "0ms"), (0, "0ms"), (20, "20ms"), (999, "999ms"), (1000, "1s"), (1500, "1.5s"),
        (12_345, "12.3s"), (59_400, "59.4s"), (59_950, "1m0s"), (60_000, "1m0s"),
        (360_000, "6m0s"),
        (61_999, "1m1s"), (3_599_000, "59m59s"), (3_600_000, "1h0m0s"),
        (3_723_000, "1h2m3s"), (86_400_000, "24h0m0s"),
    ],
)  # fmt: skip
def test_reset_durations_in_openai_format(ms: int, text: str) -> None:
    assert duration(ms) == text


def test_amounts_in_messages() -> None:
    assert usd(24_000_000) == "0.024"
    assert usd(25 * NANO) == "25"
    assert usd(1_500_000_000) == "1.5"
    assert usd(1_000) == "0.000001"
    assert usd(123_456_789) == "0.123457"  # six decimals at most
    assert usd(100 * NANO) == "100"


@pytest.fixture
def new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A local time zone five hours behind UTC, so a local month would show."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_the_month_changes_at_midnight_utc(monkeypatch: pytest.MonkeyPatch, new_york: None) -> None:
    monkeypatch.setattr(limits_module, "_month", [0.0, ""])
    last = datetime(2027, 1, 31, 23, 59, 59, 500_000, tzinfo=UTC).timestamp()
    now = [last]
    monkeypatch.setattr(time, "time", lambda: now[0])
    assert month_now() == "2027-01"
    now[0] = last + 0.25
    assert month_now() == "2027-01"
    now[0] = last + 1.0  # 00:00:00.5 on February 1st: looked up again at most 1 s late
    assert month_now() == "2027-02"
    now[0] = datetime(2027, 12, 1, tzinfo=UTC).timestamp()
    assert month_now() == "2027-12"


def test_headers_report_the_tightest_window_of_each_kind() -> None:
    check = Check("key:a", "key 'a'")
    rpm, rph = Window("requests_per_minute", 60, 10), Window("requests_per_hour", 3600, 7)
    rpd = Window("requests_per_day", 86400, 9)
    tpm = Window("tokens_per_minute", 60, 500, tokens=True)
    ptpm = Window("tokens_per_minute", 60, 900, tokens=True)
    states = [
        WindowState(rpm, check, 0, 5, 1_000),
        WindowState(tpm, check, 0, 400, 30_000),
        WindowState(rph, check, 0, 3, 60_000),
        WindowState(rpd, check, 0, 3, 20_000),  # as few left as rph, and resets sooner
        WindowState(ptpm, check, 0, 401, 1_000),
    ]
    assert rate_limit_headers(states) == [
        (b"x-ratelimit-limit-requests", b"9"),
        (b"x-ratelimit-remaining-requests", b"3"),
        (b"x-ratelimit-reset-requests", b"20s"),
        (b"x-ratelimit-limit-tokens", b"500"),
        (b"x-ratelimit-remaining-tokens", b"400"),
        (b"x-ratelimit-reset-tokens", b"30s"),
    ]
    assert rate_limit_headers([states[1]]) == [
        (b"x-ratelimit-limit-tokens", b"500"),
        (b"x-ratelimit-remaining-tokens", b"400"),
        (b"x-ratelimit-reset-tokens", b"30s"),
    ]
    assert rate_limit_headers([]) == []


# --------------------------------------------------------------------- request windows


async def test_a_tier_window_refuses_with_retry_after_and_its_headers() -> None:
    parts = Parts()
    for left in ("1", "0"):
        ctx = await parts.admit("std", body={"max_tokens": 50})
        assert ctx.admission is not None and ctx.admission.ok
        assert ctx.admitted_provider == "mock"
        # The tighter of 2 per minute and 100 per hour; no token window, nothing reserved.
        assert headers(ctx) == {
            "x-ratelimit-limit-requests": "2",
            "x-ratelimit-remaining-requests": left,
            "x-ratelimit-reset-requests": "1m0s",
        }
        assert ctx.reserved_tokens == 0 and ctx.lease_id == ""
    error = await parts.refused("std")
    message = ("Rate limit reached for key 'std' (tier standard): 2 requests per minute "
               "(requests_per_minute). Try again in 1m0s.")  # fmt: skip
    rate_limited(error, "requests", message, {
        "retry-after": "60", "retry-after-ms": "60000", "x-ratelimit-limit-requests": "2",
        "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m0s",
    })  # fmt: skip
    later(59_500)
    error = await parts.refused("std")
    assert error.message.endswith("Try again in 500ms.")
    assert error.headers["retry-after"] == "1"  # whole seconds, rounded up
    assert error.headers["retry-after-ms"] == "500"
    assert error.headers["x-ratelimit-reset-requests"] == "500ms"
    later(499)
    error = await parts.refused("std")
    assert error.message.endswith("Try again in 1ms.")
    assert (error.headers["retry-after"], error.headers["retry-after-ms"]) == ("1", "1")
    later(1)
    assert (await parts.admit("std")).admission is not None
    assert (await parts.admit("free")).admission is None  # another key: unlimited


async def test_hour_and_day_windows_say_which_and_when() -> None:
    parts = Parts()
    await parts.admit("hourly")
    await parts.admit("hourly")
    error = await parts.refused("hourly")
    message = ("Rate limit reached for key 'hourly' (tier hourly): 2 requests per hour "
               "(requests_per_hour). Try again in 1h0m0s.")  # fmt: skip
    rate_limited(error, "requests", message, {
        "retry-after": "3600", "retry-after-ms": "3600000", "x-ratelimit-limit-requests": "2",
        "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1h0m0s",
    })  # fmt: skip
    ctx = await parts.admit("daily")
    assert headers(ctx)["x-ratelimit-reset-requests"] == "24h0m0s"
    later(1_000)
    error = await parts.refused("daily")
    assert "1 requests per day (requests_per_day). Try again in 23h59m59s." in error.message
    assert error.headers["retry-after"] == "86399"


async def test_a_provider_limit_applies_to_every_key() -> None:
    parts = Parts()
    await parts.admit("free", provider="metered", model="metered-demo")
    await parts.admit("plain", provider="metered", model="metered-demo")
    error = await parts.refused("std", provider="metered", model="metered-demo")
    message = ("Rate limit reached for provider 'metered': 2 requests per minute "
               "(requests_per_minute). Try again in 1m0s.")  # fmt: skip
    assert error.message == message and error.type == "requests"
    assert (await parts.admit("free")).admission is None  # another provider: no limit
    # Each limited provider has windows of its own, and a refusal is no usage.
    await parts.admit("free", provider="gauged", model="gauged-demo")
    await parts.refused("free", provider="gauged", model="gauged-demo")
    await parts.refused("free", provider="metered", model="metered-demo")
    assert (await parts.usage("key:free"))["requests"] == 0
    # The key's own window was not spent by the refusal: both its requests still pass.
    assert headers(await parts.admit("std"))["x-ratelimit-remaining-requests"] == "1"
    assert headers(await parts.admit("std"))["x-ratelimit-remaining-requests"] == "0"


async def test_each_key_has_windows_of_its_own() -> None:
    parts = Parts()
    await parts.admit("std")
    await parts.admit("std")
    await parts.refused("std")
    assert headers(await parts.admit("std2"))["x-ratelimit-remaining-requests"] == "1"


async def test_a_key_without_limits_is_not_admitted_but_its_usage_counts() -> None:
    parts = Parts()
    for key in ("free", "quiet", "plain"):  # no tier, a tier without limits, a plain key
        ctx = await parts.admit(key, body={"max_tokens": 10})
        assert ctx.admission is None and ctx.limit_headers == [] and ctx.lease_id == ""
        assert ctx.admitted_provider == "mock"
        await parts.finish(ctx, 200, USAGE)
        assert ctx.cost_usd == 0.0  # a mock model costs nothing
        assert await parts.usage(f"key:{ctx.key.name}") == {  # type: ignore[union-attr]
            "requests": 1, "prompt_tokens": 4, "completion_tokens": 3, "cost_nano": 0,
            "unpriced": 0,
        }  # fmt: skip
    assert (await parts.usage("team:"))["requests"] == 0  # keys with no team count for none


async def test_no_key_no_limits_and_no_usage() -> None:
    parts = Parts("state: {on_redis_error: deny}\n")
    ctx = await parts.admit(None)
    assert ctx.admission is None and ctx.admitted_provider == ""
    await parts.finish(ctx, 200, USAGE)
    assert ctx.cost_usd is None
    # A request an earlier stage refused never reached the limits: settling it records nothing.
    for parts in (Parts(), Parts("state: {on_redis_error: deny}\n")):
        refused = parts.request("free", provider="openai", model="gpt-4o-mini")
        await parts.finish(refused, 403)
        assert refused.cost_usd is None
        assert (await parts.usage("key:free"))["requests"] == 0


# ------------------------------------------------------------------------------ tokens


@pytest.mark.parametrize(
    ("endpoint", "body", "reserved"),
    [
        ("chat", {}, 110),  # limits.default_completion_tokens
        ("chat", {"max_tokens": 500}, 510),
        ("chat", {"max_completion_tokens": 300, "max_tokens": 500}, 310),
        ("chat", {"max_tokens": 0}, 10),
        ("chat", {"max_tokens": True}, 110),
        ("chat", {"max_tokens": -1}, 110),
        ("chat", {"max_tokens": "500"}, 110),
        ("chat", {"max_tokens": 5.0}, 110),
        ("chat", {"max_output_tokens": 50}, 110),
        ("completions", {"max_tokens": 40}, 50),
        ("responses", {"max_output_tokens": 50}, 60),
        ("responses", {"max_tokens": 500}, 110),
        ("responses", {"max_output_tokens": -3}, 110),
        ("embeddings", {"max_tokens": 500}, 10),  # an embedding generates nothing
    ],
)
async def test_the_token_reservation(endpoint: str, body: dict[str, Any], reserved: int) -> None:
    parts = Parts()
    ctx = await parts.admit("tok", body=body, endpoint=endpoint)
    assert ctx.reserved_tokens == reserved
    assert headers(ctx) == {
        "x-ratelimit-limit-requests": "100",
        "x-ratelimit-remaining-requests": "99",
        "x-ratelimit-reset-requests": "1m0s",
        "x-ratelimit-limit-tokens": "2000",
        "x-ratelimit-remaining-tokens": str(2000 - reserved),  # counts this reservation
        "x-ratelimit-reset-tokens": "1m0s",
    }


async def test_a_request_larger_than_the_token_limit_is_never_retried() -> None:
    parts = Parts()
    error = await parts.refused("tok", body={"max_tokens": 501}, prompt=1500)
    message = ("Request too large for key 'tok' (tier tokens): it may use about 2001 tokens, "
               "over the limit of 2000 tokens per minute. Send a shorter prompt or a lower "
               "max_tokens.")  # fmt: skip
    rate_limited(error, "tokens", message, {"x-should-retry": "false"})
    error = await parts.refused("free", provider="metered", model="metered-demo", prompt=2901)
    assert error.message.startswith("Request too large for provider 'metered': it may use "
                                    "about 3001 tokens, over the limit of 3000")  # fmt: skip
    ctx = await parts.admit("tok", body={"max_tokens": 500}, prompt=1500)  # exactly the limit
    assert headers(ctx)["x-ratelimit-remaining-tokens"] == "0"
    error = await parts.refused("tok", body={"max_tokens": 0}, prompt=1)
    message = ("Rate limit reached for key 'tok' (tier tokens): 2000 tokens per minute "
               "(tokens_per_minute). Try again in 1m0s.")  # fmt: skip
    rate_limited(error, "tokens", message, {
        "retry-after": "60", "retry-after-ms": "60000", "x-ratelimit-limit-tokens": "2000",
        "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1m0s",
    })  # fmt: skip


async def remaining_tokens(parts: Parts) -> int:
    """What the tokens window has left before a request reserving 110 more."""
    ctx = await parts.admit("tok")
    left = int(headers(ctx)["x-ratelimit-remaining-tokens"]) + 110
    await parts.finish(ctx, 500)  # failed: its reservation comes back
    return left


@pytest.mark.parametrize(
    ("status", "usage", "counted"),
    [
        (200, USAGE, 7),  # settled to the upstream's real usage
        (200, {"prompt_tokens": 100, "completion_tokens": 200}, 300),  # more than reserved
        (200, {"prompt_tokens": 50, "completion_tokens": 60}, 110),  # exactly the reservation
        (200, None, 110),  # no usage came back: the estimate stands
        (499, None, 110),  # the client hung up: the estimate stands
        (499, USAGE, 7),
        (502, None, 0),  # failed: the reservation comes back
        (429, None, 0),
        (400, None, 0),
        (502, {"prompt_tokens": 9, "completion_tokens": 0}, 9),
    ],
)
async def test_the_reservation_settles(
    status: int, usage: dict[str, Any] | None, counted: int
) -> None:
    parts = Parts()
    ctx = await parts.admit("tok")
    assert ctx.reserved_tokens == 110
    await parts.finish(ctx, status, usage)
    assert await remaining_tokens(parts) == 2000 - counted
    assert (await parts.usage("key:tok"))["requests"] == 2


async def test_settlement_follows_the_provider_that_admitted() -> None:
    """A fallback served from another provider: its tokens settle on the admitted windows."""
    parts = Parts()
    ctx = await parts.admit("free", provider="metered", model="metered-demo")
    assert ctx.reserved_tokens == 110
    ctx.provider, ctx.model = "openai", "gpt-4o-mini"  # the fallback that answered
    await parts.finish(ctx, 200, USAGE)
    assert ctx.cost_usd == COST  # priced as the provider that served it
    after = await parts.admit("free", provider="metered", model="metered-demo")
    assert headers(after)["x-ratelimit-remaining-tokens"] == str(3000 - 7 - 110)
    # Admitted where nothing applies, served by a limited provider: still counted.
    ctx = await parts.admit("plain")
    ctx.provider, ctx.model = "metered", "metered-demo"
    await parts.finish(ctx, 200, USAGE)
    assert (await parts.usage(f"key:{key_name(PLAIN)}"))["requests"] == 1


# ------------------------------------------------------------------------------ leases


async def test_max_concurrent_holds_a_lease_until_the_response_ends() -> None:
    parts = Parts()
    first = await parts.admit("serial")
    assert re.fullmatch(r"[0-9a-f]{32}", first.lease_id)
    assert first.limit_headers == []  # no request window: no x-ratelimit-* headers
    error = await parts.refused("serial")
    message = ("Concurrency limit reached for key 'serial' (tier serial): 1 request at a "
               "time. Try again in 1s.")  # fmt: skip
    rate_limited(error, "requests", message, {"retry-after": "1", "retry-after-ms": "1000"})
    await parts.finish(first, 200, USAGE)  # the lease back
    second = await parts.admit("serial")
    assert second.lease_id and second.lease_id != first.lease_id
    await parts.refused("serial")
    await parts.finish(second, 499)  # a client that hung up gives it back too
    await parts.admit("serial")


async def test_two_at_a_time_and_leases_lapse_after_lease_seconds() -> None:
    parts = Parts()
    first = await parts.admit("pair")
    await parts.admit("pair")
    error = await parts.refused("pair")
    assert error.message == ("Concurrency limit reached for key 'pair' (tier pair): 2 "
                             "requests at a time. Try again in 1s.")  # fmt: skip
    assert headers(first)["x-ratelimit-remaining-requests"] == "49"
    later(29_999)
    await parts.refused("pair")
    later(1)  # limits.lease_seconds (30) after they were taken: a crashed replica's lapse
    await parts.admit("pair")
    await parts.admit("pair")
    await parts.refused("pair")


# ----------------------------------------------------------------------------- budgets


async def test_a_key_budget_refuses_once_spent() -> None:
    parts = Parts()
    for spent in (1, 2, 3):  # $0.02 is under $0.024: the third request is still served
        ctx = await parts.served("bud", USAGE, provider="openai", model="gpt-4o-mini")
        assert ctx.cost_usd == COST
        assert (await parts.usage("key:bud"))["cost_nano"] == spent * 10_000_000
    error = await parts.refused("bud", provider="openai", model="gpt-4o-mini")
    assert isinstance(error, QuotaExceeded)
    assert (error.status, error.code, error.type) == (429, "insufficient_quota",
                                                      "insufficient_quota")  # fmt: skip
    assert error.message == ("The monthly budget of $0.024 for key 'bud' is spent; it renews "
                             "on the 1st of the month (UTC).")  # fmt: skip
    assert error.headers == {"x-should-retry": "false"}
    assert (await parts.usage("key:bud"))["requests"] == 3  # the refusal is not usage


async def test_a_team_budget_refuses_every_key_of_the_team() -> None:
    parts = Parts()
    await parts.served("r1", USAGE, provider="openai", model="gpt-4o-mini")
    await parts.served("r2", USAGE, provider="openai", model="gpt-4o-mini")  # $0.01 < $0.015
    for key in ("r1", "r2"):  # r2's own $1 budget has room; the team's does not
        error = await parts.refused(key, provider="openai", model="gpt-4o-mini")
        assert isinstance(error, QuotaExceeded)
        assert error.message.startswith("The monthly budget of $0.015 for team 'research' is")
    assert (await parts.usage("team:research"))["cost_nano"] == 20_000_000
    assert (await parts.usage("key:r1"))["cost_nano"] == 10_000_000
    # A team with no entry under `teams` has no budget, but its spend is still counted.
    for _ in range(3):
        await parts.served("loner", USAGE, provider="openai", model="gpt-4o-mini")
    assert (await parts.usage("team:solo"))["cost_nano"] == 30_000_000
    assert parts.metric("gateway_spend_usd_total", key="r1", team="research") == COST
    assert parts.metric("gateway_spend_usd_total", key="loner", team="solo") == pytest.approx(
        3 * COST
    )


async def test_spend_tokens_and_budget_metrics() -> None:
    parts = Parts()
    with capture_logs() as logs:
        for _ in range(3):
            await parts.served("fifty", USAGE, provider="openai", model="gpt-4o-mini")
    assert parts.metric("gateway_spend_usd_total", key="fifty", team="-") == pytest.approx(0.03)
    assert parts.metric("gateway_key_tokens_total", key="fifty", team="-", type="prompt") == 12
    assert parts.metric("gateway_key_tokens_total", key="fifty", team="-",
                        type="completion") == 9  # fmt: skip
    assert parts.metric("gateway_budget_used_ratio", scope="key", name="fifty") == pytest.approx(
        0.6
    )
    assert not [e for e in logs if e["event"].startswith("budget_")]
    with capture_logs() as logs:
        await parts.served("fifty", USAGE, provider="openai", model="gpt-4o-mini")  # 80 %
        await parts.served("fifty", USAGE)  # free, at exactly 80 %: no line crossed
        await parts.served("fifty", USAGE, provider="openai", model="gpt-4o-mini")  # 100 %
    alerts = [(e["event"], e["log_level"], e["scope"], e["used_usd"], e["budget_usd"])
              for e in logs if e["event"].startswith("budget_")]  # fmt: skip
    assert alerts == [
        ("budget_warning", "warning", "key:fifty", 0.04, 0.05),
        ("budget_exhausted", "warning", "key:fifty", 0.05, 0.05),
    ]
    for event in ("budget_warning", "budget_exhausted"):
        labels = {"scope": "key", "name": "fifty", "event": event}
        assert parts.metric("gateway_budget_alerts_total", **labels) == 1
    assert parts.metric("gateway_budget_used_ratio", scope="key", name="fifty") == 1.0
    await parts.refused("fifty", provider="openai", model="gpt-4o-mini")
    # One request can cross both lines: the team's $0.015 goes from $0.01 to $0.02.
    with capture_logs() as logs:
        await parts.served("r1", USAGE, provider="openai", model="gpt-4o-mini")
        await parts.served("r2", USAGE, provider="openai", model="gpt-4o-mini")
    team = [(e["event"], e["scope"]) for e in logs if e["event"].startswith("budget_")]
    assert team == [("budget_warning", "team:research"), ("budget_exhausted", "team:research")]
    assert parts.metric("gateway_budget_used_ratio", scope="team", name="research") == (
        pytest.approx(20 / 15)
    )
    assert parts.metric("gateway_budget_used_ratio", scope="key", name="r2") == pytest.approx(0.01)
    assert parts.metric("gateway_budget_alerts_total", scope="key", name="r2",
                        event="budget_warning") == 0  # fmt: skip


async def test_a_key_name_with_a_colon_is_one_label() -> None:
    parts = Parts()
    await parts.served("ops:eve", USAGE, provider="openai", model="gpt-4o-mini")
    assert parts.metric("gateway_budget_used_ratio", scope="key", name="ops:eve") == 0.5
    await parts.served("ops:eve", USAGE, provider="openai", model="gpt-4o-mini")
    labels = {"scope": "key", "name": "ops:eve", "event": "budget_exhausted"}
    assert parts.metric("gateway_budget_alerts_total", **labels) == 1
    error = await parts.refused("ops:eve")
    assert "for key 'ops:eve' is spent" in error.message


async def test_a_response_without_usage_is_charged_its_estimate() -> None:
    parts = Parts()
    body = {"max_tokens": 20}
    ctx = await parts.served("r1", None, provider="openai", model="gpt-4o-mini", body=body)
    # 10 prompt tokens (the estimate) at $1000/1M and 20 completion at $2000/1M: $0.05.
    assert ctx.cost_usd == pytest.approx(0.05)
    assert (await parts.usage("key:r1"))["cost_nano"] == 50_000_000
    failed = await parts.admit("loner", provider="openai", model="gpt-4o-mini", body=body)
    await parts.finish(failed, 502)  # nothing generated: nothing charged
    assert failed.cost_usd == 0.0
    assert await parts.usage("key:loner") == {
        "requests": 1, "prompt_tokens": 0, "completion_tokens": 0, "cost_nano": 0, "unpriced": 0,
    }  # fmt: skip


async def test_an_unpriced_cloud_model_is_never_free() -> None:
    parts = Parts()
    with capture_logs() as logs:
        for _ in range(2):
            ctx = await parts.served("free", USAGE, provider="openai", model="unpriced-model")
            assert ctx.cost_usd is None
        failed = await parts.admit("free", provider="openai", model="unpriced-model")
        await parts.finish(failed, 502)  # nothing came back: nothing to price
    assert parts.metric("gateway_unpriced_requests_total", provider="openai") == 2
    assert [(e["event"], e["provider"], e["model"], e["hint"]) for e in logs] == [
        ("unpriced_model", "openai", "unpriced-model", "add it under pricing: in the config")
    ]  # logged once
    assert await parts.usage("key:free") == {
        "requests": 3, "prompt_tokens": 8, "completion_tokens": 6, "cost_nano": 0, "unpriced": 2,
    }  # fmt: skip
    assert parts.metric("gateway_spend_usd_total", key="free", team="-") == 0


# ------------------------------------------------------------------ state unavailable


def dead_store() -> Any:
    client = redis.asyncio.Redis(
        port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    return build_store(client, "dead:")


async def test_redis_unreachable_under_allow_serves_without_limits() -> None:
    store = dead_store()
    parts = Parts(store=store)
    with capture_logs() as logs:
        ctx = await parts.admit("std")
        assert ctx.admission == Admission(True)  # admitted without state
        assert ctx.limit_headers == [] and ctx.reserved_tokens == 0 and ctx.lease_id == ""
        await parts.finish(ctx, 200, USAGE)  # usage that cannot be written is counted
        await parts.admit("serial")
        assert (await parts.admit("free")).admission is None  # nothing to admit: not asked
    assert parts.metric("gateway_redis_errors_total", op="admit") == 2
    assert parts.metric("gateway_redis_errors_total", op="settle") == 1
    assert parts.metric("gateway_usage_dropped_total") == 1
    errors = [e for e in logs if e["event"] == "redis_error"]
    assert len(errors) == 1  # at most one line per 10 s
    assert errors[0]["log_level"] == "error" and errors[0]["op"] == "admit"
    assert errors[0]["on_redis_error"] == "allow"
    assert errors[0]["error"].startswith("ConnectionError: ")
    await store.redis.aclose()


async def test_redis_errors_are_logged_at_most_once_in_10_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seconds = [1_000.0]  # the limit stage's monotonic clock; the rest keep the real one
    fake = SimpleNamespace(monotonic=lambda: seconds[0], time=time.time)
    monkeypatch.setattr(limits_module, "time", fake)
    store = dead_store()
    parts = Parts(store=store)
    logged = []
    for now in (1_000.0, 1_005.0, 1_010.0, 1_010.5, 1_020.0, 1_020.6):
        seconds[0] = now
        with capture_logs() as logs:
            await parts.admit("std")
        logged.append([e["event"] for e in logs] == ["redis_error"])
    assert parts.metric("gateway_redis_errors_total", op="admit") == 6  # every one counted
    assert logged == [True, False, False, True, False, True]  # more than 10 s after the last
    await store.redis.aclose()


async def test_redis_unreachable_under_deny_refuses_every_request() -> None:
    store = dead_store()
    parts = Parts("state: {on_redis_error: deny}\n", store=store)
    with capture_logs() as logs:
        for key in ("std", "free"):  # under deny the store is asked even with no limits
            error = await parts.refused(key)
            assert isinstance(error, StateUnavailable)
            assert (error.status, error.code, error.type) == (503, "state_unavailable",
                                                              "server_error")  # fmt: skip
            assert error.message == (
                "The gateway's shared state (Redis) is unreachable, and state.on_redis_error "
                "is 'deny': requests are refused until it is back."
            )
    assert parts.metric("gateway_redis_errors_total", op="admit") == 2
    assert parts.metric("gateway_usage_dropped_total") == 0  # refused: nothing to settle
    assert [(e["event"], e["on_redis_error"]) for e in logs] == [("redis_error", "deny")]
    await store.redis.aclose()


@pytest.fixture
async def redis_store() -> AsyncIterator[Any]:
    client = await redis_or_skip()
    prefix = f"test-{uuid4().hex}:"
    yield build_store(client, prefix)
    keys = [k async for k in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_on_redis_a_failed_settlement_is_dropped_not_raised(redis_store: Any) -> None:
    parts = Parts("state: {on_redis_error: deny}\n", store=redis_store)
    ctx = await parts.admit("free")  # under deny: admitted by Redis, with nothing to check
    assert ctx.admission is not None and ctx.admission.ok
    usage_key = f"{redis_store.prefix}usage:{month_now()}:key:free"
    await redis_store.redis.set(usage_key, "not a hash")  # Redis now fails the settlement
    with capture_logs() as logs:
        await parts.finish(ctx, 200, USAGE)  # no 503 after the answer was sent
    assert parts.metric("gateway_usage_dropped_total") == 1
    assert parts.metric("gateway_redis_errors_total", op="settle") == 1
    assert [(e["event"], e["op"]) for e in logs] == [("redis_error", "settle")]
    assert logs[0]["error"].startswith("ResponseError: WRONGTYPE")


async def test_on_redis_limits_and_spend_work_the_same(redis_store: Any) -> None:
    parts = Parts(store=redis_store)
    await parts.admit("std")
    assert headers(await parts.admit("std"))["x-ratelimit-remaining-requests"] == "0"
    error = await parts.refused("std")
    assert error.message.startswith("Rate limit reached for key 'std' (tier standard): 2 ")
    ctx = await parts.admit("tok", body={"max_tokens": 90})
    assert ctx.reserved_tokens == 100
    await parts.finish(ctx, 200, USAGE)
    after = await parts.admit("tok", body={"max_tokens": 90})
    assert headers(after)["x-ratelimit-remaining-tokens"] == str(2000 - 7 - 100)
    for _ in range(3):
        await parts.served("bud", USAGE, provider="openai", model="gpt-4o-mini")
    assert isinstance(await parts.refused("bud"), QuotaExceeded)
    first = await parts.admit("serial")
    await parts.refused("serial")
    await parts.finish(first, 200, USAGE)
    await parts.admit("serial")
