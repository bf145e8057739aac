"""LangChain (`langchain-openai`) against the gateway, over real HTTP on loopback.

ChatOpenAI and OpenAIEmbeddings are pointed at the gateway exactly as a user would point
them at OpenAI; the fake upstream behind it answers deterministically.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel, Field

from tests.conftest import CLIENT_KEY, FakeUpstream, GatewayProcess
from tests.fake_upstream import embedding_vector

PROMPT = "What is the capital of France?"
FAKE_REPLY = f"Fake reply to: {PROMPT}"
FAKE_DIMENSIONS = 8


def chat(gateway: GatewayProcess, model: str = "gpt-4o-mini", **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=gateway.base_url, api_key=CLIENT_KEY, model=model, max_retries=0, **kwargs
    )


def embeddings(
    gateway: GatewayProcess, model: str = "text-embedding-3-small", **kwargs: Any
) -> OpenAIEmbeddings:
    return OpenAIEmbeddings(
        model=model,
        base_url=gateway.base_url,
        api_key=CLIENT_KEY,
        check_embedding_ctx_length=False,
        max_retries=0,
        **kwargs,
    )


@tool
def get_weather(location: str) -> str:
    """Current weather for a city."""
    return f"sunny in {location}"


class GetWeather(BaseModel):
    """Current weather for a city."""

    location: str = Field(description="City name")


# --------------------------------------------------------------------------- chat


def test_invoke(gateway: GatewayProcess, fake_upstream: FakeUpstream) -> None:
    reply = chat(gateway).invoke(PROMPT)
    assert isinstance(reply, AIMessage)
    assert reply.content == FAKE_REPLY
    assert reply.response_metadata["model_name"] == "gpt-4o-mini"
    assert reply.response_metadata["finish_reason"] == "stop"
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["input_tokens"] == len(PROMPT.split())
    assert reply.usage_metadata["output_tokens"] == len(FAKE_REPLY.split())
    sent = fake_upstream.last_request()
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["messages"] == [{"role": "user", "content": PROMPT}]
    assert sent["headers"]["authorization"] != f"Bearer {CLIENT_KEY}"  # the gateway's own key


def test_invoke_with_system_message_and_alias(
    gateway: GatewayProcess, fake_upstream: FakeUpstream
) -> None:
    reply = chat(gateway, model="cloud").invoke([("system", "You are terse."), ("human", PROMPT)])
    assert reply.content == FAKE_REPLY
    body = fake_upstream.last_request()["body"]
    assert body["model"] == "gpt-4o-mini"
    assert [m["role"] for m in body["messages"]] == ["system", "user"]


def test_stream(gateway: GatewayProcess) -> None:
    chunks = list(chat(gateway).stream(PROMPT))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert len([c for c in chunks if c.content]) > 1, "the reply should arrive in pieces"
    assert "".join(str(c.content) for c in chunks) == FAKE_REPLY
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    assert merged.content == FAKE_REPLY


def test_stream_usage(gateway: GatewayProcess, fake_upstream: FakeUpstream) -> None:
    chunks = list(chat(gateway, stream_usage=True).stream(PROMPT))
    assert fake_upstream.last_request()["body"]["stream_options"] == {"include_usage": True}
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    assert merged.content == FAKE_REPLY
    assert merged.usage_metadata is not None
    assert merged.usage_metadata["input_tokens"] == len(PROMPT.split())
    assert merged.usage_metadata["output_tokens"] == len(FAKE_REPLY.split())


async def test_ainvoke(gateway: GatewayProcess) -> None:
    reply = await chat(gateway).ainvoke(PROMPT)
    assert reply.content == FAKE_REPLY


async def test_astream(gateway: GatewayProcess) -> None:
    chunks = [c async for c in chat(gateway).astream(PROMPT)]
    assert "".join(str(c.content) for c in chunks) == FAKE_REPLY


async def test_abatch(gateway: GatewayProcess) -> None:
    replies = await chat(gateway).abatch(["one", "two", "three"])
    assert [r.content for r in replies] == [
        "Fake reply to: one",
        "Fake reply to: two",
        "Fake reply to: three",
    ]


def test_demo_model(gateway: GatewayProcess, fake_upstream: FakeUpstream) -> None:
    fake_upstream.clear()
    reply = chat(gateway, model="demo").invoke("hi there")
    assert reply.content == "Hello from the gateway's demo model. You said: hi there"
    streamed = "".join(str(c.content) for c in chat(gateway, model="demo").stream("hi there"))
    assert streamed == reply.content
    assert fake_upstream.requests() == []


# --------------------------------------------------------------------------- tools


@pytest.mark.parametrize("weather_tool", [get_weather, GetWeather], ids=["at_tool", "pydantic"])
def test_bind_tools(
    gateway: GatewayProcess, fake_upstream: FakeUpstream, weather_tool: Any
) -> None:
    reply = chat(gateway).bind_tools([weather_tool]).invoke("What's the weather in Paris?")
    assert isinstance(reply, AIMessage)
    assert len(reply.tool_calls) == 1
    call = reply.tool_calls[0]
    expected_name = "get_weather" if weather_tool is get_weather else "GetWeather"
    assert call["name"] == expected_name
    assert call["args"] == {"location": "Paris"}
    assert call["id"]
    sent_tool = fake_upstream.last_request()["body"]["tools"][0]
    assert sent_tool["function"]["name"] == expected_name
    assert sent_tool["function"]["parameters"]["required"] == ["location"]


def test_tool_round_trip(gateway: GatewayProcess, fake_upstream: FakeUpstream) -> None:
    llm = chat(gateway).bind_tools([get_weather])
    messages: list[Any] = [HumanMessage("What's the weather in Paris?")]
    ai = llm.invoke(messages)
    messages.append(ai)
    for call in ai.tool_calls:
        result = get_weather.invoke(call)  # runs the tool, returns a ToolMessage
        assert isinstance(result, ToolMessage)
        messages.append(result)
    final = llm.invoke(messages)
    assert final.content == "Tool said: sunny in Paris"
    assert final.tool_calls == []
    sent = fake_upstream.last_request()["body"]["messages"]
    assert sent[-1] == {
        "role": "tool",
        "tool_call_id": ai.tool_calls[0]["id"],
        "content": "sunny in Paris",
    }
    assert sent[-2]["tool_calls"][0]["function"]["name"] == "get_weather"


def test_tool_round_trip_manual_tool_message(gateway: GatewayProcess) -> None:
    llm = chat(gateway).bind_tools([GetWeather])
    ai = llm.invoke("What's the weather in Paris?")
    final = llm.invoke(
        [
            HumanMessage("What's the weather in Paris?"),
            ai,
            ToolMessage(content="sunny", tool_call_id=ai.tool_calls[0]["id"]),
        ]
    )
    assert final.content == "Tool said: sunny"


def test_stream_tool_calls(gateway: GatewayProcess) -> None:
    chunks = list(chat(gateway).bind_tools([get_weather]).stream("Weather in Paris?"))
    assert len([c for c in chunks if c.tool_call_chunks]) > 2, "arguments arrive in pieces"
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    assert len(merged.tool_calls) == 1
    assert merged.tool_calls[0]["name"] == "get_weather"
    assert merged.tool_calls[0]["args"] == {"location": "Paris"}


async def test_astream_tool_calls(gateway: GatewayProcess) -> None:
    llm = chat(gateway).bind_tools([get_weather])
    merged: AIMessageChunk | None = None
    async for chunk in llm.astream("Weather in Paris?"):
        merged = chunk if merged is None else merged + chunk
    assert merged is not None
    assert merged.tool_calls[0]["args"] == {"location": "Paris"}


# --------------------------------------------------------------------------- embeddings


def test_embed_query(gateway: GatewayProcess, fake_upstream: FakeUpstream) -> None:
    vector = embeddings(gateway).embed_query("hello world")
    assert len(vector) == FAKE_DIMENSIONS
    assert vector == pytest.approx(embedding_vector("hello world", FAKE_DIMENSIONS), abs=1e-6)
    body = fake_upstream.last_request()["body"]
    assert body["model"] == "text-embedding-3-small"
    assert body["input"] == ["hello world"]


def test_embed_documents(gateway: GatewayProcess) -> None:
    texts = ["first document", "second document", "third"]
    vectors = embeddings(gateway).embed_documents(texts)
    assert len(vectors) == len(texts)
    assert all(len(v) == FAKE_DIMENSIONS for v in vectors)
    for vector, text in zip(vectors, texts, strict=True):
        assert vector == pytest.approx(embedding_vector(text, FAKE_DIMENSIONS), abs=1e-6)


def test_embed_dimensions(gateway: GatewayProcess, fake_upstream: FakeUpstream) -> None:
    vectors = embeddings(gateway, dimensions=4).embed_documents(["a", "b"])
    assert [len(v) for v in vectors] == [4, 4]
    assert fake_upstream.last_request()["body"]["dimensions"] == 4


async def test_aembed(gateway: GatewayProcess) -> None:
    emb = embeddings(gateway)
    query = await emb.aembed_query("hello world")
    docs = await emb.aembed_documents(["hello world", "other"])
    assert query == pytest.approx(embedding_vector("hello world", FAKE_DIMENSIONS), abs=1e-6)
    assert docs[0] == pytest.approx(query)
    assert len(docs[1]) == FAKE_DIMENSIONS


def test_embed_demo(gateway: GatewayProcess) -> None:
    vectors = embeddings(gateway, model="demo").embed_documents(["a", "b"])
    assert [len(v) for v in vectors] == [16, 16]
    assert vectors[0] != vectors[1]


# --------------------------------------------------------------------------- errors


def test_unknown_model(gateway: GatewayProcess) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        chat(gateway, model="gpt-99-ultra").invoke(PROMPT)
    assert info.value.status_code == 404
    assert info.value.code == "model_not_found"


async def test_unknown_model_async_stream(gateway: GatewayProcess) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        async for _ in chat(gateway, model="gpt-99-ultra").astream(PROMPT):
            pass
    assert info.value.code == "model_not_found"


def test_wrong_key(gateway: GatewayProcess) -> None:
    llm = ChatOpenAI(base_url=gateway.base_url, api_key="wrong", model="gpt-4o-mini", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        llm.invoke(PROMPT)
    assert info.value.code == "invalid_api_key"


def test_upstream_rate_limit(gateway: GatewayProcess) -> None:
    llm = chat(gateway, extra_body={"fake": {"status": 429}})
    with pytest.raises(openai.RateLimitError) as info:
        llm.invoke(PROMPT)
    assert info.value.status_code == 429


def test_embeddings_unknown_model(gateway: GatewayProcess) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        embeddings(gateway, model="no-such-embedder").embed_query("x")
    assert info.value.code == "model_not_found"


def test_stream_aborted_by_upstream(gateway: GatewayProcess) -> None:
    llm = chat(gateway, extra_body={"fake": {"fail_after": 2}})
    received: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for chunk in llm.stream(PROMPT):
            received.append(str(chunk.content))
    assert not isinstance(info.value, openai.APIConnectionError)
    assert info.value.code == "upstream_error"
    text = "".join(received)
    assert text and FAKE_REPLY.startswith(text) and text != FAKE_REPLY
