"""Routing rules: an ordered list, first match wins, like a firewall.

A rule's `when` is a set of conditions that must all hold (an empty `when` always
matches); its action routes to a model, or blocks with a message. Rules are compiled
once from config; matching reads only what earlier stages left on the context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.catalog import AUTO, ModelCatalog, Target
from gateway.wire import LATENCY_PREFERENCES

if TYPE_CHECKING:
    from gateway.config import GatewayConfig, RuleConfig
    from gateway.context import RequestContext


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    config: RuleConfig
    target: Target | None  # None for a block rule
    fallback: tuple[Target, ...]
    headers: tuple[tuple[bytes, bytes], ...]  # lowercased (name, value) pairs to match

    def matches(self, ctx: RequestContext) -> bool:
        when = self.config.when
        key = ctx.key
        if when.keys and (key is None or key.name not in when.keys):
            return False
        if when.teams and (key is None or key.team not in when.teams):
            return False
        if when.tiers and (key is None or key.tier not in when.tiers):
            return False
        named = ctx.requested_model in when.models or (ctx.as_auto and AUTO in when.models)
        if when.models and not named:
            return False
        if when.privacy and not _privacy_matches(when.privacy, ctx.privacy_categories):
            return False
        score = ctx.complexity
        if when.complexity_above is not None and not (
            score is not None and score > when.complexity_above
        ):
            return False
        if when.complexity_below is not None and not (
            score is not None and score < when.complexity_below
        ):
            return False
        if when.tools is not None and ("tools" in ctx.needs) != when.tools:
            return False
        tokens = ctx.prompt_tokens_estimate
        if when.prompt_tokens_above is not None and not tokens > when.prompt_tokens_above:
            return False
        if when.prompt_tokens_below is not None and not tokens < when.prompt_tokens_below:
            return False
        if when.latency_preference:
            preference = (ctx.routing_preferences or {}).get("latency_preference")
            if preference not in when.latency_preference:
                return False
        return all((ctx.header(name) or b"").lower() == value for name, value in self.headers)


def _privacy_matches(wanted: tuple[str, ...], found: tuple[str, ...]) -> bool:
    if "none" in wanted and not found:
        return True
    if "any" in wanted and found:
        return True
    return any(category in found for category in wanted)


def compile_rules(rules: tuple[RuleConfig, ...], catalog: ModelCatalog) -> tuple[Rule, ...]:
    """Rules with their targets resolved; config validation has checked every name."""
    out = []
    for rule in rules:
        target = catalog.resolve(rule.route) if rule.route else None
        fallback = tuple(t for t in (catalog.resolve(n) for n in rule.fallback) if t is not None)
        headers = tuple(
            (name.lower().encode(), value.lower().encode())
            for name, value in rule.when.headers.items()
        )
        out.append(Rule(rule.name, rule, target, fallback, headers))
    return tuple(out)


def rule_problems(
    rules: tuple[RuleConfig, ...], catalog: ModelCatalog, categories: tuple[str, ...] = ()
) -> list[str]:
    """Config errors: duplicate names, a rule with no or two actions, unknown models, and
    conditions that can never hold (a typo must not silently disable a rule)."""
    known = ("secret", "pii", "keyword", *categories, "any", "none")
    errors = []
    seen: set[str] = set()
    for i, rule in enumerate(rules):
        where = f"routing.rules[{i}]"
        if not rule.name:
            errors.append(f"{where}.name: must not be empty")
        elif rule.name in seen or rule.name in RESERVED_RULES:
            errors.append(f"{where}.name: {rule.name!r} is already used")
        seen.add(rule.name)
        if bool(rule.route) == bool(rule.block):
            errors.append(f"{where}: give exactly one action, `route` (a model) or `block`")
        if rule.route and catalog.resolve(rule.route) is None:
            errors.append(f"{where}.route: {rule.route!r} is not a configured model")
        for j, name in enumerate(rule.fallback):
            if catalog.resolve(name) is None:
                errors.append(f"{where}.fallback[{j}]: {name!r} is not a configured model")
        when = rule.when
        if when.models and AUTO not in when.models:
            errors.append(f"{where}.when.models: rules apply to `auto` requests only (an "
                          "explicit model skips them), so this rule would never match; "
                          "list auto")  # fmt: skip
        for category in when.privacy:
            if category not in known:
                errors.append(f"{where}.when.privacy: unknown category {category!r} "
                              f"(known: {', '.join(known)})")  # fmt: skip
        for preference in when.latency_preference:
            if preference not in LATENCY_PREFERENCES:
                errors.append(f"{where}.when.latency_preference: unknown value {preference!r} "
                              f"(allowed: {', '.join(LATENCY_PREFERENCES)})")  # fmt: skip
        for bound in ("complexity_above", "complexity_below"):
            value = getattr(when, bound)
            if value is not None and not 0 <= value <= 1:
                errors.append(f"{where}.when.{bound}: must be between 0 and 1, got {value}")
    return errors


def fallback_problems(config: GatewayConfig, catalog: ModelCatalog) -> list[str]:
    """Unknown models in `routing.fallbacks`, and chains that would carry a request the
    privacy scan keeps local to a cloud provider (the router drops such targets anyway)."""
    from gateway.chain.privacy import action_for

    errors = []
    local = {name: p.is_local for name, p in config.providers.items()}
    for model, chain in config.routing.fallbacks.items():
        if catalog.resolve(model) is None:
            errors.append(f"routing.fallbacks.{model}: {model!r} is not a configured model")
        for j, name in enumerate(chain):
            if catalog.resolve(name) is None:
                errors.append(f"routing.fallbacks.{model}[{j}]: {name!r} is not a configured model")
    keeps_local = [c for c, action in config.privacy.actions.items() if action == "route_local"]
    if not config.privacy.enabled or not keeps_local:
        return errors
    chains: list[tuple[str, tuple[str, ...]]] = []
    if config.privacy.local_model in config.routing.fallbacks:
        name = config.privacy.local_model
        chains.append(
            (f"routing.fallbacks.{name} (privacy.local_model)", config.routing.fallbacks[name])
        )
    for i, rule in enumerate(config.routing.rules):
        wanted = [c for c in rule.when.privacy if c != "none"]
        actions = config.privacy.actions
        if rule.fallback and any(
            c == "any" or action_for(actions, c) == "route_local" for c in wanted
        ):
            where = f"routing.rules[{i}].fallback (rule {rule.name!r} matches {', '.join(wanted)})"
            chains.append((where, rule.fallback))
    for where, chain in chains:
        cloud = [
            n for n in chain if (t := catalog.resolve(n)) is not None and not local[t.provider]
        ]
        if cloud:
            errors.append(f"{where}: {', '.join(cloud)} would take a request the privacy scan "
                          "keeps local to a cloud provider; list local models only")  # fmt: skip
    return errors


# Decisions the router makes itself, before or after the configured rules.
RESERVED_RULES = ("explicit", "force_provider", "privacy", "capability", "default")
