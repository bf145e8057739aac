"""The console's live feed: the last requests this process finished, bounded in memory.

One entry per finished request, written by Gateway.finish: who, which rule and provider,
the score, the privacy categories, the cache result, the status and the latency. Never
the prompt or the answer. Each worker keeps its own feed (GET /admin/decisions).
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.context import RequestContext

FEED_SIZE = 200  # entries kept; the oldest is dropped first


class DecisionFeed:
    def __init__(self, size: int = FEED_SIZE) -> None:
        self.size = size
        self._entries: deque[tuple[Any, ...]] = deque(maxlen=size)
        self.recorded = 0  # every request seen since start; also the newest entry's seq

    def record(self, ctx: RequestContext, now: float) -> None:
        """About 0.4 us: a tuple of what the context already holds; dicts are built on read."""
        self.recorded += 1
        self._entries.append(
            (
                self.recorded, time.time(), now - ctx.started, ctx.request_id, ctx.principal,
                ctx.key, ctx.endpoint, ctx.requested_model, ctx.route_rule, ctx.provider,
                ctx.model, ctx.complexity, ctx.privacy_categories, ctx.privacy_action,
                ctx.cache_status, ctx.stream, ctx.status, ctx.error_code, ctx.usage,
                ctx.cost_usd, len(ctx.attempts),
            )
        )  # fmt: skip

    def latest(self, limit: int, after: int = 0) -> list[dict[str, Any]]:
        """Newest first, at most `limit`, only those with seq above `after`."""
        newest = itertools.islice(reversed(self._entries), limit)
        return [_entry(e) for e in itertools.takewhile(lambda e: e[0] > after, newest)]


def _entry(e: tuple[Any, ...]) -> dict[str, Any]:
    seq, wall, took, request_id, principal, key, endpoint = e[:7]
    requested, rule, provider, model, complexity, privacy, action = e[7:14]
    cache, stream, status, error, usage, cost, fallbacks = e[14:]
    return {
        "seq": seq,
        "time": wall,
        "request_id": request_id,
        "key": principal,
        "team": (key.team or None) if key else None,
        "endpoint": endpoint,
        "requested_model": requested[:128] or None,
        "rule": rule or None,
        "provider": provider or None,
        "model": model or None,
        "complexity": None if complexity is None else round(complexity, 3),
        "privacy": privacy,
        "privacy_action": action if privacy else None,
        "cache": cache or None,
        "stream": stream,
        "status": status,
        "error": error,
        "latency_ms": round(took * 1000, 2),
        "total_tokens": (usage or {}).get("total_tokens"),
        "cost_usd": cost,
        "fallbacks": fallbacks,
    }
