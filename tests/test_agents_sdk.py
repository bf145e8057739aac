"""The OpenAI Agents SDK, unchanged, through the gateway: its defaults (the Responses API, the
SDK's own default model name), `set_default_openai_client` pointed at the gateway, tracing off.

Against the fake cloud upstream in both modes (a gateway whose `openai` provider claims
`gpt-*` natively, and one that translates), and against the local llama.cpp server. The fake
upstream's script makes an agent's turns checkable: a function tool in the request gets a
call to it, a tool's output gets "Tool said: <output>", anything else "Fake reply to: ...".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    Runner,
    function_tool,
    set_default_openai_client,
    set_tracing_disabled,
)
from agents.models.default_models import get_default_model
from openai.types.responses import ResponseTextDeltaEvent

from tests.conftest import UPSTREAM_KEY, FakeUpstream, GatewayProcess, local_config, start_gateway

KEY = "agents-key"
UPSTREAM_PATH = {"native": "/v1/responses", "translate": "/v1/chat/completions"}
QUESTION = "What is the capital of France?"


def cloud_config(upstream: FakeUpstream, mode: str) -> str:
    return f"""
    auth: {{api_keys: "{KEY}"}}
    providers:
      openai:
        type: openai
        responses: {mode}
        base_url: {upstream.base_url}
        api_key: {UPSTREAM_KEY}
        models: ["gpt-*", "o[0-9]*"]   # an app's own model names, the SDK's default too
        breaker: {{enabled: false}}
    routing: {{default_model: "openai:gpt-4o-mini"}}
    """


@pytest.fixture(scope="module", params=["native", "translate"])
def cloud(
    request: pytest.FixtureRequest, fake_upstream: FakeUpstream, workdir: Path
) -> Iterator[tuple[str, GatewayProcess]]:
    mode = str(request.param)
    gw = start_gateway(cloud_config(fake_upstream, mode), workdir)
    yield mode, gw
    gw.process.stop()


@pytest.fixture
async def client(cloud: tuple[str, GatewayProcess]) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=cloud[1].base_url, api_key=KEY, max_retries=0) as c:
        set_tracing_disabled(True)
        set_default_openai_client(c, use_for_tracing=False)
        yield c


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"


def sent_bodies(fake: FakeUpstream, mode: str) -> list[dict[str, Any]]:
    return [r["body"] for r in fake.requests() if r["path"] == UPSTREAM_PATH[mode]]


async def test_plain_agent(
    client: openai.AsyncOpenAI, cloud: tuple[str, GatewayProcess], fake_upstream: FakeUpstream
) -> None:
    mode = cloud[0]
    fake_upstream.clear()
    agent = Agent(name="Assistant", instructions="Answer briefly.")  # no model: the SDK's
    result = await Runner.run(agent, QUESTION)
    assert result.final_output == f"Fake reply to: {QUESTION}"
    (sent,) = sent_bodies(fake_upstream, mode)
    assert sent["model"] == get_default_model()  # claimed by the `gpt-*` pattern
    assert result.last_response_id


async def test_streamed_run(client: openai.AsyncOpenAI, cloud: tuple[str, GatewayProcess]) -> None:
    agent = Agent(name="Assistant", instructions="Answer briefly.")
    result = Runner.run_streamed(agent, QUESTION)
    deltas: list[str] = []
    async for event in result.stream_events():
        if event.type == "raw_response_event" and isinstance(event.data, ResponseTextDeltaEvent):
            deltas.append(event.data.delta)
    assert len(deltas) > 1
    assert "".join(deltas) == result.final_output == f"Fake reply to: {QUESTION}"


async def test_function_tool_result_is_used(
    client: openai.AsyncOpenAI, cloud: tuple[str, GatewayProcess], fake_upstream: FakeUpstream
) -> None:
    mode = cloud[0]
    fake_upstream.clear()
    agent = Agent(name="Weather", instructions="Use the tool.", tools=[get_weather])
    result = await Runner.run(agent, "Weather in Paris?")
    assert result.final_output == "Tool said: Sunny in Paris"
    first, second = sent_bodies(fake_upstream, mode)
    if mode == "translate":
        assert first["tools"][0]["function"]["name"] == "get_weather"
        assert second["messages"][-1] == {
            "role": "tool",
            "tool_call_id": "call_fake_1",
            "content": "Sunny in Paris",
        }
    else:
        assert second["input"][-1]["type"] == "function_call_output"


async def test_streamed_function_tool(
    client: openai.AsyncOpenAI, cloud: tuple[str, GatewayProcess]
) -> None:
    agent = Agent(name="Weather", instructions="Use the tool.", tools=[get_weather])
    result = Runner.run_streamed(agent, "Weather in Paris?")
    kinds = [
        event.name
        async for event in result.stream_events()
        if event.type == "run_item_stream_event"
    ]
    assert "tool_called" in kinds and "tool_output" in kinds
    assert result.final_output == "Tool said: Sunny in Paris"


async def test_handoff(client: openai.AsyncOpenAI, cloud: tuple[str, GatewayProcess]) -> None:
    spanish = Agent(name="Spanish agent", instructions="Answer in Spanish.")
    triage = Agent(name="Triage", instructions="Hand Spanish off.", handoffs=[spanish])
    result = await Runner.run(triage, "Hola, ¿qué tal?")
    assert result.last_agent is spanish
    assert isinstance(result.final_output, str)
    assert result.final_output.startswith("Tool said:")  # the handoff's output, answered


async def test_second_turn_with_previous_response_id(
    client: openai.AsyncOpenAI, cloud: tuple[str, GatewayProcess], fake_upstream: FakeUpstream
) -> None:
    mode = cloud[0]
    agent = Agent(name="Assistant", instructions="Answer briefly.")
    first = await Runner.run(agent, "My name is Ada.")
    fake_upstream.clear()
    second = await Runner.run(
        agent, "What is my name?", previous_response_id=first.last_response_id
    )
    assert second.final_output == "Fake reply to: What is my name?"
    (sent,) = sent_bodies(fake_upstream, mode)
    assert "previous_response_id" not in sent
    history = str(sent["messages"] if mode == "translate" else sent["input"])
    assert "My name is Ada." in history and "Fake reply to: My name is Ada." in history


async def test_chat_completions_model(
    client: openai.AsyncOpenAI, cloud: tuple[str, GatewayProcess], fake_upstream: FakeUpstream
) -> None:
    fake_upstream.clear()
    model = OpenAIChatCompletionsModel(model="gpt-4o-mini", openai_client=client)
    agent = Agent(name="Weather", instructions="Use the tool.", tools=[get_weather], model=model)
    result = await Runner.run(agent, "Weather in Paris?")
    assert result.final_output == "Tool said: Sunny in Paris"
    assert {r["path"] for r in fake_upstream.requests()} == {"/v1/chat/completions"}


# --------------------------------------------------------------------------- local model


@pytest.fixture(scope="module")
def local_gateway(local_llm: str, workdir: Path) -> Iterator[GatewayProcess]:
    gw = start_gateway(
        local_config(local_llm, "default_model: local, unknown_model: auto"),
        workdir,
    )
    yield gw
    gw.process.stop()


@pytest.fixture
async def local_client(local_gateway: GatewayProcess) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=local_gateway.base_url, api_key="unused", max_retries=0
    ) as c:
        set_tracing_disabled(True)
        set_default_openai_client(c, use_for_tracing=False)
        yield c


# The local model is a base model that almost never ends a reply by itself (tests/llm_server.py),
# and the Agents SDK refuses an incomplete answer: a stop sequence ends it, passed through to
# the chat server (extra_body) as translation passes chat's own `stop`.
SHORT = ModelSettings(max_tokens=64, temperature=0, extra_body={"stop": ["\n"]})


async def test_local_plain_agent(local_client: openai.AsyncOpenAI) -> None:
    # No model: the SDK's default name, sent through the rules (unknown_model: auto).
    agent = Agent(name="Assistant", instructions="Reply with one word only.", model_settings=SHORT)
    result = await Runner.run(agent, "Name a colour.")
    assert isinstance(result.final_output, str) and result.final_output.strip()


async def test_local_streamed_agent(local_client: openai.AsyncOpenAI) -> None:
    agent = Agent(name="Assistant", instructions="Reply with one word only.", model="local",
                  model_settings=SHORT)  # fmt: skip
    result = Runner.run_streamed(agent, "Name a colour.")
    deltas = [
        event.data.delta
        async for event in result.stream_events()
        if event.type == "raw_response_event" and isinstance(event.data, ResponseTextDeltaEvent)
    ]
    assert deltas and "".join(deltas) == result.final_output
    assert result.final_output.strip()
