"""gateway/chain/complexity.py in the test process: the ComplexityStage built from a config
as the gateway builds it (`decision_stages`), run on request contexts: `auto` requests
only, never embeddings, the score and factors on the context and in the histogram.

test_routing.py shows the same through a gateway; this file is fast enough for a mutation
run. The scorer itself is tested in test_complexity.py.
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from gateway.catalog import ModelCatalog
from gateway.chain import complexity_settings, decision_stages
from gateway.chain.complexity import ComplexityStage
from gateway.complexity import FACTORS, ComplexityScorer
from gateway.config import parse_config
from gateway.context import RequestContext
from gateway.observability import Metrics

PROVIDERS = """\
providers:
  local: {type: ollama, base_url: "http://127.0.0.1:9", models: [llama3.2]}
routing: {default_model: "local:llama3.2"}
"""
HARD = (
    "Provide a detailed analysis of the trade-offs, and compare the designs. Why does one "
    "scale better? What would you change? How would you test it?"
)


class Stage:
    """A ComplexityStage as `decision_stages` builds it, with its metrics at hand."""

    def __init__(self, complexity: str = "") -> None:
        text = PROVIDERS + (textwrap.dedent(complexity) if complexity else "")
        self.config = parse_config(text, env={})
        self.metrics = Metrics()
        self.scorer = ComplexityScorer(complexity_settings(self.config))
        self.stage = ComplexityStage(self.scorer, self.metrics)

    async def run(self, body: dict[str, Any], endpoint: str = "chat", auto: bool = True) -> Any:
        ctx = RequestContext("r", endpoint, "/chat/completions", [], 0.0, body=body)
        ctx.as_auto = auto
        await self.stage(ctx)
        return ctx

    def observed(self) -> tuple[float, float]:
        """(count, sum) of gateway_complexity_score."""
        get = self.metrics.registry.get_sample_value
        return (get("gateway_complexity_score_count") or 0.0,
                get("gateway_complexity_score_sum") or 0.0)  # fmt: skip


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("chat", chat(HARD)),
        ("completions", {"model": "auto", "prompt": HARD}),
        ("responses", {"model": "auto", "input": HARD}),
    ],
)
async def test_an_auto_request_is_scored_and_observed(endpoint: str, body: dict[str, Any]) -> None:
    s = Stage()
    ctx = await s.run(body, endpoint)
    expected = ComplexityScorer().score(endpoint, body)
    assert expected.score > 0.65
    assert ctx.complexity == expected.score
    assert ctx.complexity_factors == expected.factors and set(expected.factors) == set(FACTORS)
    assert s.observed() == (1.0, expected.score)


async def test_an_explicit_model_is_not_scored() -> None:
    s = Stage()
    ctx = await s.run(chat(HARD) | {"model": "cloud"}, auto=False)
    assert ctx.complexity is None and ctx.complexity_factors is None
    assert s.observed() == (0.0, 0.0)


async def test_embeddings_are_never_scored() -> None:
    s = Stage()
    ctx = await s.run({"model": "auto", "input": HARD}, "embeddings")
    assert ctx.complexity is None and ctx.complexity_factors is None
    assert s.observed() == (0.0, 0.0)


async def test_each_request_is_observed_once() -> None:
    s = Stage()
    easy = await s.run(chat("hi"))
    hard = await s.run(chat(HARD))
    assert easy.complexity is not None and hard.complexity is not None
    assert easy.complexity < 0.65 < hard.complexity
    assert s.observed() == (2.0, pytest.approx(easy.complexity + hard.complexity))


async def test_the_config_reaches_the_scorer() -> None:
    s = Stage(
        """\
        complexity:
          threshold: 0.3
          weights: {terms: 0.2}
          extra_terms: [kubernetes]
        """
    )
    assert s.scorer.threshold == 0.3
    ctx = await s.run(chat("Kubernetes or kubernetes?"))
    assert ctx.complexity_factors is not None
    assert ctx.complexity_factors["terms"] == 0.5  # one distinct term of two
    default = await Stage().run(chat("Kubernetes or kubernetes?"))
    assert default.complexity_factors is not None and default.complexity_factors["terms"] == 0.0
    two = await s.run(chat("Explain and compare."))
    assert two.complexity == pytest.approx(0.2 + 0.5 * two.complexity_factors["sentences"]
                                           + 0.3 * two.complexity_factors["length"])  # fmt: skip


async def test_the_gateway_builds_its_complexity_stage_from_the_config() -> None:
    """`decision_stages`, as the app and `gateway explain` call it, hands the configured
    threshold, weights and extra terms to the scorer."""
    text = PROVIDERS + "complexity: {threshold: 0.3, extra_terms: [kubernetes]}\n"
    config = parse_config(text, env={})
    stages = decision_stages(config, ModelCatalog.from_config(config), Metrics())
    (stage,) = [s for s in stages if isinstance(s, ComplexityStage)]
    assert stage.scorer.threshold == 0.3
    ctx = RequestContext("r", "chat", "/chat/completions", [], 0.0, body=chat("Kubernetes?"))
    ctx.as_auto = True
    await stage(ctx)
    assert ctx.complexity_factors is not None and ctx.complexity_factors["terms"] > 0.0
