"""Stored responses, for `previous_response_id` and GET/DELETE /v1/responses/{id}.

One record per response id: the tenant it belongs to, the response object, its input items
(as `input_items` lists them) and the whole conversation up to and including its output
(what the next turn's `previous_response_id` stands for), serialized with orjson. In memory
(least recently used go first) or in Redis when `state.redis_url` is set; both forget a
record after `responses.store_ttl_seconds`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Protocol

import orjson

from gateway.stores import Outage, StoreUnavailable


class ResponseStore(Protocol):
    def configure(self, ttl: float, max_items: int) -> None:
        """A reload's new settings (the records stay)."""
        ...

    async def get(self, response_id: str) -> bytes | None: ...

    async def put(self, response_id: str, record: bytes) -> None: ...

    async def delete(self, response_id: str) -> bool: ...


def encode(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record)


def decode(raw: bytes) -> dict[str, Any]:
    record: dict[str, Any] = orjson.loads(raw)
    return record


class MemoryResponseStore:
    def __init__(self, ttl: float, max_items: int) -> None:
        self.ttl = ttl
        self.max_items = max_items
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def configure(self, ttl: float, max_items: int) -> None:
        self.ttl, self.max_items = ttl, max_items

    async def get(self, response_id: str) -> bytes | None:
        found = self._items.get(response_id)
        if found is None:
            return None
        expires, raw = found
        if expires < time.monotonic():
            del self._items[response_id]
            return None
        self._items.move_to_end(response_id)
        return raw

    async def put(self, response_id: str, record: bytes) -> None:
        self._items[response_id] = (time.monotonic() + self.ttl, record)
        self._items.move_to_end(response_id)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    async def delete(self, response_id: str) -> bool:
        return self._items.pop(response_id, None) is not None


class RedisResponseStore:
    """On the gateway's shared Redis pool; a failure fails fast for a second (Outage)."""

    def __init__(self, redis: Any, prefix: str, ttl: float) -> None:
        self._redis = redis
        self._prefix = prefix + "resp:"
        self.ttl = max(int(ttl), 1)
        self._outage = Outage()

    def configure(self, ttl: float, max_items: int) -> None:
        self.ttl = max(int(ttl), 1)  # Redis forgets by TTL and its own maxmemory

    async def _run(self, call: Any) -> Any:
        return await self._outage.run(call)

    async def get(self, response_id: str) -> bytes | None:
        raw: bytes | None = await self._run(self._redis.get(self._prefix + response_id))
        return raw

    async def put(self, response_id: str, record: bytes) -> None:
        await self._run(self._redis.set(self._prefix + response_id, record, ex=self.ttl))

    async def delete(self, response_id: str) -> bool:
        removed = await self._run(self._redis.delete(self._prefix + response_id))
        return bool(removed)


def build_response_store(redis: Any, key_prefix: str, ttl: float, max_items: int) -> ResponseStore:
    if redis is None:
        return MemoryResponseStore(ttl, max_items)
    return RedisResponseStore(redis, key_prefix, ttl)


__all__ = [
    "MemoryResponseStore",
    "RedisResponseStore",
    "ResponseStore",
    "StoreUnavailable",
    "build_response_store",
    "decode",
    "encode",
]
