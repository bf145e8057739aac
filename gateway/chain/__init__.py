"""The stage chain: small async callables run in order on every proxied request.

A stage reads and annotates the RequestContext; it raises a GatewayError to answer with
an error. Stages that are switched off in config are simply not in the list.
"""

from __future__ import annotations

from typing import Protocol

from gateway.catalog import ModelCatalog
from gateway.chain.auth import AuthStage
from gateway.chain.limits import LimitStage
from gateway.chain.parse import ParseStage
from gateway.chain.router import RouterStage
from gateway.config import GatewayConfig
from gateway.context import RequestContext


class Stage(Protocol):
    async def __call__(self, ctx: RequestContext) -> None: ...


def build_chain(
    config: GatewayConfig, catalog: ModelCatalog, auth: AuthStage, limits: LimitStage
) -> list[Stage]:
    """auth → parse → router → limits (limits need the routed provider)."""
    return [auth, ParseStage(config.providers), RouterStage(catalog), limits]


__all__ = ["Stage", "build_chain"]
