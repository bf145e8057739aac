"""CacheStage: the chain's last stage; a hit answers the request without a model call."""

from __future__ import annotations

from gateway.cache.service import ResponseCache
from gateway.context import RequestContext


class CacheStage:
    def __init__(self, cache: ResponseCache) -> None:
        self.cache = cache

    async def __call__(self, ctx: RequestContext) -> None:
        if ctx.endpoint == "chat" or ctx.endpoint == "responses":
            await self.cache.lookup(ctx)
