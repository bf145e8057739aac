"""Every request under /v1/ gets one access event, not only the proxied POSTs: model
lists, unknown paths and wrong methods too, so an operator sees failing client traffic."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import GatewayProcess
from tests.test_ops import wait_for_access


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/models", 200),
        ("GET", "/v1/models/gpt-4o-mini", 200),
        ("GET", "/v1/no-such-endpoint", 404),
        ("POST", "/v1/assistants", 404),
        ("DELETE", "/v1/models", 405),
        ("GET", "/v1/chat/completions", 405),
    ],
)
def test_non_proxied_v1_requests_are_logged(
    gateway: GatewayProcess,
    client_headers: dict[str, str],
    method: str,
    path: str,
    status: int,
) -> None:
    response = httpx.request(method, gateway.url + path, headers=client_headers, timeout=30)
    assert response.status_code == status, response.text
    event = wait_for_access(gateway, response.headers["x-request-id"])
    assert (event["method"], event["path"], event["status"]) == (method, path, status)
    assert isinstance(event["latency_ms"], float)


def test_a_client_without_a_key_is_logged_too(gateway: GatewayProcess) -> None:
    response = httpx.get(gateway.url + "/v1/models", timeout=30)
    assert response.status_code == 401
    event = wait_for_access(gateway, response.headers["x-request-id"])
    assert event["status"] == 401 and "authorization" not in str(event).lower()
