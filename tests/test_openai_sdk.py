"""The official `openai` SDK (sync and async) against the gateway, over real HTTP on loopback.

Every test runs twice, once with `openai.OpenAI` and once with `openai.AsyncOpenAI`; the
helpers `call` and `collect` hide the difference (await when the SDK returned an awaitable,
`async for` when the stream is async). Assertions are on what an SDK user sees: parsed
objects, response headers, and the exception class with its status, code and body.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from tests.conftest import CLIENT_KEY, FakeUpstream, GatewayProcess
from tests.fake_upstream import embedding_vector

PROMPT = "What is the capital of France?"
FAKE_REPLY = f"Fake reply to: {PROMPT}"
DEMO_PREFIX = "Hello from the gateway's demo model"
UPSTREAM_MODEL = "gpt-4o-mini"
FAKE_DIMENSIONS = 8  # the fake upstream's default embedding size
DEMO_DIMENSIONS = 16  # the demo model's default embedding size

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string", "description": "City name"}},
            "required": ["location"],
        },
    },
}


def user(text: str = PROMPT) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def call(value: Any) -> Any:
    """The result of an SDK call, whether the client is sync or async."""
    return await value if inspect.isawaitable(value) else value


async def collect(stream: Any) -> list[Any]:
    """All items of a sync `Stream` or an async `AsyncStream`."""
    if hasattr(stream, "__aiter__"):
        return [item async for item in stream]
    return list(stream)


async def consume_into(stream: Any, sink: list[Any]) -> None:
    """Iterate a stream, appending each item to `sink` (kept when iteration raises)."""
    if hasattr(stream, "__aiter__"):
        async for item in stream:
            sink.append(item)
    else:
        for item in stream:
            sink.append(item)


@pytest.fixture(params=["sync", "async"])
async def client(request: pytest.FixtureRequest, gateway: GatewayProcess) -> AsyncIterator[Any]:
    if request.param == "sync":
        sync_client = openai.OpenAI(base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=0)
        yield sync_client
        sync_client.close()
    else:
        async_client = openai.AsyncOpenAI(
            base_url=gateway.base_url, api_key=CLIENT_KEY, max_retries=0
        )
        yield async_client
        await async_client.close()


async def chat_error(
    client: Any,
    exc_class: type[openai.APIStatusError],
    fake: dict[str, Any] | None = None,
    model: str = "gpt-4o-mini",
    **kwargs: Any,
) -> Any:
    """The exception a chat call raises (the fake upstream told to misbehave, if `fake`)."""
    if fake is not None:
        kwargs["extra_body"] = {"fake": fake}
    with pytest.raises(exc_class) as info:
        await call(client.chat.completions.create(model=model, messages=user(), **kwargs))
    return info.value


def error_body(exc: openai.APIError) -> dict[str, Any]:
    """The SDK puts the inner `error` object of the envelope in `exc.body`."""
    assert isinstance(exc.body, dict), exc.body
    assert set(exc.body) == {"message", "type", "param", "code"}, exc.body
    assert isinstance(exc.body["message"], str) and exc.body["message"]
    return exc.body


# --------------------------------------------------------------------------- chat


async def test_chat_non_stream(client: Any, fake_upstream: FakeUpstream) -> None:
    reply = await call(client.chat.completions.create(model="gpt-4o-mini", messages=user()))
    assert reply.object == "chat.completion"
    assert reply.model == UPSTREAM_MODEL
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == FAKE_REPLY
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == len(PROMPT.split())
    assert reply.usage.completion_tokens == len(FAKE_REPLY.split())
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    sent = fake_upstream.last_request()
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["messages"] == user()


async def test_chat_raw_response_headers_and_request_id(
    client: Any, fake_upstream: FakeUpstream
) -> None:
    raw = await call(
        client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=user(),
            extra_headers={"x-request-id": "sdk-test-req-42"},
        )
    )
    assert raw.status_code == 200
    assert raw.headers["x-gateway-provider"] == "openai"
    assert raw.headers["x-gateway-model"] == UPSTREAM_MODEL
    assert raw.headers.get_list("x-request-id") == ["sdk-test-req-42"]  # once, unchanged
    parsed = await call(raw.parse())
    assert parsed.choices[0].message.content == FAKE_REPLY
    # The same id reaches the upstream, so a request can be followed end to end.
    assert fake_upstream.last_request()["headers"]["x-request-id"] == "sdk-test-req-42"


async def test_gateway_makes_a_request_id_when_the_client_sends_none(client: Any) -> None:
    first = await call(
        client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=user())
    )
    second = await call(
        client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=user())
    )
    assert first.headers["x-request-id"]
    assert second.headers["x-request-id"]
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_chat_stream_matches_non_stream(client: Any) -> None:
    whole = await call(client.chat.completions.create(model="gpt-4o-mini", messages=user()))
    stream = await call(
        client.chat.completions.create(model="gpt-4o-mini", messages=user(), stream=True)
    )
    chunks = await collect(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) > 1, "the reply should arrive in several pieces"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content == FAKE_REPLY
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)  # not asked for


async def test_chat_stream_include_usage(client: Any) -> None:
    whole = await call(client.chat.completions.create(model="gpt-4o-mini", messages=user()))
    stream = await call(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=user(),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    chunks = await collect(stream)
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.model_dump() == whole.usage.model_dump()
    assert all(c.usage is None for c in chunks[:-1])
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == FAKE_REPLY


async def test_chat_stream_raw_response_headers(client: Any) -> None:
    raw = await call(
        client.chat.completions.with_raw_response.create(
            model="cloud", messages=user(), stream=True
        )
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["x-gateway-provider"] == "openai"
    assert raw.headers["x-gateway-model"] == UPSTREAM_MODEL
    chunks = await collect(await call(raw.parse()))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == FAKE_REPLY


# --------------------------------------------------------------------------- model names


@pytest.mark.parametrize("name", ["auto", "cloud", "openai:gpt-4o-mini", "gpt-4o-mini"])
async def test_model_names_reaching_the_cloud(
    client: Any, fake_upstream: FakeUpstream, name: str
) -> None:
    fake_upstream.clear()
    raw = await call(client.chat.completions.with_raw_response.create(model=name, messages=user()))
    reply = await call(raw.parse())
    assert reply.choices[0].message.content == FAKE_REPLY
    assert raw.headers["x-gateway-provider"] == "openai"
    assert raw.headers["x-gateway-model"] == UPSTREAM_MODEL
    received = fake_upstream.requests()
    assert len(received) == 1
    assert received[0]["body"]["model"] == UPSTREAM_MODEL
    # The rest of the body is passed on untouched.
    assert received[0]["body"]["messages"] == user()


async def test_demo_model(client: Any, fake_upstream: FakeUpstream) -> None:
    fake_upstream.clear()
    raw = await call(
        client.chat.completions.with_raw_response.create(model="demo", messages=user("hi there"))
    )
    reply = await call(raw.parse())
    assert raw.headers["x-gateway-provider"] == "mock"
    assert raw.headers["x-gateway-model"] == "demo"
    assert reply.choices[0].message.content == f"{DEMO_PREFIX}. You said: hi there"
    assert reply.usage is not None and reply.usage.prompt_tokens == 2
    assert fake_upstream.requests() == [], "the demo model must not call the cloud"


async def test_demo_model_stream(client: Any) -> None:
    whole = await call(client.chat.completions.create(model="demo", messages=user("hi there")))
    stream = await call(
        client.chat.completions.create(
            model="demo",
            messages=user("hi there"),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    chunks = await collect(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert text.startswith(DEMO_PREFIX)
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()


# --------------------------------------------------------------------------- tools


async def test_tool_call_round_trip(client: Any, fake_upstream: FakeUpstream) -> None:
    messages: list[dict[str, Any]] = user("What's the weather in Paris?")
    first = await call(
        client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=[WEATHER_TOOL])
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    tool_call = choice.message.tool_calls[0]
    assert tool_call.type == "function"
    assert tool_call.function.name == "get_weather"
    assert json.loads(tool_call.function.arguments) == {"location": "Paris"}
    assert fake_upstream.last_request()["body"]["tools"] == [WEATHER_TOOL]

    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": tool_call.id, "content": "sunny"})
    second = await call(
        client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=[WEATHER_TOOL])
    )
    assert second.choices[0].message.content == "Tool said: sunny"
    assert second.choices[0].finish_reason == "stop"
    sent = fake_upstream.last_request()["body"]["messages"]
    assert sent[1]["role"] == "assistant"
    assert sent[1]["tool_calls"][0]["id"] == tool_call.id
    assert sent[2] == {"role": "tool", "tool_call_id": tool_call.id, "content": "sunny"}


async def test_tool_call_stream_assembled_from_deltas(client: Any) -> None:
    stream = await call(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=user("What's the weather in Paris?"),
            tools=[WEATHER_TOOL],
            stream=True,
        )
    )
    chunks = await collect(stream)
    calls: dict[int, dict[str, str]] = {}
    argument_deltas = 0
    for chunk in chunks:
        if not chunk.choices:
            continue
        for delta in chunk.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            if delta.id:
                entry["id"] = delta.id
            if delta.function and delta.function.name:
                entry["name"] += delta.function.name
            if delta.function and delta.function.arguments:
                entry["arguments"] += delta.function.arguments
                argument_deltas += 1
    assert list(calls) == [0]
    assert calls[0]["id"]
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"location": "Paris"}
    assert argument_deltas > 1, "the arguments should arrive in several pieces"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


class GetWeather(BaseModel):
    """Current weather for a city."""

    location: str


async def test_parse_helper_with_pydantic_tool(client: Any) -> None:
    """The SDK's `parse()` helper turns the tool arguments into the pydantic model."""
    completion = await call(
        client.chat.completions.parse(
            model="gpt-4o-mini",
            messages=user("What's the weather in Paris?"),
            tools=[openai.pydantic_function_tool(GetWeather, name="get_weather")],
        )
    )
    tool_call = completion.choices[0].message.tool_calls[0]
    assert tool_call.function.name == "get_weather"
    assert tool_call.function.parsed_arguments == GetWeather(location="Paris")


# --------------------------------------------------------------------------- completions


async def test_completions_non_stream(client: Any, fake_upstream: FakeUpstream) -> None:
    raw = await call(
        client.completions.with_raw_response.create(model="gpt-4o-mini", prompt="Say hello")
    )
    reply = await call(raw.parse())
    assert raw.headers["x-gateway-provider"] == "openai"
    assert reply.object == "text_completion"
    assert reply.choices[0].text == "Fake reply to: Say hello"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.prompt_tokens == 2
    sent = fake_upstream.last_request()
    assert sent["path"] == "/v1/completions"
    assert sent["body"]["prompt"] == "Say hello"


async def test_completions_stream(client: Any) -> None:
    stream = await call(
        client.completions.create(
            model="cloud",
            prompt="Say hello",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    chunks = await collect(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == "Fake reply to: Say hello"
    assert len([c for c in chunks if c.choices and c.choices[0].text]) > 1
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(text.split())


async def test_completions_demo(client: Any) -> None:
    reply = await call(client.completions.create(model="demo", prompt="Say hello"))
    assert reply.choices[0].text == f"{DEMO_PREFIX}. You said: Say hello"
    stream = await call(client.completions.create(model="demo", prompt="Say hello", stream=True))
    chunks = await collect(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == reply.choices[0].text


# --------------------------------------------------------------------------- embeddings


async def test_embeddings_base64_default(client: Any, fake_upstream: FakeUpstream) -> None:
    result = await call(
        client.embeddings.create(model="text-embedding-3-small", input="hello world")
    )
    # The SDK asks for base64 unless told otherwise and decodes it: the gateway must pass
    # the base64 string through untouched for the floats to come out right.
    assert fake_upstream.last_request()["body"]["encoding_format"] == "base64"
    assert len(result.data) == 1
    vector = result.data[0].embedding
    assert isinstance(vector, list) and all(isinstance(x, float) for x in vector)
    assert len(vector) == FAKE_DIMENSIONS
    assert vector == embedding_vector("hello world", FAKE_DIMENSIONS)
    assert result.model == "text-embedding-3-small"
    assert result.usage.prompt_tokens == 2


async def test_embeddings_float_format_and_batch(client: Any) -> None:
    texts = ["first text", "second text", "third"]
    result = await call(
        client.embeddings.create(
            model="text-embedding-3-small", input=texts, encoding_format="float"
        )
    )
    assert [d.index for d in result.data] == [0, 1, 2]
    for item, text in zip(result.data, texts, strict=True):
        assert item.embedding == pytest.approx(embedding_vector(text, FAKE_DIMENSIONS), abs=1e-6)


async def test_embeddings_dimensions(client: Any, fake_upstream: FakeUpstream) -> None:
    result = await call(
        client.embeddings.create(model="text-embedding-3-small", input="hello", dimensions=5)
    )
    assert fake_upstream.last_request()["body"]["dimensions"] == 5
    assert len(result.data[0].embedding) == 5
    assert result.data[0].embedding == embedding_vector("hello", 5)


async def test_embeddings_demo(client: Any) -> None:
    raw = await call(client.embeddings.with_raw_response.create(model="demo", input="hello"))
    result = await call(raw.parse())
    assert raw.headers["x-gateway-provider"] == "mock"
    vector = result.data[0].embedding
    assert len(vector) == DEMO_DIMENSIONS
    assert all(isinstance(x, float) and -1.0 <= x <= 1.0 for x in vector)
    again = await call(client.embeddings.create(model="demo", input="hello"))
    assert again.data[0].embedding == vector  # deterministic
    other = await call(client.embeddings.create(model="demo", input="something else"))
    assert other.data[0].embedding != vector
    sized = await call(client.embeddings.create(model="demo", input=["a", "b"], dimensions=4))
    assert [len(d.embedding) for d in sized.data] == [4, 4]


# --------------------------------------------------------------------------- models


async def test_models_list(client: Any) -> None:
    page = await call(client.models.list())
    ids = [m.id for m in page.data]
    for expected in ("auto", "cloud", "gpt-4o-mini", "text-embedding-3-small", "demo"):
        assert expected in ids
    assert len(ids) == len(set(ids))
    owners = {m.id: m.owned_by for m in page.data}
    assert owners["demo"] == "mock"
    assert owners["cloud"] == owners["gpt-4o-mini"] == owners["auto"] == "openai"


async def test_models_retrieve(client: Any) -> None:
    model = await call(client.models.retrieve("demo"))
    assert model.id == "demo"
    assert model.object == "model"
    assert model.owned_by == "mock"
    alias = await call(client.models.retrieve("cloud"))
    assert alias.id == "cloud" and alias.owned_by == "openai"


async def test_models_retrieve_unknown(client: Any) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await call(client.models.retrieve("no-such-model"))
    exc = info.value
    assert exc.status_code == 404
    assert exc.code == "model_not_found"
    assert "no-such-model" in error_body(exc)["message"]


async def test_models_endpoints_carry_the_request_id(client: Any) -> None:
    raw = await call(
        client.models.with_raw_response.list(extra_headers={"x-request-id": "models-req-1"})
    )
    assert raw.headers.get_list("x-request-id") == ["models-req-1"]
    with pytest.raises(openai.NotFoundError) as info:
        await call(
            client.models.retrieve("no-such-model", extra_headers={"x-request-id": "models-req-2"})
        )
    assert info.value.response.headers.get_list("x-request-id") == ["models-req-2"]


async def test_models_list_needs_a_key(gateway: GatewayProcess) -> None:
    bad = openai.OpenAI(base_url=gateway.base_url, api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.models.list()
    bad.close()
    assert info.value.code == "invalid_api_key"


# --------------------------------------------------------------------------- errors


async def test_wrong_key(gateway: GatewayProcess, fake_upstream: FakeUpstream) -> None:
    fake_upstream.clear()
    for cls in (openai.OpenAI, openai.AsyncOpenAI):
        bad = cls(base_url=gateway.base_url, api_key="not-a-key", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as info:
            await call(bad.chat.completions.create(model="gpt-4o-mini", messages=user()))
        await call(bad.close())
        exc = info.value
        assert exc.status_code == 401
        assert exc.code == "invalid_api_key"
        assert error_body(exc)["type"] == "invalid_request_error"  # as OpenAI answers
        assert exc.response.headers["x-request-id"]
    assert fake_upstream.requests() == [], "a rejected client must not reach the upstream"


async def test_unknown_model(client: Any) -> None:
    exc = await chat_error(client, openai.NotFoundError, model="gpt-99-ultra")
    assert exc.status_code == 404
    assert exc.code == "model_not_found"
    body = error_body(exc)
    assert body["param"] == "model"
    assert "gpt-99-ultra" in body["message"]
    assert exc.response.headers.get_list("x-request-id") != []


async def test_missing_messages(client: Any) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await call(client.chat.completions.create(model="gpt-4o-mini", messages=openai.omit))
    exc = info.value
    assert exc.status_code == 400
    assert exc.param == "messages"
    assert error_body(exc)["param"] == "messages"
    assert exc.code == "missing_required_parameter"


async def test_empty_messages(client: Any) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await call(client.chat.completions.create(model="gpt-4o-mini", messages=[]))
    assert info.value.param == "messages"


@pytest.mark.parametrize(
    ("status", "exc_class"),
    [
        (400, openai.BadRequestError),
        (404, openai.NotFoundError),
        (409, openai.ConflictError),
        (422, openai.UnprocessableEntityError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
    ],
)
async def test_upstream_status_passed_through(
    client: Any, status: int, exc_class: type[openai.APIStatusError]
) -> None:
    exc = await chat_error(client, exc_class, {"status": status})
    assert type(exc) is exc_class
    assert exc.status_code == status
    body = error_body(exc)
    assert body["message"] == f"fake error {status}"  # the upstream's own message
    assert exc.response.headers["x-gateway-provider"] == "openai"
    assert exc.response.headers["x-gateway-model"] == UPSTREAM_MODEL
    if status == 429:
        assert exc.code == "rate_limit_exceeded"


async def test_upstream_status_via_fake_header(client: Any) -> None:
    """Client headers reach the upstream (x-fake-* here), credentials do not."""
    with pytest.raises(openai.RateLimitError) as info:
        await call(
            client.chat.completions.create(
                model="gpt-4o-mini", messages=user(), extra_headers={"x-fake-status": "429"}
            )
        )
    assert info.value.status_code == 429


async def test_upstream_error_on_a_stream_request(client: Any) -> None:
    """An upstream error before the first byte is an HTTP error, not a broken stream."""
    with pytest.raises(openai.RateLimitError) as info:
        await call(
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=user(),
                stream=True,
                extra_body={"fake": {"status": 429}},
            )
        )
    assert info.value.status_code == 429
    assert info.value.code == "rate_limit_exceeded"


async def test_upstream_plain_text_error_is_wrapped(client: Any) -> None:
    exc = await chat_error(
        client, openai.InternalServerError, {"status": 503, "error_body": "upstream overloaded"}
    )
    assert exc.status_code == 503
    body = error_body(exc)
    assert body["message"] == "upstream overloaded"
    assert body["type"] == "server_error"


@pytest.mark.parametrize("status", [401, 403])
async def test_upstream_auth_failure_is_a_gateway_fault(
    client: Any, fake_upstream: FakeUpstream, status: int
) -> None:
    exc = await chat_error(client, openai.InternalServerError, {"status": status})
    # The client's key was fine: not AuthenticationError / PermissionDeniedError.
    assert exc.status_code == 502
    assert exc.code == "upstream_auth_failed"
    body = error_body(exc)
    assert body["type"] == "server_error"
    assert "'openai'" in body["message"]
    assert fake_upstream.base_url in body["message"]
    assert f"fake error {status}" in body["message"]


async def test_dead_provider(client: Any) -> None:
    exc = await chat_error(client, openai.InternalServerError, model="dead-model")
    assert exc.status_code == 503
    assert exc.code == "provider_unavailable"
    body = error_body(exc)
    assert re.search(r"provider 'dead' at http://127\.0\.0\.1:\d+/v1", body["message"]), body
    assert exc.response.headers["x-gateway-provider"] == "dead"


async def test_upstream_timeout(client: Any) -> None:
    # The gateway's read timeout for `openai` is 3 s; the fake would answer after 60 s (it
    # stops waiting when the gateway hangs up).
    exc = await chat_error(client, openai.InternalServerError, {"delay_ms": 60_000})
    assert exc.status_code == 504
    assert exc.code == "upstream_timeout"
    assert "'openai'" in error_body(exc)["message"]


async def test_stream_aborted_by_upstream(client: Any) -> None:
    stream = await call(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=user(),
            stream=True,
            extra_body={"fake": {"fail_after": 2}},
        )
    )
    received: list[Any] = []
    with pytest.raises(openai.APIError) as info:
        await consume_into(stream, received)
    exc = info.value
    # The gateway's error event, not a transport error: the client learns what happened.
    assert not isinstance(exc, openai.APIConnectionError)
    text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert text, "some content should have arrived before the failure"
    assert FAKE_REPLY.startswith(text) and text != FAKE_REPLY
    body = error_body(exc)
    assert exc.code == body["code"] == "upstream_error"
    assert "'openai'" in body["message"]


async def test_stream_stalls_past_the_read_timeout(client: Any) -> None:
    """The upstream sends the first event, then nothing for longer than the 3 s read timeout."""
    stream = await call(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=user(),
            stream=True,
            extra_body={"fake": {"chunks": 2, "interval_ms": 60_000}},
        )
    )
    received: list[Any] = []
    with pytest.raises(openai.APIError) as info:
        await consume_into(stream, received)
    exc = info.value
    assert not isinstance(exc, openai.APIConnectionError)
    assert received and received[0].choices[0].delta.role == "assistant"
    assert exc.code == "upstream_timeout"
    assert "'openai'" in error_body(exc)["message"]


async def test_non_stream_body_lost_after_headers(client: Any) -> None:
    """The upstream sends 200 headers, then drops the connection: a 502, not a broken 200."""
    exc = await chat_error(client, openai.InternalServerError, {"fail_after": 0})
    assert exc.status_code == 502
    assert exc.code == "upstream_error"


async def test_embeddings_errors(client: Any) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await call(client.embeddings.create(model="no-such-embedder", input="x"))
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.RateLimitError):
        await call(
            client.embeddings.create(
                model="text-embedding-3-small", input="x", extra_body={"fake": {"status": 429}}
            )
        )
