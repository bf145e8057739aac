"""POST /v1/responses through the gateway with the real `openai` SDK, in both modes.

`native` forwards to the fake upstream's own /v1/responses; `translate` serves the same
request through its /v1/chat/completions. Every test runs in both modes (the model name
picks the provider), and asserts on what the SDK parses and what the upstream received.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from bench.procs import free_port
from tests import llm_server
from tests.conftest import (
    UPSTREAM_KEY,
    FakeUpstream,
    GatewayProcess,
    local_config,
    require,
    start_gateway,
)

KEY_1, KEY_2 = "resp-key-1", "resp-key-2"
# One upstream, two providers: a model name may be listed once, so the dated variant.
UPSTREAM_MODEL = {"native": "gpt-4o-mini", "translate": "gpt-4o-mini-2024-07-18"}
MODELS = {mode: f"{mode}:{model}" for mode, model in UPSTREAM_MODEL.items()}
UPSTREAM_PATH = {"native": "/v1/responses", "translate": "/v1/chat/completions"}
PROMPT = "What is the capital of France?"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
AWS_KEY_ID = "AKIA" + "IOSFODNN7EXAMPLE"  # a secret the privacy scan finds


def config(upstream: FakeUpstream, extra: str = "") -> str:
    dead = f"http://127.0.0.1:{free_port()}"
    return f"""
    auth: {{api_keys: "{KEY_1},{KEY_2}"}}
    providers:
      native:
        type: openai
        base_url: {upstream.base_url}
        api_key: {UPSTREAM_KEY}
        models: [gpt-4o-mini]
        breaker: {{enabled: false}}
      translate:
        type: openai
        responses: translate
        base_url: {upstream.base_url}
        api_key: {UPSTREAM_KEY}
        models: [gpt-4o-mini-2024-07-18]
        breaker: {{enabled: false}}
      deadnative:
        type: openai
        base_url: {dead}/v1
        api_key: sk-dead
        models: [dead-native]
      deadchat:
        type: ollama
        base_url: {dead}
        models: [dead-chat]
      mock:
        type: mock
        models: [demo]
    routing:
      default_model: native:gpt-4o-mini
      fallbacks:
        deadnative:dead-native: [translate:gpt-4o-mini-2024-07-18]
        deadchat:dead-chat: [native:gpt-4o-mini]
    privacy: {{local_model: demo}}
    pricing:
      gpt-4o-mini: {{input_per_1m: 0.15, output_per_1m: 0.60}}
    {extra}
    """


@pytest.fixture(scope="module")
def gw(fake_upstream: FakeUpstream, workdir: Path) -> Iterator[GatewayProcess]:
    gateway = start_gateway(config(fake_upstream), workdir)
    yield gateway
    gateway.process.stop()


@pytest.fixture(params=["native", "translate"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(gw: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gw.base_url, api_key=KEY_1, max_retries=0) as c:
        yield c


def upstream_bodies(fake: FakeUpstream, path: str) -> list[dict[str, Any]]:
    return [r["body"] for r in fake.requests() if r["path"] == path]


# --------------------------------------------------------------------------- plain turns


def test_create(client: openai.OpenAI, fake_upstream: FakeUpstream, mode: str) -> None:
    fake_upstream.clear()
    raw = client.responses.with_raw_response.create(
        model=MODELS[mode], input=PROMPT, instructions="Be brief.", max_output_tokens=50
    )
    assert raw.headers["x-gateway-provider"] == mode
    assert raw.headers["x-gateway-model"] == UPSTREAM_MODEL[mode]
    assert float(raw.headers["x-gateway-cost-usd"]) > 0  # priced from the usage
    response = raw.parse()
    assert response.status == "completed"
    assert response.output_text == f"Fake reply to: {PROMPT}"
    assert response.id.startswith("resp")
    assert response.usage is not None and response.usage.input_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    (sent,) = upstream_bodies(fake_upstream, UPSTREAM_PATH[mode])
    assert sent["model"] == UPSTREAM_MODEL[mode]
    if mode == "translate":
        assert sent["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": PROMPT},
        ]
        assert sent["max_tokens"] == 50
    else:
        assert sent["input"] == PROMPT and sent["instructions"] == "Be brief."


def test_stream(client: openai.OpenAI, mode: str) -> None:
    with client.responses.stream(model=MODELS[mode], input=PROMPT) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    for kind in (
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ):
        assert kind in kinds
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    ids = {e.response.id for e in events if hasattr(e, "response")}
    assert ids == {final.id}
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == final.output_text == f"Fake reply to: {PROMPT}"
    assert final.usage is not None and final.usage.output_tokens > 0


def test_tool_call_then_tool_output(
    client: openai.OpenAI, fake_upstream: FakeUpstream, mode: str
) -> None:
    first = client.responses.create(model=MODELS[mode], input="Weather in Paris?", tools=[WEATHER])
    (call,) = first.output
    assert call.type == "function_call"
    assert call.name == "get_weather" and call.arguments == '{"city":"Paris"}'
    assert call.call_id and call.id
    fake_upstream.clear()
    follow_up = [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name,
         "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"},
    ]  # fmt: skip
    second = client.responses.create(model=MODELS[mode], input=follow_up, tools=[WEATHER])
    assert second.output_text == "Tool said: Sunny, 21 C"
    (sent,) = upstream_bodies(fake_upstream, UPSTREAM_PATH[mode])
    if mode == "translate":
        assert sent["messages"][1]["tool_calls"][0]["id"] == call.call_id
        assert sent["messages"][2] == {
            "role": "tool",
            "tool_call_id": call.call_id,
            "content": "Sunny, 21 C",
        }
        assert sent["tools"][0]["function"]["name"] == "get_weather"


def test_streamed_tool_call(client: openai.OpenAI, mode: str) -> None:
    with client.responses.stream(
        model=MODELS[mode], input="Weather in Paris?", tools=[WEATHER]
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    (call,) = final.output
    assert call.type == "function_call" and call.arguments == '{"city":"Paris"}'
    deltas = [e for e in events if e.type == "response.function_call_arguments.delta"]
    assert deltas and {e.item_id for e in deltas} == {call.id}
    assert "".join(e.delta for e in deltas) == call.arguments
    (done,) = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert done.item_id == call.id and done.arguments == call.arguments
    completed = events[-1]
    assert completed.type == "response.completed"
    assert [item.type for item in completed.response.output] == ["function_call"]


# --------------------------------------------------------------------------- stored responses


def test_previous_response_id_rebuilds_the_conversation(
    client: openai.OpenAI, fake_upstream: FakeUpstream, mode: str
) -> None:
    first = client.responses.create(model=MODELS[mode], input="My name is Ada.")
    fake_upstream.clear()
    second = client.responses.create(
        model=MODELS[mode], input="What is my name?", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id
    assert second.output_text == "Fake reply to: What is my name?"
    (sent,) = upstream_bodies(fake_upstream, UPSTREAM_PATH[mode])
    assert "previous_response_id" not in sent  # the upstream is stateless
    if mode == "translate":
        assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
        assert sent["messages"][1]["content"] == "Fake reply to: My name is Ada."
    else:
        texts = [str(item.get("content")) for item in sent["input"]]
        assert "My name is Ada." in texts[0] and "Fake reply to: My name is Ada." in texts[1]
        assert len(sent["input"]) == 3
    # A streamed third turn on the second.
    with client.responses.stream(
        model=MODELS[mode], input="And again?", previous_response_id=second.id
    ) as stream:
        third = stream.get_final_response()
    assert third.previous_response_id == second.id
    sent = upstream_bodies(fake_upstream, UPSTREAM_PATH[mode])[-1]
    assert len(sent["messages" if mode == "translate" else "input"]) == 5


def test_get_input_items_and_delete(client: openai.OpenAI, mode: str) -> None:
    created = client.responses.create(
        model=MODELS[mode],
        input=[
            {"role": "user", "content": "one"},
            {"role": "user", "content": [{"type": "input_text", "text": "two"}]},
        ],
    )
    fetched = client.responses.retrieve(created.id)
    assert fetched.id == created.id and fetched.output_text == created.output_text
    items = client.responses.input_items.list(created.id, order="asc")
    texts = [item.content[0].text for item in items.data]
    assert texts == ["one", "two"]
    assert all(item.id for item in items.data)
    newest = client.responses.input_items.list(created.id, limit=1)
    assert [i.content[0].text for i in newest.data] == ["two"] and newest.has_more
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model=MODELS[mode], input="x", previous_response_id=created.id)
    assert info.value.code == "previous_response_not_found"


def test_store_false_keeps_nothing(client: openai.OpenAI, mode: str) -> None:
    created = client.responses.create(model=MODELS[mode], input="forget me", store=False)
    assert created.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=MODELS[mode], input="x", previous_response_id=created.id)


def test_another_keys_response_does_not_exist(gw: GatewayProcess, client: openai.OpenAI) -> None:
    mine = client.responses.create(model=MODELS["translate"], input="mine")
    with openai.OpenAI(base_url=gw.base_url, api_key=KEY_2, max_retries=0) as other:
        with pytest.raises(openai.NotFoundError) as info:
            other.responses.create(
                model=MODELS["translate"], input="x", previous_response_id=mine.id
            )
        assert info.value.code == "previous_response_not_found"
        assert info.value.param == "previous_response_id"
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve(mine.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.input_items.list(mine.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.delete(mine.id)
    assert client.responses.retrieve(mine.id).id == mine.id  # still there for its owner


def test_unknown_previous_response_id(client: openai.OpenAI, mode: str) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model=MODELS[mode], input="x", previous_response_id="resp_nope")
    error = info.value
    assert error.status_code == 404
    assert error.code == "previous_response_not_found" and error.param == "previous_response_id"
    assert error.type == "invalid_request_error"
    assert "resp_nope" in error.message and "not found" in error.message


# --------------------------------------------------------------------------- errors


def test_non_function_tool_is_400_naming_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(
            model=MODELS["translate"], input="x", tools=[WEATHER, {"type": "web_search"}]
        )
    assert info.value.param == "tools[1].type"
    assert "web_search" in info.value.message
    assert info.value.code == "unsupported_value"


@pytest.mark.parametrize(
    ("input_value", "param"),
    [
        (42, "input"),
        ([{"role": "user", "content": 7}], "input[0].content"),
        ([{"role": "wizard", "content": "hi"}], "input[0].role"),
        ([{"type": "function_call_output", "output": "x"}], "input[0].call_id"),
        ([{"role": "user", "content": [{"type": "input_text"}]}], "input[0].content[0].text"),
        (["just a string"], "input[0]"),
    ],
)
def test_bad_input_is_400_with_its_path(
    client: openai.OpenAI, mode: str, input_value: Any, param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODELS[mode], input=input_value)
    assert info.value.param == param
    assert info.value.type == "invalid_request_error"


def test_missing_model_and_bad_previous_id_type(gw: GatewayProcess) -> None:
    headers = {"authorization": f"Bearer {KEY_1}"}
    url = gw.base_url + "/responses"
    reply = httpx.post(url, json={"input": "x"}, headers=headers)
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "model"
    reply = httpx.post(
        url,
        json={"model": "demo", "input": "x", "previous_response_id": 5},
        headers=headers,
    )
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == "previous_response_id"


def test_mid_stream_failure_ends_with_response_failed(client: openai.OpenAI, mode: str) -> None:
    with client.responses.stream(
        model=MODELS[mode], input=PROMPT, extra_headers={"x-fake-fail-after": "2"}
    ) as stream:
        events = list(stream)
    assert events[0].type == "response.created"
    last = events[-1]
    assert last.type == "response.failed"
    assert last.response.status == "failed" and last.response.error is not None
    assert last.response.id == events[0].response.id
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(numbers)


def test_upstream_error_is_relayed(client: openai.OpenAI, mode: str) -> None:
    with pytest.raises(openai.RateLimitError):
        client.responses.create(
            model=MODELS[mode], input=PROMPT, extra_headers={"x-fake-status": "429"}
        )


# --------------------------------------------------------------------------- routing, privacy


@pytest.mark.parametrize(
    ("model", "served_by", "path"),
    [
        ("deadnative:dead-native", "translate", "/v1/chat/completions"),
        ("deadchat:dead-chat", "native", "/v1/responses"),
    ],
)
def test_fallback_across_modes(
    client: openai.OpenAI, fake_upstream: FakeUpstream, model: str, served_by: str, path: str
) -> None:
    fake_upstream.clear()
    raw = client.responses.with_raw_response.create(model=model, input=PROMPT)
    assert raw.headers["x-gateway-provider"] == served_by
    assert "x-gateway-fallback" in raw.headers
    assert raw.parse().output_text == f"Fake reply to: {PROMPT}"
    assert [r["path"] for r in fake_upstream.requests()] == [path]
    with client.responses.stream(model=model, input=PROMPT) as stream:
        assert stream.get_final_response().output_text == f"Fake reply to: {PROMPT}"


@pytest.mark.parametrize(
    "where",
    ["input", "instructions", "tool_output", "function_arguments", "history"],
)
def test_a_secret_never_reaches_the_cloud(
    client: openai.OpenAI, fake_upstream: FakeUpstream, where: str
) -> None:
    secret = f"my key is {AWS_KEY_ID}"
    kwargs: dict[str, Any] = {"input": "Say hello."}
    if where == "input":
        kwargs["input"] = secret
    elif where == "instructions":
        kwargs["instructions"] = secret
    elif where == "tool_output":
        kwargs["input"] = [
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": secret},
        ]
    elif where == "function_arguments":
        kwargs["input"] = [
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": secret},
            {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        ]
    else:  # an earlier turn, kept local, then a follow-up that asks for the cloud
        first = client.responses.create(model="auto", input=secret)
        kwargs["previous_response_id"] = first.id
    fake_upstream.clear()
    raw = client.responses.with_raw_response.create(model="auto", **kwargs)
    assert raw.headers["x-gateway-provider"] == "mock"
    assert raw.headers["x-gateway-route-rule"] == "privacy"
    assert "secret" in raw.headers["x-gateway-privacy"].split(",")
    assert raw.parse().status == "completed"
    with client.responses.stream(model="auto", **kwargs) as stream:
        assert stream.get_final_response().status == "completed"
    assert fake_upstream.requests() == []  # the cloud saw nothing
    # Asked for the cloud by name: kept local all the same.
    raw = client.responses.with_raw_response.create(model=MODELS["native"], **kwargs)
    assert raw.headers["x-gateway-provider"] == "mock"
    assert fake_upstream.requests() == []


def test_auto_routes_like_chat(client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(model="auto", input=PROMPT)
    assert raw.headers["x-gateway-route-rule"] == "default"
    assert raw.headers["x-gateway-provider"] == "native"
    assert "x-gateway-complexity" in raw.headers


# --------------------------------------------------------------------------- cache, Redis


@pytest.fixture(scope="module")
def cached_gw(fake_upstream: FakeUpstream, workdir: Path) -> Iterator[GatewayProcess]:
    gateway = start_gateway(
        config(fake_upstream, "cache: {enabled: true, semantic: {enabled: false}}"), workdir
    )
    yield gateway
    gateway.process.stop()


def wait_for_hit(ask: Any) -> Any:
    deadline = time.monotonic() + 5
    while True:
        raw = ask()
        if raw.headers["x-gateway-cache"] != "miss" or time.monotonic() > deadline:
            return raw
        time.sleep(0.05)


def test_exact_cache(cached_gw: GatewayProcess, fake_upstream: FakeUpstream, mode: str) -> None:
    question = f"Cache me in {mode} mode, {time.time_ns()}"
    with openai.OpenAI(base_url=cached_gw.base_url, api_key=KEY_1, max_retries=0) as client:
        first = client.responses.with_raw_response.create(model=MODELS[mode], input=question)
        assert first.headers["x-gateway-cache"] == "miss"
        fake_upstream.clear()
        hit = wait_for_hit(
            lambda: client.responses.with_raw_response.create(model=MODELS[mode], input=question)
        )
        assert hit.headers["x-gateway-cache"] == "hit-exact"
        assert fake_upstream.requests() == []
        a, b = first.parse(), hit.parse()
        assert b.output_text == a.output_text and b.id != a.id
        with client.responses.stream(model=MODELS[mode], input=question) as stream:
            assert stream.get_final_response().output_text == a.output_text
        # The hit was stored too: a follow-up on it works, and is not a hit (its input differs).
        follow = client.responses.with_raw_response.create(
            model=MODELS[mode], input=question, previous_response_id=b.id
        )
        assert follow.headers["x-gateway-cache"] == "miss"
        assert len(fake_upstream.requests()) == 1


@pytest.fixture(scope="module")
def redis_url() -> str:
    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping()
    except redis.RedisError:
        require("redis not reachable at 127.0.0.1:6379")
    return "redis://127.0.0.1:6379/0"


def test_stored_in_redis_across_replicas(
    redis_url: str, fake_upstream: FakeUpstream, workdir: Path
) -> None:
    prefix = f"test-resp-{time.time_ns()}:"
    state = f"state: {{redis_url: '{redis_url}', key_prefix: '{prefix}'}}\n"
    state += "    responses: {store_ttl_seconds: 60}"
    a = start_gateway(config(fake_upstream, state), workdir)
    b = start_gateway(config(fake_upstream, state), workdir)
    try:
        with (
            openai.OpenAI(base_url=a.base_url, api_key=KEY_1, max_retries=0) as on_a,
            openai.OpenAI(base_url=b.base_url, api_key=KEY_1, max_retries=0) as on_b,
        ):
            first = on_a.responses.create(model=MODELS["translate"], input="Remember 7.")
            second = on_b.responses.create(
                model=MODELS["native"], input="What number?", previous_response_id=first.id
            )
            assert second.previous_response_id == first.id
            assert on_b.responses.retrieve(first.id).output_text == first.output_text
        ttl = redis.Redis.from_url(redis_url).ttl(f"{prefix}resp:{first.id}")
        assert 0 < ttl <= 60
    finally:
        a.process.stop()
        b.process.stop()
        keys = redis.Redis.from_url(redis_url).keys(f"{prefix}*")
        if keys:
            redis.Redis.from_url(redis_url).delete(*keys)


# --------------------------------------------------------------------------- local model


@pytest.fixture(scope="module")
def local_gw(local_llm: str, workdir: Path) -> Iterator[GatewayProcess]:
    gateway = start_gateway(
        local_config(local_llm),
        workdir,
    )
    yield gateway
    gateway.process.stop()


def test_local_model_turn(local_gw: GatewayProcess) -> None:
    with openai.OpenAI(base_url=local_gw.base_url, api_key="unused", max_retries=0) as client:
        raw = client.responses.with_raw_response.create(
            model="local", input="Name a colour.", max_output_tokens=8
        )
        assert raw.headers["x-gateway-provider"] == "ollama"
        response = raw.parse()
        assert response.model == llm_server.MODEL_ID
        assert response.status in ("completed", "incomplete")  # a base model rarely stops
        if response.status == "incomplete":
            assert response.incomplete_details.reason == "max_output_tokens"
        assert response.output_text
        assert response.usage is not None and 0 < response.usage.output_tokens <= 8
        follow = client.responses.create(
            model="local", input="Another?", previous_response_id=response.id, max_output_tokens=8
        )
        assert follow.previous_response_id == response.id and follow.output_text


def test_local_model_stream(local_gw: GatewayProcess) -> None:
    with (
        openai.OpenAI(base_url=local_gw.base_url, api_key="unused", max_retries=0) as client,
        client.responses.stream(model="local", input="Name a colour.", max_output_tokens=8) as s,
    ):
        events = list(s)
    assert events[0].type == "response.created"
    assert events[-1].type in ("response.completed", "response.incomplete")
    final = events[-1].response  # get_final_response() takes only a completed one
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text and text == final.output_text
    assert final.usage is None  # llama-cpp-python streams no usage, even when asked


# --------------------------------------------------------------------------- redaction

EMAIL = "maria.garcia@northwind-example.com"


@pytest.fixture(scope="module")
def redact_gw(fake_upstream: FakeUpstream, workdir: Path) -> Iterator[GatewayProcess]:
    extra = "privacy: {local_model: demo, actions: {pii: redact, keyword: allow}}"
    gateway = start_gateway(config(fake_upstream, extra), workdir)
    yield gateway
    gateway.process.stop()


@pytest.mark.parametrize("chunks", ["1", "7", "300"])
def test_redacted_values_are_restored(
    redact_gw: GatewayProcess, fake_upstream: FakeUpstream, mode: str, chunks: str
) -> None:
    """The cloud sees placeholders; the client sees its values, even where a stream's
    deltas cut a placeholder in pieces (300 chunks: a few characters each)."""
    text = f"Write to {EMAIL} today."
    with openai.OpenAI(base_url=redact_gw.base_url, api_key=KEY_1, max_retries=0) as client:
        headers = {"x-fake-chunks": chunks}
        fake_upstream.clear()
        raw = client.responses.with_raw_response.create(
            model=MODELS[mode], input=text, extra_headers=headers
        )
        assert raw.headers["x-gateway-provider"] == mode
        assert raw.parse().output_text == f"Fake reply to: {text}"
        with client.responses.stream(model=MODELS[mode], input=text, extra_headers=headers) as s:
            events = list(s)
            final = s.get_final_response()
        deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert deltas == final.output_text == f"Fake reply to: {text}"
        (done,) = [e for e in events if e.type == "response.output_text.done"]
        assert done.text == final.output_text
        numbers = [e.sequence_number for e in events]
        assert numbers == list(range(len(events)))
        sent = upstream_bodies(fake_upstream, UPSTREAM_PATH[mode])
        assert len(sent) == 2 and EMAIL not in str(sent) and "[EMAIL_1]" in str(sent)


def test_redacted_tool_arguments_are_restored(
    redact_gw: GatewayProcess, fake_upstream: FakeUpstream, mode: str
) -> None:
    arguments = f'{{"to": "{EMAIL}"}}'
    with openai.OpenAI(base_url=redact_gw.base_url, api_key=KEY_1, max_retries=0) as client:
        # The fake calls the tool with these arguments: it sends back what it was given.
        headers = {"x-fake-arguments": '{"to": "[EMAIL_1]"}', "x-fake-chunks": "40"}
        kwargs: dict[str, Any] = {"model": MODELS[mode], "tools": [WEATHER],
                                  "input": f"Mail {EMAIL}", "extra_headers": headers}  # fmt: skip
        (call,) = client.responses.create(**kwargs).output
        assert call.arguments == arguments
        with client.responses.stream(**kwargs) as s:
            events = list(s)
            (call,) = s.get_final_response().output
        assert call.arguments == arguments
        deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
        assert "".join(deltas) == arguments
