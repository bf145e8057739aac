"""Streams pass through as the upstream sends them, and end honestly."""

from __future__ import annotations

import re
import time

import httpx
import orjson

from tests.conftest import UPSTREAM_KEY, FakeUpstream, GatewayProcess

_VOLATILE = re.compile(rb'"(id|created)":("[^"]*"|\d+)')


def normalized(body: bytes) -> bytes:
    """The bytes with per-response ids and timestamps blanked, nothing else touched."""
    return _VOLATILE.sub(rb'"\1":0', body)


def events(body: bytes) -> list[bytes]:
    return [e for e in body.split(b"\n\n") if e.strip()]


def chat(model: str = "gpt-4o-mini", **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "stream me"}]} | extra


def test_stream_bytes_match_the_upstream_exactly(
    gateway: GatewayProcess, fake_upstream: FakeUpstream, client_headers: dict[str, str]
) -> None:
    body = chat(stream=True, stream_options={"include_usage": True})
    direct = httpx.post(
        fake_upstream.base_url + "/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {UPSTREAM_KEY}"},
    )
    via = httpx.post(gateway.base_url + "/chat/completions", json=body, headers=client_headers)
    assert via.status_code == 200
    assert via.headers["content-type"].startswith("text/event-stream")
    assert via.headers["x-accel-buffering"] == "no"
    # The gateway's own, once, whatever the upstream said (it may allow caching).
    assert via.headers.get_list("cache-control") == ["no-cache"]
    assert via.headers["x-gateway-provider"] == "openai"
    assert normalized(via.content) == normalized(direct.content)
    assert events(via.content)[-1] == b"data: [DONE]"


def test_streams_are_never_cached_by_the_way(
    gateway: GatewayProcess, client_headers: dict[str, str]
) -> None:
    """cache-control: no-cache on every stream, the demo's and one whose upstream said
    otherwise; a proxy that cached a stream would replay one answer to everyone."""
    for body in (
        chat("demo", stream=True),
        chat(stream=True, fake={"reply_headers": {"cache-control": "public, max-age=600"}}),
    ):
        via = httpx.post(gateway.base_url + "/chat/completions", json=body, headers=client_headers)
        assert via.status_code == 200
        assert via.headers.get_list("cache-control") == ["no-cache"], body


def test_a_stream_ended_without_done_ends_with_an_error_event(
    gateway: GatewayProcess, client_headers: dict[str, str]
) -> None:
    """The upstream closes cleanly after its last chunk but never sends [DONE]: the client
    must not take the cut for a whole answer."""
    body = chat(stream=True, fake={"chunks": 4, "no_done": 1})
    response = httpx.post(gateway.base_url + "/chat/completions", json=body, headers=client_headers)
    assert response.status_code == 200
    parts = events(response.content)
    assert b"data: [DONE]" not in parts
    text = "".join(
        orjson.loads(p.removeprefix(b"data: "))["choices"][0]["delta"].get("content") or ""
        for p in parts[:-1]
    )
    assert text == "Fake reply to: stream me"  # everything the upstream sent arrived
    error = orjson.loads(parts[-1].removeprefix(b"data: "))["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["code"], error["type"]) == ("upstream_stream_incomplete", "server_error")
    assert "'openai'" in error["message"] and "[DONE]" in error["message"]


def test_non_stream_bytes_match_the_upstream_exactly(
    gateway: GatewayProcess, fake_upstream: FakeUpstream, client_headers: dict[str, str]
) -> None:
    direct = httpx.post(
        fake_upstream.base_url + "/chat/completions",
        json=chat(),
        headers={"authorization": f"Bearer {UPSTREAM_KEY}"},
    )
    via = httpx.post(gateway.base_url + "/chat/completions", json=chat(), headers=client_headers)
    assert via.status_code == 200
    assert normalized(via.content) == normalized(direct.content)
    assert via.headers["content-length"] == str(len(via.content))


def test_events_reach_the_client_while_the_upstream_is_still_sending(
    gateway: GatewayProcess, fake_upstream: FakeUpstream, client_headers: dict[str, str]
) -> None:
    """No buffering: the first event arrives while the upstream stream is still open."""
    body = chat(stream=True, fake={"chunks": 6, "interval_ms": 150})
    url = gateway.base_url + "/chat/completions"
    with httpx.stream("POST", url, json=body, headers=client_headers) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert '"role":"assistant"' in first
        assert fake_upstream.stats()["open_streams"] >= 1
        rest = [line for line in lines if line.startswith("data: ")]
    assert rest[-1] == "data: [DONE]"
    assert len(rest) == 6 + 2  # six content chunks, the finish chunk, [DONE]


def test_client_disconnect_closes_the_upstream_stream(
    gateway: GatewayProcess, fake_upstream: FakeUpstream, client_headers: dict[str, str]
) -> None:
    before = fake_upstream.stats()["cancelled_streams"]
    hangups = hangup_count(gateway)
    body = chat(stream=True, fake={"chunks": 1000, "interval_ms": 100})  # a 100 s stream
    url = gateway.base_url + "/chat/completions"
    with httpx.stream("POST", url, json=body, headers=client_headers) as response:
        for line in response.iter_lines():
            if '"content":"' in line:
                break
    # The client is gone after 1-2 events; the upstream must see it long before the 100 s end.
    deadline = time.monotonic() + 30  # a bound, not a margin: it ends at the cancel
    while fake_upstream.stats()["cancelled_streams"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = fake_upstream.stats()
    assert stats["cancelled_streams"] == before + 1, stats
    assert stats["open_streams"] == 0, stats
    metrics = httpx.get(gateway.url + "/metrics").text
    assert "gateway_in_flight_requests 0.0" in metrics  # nothing left running in the gateway
    assert hangup_count(gateway) == hangups + 1  # counted as 499, not as a 4xx client error


def hangup_count(gateway: GatewayProcess) -> float:
    series = 'gateway_requests_total{endpoint="chat",model="gpt-4o-mini",provider="openai",status="499",stream="true"} '
    for line in httpx.get(gateway.url + "/metrics").text.splitlines():
        if line.startswith(series):
            return float(line.split()[-1])
    return 0.0


def test_upstream_failure_mid_stream_ends_with_an_error_event(
    gateway: GatewayProcess, client_headers: dict[str, str]
) -> None:
    body = chat(stream=True, fake={"chunks": 8, "fail_after": 3})
    response = httpx.post(gateway.base_url + "/chat/completions", json=body, headers=client_headers)
    assert response.status_code == 200  # headers were already sent when it failed
    parts = events(response.content)
    assert b"data: [DONE]" not in parts
    contents = [p for p in parts if b'"content":"' in p and b"error" not in p]
    assert len(contents) >= 3
    last = orjson.loads(parts[-1].removeprefix(b"data: "))
    assert set(last["error"]) == {"message", "type", "param", "code"}
    assert "openai" in last["error"]["message"]
    assert last["error"]["type"] == "server_error"


def test_upstream_error_before_streaming_is_a_plain_error_response(
    gateway: GatewayProcess, client_headers: dict[str, str]
) -> None:
    body = chat(stream=True, fake={"status": 429})
    response = httpx.post(gateway.base_url + "/chat/completions", json=body, headers=client_headers)
    assert response.status_code == 429
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


def test_demo_model_streams_in_several_chunks_with_usage(
    gateway: GatewayProcess, client_headers: dict[str, str]
) -> None:
    body = chat("demo", stream=True, stream_options={"include_usage": True})
    response = httpx.post(gateway.base_url + "/chat/completions", json=body, headers=client_headers)
    parts = [orjson.loads(p.removeprefix(b"data: ")) for p in events(response.content)[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in parts if c["choices"])
    assert text == "Hello from the gateway's demo model. You said: stream me"
    assert sum(1 for c in parts if c["choices"] and c["choices"][0]["delta"].get("content")) > 3
    assert parts[-1]["usage"]["total_tokens"] == parts[-1]["usage"]["prompt_tokens"] + len(
        text.split()
    )
