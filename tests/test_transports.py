"""Both upstream transports (aiohttp, the default, and httpx's own pool) behave the same."""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import CLIENT_KEY, FakeUpstream, GatewayProcess, gateway_config, start_gateway

MESSAGES = [{"role": "user", "content": "both ways"}]
HEADERS = {"authorization": f"Bearer {CLIENT_KEY}"}


@pytest.fixture(scope="module", params=["aiohttp", "httpx"])
def transport_gateway(
    request: pytest.FixtureRequest, fake_upstream: FakeUpstream, workdir: Path
) -> Iterator[GatewayProcess]:
    gw = start_gateway(gateway_config(fake_upstream, transport=request.param), workdir)
    yield gw
    gw.process.stop()


def post(gw: GatewayProcess, model: str = "gpt-4o-mini", **extra: object) -> httpx.Response:
    body = {"model": model, "messages": MESSAGES} | extra
    return httpx.post(gw.base_url + "/chat/completions", json=body, headers=HEADERS, timeout=30)


def test_non_stream_and_stream(transport_gateway: GatewayProcess) -> None:
    reply = post(transport_gateway)
    assert reply.status_code == 200
    assert reply.json()["choices"][0]["message"]["content"] == "Fake reply to: both ways"
    stream = post(transport_gateway, stream=True)
    events = [e for e in stream.content.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    text = "".join(
        orjson.loads(e[6:])["choices"][0]["delta"].get("content") or "" for e in events[:-1]
    )
    assert text == "Fake reply to: both ways"


def test_the_configured_transport_is_the_one_that_calls_the_upstream(
    transport_gateway: GatewayProcess, fake_upstream: FakeUpstream, request: pytest.FixtureRequest
) -> None:
    """A client that sends no user-agent: aiohttp names itself in the one it adds, httpx's
    own transport adds none; so the upstream can tell which one served the request."""
    transport = request.node.callspec.params["transport_gateway"]
    host, port = transport_gateway.url.removeprefix("http://").split(":")
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": MESSAGES})
    for stream in (False, True):
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:  # http.client sends no user-agent and no accept of its own
            conn.request("POST", "/v1/chat/completions", body=body if not stream else
                         body[:-1] + b', "stream": true}', headers=HEADERS)  # fmt: skip
            response = conn.getresponse()
            assert response.status == 200, response.read()
            response.read()
        finally:
            conn.close()
        agent = fake_upstream.last_request()["headers"].get("user-agent")
        if transport == "aiohttp":
            assert agent is not None and "aiohttp/" in agent, agent
        else:
            assert agent is None, agent


def test_failures_map_to_the_same_statuses(transport_gateway: GatewayProcess) -> None:
    refused = post(transport_gateway, "dead-model")
    assert (refused.status_code, refused.json()["error"]["code"]) == (503, "provider_unavailable")
    # Read timeout 3 s; the fake would answer after 60 s, and stops when the gateway hangs up.
    slow = post(transport_gateway, fake={"delay_ms": 60_000})
    assert (slow.status_code, slow.json()["error"]["code"]) == (504, "upstream_timeout")
    cut = post(transport_gateway, fake={"fail_after": 0})  # headers, then the connection drops
    assert (cut.status_code, cut.json()["error"]["code"]) == (502, "upstream_error")


def test_mid_stream_failure_ends_with_an_error_event(transport_gateway: GatewayProcess) -> None:
    response = post(transport_gateway, stream=True, fake={"chunks": 6, "fail_after": 2})
    last = [e for e in response.content.split(b"\n\n") if e][-1]
    assert orjson.loads(last[6:])["error"]["code"] == "upstream_error"


def test_disconnect_cancels_the_upstream(
    transport_gateway: GatewayProcess, fake_upstream: FakeUpstream
) -> None:
    before = fake_upstream.stats()["cancelled_streams"]
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    body["fake"] = {"chunks": 1000, "interval_ms": 100}
    url = transport_gateway.base_url + "/chat/completions"
    with httpx.stream("POST", url, json=body, headers=HEADERS) as response:
        next(line for line in response.iter_lines() if '"content":"' in line)
    deadline = time.monotonic() + 30  # a bound, not a margin: it ends at the cancel
    while fake_upstream.stats()["cancelled_streams"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake_upstream.stats()["cancelled_streams"] == before + 1
