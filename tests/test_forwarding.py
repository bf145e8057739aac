"""What reaches the upstream: the right model, the gateway's key, the client's fields."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import CLIENT_KEY, UPSTREAM_KEY, FakeUpstream, GatewayProcess, start_gateway

MESSAGES = [{"role": "user", "content": "hello"}]


def post(
    gateway: GatewayProcess, body: bytes | dict[str, object], **headers: str
) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    all_headers = {"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"}
    return httpx.post(
        gateway.base_url + "/chat/completions", content=content, headers=all_headers | headers
    )


def send(
    gateway: GatewayProcess, body: dict[str, object], headers: dict[str, str]
) -> httpx.Response:
    """POST chat with exactly these headers (no key added)."""
    return httpx.post(gateway.base_url + "/chat/completions", json=body, headers=headers)


def seen(fake_upstream: FakeUpstream, name: str) -> list[str]:
    """Every value of header `name` in the upstream's last request, repeats included."""
    return [v for k, v in fake_upstream.last_request()["header_list"] if k == name]


@pytest.mark.parametrize(
    "credentials",
    [
        {"authorization": f"Bearer {CLIENT_KEY}"},
        {"api-key": CLIENT_KEY},  # Azure's header, which the gateway accepts too
        {"authorization": f"Bearer {CLIENT_KEY}", "api-key": "test-key-2"},
    ],
    ids=["authorization", "api-key", "both"],
)
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_gets_the_gateway_key_never_the_client_key(
    gateway: GatewayProcess, fake_upstream: FakeUpstream, credentials: dict[str, str], stream: bool
) -> None:
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": stream}
    assert send(gateway, body, credentials).status_code == 200
    assert seen(fake_upstream, "authorization") == [f"Bearer {UPSTREAM_KEY}"]
    assert seen(fake_upstream, "api-key") == []
    record = orjson.dumps(fake_upstream.last_request()).decode()  # headers, body, raw bytes
    assert CLIENT_KEY not in record and "test-key-2" not in record


def test_hop_by_hop_and_credential_headers_are_dropped(
    gateway: GatewayProcess, fake_upstream: FakeUpstream
) -> None:
    response = post(
        gateway,
        {"model": "gpt-4o-mini", "messages": MESSAGES},
        connection="keep-alive, x-private-hop",
        **{
            "x-private-hop": "1",
            "keep-alive": "timeout=5",
            "te": "trailers",
            "cookie": "session=abc",
            "proxy-authorization": "Basic Zm9vOmJhcg==",
            "x-trace-tag": "kept",
        },
    )
    assert response.status_code == 200
    seen = fake_upstream.last_request()["headers"]
    for name in ("x-private-hop", "keep-alive", "te", "cookie", "proxy-authorization"):
        assert name not in seen, name
    assert seen["x-trace-tag"] == "kept"


def test_unchanged_body_is_forwarded_byte_for_byte(
    gateway: GatewayProcess, fake_upstream: FakeUpstream
) -> None:
    raw = b'{ "messages": [ {"role":"user", "content":"hi"} ],\n  "model" : "gpt-4o-mini", "seed": 7 }'
    assert post(gateway, raw).status_code == 200
    assert fake_upstream.last_request()["raw"] == raw.decode()


@pytest.mark.parametrize(
    ("requested", "provider", "upstream_model"),
    [
        ("auto", "openai", "gpt-4o-mini"),
        ("cloud", "openai", "gpt-4o-mini"),
        ("openai:gpt-4o-mini", "openai", "gpt-4o-mini"),
        ("openai:gpt-4.1-nano", "openai", "gpt-4.1-nano"),  # any model, explicit provider
        ("ollama:llama3.2:8b", "ollama", "llama3.2:8b"),  # split at the first colon only
        ("llama3.2:8b", "ollama", "llama3.2:8b"),  # bare name listed by the provider
    ],
)
def test_model_names_resolve_to_provider_and_upstream_model(
    gateway: GatewayProcess,
    fake_upstream: FakeUpstream,
    requested: str,
    provider: str,
    upstream_model: str,
) -> None:
    response = post(gateway, {"model": requested, "messages": MESSAGES})
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-provider"] == provider
    assert response.headers["x-gateway-model"] == upstream_model
    seen = fake_upstream.last_request()
    assert seen["path"] == "/v1/chat/completions"
    assert seen["body"]["model"] == upstream_model


def test_gateway_fields_are_removed_and_every_other_field_passes_untouched(
    gateway: GatewayProcess, fake_upstream: FakeUpstream
) -> None:
    body = {
        "model": "cloud",
        "messages": MESSAGES,
        "routing_preferences": {"force_provider": "openai", "privacy_level": "standard"},
        "tools": [
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
        ],
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "stream_options": None,
        "seed": 42,
        "stop": ["\n\n", "END"],
        "n": 1,
        "logprobs": False,
        "user": "user-123",
        "parallel_tool_calls": False,
        "temperature": 0.25,
        "metadata": {"team": "search"},
        "x_vendor_extension": {"nested": [1, 2.5, None, True]},
    }
    assert post(gateway, body).status_code == 200
    seen = fake_upstream.last_request()["body"]
    expected = {k: v for k, v in body.items() if k != "routing_preferences"}
    expected["model"] = "gpt-4o-mini"
    assert seen == expected


def test_force_provider_picks_the_provider_for_auto(
    gateway: GatewayProcess, fake_upstream: FakeUpstream
) -> None:
    body = {
        "model": "auto",
        "messages": MESSAGES,
        "routing_preferences": {"force_provider": "mock"},
    }
    response = post(gateway, body)
    assert response.headers["x-gateway-provider"] == "mock"
    assert response.json()["model"] == "demo"
    conflicting = body | {"model": "gpt-4o-mini"}
    error = post(gateway, conflicting).json()["error"]
    assert error["param"] == "routing_preferences.force_provider"


def test_request_id_is_propagated_upstream_and_echoed(
    gateway: GatewayProcess, fake_upstream: FakeUpstream
) -> None:
    response = post(
        gateway, {"model": "gpt-4o-mini", "messages": MESSAGES}, **{"x-request-id": "req-abc.123"}
    )
    assert response.headers["x-request-id"] == "req-abc.123"
    assert fake_upstream.last_request()["headers"]["x-request-id"] == "req-abc.123"
    generated = post(
        gateway, {"model": "gpt-4o-mini", "messages": MESSAGES}, **{"x-request-id": "bad id\t!"}
    )
    replacement = generated.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", replacement)
    assert seen(fake_upstream, "x-request-id") == [replacement]


@pytest.mark.parametrize(("length", "kept"), [(128, True), (129, False)])
def test_a_client_request_id_over_128_characters_is_replaced(
    gateway: GatewayProcess, fake_upstream: FakeUpstream, length: int, kept: bool
) -> None:
    sent = ("r" * length)[:length]
    response = post(
        gateway, {"model": "gpt-4o-mini", "messages": MESSAGES}, **{"x-request-id": sent}
    )
    assert response.status_code == 200
    echoed = response.headers["x-request-id"]
    if kept:
        assert echoed == sent
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", echoed), echoed
    assert seen(fake_upstream, "x-request-id") == [echoed]  # the upstream gets the same one


def test_ollama_native_error_bodies_are_translated(gateway: GatewayProcess) -> None:
    fake = {
        "status": 404,
        "error_body": '{"error": "model \\"llama3.2:8b\\" not found, try pulling it first"}',
    }
    response = post(gateway, {"model": "ollama:llama3.2:8b", "messages": MESSAGES, "fake": fake})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["message"] == 'model "llama3.2:8b" not found, try pulling it first'
    assert error["type"] == "invalid_request_error"  # as OpenAI types its 404
    assert set(error) == {"message", "type", "param", "code"}


def test_non_json_upstream_errors_are_wrapped(gateway: GatewayProcess) -> None:
    fake = {"status": 503, "error_body": "<html>upstream overloaded</html>"}
    response = post(gateway, {"model": "gpt-4o-mini", "messages": MESSAGES, "fake": fake})
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["message"] == "<html>upstream overloaded</html>"
    assert response.json()["error"]["type"] == "server_error"


def test_embeddings_and_completions_are_forwarded_to_their_paths(
    gateway: GatewayProcess, fake_upstream: FakeUpstream
) -> None:
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    r = httpx.post(
        gateway.base_url + "/embeddings",
        json={"model": "text-embedding-3-small", "input": "x"},
        headers=headers,
    )
    assert r.status_code == 200 and r.json()["data"][0]["object"] == "embedding"
    assert fake_upstream.last_request()["path"] == "/v1/embeddings"
    r = httpx.post(
        gateway.base_url + "/completions",
        json={"model": "gpt-4o-mini", "prompt": "x"},
        headers=headers,
    )
    assert r.status_code == 200 and r.json()["object"] == "text_completion"
    assert fake_upstream.last_request()["path"] == "/v1/completions"


def test_models_adds_what_an_ollama_host_has_pulled(gateway: GatewayProcess) -> None:
    """The fake answers /v1/models (not /api/tags), as llama.cpp does; Ollama answers both."""
    listing = httpx.get(
        gateway.base_url + "/models", headers={"authorization": f"Bearer {CLIENT_KEY}"}
    )
    ids = [m["id"] for m in listing.json()["data"]]
    assert "ollama:fake-model" in ids and "llama3.2:8b" in ids
    owners = {m["id"]: m["owned_by"] for m in listing.json()["data"]}
    assert owners["ollama:fake-model"] == "ollama"
    assert len(ids) == len(set(ids))


# ----------------------------------------------------------- the provider's own settings


@pytest.fixture(scope="module")
def configured(fake_upstream: FakeUpstream, workdir: Path) -> Iterator[GatewayProcess]:
    """A provider with an organization and headers of its own."""
    gw = start_gateway(
        f"""
        auth: {{api_keys: "{CLIENT_KEY}"}}
        providers:
          openai:
            type: openai
            base_url: {fake_upstream.base_url}
            api_key: {UPSTREAM_KEY}
            organization: org-gateway
            headers: {{X-Tenant: gateway-a, OpenAI-Project: proj_gateway}}
            models: [gpt-4o-mini]
        routing: {{default_model: gpt-4o-mini}}
        """,
        workdir,
    )
    yield gw
    gw.process.stop()


def test_the_providers_organization_and_headers_reach_the_upstream_not_the_clients(
    configured: GatewayProcess, fake_upstream: FakeUpstream
) -> None:
    client = {
        "authorization": f"Bearer {CLIENT_KEY}",
        "openai-organization": "org-client",
        "x-tenant": "client-b",
        "openai-project": "proj_client",
    }
    for stream in (False, True):
        body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": stream}
        assert send(configured, body, client).status_code == 200
        assert seen(fake_upstream, "openai-organization") == ["org-gateway"]
        assert seen(fake_upstream, "x-tenant") == ["gateway-a"]
        assert seen(fake_upstream, "openai-project") == ["proj_gateway"]
        assert seen(fake_upstream, "authorization") == [f"Bearer {UPSTREAM_KEY}"]


# ------------------------------------------------------- the upstream's response headers

PASSED = {
    "openai-processing-ms": "42",
    "openai-version": "2020-10-01",
    "retry-after": "7",
    "retry-after-ms": "6500",
}
# The gateway's own business: the upstream's organization, cookies, anything else.
WITHHELD = {"openai-organization": "org-upstream", "set-cookie": "s=1", "x-upstream-debug": "1"}


@pytest.mark.parametrize(
    ("fake", "stream", "status"),
    [
        ({}, False, 200),
        ({}, True, 200),
        ({"status": 429}, False, 429),
        ({"status": 503}, True, 503),
    ],
    ids=["body", "stream", "429", "503"],
)
def test_upstream_rate_and_version_headers_pass_through_and_nothing_else(
    gateway: GatewayProcess, fake: dict[str, object], stream: bool, status: int
) -> None:
    fake = fake | {"reply_headers": PASSED | WITHHELD}
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": stream, "fake": fake}
    response = post(gateway, body)
    assert response.status_code == status, response.text
    for name, value in PASSED.items():
        assert response.headers.get_list(name) == [value], name
    for name in WITHHELD:
        assert name not in response.headers, name


# ------------------------------------------------------------------- Ollama's /api/tags


def test_ollama_models_are_discovered_from_api_tags_and_cached(
    fake_upstream: FakeUpstream, workdir: Path
) -> None:
    """No model listed: /v1/models shows what /api/tags lists, asked once per 30 s."""
    run = uuid.uuid4().hex
    gw = start_gateway(
        f"""
        auth: {{api_keys: "{CLIENT_KEY}"}}
        providers:
          ollama:
            type: ollama
            base_url: {fake_upstream.url}
            api_key: {UPSTREAM_KEY}
            headers: {{x-fake-tags: "llama3.2:3b,qwen2.5:0.5b", x-test-run: {run}}}
          mock: {{type: mock, models: [demo]}}
        routing: {{default_model: demo}}
        """,
        workdir,
    )
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}

    def tags_calls() -> int:
        return sum(
            1
            for r in fake_upstream.requests()
            if r["path"] == "/api/tags" and r["headers"].get("x-test-run") == run
        )

    try:
        assert tags_calls() == 0
        first = httpx.get(gw.base_url + "/models", headers=headers).json()
        ids = [m["id"] for m in first["data"]]
        assert {"ollama:llama3.2:3b", "ollama:qwen2.5:0.5b"} <= set(ids), ids
        assert {m["id"]: m["owned_by"] for m in first["data"]}["ollama:qwen2.5:0.5b"] == "ollama"
        assert tags_calls() == 1
        second = httpx.get(gw.base_url + "/models", headers=headers).json()
        assert second == first
        assert tags_calls() == 1  # within the cache's 30 s: not asked again
        # A discovered model is callable by that name.
        body = {"model": "ollama:qwen2.5:0.5b", "messages": MESSAGES}
        reply = httpx.post(gw.base_url + "/chat/completions", json=body, headers=headers)
        assert reply.status_code == 200, reply.text
        assert fake_upstream.last_request()["body"]["model"] == "qwen2.5:0.5b"
    finally:
        gw.process.stop()
