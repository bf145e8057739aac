"""What reaches the upstream: the right model, the gateway's key, the client's fields."""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests.conftest import CLIENT_KEY, UPSTREAM_KEY, FakeUpstream, GatewayProcess

MESSAGES = [{"role": "user", "content": "hello"}]


def post(
    gateway: GatewayProcess, body: bytes | dict[str, object], **headers: str
) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    all_headers = {"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"}
    return httpx.post(
        gateway.base_url + "/chat/completions", content=content, headers=all_headers | headers
    )


def test_upstream_gets_the_gateway_key_never_the_client_key(
    gateway: GatewayProcess, fake_upstream: FakeUpstream
) -> None:
    assert post(gateway, {"model": "gpt-4o-mini", "messages": MESSAGES}).status_code == 200
    headers = fake_upstream.last_request()["headers"]
    assert headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert CLIENT_KEY not in orjson.dumps(headers).decode()


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
    assert generated.headers["x-request-id"] != "bad id\t!"
    assert len(generated.headers["x-request-id"]) == 32


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
