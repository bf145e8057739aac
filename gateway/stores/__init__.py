"""Shared state behind one interface: in memory for one process, Redis for replicas.

What lives here: rate-limit windows, token reservations, concurrency leases and monthly
usage (requests, tokens, spend). Admission is one atomic step per request, settlement
one more after the last byte.
"""

from __future__ import annotations

import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

NANO = 1_000_000_000  # spend is counted in integer nano-USD, so replicas add exactly


@dataclass(frozen=True, slots=True)
class Window:
    """A fixed window, anchored at its first request: `limit` per `seconds`."""

    field: str  # e.g. "requests_per_minute"; also the message's wording
    seconds: int
    limit: int
    tokens: bool = False  # counts tokens, not requests


@dataclass(frozen=True, slots=True)
class Check:
    """The limits of one scope (a key, a provider) that a request must pass."""

    scope: str  # "key:alice", "provider:openai"
    label: str  # for messages: "key 'alice' (tier standard)"
    windows: tuple[Window, ...] = ()
    max_concurrent: int | None = None


@dataclass(frozen=True, slots=True)
class Budget:
    scope: str  # "key:alice", "team:research"
    label: str
    limit_nano: int


@dataclass(slots=True)
class WindowState:
    window: Window
    check: Check
    start_ms: int  # identifies the window instance, for settlement
    remaining: int
    reset_ms: int


@dataclass(slots=True)
class Admission:
    ok: bool
    windows: list[WindowState] = field(default_factory=list)
    # When refused: which limit, and when to retry.
    refused_check: Check | None = None
    refused_window: Window | None = None
    refused_budget: Budget | None = None
    concurrency: bool = False
    retry_ms: int = 0


@dataclass(slots=True)
class UsageDelta:
    """One finished request's usage, added to the month of each scope it counts for."""

    scopes: tuple[str, ...]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_nano: int = 0
    priced: bool = True


@dataclass(slots=True)
class Settlement:
    token_windows: list[tuple[WindowState, int]]  # (reserved window, tokens to add or remove)
    leases: tuple[str, ...]  # scopes whose lease `lease_id` is released
    lease_id: str
    usage: UsageDelta | None


class StoreUnavailable(Exception):
    """Redis could not be reached or failed; the caller applies state.on_redis_error."""


class Outage:
    """After a Redis failure, fail fast for a second instead of waiting on timeouts."""

    __slots__ = ("_until",)
    SECONDS = 1.0

    def __init__(self) -> None:
        self._until = 0.0

    def check(self) -> None:
        if time.monotonic() < self._until:
            raise StoreUnavailable("Redis failed less than a second ago")

    def failed(self, exc: BaseException) -> StoreUnavailable:
        self._until = time.monotonic() + self.SECONDS
        return StoreUnavailable(f"{type(exc).__name__}: {exc}")

    async def run(self, call: Coroutine[Any, Any, Any]) -> Any:
        """Await a Redis call; StoreUnavailable on any failure, or at once (the call closed
        unstarted, so no "never awaited" warning) within a second of the last failure."""
        try:
            self.check()
        except StoreUnavailable:
            call.close()
            raise
        try:
            return await call
        except Exception as exc:  # connection, timeout or server errors alike
            raise self.failed(exc) from exc


class Store(Protocol):
    async def admit(
        self,
        checks: tuple[Check, ...],
        budgets: tuple[Budget, ...],
        tokens: int,
        lease_id: str,
        lease_ms: int,
        month: str,
    ) -> Admission: ...

    async def settle(self, settlement: Settlement, month: str) -> dict[str, int]:
        """Apply it; returns each usage scope's month spend in nano-USD after this request."""
        ...

    async def usage(self, scopes: list[str], month: str) -> dict[str, dict[str, int]]: ...

    async def aclose(self) -> None: ...


USAGE_FIELDS = ("requests", "prompt_tokens", "completion_tokens", "cost_nano", "unpriced")


def build_store(redis: object | None, key_prefix: str) -> Store:
    if redis is None:
        from gateway.stores.memory import MemoryStore

        return MemoryStore()
    from gateway.stores.redis import RedisStore

    return RedisStore(redis, key_prefix)


__all__ = [
    "NANO",
    "USAGE_FIELDS",
    "Admission",
    "Budget",
    "Check",
    "Settlement",
    "Store",
    "StoreUnavailable",
    "UsageDelta",
    "Window",
    "WindowState",
    "build_store",
]
