"""Where cached answers live: aiocache backends, in memory or in Redis.

Both keep two kinds of records under the same key names: entries (`<tenant>:x:<exact>`)
and the semantic index's band lists (`<tenant>:s:<context>:<band>:<value>`, see index.py).
Memory is an LRU bounded by `cache.max_items` with a TTL per entry; Redis shares the
cache between replicas and keeps it across restarts, and its lists are trimmed and
expire like the entries.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import unquote, urlparse

from aiocache import RedisCache, SimpleMemoryCache
from aiocache.serializers import NullSerializer

from gateway.cache.index import Entry, Item, pack_item, unpack_item
from gateway.stores import Outage, StoreUnavailable


class LruMemoryCache(SimpleMemoryCache):  # type: ignore[misc]
    """aiocache's memory backend as an LRU of at most `max_items`, expiring lazily.

    Lazy expiry instead of aiocache's timer per key: 100,000 entries must not mean
    100,000 timers on the event loop.
    """

    def __init__(self, max_items: int) -> None:
        super().__init__(timeout=None)
        self.max_items = max_items
        self._lru: OrderedDict[str, tuple[Any, float, int]] = OrderedDict()
        self.bytes = 0

    async def _get(self, key: str, encoding: str = "utf-8", _conn: Any = None) -> Any:
        return self.get_now(key)

    async def _multi_get(self, keys: list[str], encoding: str = "utf-8", _conn: Any = None) -> Any:
        return [self.get_now(key) for key in keys]

    def get_now(self, key: str) -> Any:
        item = self._lru.get(key)
        if item is None:
            return None
        if item[1] < time.monotonic():
            self._drop(key)
            return None
        self._lru.move_to_end(key)
        return item[0]

    async def _set(
        self, key: str, value: Any, ttl: float | None = None, _cas_token: Any = None,
        _conn: Any = None, size: int | None = None,
    ) -> bool:  # fmt: skip
        self._drop(key)
        if size is None:
            size = value.size if isinstance(value, Entry) else 0
        self._lru[key] = (value, time.monotonic() + (ttl or float("inf")), size)
        self.bytes += size
        while len(self._lru) > self.max_items:
            self._drop(next(iter(self._lru)))
        return True

    async def _delete(self, key: str, _conn: Any = None) -> int:
        return self._drop(key)

    async def _clear(self, namespace: str | None = None, _conn: Any = None) -> bool:
        for key in [k for k in self._lru if k.startswith(namespace or "")]:
            self._drop(key)
        return True

    def _drop(self, key: str) -> int:
        item = self._lru.pop(key, None)
        if item is None:
            return 0
        self.bytes -= item[2]
        return 1

    def __len__(self) -> int:
        return len(self._lru)


class MemoryCacheStore:
    shared = False

    def __init__(self, max_items: int) -> None:
        self.entries = LruMemoryCache(max_items)
        # Band lists, themselves bounded: a list per band per context, at most 8 per entry.
        self._lists: OrderedDict[str, deque[Item]] = OrderedDict()
        self._max_lists = 8 * max_items

    # Straight to LruMemoryCache's own methods: aiocache's public wrappers (plugins,
    # timeouts, key building) cost more than the dict work itself on every lookup.
    async def get(self, key: str) -> Entry | None:
        entry: Entry | None = await self.entries._get(key)
        return entry

    async def get_many(self, keys: Sequence[str]) -> list[Entry | None]:
        return list(await self.entries._multi_get(list(keys))) if keys else []

    async def put(
        self, key: str, entry: Entry, ttl: float, lists: Sequence[str], item: Item, cap: int,
        raw: bytes | None = None,
    ) -> None:  # fmt: skip
        """`raw`: entry.to_bytes() when the caller has it already (its size is counted)."""
        await self.entries._set(key, entry, ttl=ttl, size=None if raw is None else len(raw))
        for name in lists:
            bucket = self._lists.get(name)
            if bucket is None:
                bucket = self._lists[name] = deque(maxlen=cap)
                if len(self._lists) > self._max_lists:
                    self._lists.popitem(last=False)
            else:
                self._lists.move_to_end(name)
            bucket.appendleft(item)

    async def read_lists(self, lists: Sequence[str]) -> list[Iterable[Item]]:
        """Each band list's items, newest first (the lists themselves, not copies)."""
        found = (self._lists.get(name) for name in lists)
        return [bucket for bucket in found if bucket]

    async def purge(self, prefix: str) -> int:
        removed = 0
        for key in [k for k in self.entries._lru if k.startswith(prefix)]:
            removed += self.entries._drop(key)
        for name in [n for n in self._lists if n.startswith(prefix)]:
            del self._lists[name]
        return removed

    def usage(self) -> tuple[int, int]:
        """(entries, bytes)."""
        return len(self.entries), self.entries.bytes

    async def aclose(self) -> None:
        return None


class RedisCacheStore:
    """The same records in Redis; any failure raises StoreUnavailable (the cache is skipped)."""

    shared = True

    def __init__(self, url: str, prefix: str) -> None:
        parts = urlparse(url)
        self.cache = RedisCache(
            endpoint=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            db=int((parts.path or "/0").lstrip("/") or 0),
            password=unquote(parts.password) if parts.password else None,
            serializer=NullSerializer(encoding=None),  # bytes as stored
            timeout=None,
            create_connection_timeout=0.5,
            connection_pool_kwargs={"socket_timeout": 1.0},
        )
        self.prefix = prefix
        self._outage = Outage()

    async def _run(self, call: Any) -> Any:
        return await self._outage.run(call)

    async def get(self, key: str) -> Entry | None:
        raw = await self._run(self.cache.get(self.prefix + key))
        return Entry.from_bytes(raw) if raw else None

    async def get_many(self, keys: Sequence[str]) -> list[Entry | None]:
        if not keys:
            return []
        raws = await self._run(self.cache.multi_get([self.prefix + key for key in keys]))
        return [Entry.from_bytes(raw) if raw else None for raw in raws]

    async def put(
        self, key: str, entry: Entry, ttl: float, lists: Sequence[str], item: Item, cap: int,
        raw: bytes | None = None,
    ) -> None:  # fmt: skip
        packed = pack_item(item)
        value = entry.to_bytes() if raw is None else raw

        async def write() -> None:
            async with self.cache.client.pipeline(transaction=False) as pipe:
                pipe.set(self.prefix + key, value, px=int(ttl * 1000))
                for name in lists:
                    full = self.prefix + name
                    pipe.lpush(full, packed)
                    pipe.ltrim(full, 0, cap - 1)
                    pipe.pexpire(full, int(ttl * 1000))
                await pipe.execute()

        await self._run(write())

    async def read_lists(self, lists: Sequence[str]) -> list[Iterable[Item]]:
        """Each band list's items, unpacked as they are read (close_items may stop early)."""

        async def read() -> list[Iterable[Item]]:
            async with self.cache.client.pipeline(transaction=False) as pipe:
                for name in lists:
                    pipe.lrange(self.prefix + name, 0, -1)
                rows = await pipe.execute()
            return [map(unpack_item, row) for row in rows if row]

        out: list[Iterable[Item]] = await self._run(read())
        return out

    async def purge(self, prefix: str) -> int:
        async def scan_and_unlink() -> int:
            removed = 0
            client = self.cache.client
            batch: list[bytes] = []
            async for name in client.scan_iter(match=self.prefix + prefix + "*", count=500):
                batch.append(name)
                if len(batch) >= 500:
                    removed += await client.unlink(*batch)
                    batch = []
            if batch:
                removed += await client.unlink(*batch)
            return removed

        removed: int = await self._run(scan_and_unlink())
        return removed

    def usage(self) -> tuple[int, int] | None:
        return None  # Redis reports its own memory; INFO is not for the request path

    async def aclose(self) -> None:
        await self.cache.close()


CacheStore = MemoryCacheStore | RedisCacheStore

__all__ = ["CacheStore", "MemoryCacheStore", "RedisCacheStore", "StoreUnavailable"]
