"""The shared-state stores in process: MemoryStore and RedisStore keep the same rules.

Every behaviour test runs on both stores (docs/CONFIG.md `tiers`, `limits`, `state`): fixed
windows per minute, hour and day anchored at their first request, token reservations and
their settlement, concurrency leases and their expiry, monthly usage and budgets, and a
refusal that takes nothing. The memory store runs on a fake wall clock, so its figures
are exact; Redis keeps its own clock, so "time passes" there by moving the stored window
starts and lease expiries back (the key layout gateway/stores/redis.py documents), and
its figures are checked within a few seconds. Redis at 127.0.0.1:6379 is used under a key
prefix of the test's own, deleted afterwards (skipped without it). These tests let a
mutation run of gateway/stores/* (docs/TESTING.md) go without gateway processes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import pytest
import redis
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from bench.procs import free_port
from gateway.stores import (
    USAGE_FIELDS,
    Admission,
    Budget,
    Check,
    Outage,
    Settlement,
    StoreUnavailable,
    UsageDelta,
    Window,
    WindowState,
    build_store,
)
from gateway.stores.memory import MemoryStore
from gateway.stores.redis import RedisStore
from tests.conftest import redis_or_skip

NOW_MS = 1_800_000_000_000  # the memory store's fake wall clock starts here (2027-01-15)
MONTH, NEXT_MONTH = "2027-01", "2027-02"
SLACK_MS = 5_000  # how far Redis's own clock may have moved on during a test
MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000
RPM = Window("requests_per_minute", 60, 2)
_CLOCK = [0]  # the fake time.time_ns() of the memory store's tests


async def delete_prefix(client: Any, prefix: str) -> None:
    keys = [k async for k in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)


@pytest.fixture(params=["memory", "redis"])
async def store(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Any]:
    if request.param == "memory":
        _CLOCK[0] = NOW_MS * 1_000_000
        monkeypatch.setattr(time, "time_ns", lambda: _CLOCK[0])
        yield build_store(None, "unused:")
        return
    client = await redis_or_skip()
    prefix = f"test-{uuid4().hex}:"
    yield build_store(client, prefix)
    await delete_prefix(client, prefix)
    await client.aclose()


def memory(store: Any) -> bool:
    return isinstance(store, MemoryStore)


async def elapse(store: Any, ms: int) -> None:
    """`ms` pass: the memory store's clock moves on; in Redis what was stored moves back."""
    if memory(store):
        _CLOCK[0] += ms * 1_000_000
        return
    r, prefix = store.redis, store.prefix
    async for key in r.scan_iter(match=prefix + "rl:*"):
        for name in await r.hkeys(key):
            if name.endswith(b":s"):
                await r.hincrby(key, name, -ms)
    async for key in r.scan_iter(match=prefix + "cc:*"):
        for member, score in await r.zrange(key, 0, -1, withscores=True):
            await r.zadd(key, {member: score - ms})


def near(store: Any, got: int, want: int) -> None:
    """Exact on the memory store's fake clock; on Redis's, at most SLACK_MS less."""
    if memory(store):
        assert got == want
    else:
        assert want - SLACK_MS <= got <= want, (got, want)


async def admit(
    store: Any,
    *checks: Check,
    tokens: int = 0,
    lease: str = "",
    lease_ms: int = 30_000,
    budgets: tuple[Budget, ...] = (),
    month: str = MONTH,
) -> Admission:
    return await store.admit(checks, budgets, tokens, lease, lease_ms, month)  # type: ignore[no-any-return]


async def release(store: Any, scope: str, lease: str) -> None:
    assert await store.settle(Settlement([], (scope,), lease, None), MONTH) == {}


def refused_by(admission: Admission, check: Check, window: Window | None) -> None:
    assert admission.ok is False and admission.windows == []
    assert admission.refused_check is check and admission.refused_window is window
    assert admission.refused_budget is None
    assert admission.concurrency is (window is None)


# ---------------------------------------------------------------------------- windows


def test_build_store_is_memory_without_redis_and_redis_with_it() -> None:
    assert isinstance(build_store(None, "p:"), MemoryStore)
    client = redis.asyncio.Redis(port=free_port())  # not connected until used
    built = build_store(client, "deploy-a:")
    assert isinstance(built, RedisStore)
    assert built.redis is client and built.prefix == "deploy-a:"


async def test_a_window_admits_its_limit_then_refuses_until_it_ends(store: Any) -> None:
    check = Check("key:a", "key 'a'", (RPM,))
    first = await admit(store, check)
    assert first.ok and len(first.windows) == 1
    state = first.windows[0]
    assert state.window is RPM and state.check is check and state.remaining == 1
    near(store, state.reset_ms, MINUTE)
    if memory(store):
        assert state.start_ms == NOW_MS  # anchored at the first request
    await elapse(store, 1_000)
    second = await admit(store, check)
    assert second.ok and second.windows[0].remaining == 0
    moved = 0 if memory(store) else 1_000  # in Redis, "time passing" moved the start back
    assert second.windows[0].start_ms == state.start_ms - moved  # the same window instance
    near(store, second.windows[0].reset_ms, MINUTE - 1_000)
    await elapse(store, 1_000)
    third = await admit(store, check)
    refused_by(third, check, RPM)
    near(store, third.retry_ms, MINUTE - 2_000)
    await elapse(store, MINUTE - 2_000)  # the window's span has passed: a new one starts
    fourth = await admit(store, check)
    assert fourth.ok and fourth.windows[0].remaining == 1
    near(store, fourth.windows[0].reset_ms, MINUTE)
    if memory(store):
        assert fourth.windows[0].start_ms == NOW_MS + MINUTE


async def test_memory_window_ends_exactly_at_its_span(monkeypatch: pytest.MonkeyPatch) -> None:
    _CLOCK[0] = NOW_MS * 1_000_000
    monkeypatch.setattr(time, "time_ns", lambda: _CLOCK[0])
    store = MemoryStore()
    check = Check("key:a", "key 'a'", (Window("requests_per_minute", 60, 1),))
    assert (await admit(store, check)).ok
    await elapse(store, MINUTE - 1)
    refused = await admit(store, check)
    assert not refused.ok and refused.retry_ms == 1
    await elapse(store, 1)
    again = await admit(store, check)
    assert again.ok and again.windows[0].start_ms == NOW_MS + MINUTE
    # A clock in whole milliseconds: 0.9 ms later is the same millisecond.
    _CLOCK[0] += 900_000
    refused = await admit(store, check)
    assert not refused.ok and refused.retry_ms == MINUTE


async def test_minute_hour_and_day_windows_each_count_for_themselves(store: Any) -> None:
    rpm = Window("requests_per_minute", 60, 3)
    rph = Window("requests_per_hour", 3600, 4)
    rpd = Window("requests_per_day", 86400, 5)
    check = Check("key:w", "key 'w'", (rpm, rph, rpd))
    for left in (2, 1, 0):
        admission = await admit(store, check)
        assert [s.remaining for s in admission.windows] == [left, left + 1, left + 2]
        assert [s.window for s in admission.windows] == [rpm, rph, rpd]
        near(store, admission.windows[1].reset_ms, HOUR)
        near(store, admission.windows[2].reset_ms, DAY)
    refused_by(await admit(store, check), check, rpm)
    await elapse(store, MINUTE)
    fourth = await admit(store, check)
    assert [s.remaining for s in fourth.windows] == [2, 0, 1]
    refused = await admit(store, check)
    refused_by(refused, check, rph)
    near(store, refused.retry_ms, HOUR - MINUTE)
    await elapse(store, HOUR - MINUTE)
    fifth = await admit(store, check)
    assert [s.remaining for s in fifth.windows] == [2, 3, 0]
    refused = await admit(store, check)
    refused_by(refused, check, rpd)
    near(store, refused.retry_ms, DAY - HOUR)
    await elapse(store, DAY - HOUR)
    assert [s.remaining for s in (await admit(store, check)).windows] == [2, 3, 4]


async def test_a_refusal_takes_nothing(store: Any) -> None:
    """Admission is one step: a request refused by any limit counts against none."""
    key = Check("key:a", "key 'a'", (Window("requests_per_minute", 60, 5),), max_concurrent=2)
    provider = Check("provider:p", "provider 'p'", (Window("requests_per_minute", 60, 1),))
    first = await admit(store, key, provider, lease="l1")
    assert first.ok
    assert [(s.check, s.remaining) for s in first.windows] == [(key, 4), (provider, 0)]
    refused_by(await admit(store, key, provider, lease="l2"), provider, provider.windows[0])
    # Neither a request window nor a lease of the key was taken by the refused request.
    assert (await admit(store, key, lease="l3")).windows[0].remaining == 3
    spent = Budget("key:a", "key 'a'", 100)
    await store.settle(Settlement([], (), "", UsageDelta(("key:a",), cost_nano=100)), MONTH)
    refused = await admit(store, key, budgets=(spent,), lease="l4")
    assert refused.ok is False and refused.refused_budget is spent and refused.refused_check is None
    # The key holds two leases (l1, l3): full, and the refusal took no window; the key is
    # named, not the provider checked after it.
    refused_by(await admit(store, key, lease="l5"), key, None)
    refused_by(await admit(store, key, provider, lease="l5"), key, None)
    await release(store, "key:a", "l1")
    assert (await admit(store, key, lease="l6")).windows[0].remaining == 2


# ------------------------------------------------------------------------------ tokens


async def test_token_windows_reserve_and_settle(store: Any) -> None:
    tpm = Window("tokens_per_minute", 60, 100, tokens=True)
    rpm = Window("requests_per_minute", 60, 10)
    check = Check("key:t", "key 't'", (rpm, tpm))
    first = await admit(store, check, tokens=60)
    assert [s.remaining for s in first.windows] == [9, 40]  # a request, and its tokens
    refused_by(await admit(store, check, tokens=41), check, tpm)
    exactly = await admit(store, check, tokens=40)  # up to the limit is allowed
    assert exactly.ok and [s.remaining for s in exactly.windows] == [8, 0]
    # Settled to real usage: 10 of the first 60 used, the reservation's rest comes back.
    tokens_state = first.windows[1]
    settled = Settlement([(tokens_state, -50)], (), "", None)
    assert await store.settle(settled, MONTH) == {}
    assert [s.remaining for s in (await admit(store, check, tokens=50)).windows] == [7, 0]
    # More than reserved is added: the window is over its limit, and refuses even 1 token.
    await store.settle(Settlement([(tokens_state, 30)], (), "", None), MONTH)
    refused_by(await admit(store, check, tokens=1), check, tpm)
    # A refund past zero stops at zero.
    await store.settle(Settlement([(tokens_state, -1_000)], (), "", None), MONTH)
    assert [s.remaining for s in (await admit(store, check, tokens=100)).windows] == [6, 0]
    # A settlement for a window that has ended touches the new one not at all.
    await elapse(store, MINUTE)
    if not memory(store):
        await asyncio.sleep(0.002)  # a new window instance starts on a later millisecond
    new = await admit(store, check, tokens=70)
    assert new.ok and new.windows[1].start_ms != tokens_state.start_ms
    await store.settle(Settlement([(tokens_state, -70)], (), "", None), MONTH)
    assert (await admit(store, check, tokens=31)).refused_window is tpm
    assert (await admit(store, check, tokens=30)).windows[1].remaining == 0


async def test_settlement_of_one_window_leaves_the_others(store: Any) -> None:
    key = Check("key:t", "key 't'", (Window("tokens_per_minute", 60, 100, tokens=True),))
    other = Check("provider:p", "provider 'p'", (Window("tokens_per_minute", 60, 100, True),))
    first = await admit(store, key, other, tokens=80)
    await store.settle(Settlement([(first.windows[0], -80)], (), "", None), MONTH)
    after = await admit(store, key, other, tokens=20)
    assert [s.remaining for s in after.windows] == [80, 0]


# ---------------------------------------------------------------------------- leases


async def test_concurrency_leases_are_held_released_and_lapse(store: Any) -> None:
    check = Check("key:c", "key 'c'", max_concurrent=2)
    other = Check("key:d", "key 'd'", max_concurrent=1)
    for lease in ("l1", "l2"):
        admission = await admit(store, check, lease=lease, lease_ms=10_000)
        assert admission.ok and admission.windows == []
    refused = await admit(store, check, lease="l3", lease_ms=10_000)
    refused_by(refused, check, None)
    assert refused.retry_ms == 1000
    assert (await admit(store, other, lease="d1")).ok  # each scope has leases of its own
    await release(store, "key:c", "nobody")  # an unknown lease frees nothing
    await release(store, "key:d", "l1")  # nor does l1 released under another scope
    await release(store, "key:never", "l1")  # nor under a scope that never held one
    refused_by(await admit(store, check, lease="l3", lease_ms=10_000), check, None)
    await release(store, "key:c", "l1")
    assert (await admit(store, check, lease="l3", lease_ms=20_000)).ok
    refused_by(await admit(store, check, lease="l4"), check, None)
    # l2 lapses 10 s after it was taken, l3 after 20 s: a crashed replica cannot hold them.
    await elapse(store, 5_000)
    refused_by(await admit(store, check, lease="l4"), check, None)
    await elapse(store, 5_000 + (0 if memory(store) else 1))
    assert (await admit(store, check, lease="l4", lease_ms=60_000)).ok
    refused_by(await admit(store, check, lease="l5"), check, None)
    await elapse(store, 10_000)  # l3 lapsed too
    assert (await admit(store, check, lease="l5")).ok


async def test_memory_lease_lapses_exactly_at_its_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    _CLOCK[0] = NOW_MS * 1_000_000
    monkeypatch.setattr(time, "time_ns", lambda: _CLOCK[0])
    store = MemoryStore()
    check = Check("key:c", "key 'c'", max_concurrent=1)
    assert (await admit(store, check, lease="l1", lease_ms=1_000)).ok
    await elapse(store, 999)
    assert not (await admit(store, check, lease="l2")).ok
    await elapse(store, 1)
    assert (await admit(store, check, lease="l2")).ok


async def test_without_max_concurrent_no_lease_is_held(store: Any) -> None:
    check = Check("key:n", "key 'n'", (Window("requests_per_minute", 60, 100),))
    for i in range(5):
        assert (await admit(store, check, lease=f"l{i}")).ok
    if not memory(store):
        assert await store.redis.exists(store.prefix + "cc:key:n") == 0


# ------------------------------------------------------------------- usage and budgets


def row(**fields: int) -> dict[str, int]:
    return dict.fromkeys(USAGE_FIELDS, 0) | fields


async def test_usage_adds_up_per_scope_and_month(store: Any) -> None:
    scopes = ("key:a", "team:t")
    first = UsageDelta(scopes, prompt_tokens=3, completion_tokens=4, cost_nano=600)
    assert await store.settle(Settlement([], (), "", first), MONTH) == dict.fromkeys(scopes, 600)
    unpriced = UsageDelta(("key:a",), prompt_tokens=5, completion_tokens=1, priced=False)
    assert await store.settle(Settlement([], (), "", unpriced), MONTH) == {"key:a": 600}
    usage = await store.usage(["key:a", "team:t", "key:none"], MONTH)
    assert usage == {
        "key:a": row(requests=2, prompt_tokens=8, completion_tokens=5, cost_nano=600, unpriced=1),
        "team:t": row(requests=1, prompt_tokens=3, completion_tokens=4, cost_nano=600),
        "key:none": dict.fromkeys(USAGE_FIELDS, 0),
    }
    # Another month starts from nothing; this one is still there.
    later = UsageDelta(("key:a",), 1, 1, 7)
    assert await store.settle(Settlement([], (), "", later), NEXT_MONTH) == {"key:a": 7}
    assert (await store.usage(["key:a"], NEXT_MONTH))["key:a"]["requests"] == 1
    assert (await store.usage(["key:a"], MONTH))["key:a"]["cost_nano"] == 600
    # What usage() hands out is a copy: changing it changes nothing stored.
    (await store.usage(["key:a"], MONTH))["key:a"]["requests"] = 99
    assert (await store.usage(["key:a"], MONTH))["key:a"]["requests"] == 2


async def test_memory_store_keeps_this_month_and_the_last() -> None:
    store = MemoryStore()
    for month in ("2027-01", "2027-02", "2027-03"):
        await store.settle(Settlement([], (), "", UsageDelta(("key:a",), 1, 1, 5)), month)
        assert (await store.usage(["key:a"], month))["key:a"]["requests"] == 1
    assert (await store.usage(["key:a"], "2027-02"))["key:a"]["cost_nano"] == 5
    assert (await store.usage(["key:a"], "2027-01"))["key:a"]["cost_nano"] == 0


async def test_a_budget_refuses_once_spent_until_the_month_changes(store: Any) -> None:
    key = Budget("key:a", "key 'a'", 1_000)
    team = Budget("team:t", "team 't'", 5_000)
    other = Budget("key:b", "key 'b'", 10_000)
    assert (await admit(store, budgets=(key, team))).ok
    spend = UsageDelta(("key:a", "team:t"), cost_nano=999)
    assert await store.settle(Settlement([], (), "", spend), MONTH) == {"key:a": 999, "team:t": 999}
    assert (await admit(store, budgets=(key, team))).ok  # 1 nano-USD left
    one = UsageDelta(("key:a", "team:t"), cost_nano=1)
    await store.settle(Settlement([], (), "", one), MONTH)
    refused = await admit(store, budgets=(key, team))
    assert refused.ok is False and refused.refused_budget is key
    assert refused.refused_check is None
    assert (await admit(store, budgets=(other, team))).ok  # the team has 4,000 left
    more = UsageDelta(("key:b", "team:t"), cost_nano=4_000)
    assert await store.settle(Settlement([], (), "", more), MONTH) == {
        "key:b": 4_000, "team:t": 5_000
    }  # fmt: skip
    refused = await admit(store, budgets=(other, team))
    assert refused.ok is False and refused.refused_budget is team  # the second one, named
    assert (await admit(store, budgets=(key, team), month=NEXT_MONTH)).ok  # a new month
    tiny = Budget("key:z", "key 'z'", 1)  # one nano-USD, nothing spent yet: admitted
    assert (await admit(store, budgets=(tiny,))).ok


async def test_settlement_without_usage_records_none(store: Any) -> None:
    assert await store.settle(Settlement([], (), "", None), MONTH) == {}
    assert (await store.usage(["key:a"], MONTH))["key:a"]["requests"] == 0
    await store.aclose()  # nothing to close: the Gateway owns the connection


# ------------------------------------------------------------------------------ Redis


@pytest.fixture
async def redis_prefix() -> AsyncIterator[tuple[Any, str]]:
    client = await redis_or_skip()
    prefix = f"test-{uuid4().hex}:"
    yield client, prefix
    await delete_prefix(client, prefix)
    await client.aclose()


async def test_redis_state_lives_under_the_prefix_and_expires(
    redis_prefix: tuple[Any, str],
) -> None:
    client, prefix = redis_prefix
    store = RedisStore(client, prefix)
    windows = (Window("requests_per_minute", 60, 1), Window("requests_per_hour", 3600, 9))
    check = Check("key:a", "key 'a'", windows, max_concurrent=3)
    assert (await admit(store, check, lease="l1", lease_ms=45_000)).ok
    usage = UsageDelta(("key:a",), 1, 2, 3)
    await store.settle(Settlement([], (), "", usage), MONTH)
    keys = {k.decode() async for k in client.scan_iter(match=prefix + "*")}
    rl, cc, month = prefix + "rl:key:a", prefix + "cc:key:a", prefix + "usage:2027-01:key:a"
    assert keys == {rl, cc, month}
    assert HOUR - SLACK_MS < await client.pttl(rl) <= HOUR  # the longest window
    assert 40_000 < await client.pttl(cc) <= 45_000  # the lease's time
    sixty_two_days = 62 * DAY  # this month and the last stay readable
    assert sixty_two_days - SLACK_MS < await client.pttl(month) <= sixty_two_days
    assert await client.hget(rl, "requests_per_minute:n") == b"1"
    assert await client.zrange(cc, 0, -1) == [b"l1"]
    assert await client.hget(month, "prompt_tokens") == b"1"
    # Another prefix (another deployment on the same Redis) has windows and spend of its own.
    other = RedisStore(client, prefix + "other:")
    assert (await admit(other, check, lease="l2")).ok
    assert (await other.usage(["key:a"], MONTH))["key:a"]["requests"] == 0


def dead_redis() -> Any:
    """A client of a port where nothing listens; no retries (they only take time here)."""
    return redis.asyncio.Redis(
        port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )


async def test_redis_unreachable_is_store_unavailable_then_fails_fast() -> None:
    dead = dead_redis()
    check = Check("key:a", "key 'a'", (RPM,))
    store = RedisStore(dead, "p:")
    with pytest.raises(StoreUnavailable, match=r"^ConnectionError: "):
        await admit(store, check)
    # For a second, no new attempt: every call fails at once.
    with pytest.raises(StoreUnavailable, match="less than a second ago"):
        await admit(store, check)
    with pytest.raises(StoreUnavailable, match="less than a second ago"):
        await store.usage(["key:a"], MONTH)
    state = WindowState(RPM, check, 1, 0, 0)
    settlements = (
        Settlement([(state, -1)], ("key:a",), "l1", UsageDelta(("key:a",), 1, 1, 1)),
        Settlement([], (), "", None),
    )
    for settlement in settlements:
        with pytest.raises(StoreUnavailable, match=r"^ConnectionError: "):
            await RedisStore(dead, "p:").settle(settlement, MONTH)
    with pytest.raises(StoreUnavailable, match=r"^ConnectionError: "):
        await RedisStore(dead, "p:").usage(["key:a"], MONTH)
    await dead.aclose()


def test_after_a_failure_redis_is_left_alone_for_one_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1_000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    outage = Outage()
    outage.check()  # no failure yet
    failure = outage.failed(TimeoutError("read timed out"))
    assert isinstance(failure, StoreUnavailable)
    assert str(failure) == "TimeoutError: read timed out"
    clock[0] += 0.999
    with pytest.raises(StoreUnavailable, match=r"^Redis failed less than a second ago$"):
        outage.check()
    clock[0] += 0.001
    outage.check()  # a second later Redis is tried again
