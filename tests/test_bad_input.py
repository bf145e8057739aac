"""Every bad input gets a clear OpenAI-style error with the right status, never a 500."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import GatewayProcess

CHAT = "/v1/chat/completions"


def assert_error(response: httpx.Response, status: int, code: str | None, param: str | None = None):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    # OpenAI types every 4xx but a 429 so, 401 and 404 included (not Anthropic's
    # authentication_error / not_found_error)
    assert error["type"] == "invalid_request_error", error
    assert error["message"] and "Traceback" not in error["message"]
    assert error["code"] == code
    assert error["param"] == param
    assert response.headers["x-request-id"]
    return error


@pytest.fixture
def post(gateway: GatewayProcess, client_headers: dict[str, str]):
    def post(content: bytes, path: str = CHAT, **headers: str) -> httpx.Response:
        merged = client_headers | {"content-type": "application/json"} | headers
        return httpx.post(gateway.url + path, content=content, headers=merged)

    return post


def test_invalid_json_is_400(post) -> None:
    error = assert_error(post(b'{"model": "demo", "messages": ['), 400, "invalid_json")
    assert error["type"] == "invalid_request_error"


def test_empty_body_is_400(post) -> None:
    assert_error(post(b""), 400, "invalid_json")


def test_json_that_is_not_an_object_is_400(post) -> None:
    assert_error(post(b'["model", "demo"]'), 400, "invalid_json")


def test_invalid_utf8_is_400(post) -> None:
    body = b'{"model": "demo", "messages": [{"role": "user", "content": "\xff\xfe"}]}'
    error = assert_error(post(body), 400, "invalid_encoding")
    assert "UTF-8" in error["message"]


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (
            b'{"messages": [{"role": "user", "content": "hi"}]}',
            "model",
            "missing_required_parameter",
        ),
        (b'{"model": 7, "messages": [{"role": "user", "content": "hi"}]}', "model", "invalid_type"),
        (
            b'{"model": "", "messages": [{"role": "user", "content": "hi"}]}',
            "model",
            "invalid_value",
        ),
        (b'{"model": "demo"}', "messages", "missing_required_parameter"),
        (b'{"model": "demo", "messages": "hi"}', "messages", "invalid_type"),
        (b'{"model": "demo", "messages": []}', "messages", "invalid_value"),
        (
            b'{"model": "demo", "messages": [{"content": "hi"}]}',
            "messages[0].role",
            "missing_required_parameter",
        ),
        (b'{"model": "demo", "messages": [3]}', "messages[0]", "invalid_type"),
        (
            b'{"model": "demo", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}',
            "stream",
            "invalid_type",
        ),
    ],
)
def test_missing_or_ill_typed_fields_name_the_param(
    post, body: bytes, param: str, code: str
) -> None:
    assert_error(post(body), 400, code, param)


def test_bad_routing_preferences_are_400(post) -> None:
    body = (
        b'{"model": "demo", "messages": [{"role": "user", "content": "x"}],'
        b' "routing_preferences": {"privacy_level": "extreme"}}'
    )
    assert_error(post(body), 400, "invalid_value", "routing_preferences.privacy_level")
    body = body.replace(b'"privacy_level": "extreme"', b'"force_provider": "azure"')
    assert_error(post(body), 400, "invalid_value", "routing_preferences.force_provider")


def test_embeddings_and_completions_check_their_own_fields(post) -> None:
    assert_error(
        post(b'{"model": "demo"}', "/v1/embeddings"), 400, "missing_required_parameter", "input"
    )
    assert_error(
        post(b'{"model": "demo", "prompt": 5}', "/v1/completions"), 400, "invalid_type", "prompt"
    )


def test_unknown_model_is_404_model_not_found(post) -> None:
    body = b'{"model": "gpt-17", "messages": [{"role": "user", "content": "hi"}]}'
    error = assert_error(post(body), 404, "model_not_found", "model")
    assert "gpt-17" in error["message"]


def test_unknown_provider_prefix_is_not_split(post) -> None:
    # "azure" is not a configured provider, so "azure:gpt-4o" is one (unknown) model name.
    body = b'{"model": "azure:gpt-4o", "messages": [{"role": "user", "content": "hi"}]}'
    assert_error(post(body), 404, "model_not_found", "model")


def test_body_over_the_limit_is_413(post) -> None:
    big = b'{"model": "demo", "messages": [{"role": "user", "content": "' + b"x" * 70_000 + b'"}]}'
    error = assert_error(post(big), 413, "payload_too_large")
    assert "65536" in error["message"]


def test_chunked_body_over_the_limit_is_413(gateway: GatewayProcess, client_headers) -> None:
    def chunks():
        yield b'{"model": "demo", "messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"y" * 8192
        yield b'"}]}'

    response = httpx.post(gateway.url + CHAT, content=chunks(), headers=client_headers)
    assert_error(response, 413, "payload_too_large")


def test_huge_content_length_is_refused_before_the_body_is_sent(gateway: GatewayProcess) -> None:
    """The gateway answers 413 from the header alone; the client never sends the 1 GB."""
    parts = urlsplit(gateway.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer test-key-1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000000\r\n\r\n{"
        )
        reply = b""
        while b'"}}' not in reply:  # headers and body may arrive in separate segments
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b'"code":"payload_too_large"' in reply


def test_wrong_method_is_405(gateway: GatewayProcess) -> None:
    response = httpx.get(gateway.url + CHAT)
    error = assert_error(response, 405, "method_not_allowed")
    assert "POST" in error["message"]
    assert response.headers["allow"] == "POST"


def test_unknown_path_is_404(gateway: GatewayProcess) -> None:
    error = assert_error(httpx.get(gateway.url + "/v1/nothing-here"), 404, "unknown_url")
    assert "GET /v1/nothing-here" in error["message"]
    error = assert_error(
        httpx.post(gateway.url + "/v2/chat/completions", content=b"{}"), 404, "unknown_url"
    )
    assert "POST /v2/chat/completions" in error["message"]


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-key", "Basic dGVzdC1rZXktMTo=", "Bearer", "test-key-1"],
)
def test_bad_client_key_is_401(gateway: GatewayProcess, authorization: str | None) -> None:
    headers = {"authorization": authorization} if authorization is not None else {}
    body = b'{"model": "demo", "messages": [{"role": "user", "content": "hi"}]}'
    response = httpx.post(gateway.url + CHAT, content=body, headers=headers)
    error = assert_error(response, 401, "invalid_api_key")
    assert ("Missing" in error["message"]) == (authorization is None)
    assert error["type"] == "invalid_request_error"  # as OpenAI types its 401
    assert "test-key-1" not in response.text


def test_models_endpoint_needs_the_key_too(gateway: GatewayProcess) -> None:
    assert_error(httpx.get(gateway.url + "/v1/models"), 401, "invalid_api_key")


def test_garbage_never_yields_a_500(post) -> None:
    """A handful of hostile bodies: every answer is a 4xx envelope."""
    bodies = [
        b"null", b"0", b'"str"', b"{}", b'{"model": null}', b'{"model": {"a": 1}, "messages": []}',
        b'{"model": "demo", "messages": [{"role": null}]}', b"\x00\x01\x02",
        b'{"model": "demo", "messages": [{"role": "user", "content": "hi"}], "routing_preferences": 5}',
        b'{"model": "demo", "messages": [{"role": "user"}], "routing_preferences": {"x": 1}}',
    ]  # fmt: skip
    for body in bodies:
        response = post(body)
        assert 400 <= response.status_code < 500, (body, response.text)
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
