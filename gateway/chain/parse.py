"""ParseStage: body bytes → dict, once; checks the fields the gateway reads."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.context import RequestContext
from gateway.wire import check_request, parse_body, pop_routing_preferences


class ParseStage:
    def __init__(self, providers: Iterable[str]) -> None:
        self.providers = tuple(providers)

    async def __call__(self, ctx: RequestContext) -> None:
        body = parse_body(ctx.raw_body)
        check_request(ctx.endpoint, body)
        ctx.body = body
        ctx.requested_model = body["model"]
        ctx.stream = body.get("stream") is True
        if "routing_preferences" in body:
            ctx.routing_preferences = pop_routing_preferences(body, self.providers)
            ctx.body_changed = True
