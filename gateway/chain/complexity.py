"""ComplexityStage: score what the user asks, for `model: "auto"` only (no model call)."""

from __future__ import annotations

from gateway.complexity import ComplexityScorer
from gateway.context import RequestContext
from gateway.observability import Metrics


class ComplexityStage:
    def __init__(self, scorer: ComplexityScorer, metrics: Metrics) -> None:
        self.scorer = scorer
        self._histogram = metrics.complexity

    async def __call__(self, ctx: RequestContext) -> None:
        if not ctx.as_auto or ctx.endpoint == "embeddings":
            return  # an explicit model skips the score (never the privacy scan)
        result = self.scorer.score(ctx.endpoint, ctx.body)
        ctx.complexity = result.score
        ctx.complexity_factors = result.factors
        self._histogram.observe(result.score)
