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
        self._entries: deque[dict[str, Any]] = deque(maxlen=size)
        self.recorded = 0  # every request seen since start; also the newest entry's seq

    def record(self, ctx: RequestContext, now: float) -> None:
        """About a microsecond: one dict of values the context already holds."""
        self.recorded += 1
        usage = ctx.usage or {}
        key = ctx.key
        self._entries.append(
            {
                "seq": self.recorded,
                "time": time.time(),
                "request_id": ctx.request_id,
                "key": ctx.principal,
                "team": (key.team or None) if key else None,
                "endpoint": ctx.endpoint,
                "requested_model": ctx.requested_model[:128] or None,
                "rule": ctx.route_rule or None,
                "provider": ctx.provider or None,
                "model": ctx.model or None,
                "complexity": None if ctx.complexity is None else round(ctx.complexity, 3),
                "privacy": ctx.privacy_categories,
                "privacy_action": ctx.privacy_action if ctx.privacy_categories else None,
                "cache": ctx.cache_status or None,
                "stream": ctx.stream,
                "status": ctx.status,
                "error": ctx.error_code,
                "latency_ms": round((now - ctx.started) * 1000, 2),
                "total_tokens": usage.get("total_tokens"),
                "cost_usd": ctx.cost_usd,
                "fallbacks": len(ctx.attempts),
            }
        )

    def latest(self, limit: int, after: int = 0) -> list[dict[str, Any]]:
        """Newest first, at most `limit`, only those with seq above `after`."""
        newest = itertools.islice(reversed(self._entries), limit)
        return list(itertools.takewhile(lambda e: e["seq"] > after, newest))
