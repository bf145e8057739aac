"""The stage chain: small async callables run in order on every proxied request.

A stage reads and annotates the RequestContext; it raises a GatewayError to answer with
an error. Stages that are switched off in config are simply not in the list.
"""

from __future__ import annotations

from typing import Protocol

from gateway.cache.service import ResponseCache
from gateway.catalog import ModelCatalog
from gateway.chain.auth import AuthStage
from gateway.chain.cache import CacheStage
from gateway.chain.complexity import ComplexityStage
from gateway.chain.limits import LimitStage
from gateway.chain.parse import ParseStage
from gateway.chain.privacy import PrivacyStage, build_scanner
from gateway.chain.router import RouterStage
from gateway.complexity import (
    REASONING_TERMS,
    ComplexityScorer,
    ComplexitySettings,
    ComplexityWeights,
)
from gateway.config import GatewayConfig
from gateway.context import RequestContext
from gateway.observability import Metrics


class Stage(Protocol):
    async def __call__(self, ctx: RequestContext) -> None: ...


def decision_stages(config: GatewayConfig, catalog: ModelCatalog, metrics: Metrics) -> list[Stage]:
    """parse → privacy → complexity → router: the decision, as `gateway explain` runs it."""
    unknown_auto = config.routing.unknown_model == "auto"
    stages: list[Stage] = [ParseStage(config.providers, catalog, unknown_auto)]
    if config.privacy.enabled:
        stages.append(PrivacyStage(config, build_scanner(config), metrics))
    stages.append(ComplexityStage(ComplexityScorer(complexity_settings(config)), metrics))
    stages.append(RouterStage(config, catalog))
    return stages


def complexity_settings(config: GatewayConfig) -> ComplexitySettings:
    c = config.complexity
    return ComplexitySettings(
        threshold=c.threshold,
        weights=ComplexityWeights(**c.weights),
        terms=REASONING_TERMS + c.extra_terms,
    )


def build_chain(
    auth: AuthStage, decision: list[Stage], limits: LimitStage, cache: ResponseCache | None
) -> list[Stage]:
    """auth → parse → privacy → complexity → router → limits (they need the route) → cache."""
    tail: list[Stage] = [CacheStage(cache)] if cache is not None else []
    return [auth, *decision, limits, *tail]


__all__ = ["Stage", "build_chain"]
