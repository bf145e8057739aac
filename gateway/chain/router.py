"""RouterStage: where the request runs, and which rule said so.

`model: "auto"` goes through the policy: a forced provider (the request's
`routing_preferences.force_provider`, `routing.force_provider`, or env FORCE_OLLAMA /
FORCE_OPENAI), then `routing.rules` in order (first match wins), else
`routing.default_model`. An explicit model skips the rules. Then, for every request:
a model without a capability the request needs gives way to `routing.capability_model`;
a request the privacy stage keeps local never leaves for a cloud provider (rule
`privacy`), and one it redacts is redacted before a cloud call; a key's allow-list must
admit the result.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from gateway.catalog import AUTO, ModelCatalog, Target
from gateway.chain.auth import Principal
from gateway.chain.privacy import action_for
from gateway.config import GatewayConfig
from gateway.context import RequestContext
from gateway.errors import (
    InvalidRequest,
    KeptLocal,
    ModelNotAllowed,
    ModelNotFound,
    RequestBlocked,
)
from gateway.privacy import redact
from gateway.rules import RESERVED_RULES, compile_rules


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


def forced_by_env(providers: Mapping[str, object]) -> str:
    """The seed's FORCE_OLLAMA / FORCE_OPENAI switches, when that provider exists."""
    for variable, provider in (("FORCE_OLLAMA", "ollama"), ("FORCE_OPENAI", "openai")):
        on = os.environ.get(variable, "").strip().lower() in ("1", "true", "yes", "on")
        if on and provider in providers:
            return provider
    return ""


class RouterStage:
    def __init__(self, config: GatewayConfig, catalog: ModelCatalog) -> None:
        self.catalog = catalog
        self.rules = compile_rules(config.routing.rules, catalog)
        self.default = catalog.resolve(AUTO)
        self.forced = config.routing.force_provider or forced_by_env(config.providers)
        capable = config.routing.capability_model
        self.capability_target = catalog.resolve(capable) if capable else None
        self.capabilities = {
            name: {model: frozenset(caps) for model, caps in p.capabilities.items()}
            for name, p in config.providers.items()
        }
        self.local = {name: p.is_local for name, p in config.providers.items()}
        self.local_target = self._local_target(config)
        self.actions = config.privacy.actions
        self.restore = config.privacy.restore
        self._allow: dict[str, AllowList] = {}
        self.fallbacks: dict[Target, tuple[Target, ...]] = {}
        for model, chain in config.routing.fallbacks.items():
            origin = catalog.resolve(model)
            if origin is not None:
                resolved = (catalog.resolve(n) for n in chain)
                self.fallbacks[origin] = tuple(t for t in resolved if t is not None)

    def _local_target(self, config: GatewayConfig) -> Target | None:
        if config.privacy.local_model:
            return self.catalog.resolve(config.privacy.local_model)
        # The first local provider's first model, a real one before the built-in mock.
        ordered = sorted(config.providers.items(), key=lambda item: item[1].type == "mock")
        for name, provider in ordered:
            first = self.catalog.first_model(name) if provider.is_local else None
            if first is not None:
                return first
        return None

    def can(self, target: Target, needs: frozenset[str]) -> bool:
        listed = self.capabilities.get(target.provider, {})
        caps = listed.get(target.model, listed.get("*"))
        return caps is None or needs <= caps

    def _allow_list(self, key: Principal) -> AllowList:
        allow = self._allow.get(key.name)
        if allow is None:
            allow = self._allow[key.name] = AllowList(key.models, self.catalog)
        return allow

    def check_allowed(self, key: Principal, requested: str, target: Target) -> None:
        if not self._allow_list(key).allows(requested, target):
            raise ModelNotAllowed(
                f"Key '{key.name}' may not use model '{requested}' "
                f"({target.provider}:{target.model}); its models are: "
                f"{', '.join(key.models)}.",
                param="model",
            )

    def _auto(self, ctx: RequestContext, forced: str | None) -> tuple[Target, str]:
        if forced:
            target = self.catalog.first_model(forced)
            if target is not None:
                return target, "force_provider"
        for rule in self.rules:
            if rule.matches(ctx):
                if rule.target is None:
                    raise RequestBlocked(rule.config.block or f"Blocked by rule '{rule.name}'.")
                ctx.fallback = rule.fallback
                return rule.target, rule.name
        if self.default is None:  # config validation makes this unreachable
            raise ModelNotFound("No default model is configured.", param="model")
        return self.default, "default"

    async def __call__(self, ctx: RequestContext) -> None:
        name = ctx.requested_model
        asked = (ctx.routing_preferences or {}).get("force_provider")
        if ctx.as_auto:
            target, rule = self._auto(ctx, asked or self.forced)
        else:
            resolved = self.catalog.resolve(name)
            if resolved is None:
                raise ModelNotFound(
                    f"The model '{name}' does not exist or is not configured on this gateway; "
                    "GET /v1/models lists the models it serves.",
                    param="model",
                )
            if asked and resolved.provider != asked:
                raise InvalidRequest(
                    f"routing_preferences.force_provider is {asked!r} but model '{name}' is "
                    f"served by {resolved.provider!r}.",
                    param="routing_preferences.force_provider",
                    code="invalid_value",
                )
            target, rule = resolved, "explicit"
        needs = ctx.needs
        if needs and not self.can(target, needs):
            capable = self.capability_target
            if capable is not None and self.can(capable, needs):
                target, rule = capable, "capability"
        action = ctx.privacy_action
        if action == "route_local":
            ctx.keep_local = True
            if not self.local[target.provider]:
                if self.local_target is None:
                    raise KeptLocal(
                        f"This request was kept local ({ctx.privacy_reason}), but no local "
                        "provider is configured to serve it."
                    )
                target, rule = self.local_target, "privacy"
        if ctx.key is not None and ctx.key.models:
            self.check_allowed(ctx.key, name, target)
        ctx.fallback = self._chain(ctx, target, rule)
        if action == "redact" and not all(self.local[t.provider] for t in (target, *ctx.fallback)):
            self._redact(ctx)  # before any cloud target sees the body, first or fallback
        ctx.route_rule = rule
        ctx.provider = target.provider
        ctx.set_model(target.model)

    def _chain(self, ctx: RequestContext, target: Target, rule: str) -> tuple[Target, ...]:
        """The fallback targets this request may use: the matched rule's, else its model's;
        never a cloud one for a request kept local, nor one the key or its needs exclude."""
        chain = ctx.fallback if rule not in RESERVED_RULES else self.fallbacks.get(target, ())
        out = []
        for t in chain:
            if t == target or t in out or (ctx.keep_local and not self.local[t.provider]):
                continue
            if ctx.needs and not self.can(t, ctx.needs):
                continue
            key = ctx.key
            named = f"{t.provider}:{t.model}"
            if key is not None and key.models and not self._allow_list(key).allows(named, t):
                continue
            out.append(t)
        return tuple(out)

    def _redact(self, ctx: RequestContext) -> None:
        """Swap each value whose category's action is `redact` for a typed placeholder."""
        acting = [f for f in ctx.findings if action_for(self.actions, f.category) == "redact"]
        if not acting:
            return
        redaction = redact(ctx.body, ctx.privacy_texts, acting)
        ctx.body = redaction.body
        ctx.body_changed = True
        ctx.redacted = len(redaction.placeholders)
        if self.restore:
            ctx.placeholders = redaction.placeholders
