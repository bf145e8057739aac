"""Model names an unchanged app sends: provider patterns, and unlisted names through the rules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import UPSTREAM_KEY, FakeUpstream, GatewayProcess, start_gateway
from tests.test_policy import error_of

HTTP = httpx.Client(timeout=30)


def names_config(fake: FakeUpstream, unknown: str) -> str:
    return f"""
providers:
  openai: {{type: openai, base_url: "{fake.base_url}", api_key: {UPSTREAM_KEY},
           models: [gpt-4o-mini, "gpt-*", "o[0-9]*"]}}
  mock: {{type: mock, models: [demo]}}
routing:
  default_model: demo
  unknown_model: {unknown}
  rules:
    - {{name: hard-to-cloud, when: {{models: [auto], complexity_above: 0.5}}, route: gpt-4o-mini}}
"""


@pytest.fixture(scope="module")
def gateways(fake_upstream: FakeUpstream, workdir: Path) -> Iterator[dict[str, GatewayProcess]]:
    running = {
        u: start_gateway(names_config(fake_upstream, u), workdir) for u in ("reject", "auto")
    }
    yield running
    for gw in running.values():
        gw.process.stop()


def chat(gw: GatewayProcess, model: str, text: str = "hi") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    return HTTP.post(gw.base_url + "/chat/completions", json=body)


@pytest.mark.parametrize("model", ["gpt-4o-2024-08-06", "gpt-4.1", "o3-mini"])
def test_a_pattern_claims_dated_and_new_names(
    gateways: dict[str, GatewayProcess], fake_upstream: FakeUpstream, model: str
) -> None:
    response = chat(gateways["reject"], model)
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-provider"] == "openai"
    assert response.headers["x-gateway-model"] == model
    assert fake_upstream.last_request()["body"]["model"] == model  # sent as asked
    listed = {m["id"] for m in HTTP.get(gateways["reject"].base_url + "/models").json()["data"]}
    assert "gpt-*" not in listed and "gpt-4o-mini" in listed
    one = HTTP.get(gateways["reject"].base_url + f"/models/{model}").json()
    assert one["id"] == model and one["owned_by"] == "openai"


def test_an_unlisted_name_is_rejected_or_routed(gateways: dict[str, GatewayProcess]) -> None:
    error = error_of(chat(gateways["reject"], "my-agent-model"), 404, "model_not_found")
    assert "my-agent-model" in error["message"]
    easy = chat(gateways["auto"], "my-agent-model")
    assert easy.status_code == 200
    assert easy.headers["x-gateway-provider"] == "mock"
    assert easy.headers["x-gateway-route-rule"] == "default"
    hard = "Compare and analyze the tradeoffs of three consensus algorithms. Why? How? When?"
    routed = chat(gateways["auto"], "my-agent-model", hard)
    assert routed.headers["x-gateway-route-rule"] == "hard-to-cloud"
    assert float(routed.headers["x-gateway-complexity"]) > 0.5
