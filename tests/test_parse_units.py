"""ParseStage (gateway/chain/parse.py) in this process: what the upstream receives of a
request and how the gateway reads it, through the app create_app builds (as in
tests/test_proxy_units.py), against the one fake upstream process. Each test builds its
own app, so that mutation testing runs the mutated code (docs/TESTING.md)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from bench.procs import free_port
from tests.conftest import FakeUpstream
from tests.test_proxy_units import config_text, events, marked, serving


@pytest.fixture(scope="module")
def dead_port() -> int:
    return free_port()


def with_rule(fake: FakeUpstream, dead_port: int, when: str) -> str:
    text = config_text(fake, dead_port)
    rule = (
        f"  rules:\n    - name: sized\n      when: {{models: [auto], {when}}}\n      route: local\n"
    )
    assert "  rules:\n" in text
    return text.replace("  rules:\n", rule)


def sized_body(size: int, marker: str) -> bytes:
    """A chat body for `auto` of exactly `size` bytes."""
    head = b'{"model":"auto","messages":[{"role":"user","content":"' + marker.encode()
    tail = b'"}]}'
    body = head + b"x" * (size - len(head) - len(tail)) + tail
    assert len(body) == size and orjson.loads(body)
    return body


@pytest.mark.parametrize(
    ("when", "size", "rule"),
    [("prompt_tokens_above: 99", 400, "sized"),  # 400 bytes: 100 tokens estimated
     ("prompt_tokens_above: 99", 399, "default"),  # 99
     ("prompt_tokens_above: 99", 403, "sized"),
     ("prompt_tokens_below: 101", 403, "sized"),
     ("prompt_tokens_below: 101", 404, "default")],  # 101
)  # fmt: skip
async def test_the_prompt_tokens_are_estimated_as_a_quarter_of_the_body_bytes(
    fake_upstream: FakeUpstream, dead_port: int, when: str, size: int, rule: str
) -> None:
    async with serving(with_rule(fake_upstream, dead_port, when)) as c:
        via = await c.post("/chat/completions", content=sized_body(size, "marker-pt"))
        assert via.status_code == 200, via.text
        assert via.headers["x-gateway-route-rule"] == rule


def stream_body(marker: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "stream": True,
            "messages": [{"role": "user", "content": marker}], **extra}  # fmt: skip


@pytest.mark.parametrize(
    ("options", "sent", "usage"),
    [(None, {"include_usage": True}, False),
     ({}, {"include_usage": True}, False),
     ({"include_usage": False}, {"include_usage": True}, False),
     ({"other": 1}, {"other": 1, "include_usage": True}, False),
     ({"include_usage": True}, {"include_usage": True}, True),
     ({"include_usage": 1}, {"include_usage": True}, False)],
    ids=["absent", "empty", "false", "other", "asked", "one"],
)  # fmt: skip
async def test_a_stream_asks_the_upstream_for_usage_and_the_client_sees_what_it_asked(
    fake_upstream: FakeUpstream,
    dead_port: int,
    options: dict[str, Any] | None,
    sent: dict[str, Any],
    usage: bool,
) -> None:
    marker = f"marker-su-{len(str(options))}-{sorted(options or {})}-{usage}"
    extra = {} if options is None else {"stream_options": options}
    async with serving(config_text(fake_upstream, dead_port)) as c:
        via = await c.post("/chat/completions", json=stream_body(marker, **extra))
    assert via.status_code == 200
    assert events(via.content)[-1] == b"data: [DONE]"
    assert (b'"usage":{' in via.content) is usage
    assert (b'"usage":null' in via.content) is usage
    (seen,) = marked(fake_upstream, marker)
    assert seen["body"]["stream_options"] == sent
    assert "routing_preferences" not in seen["body"]


async def test_stream_options_that_are_not_an_object_are_the_upstreams_to_answer(
    fake_upstream: FakeUpstream, dead_port: int
) -> None:
    body = orjson.dumps(stream_body("marker-so", stream_options="yes"))
    async with serving(config_text(fake_upstream, dead_port)) as c:
        await c.post("/chat/completions", content=body)
    (seen,) = marked(fake_upstream, "marker-so")
    assert seen["raw"].encode() == body  # untouched: not even re-serialized


async def test_a_body_the_gateway_does_not_change_is_forwarded_byte_for_byte(
    fake_upstream: FakeUpstream, dead_port: int
) -> None:
    body = b'{ "model" : "gpt-4o-mini",\n "messages": [{"role": "user", "content": "marker-bb"}],'
    body += b' "stream": false, "stream_options": {"include_usage": false} }'
    async with serving(config_text(fake_upstream, dead_port)) as c:
        via = await c.post("/chat/completions", content=body)
        assert via.status_code == 200
        assert via.json()["object"] == "chat.completion"  # not a stream: `stream` is false
    (seen,) = marked(fake_upstream, "marker-bb")
    assert seen["raw"].encode() == body


@pytest.mark.parametrize("endpoint", ["embeddings", "responses"])
async def test_only_chat_and_completions_streams_are_asked_for_usage(
    fake_upstream: FakeUpstream, dead_port: int, endpoint: str
) -> None:
    body = {"model": "gpt-4o-mini", "input": f"marker-eu-{endpoint}", "stream": True}
    async with serving(config_text(fake_upstream, dead_port)) as c:
        await c.post(f"/{endpoint}", json=body)
    (seen,) = marked(fake_upstream, f"marker-eu-{endpoint}")
    assert "stream_options" not in orjson.dumps(seen["body"]).decode()


async def test_completions_streams_are_asked_for_usage_too(
    fake_upstream: FakeUpstream, dead_port: int
) -> None:
    body = {"model": "gpt-4o-mini", "prompt": "marker-cu", "stream": True}
    async with serving(config_text(fake_upstream, dead_port)) as c:
        via = await c.post("/completions", json=body)
    assert via.status_code == 200
    assert b'"usage":{' not in via.content
    (seen,) = marked(fake_upstream, "marker-cu")
    assert seen["body"]["stream_options"] == {"include_usage": True}


async def test_the_needs_of_a_request_route_it(fake_upstream: FakeUpstream, dead_port: int) -> None:
    """`local` (ollama's llama3.2:8b) has tools but no vision: an image goes to the
    capability model; embeddings have no needs and stay."""
    image = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    async with serving(config_text(fake_upstream, dead_port)) as c:
        via = await c.post("/chat/completions", json={
            "model": "local", "messages": [{"role": "user", "content": image}]})  # fmt: skip
        assert via.headers["x-gateway-route-rule"] == "capability"
        via = await c.post("/completions", json={"model": "local", "prompt": "p"})
        assert via.headers["x-gateway-route-rule"] == "explicit"


async def test_a_name_is_auto_only_when_unknown_and_the_config_says_so(
    fake_upstream: FakeUpstream, dead_port: int
) -> None:
    text = config_text(fake_upstream, dead_port)
    async with serving(text) as c:
        via = await c.post("/chat/completions", json={"model": "nope", "messages": []})
        assert via.status_code in (400, 404)
        via = await c.post("/chat/completions", json={
            "model": "auto", "messages": [{"role": "user", "content": "a"}]})  # fmt: skip
        assert via.headers["x-gateway-route-rule"] == "default"


async def test_an_embeddings_request_has_no_needs(
    fake_upstream: FakeUpstream, dead_port: int
) -> None:
    """Fields that would need a capability of a chat model mean nothing to embeddings:
    `local` (no json_schema) still serves it."""
    body = {"model": "local", "input": "marker-en",
            "response_format": {"type": "json_schema"}, "tools": [{"type": "function"}]}  # fmt: skip
    async with serving(config_text(fake_upstream, dead_port)) as c:
        via = await c.post("/embeddings", json=body)
        assert via.status_code == 200, via.text
        assert via.headers["x-gateway-route-rule"] == "explicit"
        assert via.headers["x-gateway-provider"] == "ollama"
        chat = {"model": "local", "messages": [{"role": "user", "content": "marker-cn"}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}  # fmt: skip
        via = await c.post("/chat/completions", json=chat)
        assert via.headers["x-gateway-route-rule"] == "capability"  # a chat request does
