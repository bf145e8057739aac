"""ParseStage: body bytes → dict, once; checks the fields the gateway reads."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.catalog import AUTO, ModelCatalog
from gateway.context import RequestContext
from gateway.wire import check_request, needs_of, parse_body, pop_routing_preferences


def ask_for_stream_usage(ctx: RequestContext) -> None:
    """Spend and token limits need a stream's usage: ask for it if the client did not.

    The relay then removes the usage event (and the `"usage":null` it adds to every
    chunk) from what the client receives, so the client's stream is unchanged.
    """
    options = ctx.body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return
    if options is not None and not isinstance(options, dict):
        return  # not ours to fix: the upstream answers it
    ctx.body["stream_options"] = {**(options or {}), "include_usage": True}
    ctx.body_changed = True
    ctx.strip_stream_usage = True


class ParseStage:
    def __init__(
        self,
        providers: Iterable[str],
        catalog: ModelCatalog | None = None,
        unknown_auto: bool = False,
    ) -> None:
        self.providers = tuple(providers)
        self.catalog = catalog
        self.unknown_auto = unknown_auto  # routing.unknown_model: auto

    async def __call__(self, ctx: RequestContext) -> None:
        body = parse_body(ctx.raw_body)
        check_request(ctx.endpoint, body)
        ctx.body = body
        name = ctx.requested_model = body["model"]
        # An unlisted name goes through the rules as `auto` when the config says so.
        ctx.as_auto = name == AUTO or (
            self.unknown_auto and self.catalog is not None and self.catalog.resolve(name) is None
        )
        ctx.stream = body.get("stream") is True
        # A Responses stream reports its usage in its last event (translated: to_chat asks).
        if ctx.stream and ctx.endpoint != "embeddings" and ctx.endpoint != "responses":
            ask_for_stream_usage(ctx)
        if ctx.endpoint != "embeddings":
            ctx.needs = needs_of(ctx.endpoint, body)
        ctx.prompt_tokens_estimate = len(ctx.raw_body) // 4
        if "routing_preferences" in body:
            ctx.routing_preferences = pop_routing_preferences(body, self.providers)
            ctx.body_changed = True
