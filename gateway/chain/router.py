"""RouterStage: decide provider and upstream model from the requested model name.

Today: `auto` is the configured default (or the forced provider's first model), and
names resolve through the ModelCatalog. The routing issue grows this into policy.
"""

from __future__ import annotations

from gateway.catalog import AUTO, ModelCatalog
from gateway.context import RequestContext
from gateway.errors import InvalidRequest, ModelNotFound


class RouterStage:
    def __init__(self, catalog: ModelCatalog) -> None:
        self.catalog = catalog

    async def __call__(self, ctx: RequestContext) -> None:
        name = ctx.requested_model
        forced = (ctx.routing_preferences or {}).get("force_provider")
        target = self.catalog.first_model(forced) if forced and name == AUTO else None
        target = target or self.catalog.resolve(name)
        if target is None:
            raise ModelNotFound(
                f"The model '{name}' does not exist or is not configured on this gateway; "
                "GET /v1/models lists the models it serves.",
                param="model",
            )
        if forced and target.provider != forced:
            raise InvalidRequest(
                f"routing_preferences.force_provider is {forced!r} but model '{name}' is "
                f"served by {target.provider!r}.",
                param="routing_preferences.force_provider",
                code="invalid_value",
            )
        ctx.provider = target.provider
        ctx.set_model(target.model)
