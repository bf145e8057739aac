"""A real local model behind the gateway: llama-cpp-python's server as the Ollama stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests import llm_server
from tests.conftest import GatewayProcess, local_config, start_gateway


@pytest.fixture(scope="module")
def local_gateway(local_llm: str, workdir: Path) -> Iterator[GatewayProcess]:
    gw = start_gateway(
        local_config(local_llm),
        workdir,
    )
    yield gw
    gw.process.stop()


@pytest.fixture
def client(local_gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=local_gateway.base_url, api_key="unused", max_retries=0)


MESSAGES = [{"role": "user", "content": "Name a colour."}]


@pytest.mark.parametrize("model", ["local", "auto", f"ollama:{llm_server.MODEL_ID}"])
def test_non_stream_completion_from_the_local_model(client: openai.OpenAI, model: str) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=MESSAGES, max_tokens=8
    )
    assert raw.headers["x-gateway-provider"] == "ollama"
    assert raw.headers["x-gateway-model"] == llm_server.MODEL_ID
    reply = raw.parse()
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert 0 < reply.usage.completion_tokens <= 8


def test_streamed_completion_from_the_local_model(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="local", messages=MESSAGES, max_tokens=8, stream=True
    )
    chunks = list(stream)
    assert len(chunks) >= 3
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text.strip()


def test_local_model_errors_arrive_as_openai_errors(client: openai.OpenAI) -> None:
    too_long = [{"role": "user", "content": "word " * 5000}]  # past the server's 2048-token context
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="local", messages=too_long, max_tokens=4)
    assert info.value.status_code == 400
    assert info.value.code == "context_length_exceeded"


def test_models_lists_what_the_local_server_has(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    # Configured names, plus what the Ollama-compatible server reports, as provider:model.
    assert {"auto", "local", llm_server.MODEL_ID} <= ids
    assert f"ollama:{llm_server.MODEL_ID}" not in ids  # already listed under its bare name
