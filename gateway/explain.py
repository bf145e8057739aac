"""Explain a routing decision without calling any upstream: POST /gateway/explain and
`gateway explain REQUEST.json`. The same stages as a real request, stopped before limits."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from gateway.chain import decision_stages
from gateway.context import RequestContext
from gateway.errors import GatewayError, InvalidRequest
from gateway.observability import Metrics

if TYPE_CHECKING:
    from gateway.runtime import Gateway

ENDPOINTS = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
    "responses": "/responses",  # its previous_response_id is not resolved here
}


async def explain(
    gw: Gateway, raw_body: bytes, endpoint: str = "chat", key: str | None = None
) -> tuple[int, dict[str, Any]]:
    """(status, report): the decision, the score with its factors, the findings by detector
    and span (never values), and the rule that matched; or the error the request would get."""
    if endpoint not in ENDPOINTS:
        error = InvalidRequest(
            f"Unknown endpoint {endpoint[:32]!r}: use one of {', '.join(ENDPOINTS)}.",
            param="endpoint",
        )
        return error.status, error.to_dict()
    ctx = RequestContext("explain", endpoint, ENDPOINTS[endpoint], [], time.perf_counter())
    ctx.raw_body = raw_body
    principal = gw.auth.principal_named(key) if key else gw.auth.anonymous
    if principal is None:
        error = InvalidRequest(f"No key is named {str(key)[:64]!r}.", param="key")
        return error.status, error.to_dict()
    ctx.key = principal
    ctx.principal = principal.name
    # Stages of their own, counting into a throwaway registry: an explained request is not
    # a served one, so the gateway's findings and score metrics must not move.
    stages = decision_stages(gw.config, gw.catalog, Metrics())
    try:
        for stage in stages:
            await stage(ctx)
    except GatewayError as exc:
        report = exc.to_dict()
        report["decision"] = {"refused": True, "status": exc.status, "rule": ctx.route_rule or None}
        report["privacy"] = privacy_report(ctx)
        return 200, report
    return 200, {
        "decision": {
            "provider": ctx.provider,
            "model": ctx.model,
            "rule": ctx.route_rule,
            "keep_local": ctx.keep_local,
            "privacy_action": ctx.privacy_action,
            "reason": ctx.privacy_reason or None,
            "redacted_values": ctx.redacted,
            "fallback": [f"{t.provider}:{t.model}" for t in ctx.fallback],
        },
        "complexity": None
        if ctx.complexity is None
        else {
            "score": round(ctx.complexity, 4),
            "threshold": gw.config.complexity.threshold,
            "factors": {k: round(v, 4) for k, v in (ctx.complexity_factors or {}).items()},
        },
        "privacy": privacy_report(ctx),
    }


def privacy_report(ctx: RequestContext) -> dict[str, Any]:
    return {
        "level": ctx.privacy_level or None,
        "categories": list(ctx.privacy_categories),
        "findings": [
            {
                "detector": f.detector,
                "category": f.category,
                "path": f.path,
                "start": f.start,
                "end": f.end,
            }
            for f in ctx.findings
        ],
    }
