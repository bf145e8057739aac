"""RouterStage: decide provider and upstream model from the requested model name.

Today: `auto` is the configured default (or the forced provider's first model), and
names resolve through the ModelCatalog. The routing issue grows this into policy.
"""

from __future__ import annotations

from gateway.catalog import AUTO, ModelCatalog, Target
from gateway.chain.auth import Principal
from gateway.context import RequestContext
from gateway.errors import InvalidRequest, ModelNotAllowed, ModelNotFound


class AllowList:
    """A key's `models`: names, aliases, `provider:model` or `provider:*`."""

    def __init__(self, names: tuple[str, ...], catalog: ModelCatalog) -> None:
        self.names = frozenset(names)
        self.providers = frozenset(n[:-2] for n in names if n.endswith(":*"))
        resolved = (catalog.resolve(n) for n in names if n != AUTO and not n.endswith(":*"))
        self.targets = frozenset(t for t in resolved if t is not None)

    def allows(self, requested: str, target: Target) -> bool:
        return (
            requested in self.names or target in self.targets or target.provider in self.providers
        )


class RouterStage:
    def __init__(self, catalog: ModelCatalog) -> None:
        self.catalog = catalog
        self._allow: dict[str, AllowList] = {}

    def check_allowed(self, key: Principal, requested: str, target: Target) -> None:
        allow = self._allow.get(key.name)
        if allow is None:
            allow = self._allow[key.name] = AllowList(key.models, self.catalog)
        if not allow.allows(requested, target):
            raise ModelNotAllowed(
                f"Key '{key.name}' may not use model '{requested}' "
                f"({target.provider}:{target.model}); its models are: "
                f"{', '.join(key.models)}.",
                param="model",
            )

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
        if ctx.key is not None and ctx.key.models:
            self.check_allowed(ctx.key, name, target)
        ctx.provider = target.provider
        ctx.set_model(target.model)
