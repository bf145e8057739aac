"""The Responses API layer's parts in process: the stored responses (memory and Redis), the
conversation stage, the translation's edges both ways, the translated and native streams.

tests/test_responses_translate.py checks the common shapes with the openai SDK's types;
this file pins what docs/AGENTS.md promises at the edges (each refusal's path and code, the
defaults a response echoes, usage, the order and content of stream events, failures), so a
mutation run of gateway/responses/* (docs/TESTING.md) has in-process tests to run. Redis at
127.0.0.1:6379 is used with a prefix of its own (skipped without it).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import httpx
import orjson
import pytest
import redis
import redis.asyncio
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from bench.procs import free_port
from gateway.chain.auth import Principal
from gateway.context import RequestContext
from gateway.errors import InvalidRequest, NotFound, StateUnavailable
from gateway.responses.native import (
    NativeStream,
    answer_from_response,
    chat_usage,
    restore_response,
)
from gateway.responses.request import input_items, input_list, new_id, to_chat
from gateway.responses.response import (
    failed_response,
    from_chat,
    response_error,
    response_object,
    usage_from_chat,
)
from gateway.responses.store import (
    MemoryResponseStore,
    RedisResponseStore,
    StoreUnavailable,
    build_response_store,
    decode,
    encode,
)
from gateway.responses.stream import ResponseStream
from gateway.responses.turn import ConversationStage, read_record, tenant_of
from tests.conftest import UPSTREAM_KEY, FakeUpstream, in_process, redis_or_skip

EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
CREATED = 1_767_000_000


def refused(body: dict[str, Any], history: list[Any] | None = None) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        to_chat(body, history)
    assert caught.value.status == 400
    return caught.value


# ------------------------------------------------------------------ the stores


async def test_memory_store_keeps_replaces_and_deletes() -> None:
    store = MemoryResponseStore(ttl=3600, max_items=10)
    assert await store.get("resp_a") is None
    await store.put("resp_a", b"A")
    await store.put("resp_b", b"B")
    assert (await store.get("resp_a"), await store.get("resp_b")) == (b"A", b"B")
    await store.put("resp_a", b"A2")
    assert await store.get("resp_a") == b"A2"
    assert await store.delete("resp_a") is True
    assert await store.get("resp_a") is None
    assert await store.delete("resp_a") is False
    assert await store.get("resp_b") == b"B"  # each id on its own


async def test_memory_store_forgets_after_its_ttl() -> None:
    store = MemoryResponseStore(ttl=-1, max_items=10)  # already past its time when read
    await store.put("resp_old", b"x")
    assert await store.get("resp_old") is None
    store.configure(3600, 10)  # a reload's new TTL applies to what is stored next
    await store.put("resp_new", b"y")
    assert await store.get("resp_new") == b"y"
    store.configure(-1, 10)
    await store.put("resp_newer", b"z")
    assert await store.get("resp_newer") is None


async def test_memory_store_drops_the_least_recently_used_beyond_max_items() -> None:
    store = MemoryResponseStore(ttl=3600, max_items=2)
    await store.put("a", b"1")
    await store.put("b", b"2")
    assert await store.get("a") == b"1"  # read: now the most recent
    await store.put("c", b"3")
    assert [await store.get(k) for k in ("a", "b", "c")] == [b"1", None, b"3"]
    await store.put("a", b"4")  # written again: the most recent (c is now the oldest)
    await store.put("d", b"5")
    assert [await store.get(k) for k in ("a", "c", "d")] == [b"4", None, b"5"]
    store.configure(3600, 1)  # a smaller max_items applies from the next put
    await store.put("e", b"6")
    assert [await store.get(k) for k in ("a", "d", "e")] == [None, None, b"6"]


def test_records_round_trip_and_the_store_kind_follows_redis() -> None:
    record = {"tenant": "key:a", "response": {"id": "resp_1"}, "conversation": ["é", 1]}
    assert decode(encode(record)) == record
    memory = build_response_store(None, "gw:", 60, 5)
    assert isinstance(memory, MemoryResponseStore)
    assert (memory.ttl, memory.max_items) == (60, 5)


@pytest.fixture
async def redis_client() -> AsyncIterator[tuple[Any, str]]:
    """A client of the shared Redis and a key prefix of this test's own (removed after)."""
    client = await redis_or_skip()
    prefix = f"test-{uuid4().hex}:"
    yield client, prefix
    keys = [k async for k in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_redis_store_keys_ttl_and_isolation(redis_client: tuple[Any, str]) -> None:
    client, prefix = redis_client
    store = build_response_store(client, prefix, 90.7, 5)
    assert isinstance(store, RedisResponseStore)
    assert await store.get("resp_1") is None
    await store.put("resp_1", b'{"a":1}')
    assert await store.get("resp_1") == b'{"a":1}'
    key = prefix + "resp:resp_1"  # under the gateway's prefix, apart from its other keys
    assert await client.get(key) == b'{"a":1}'
    assert 80_000 < await client.pttl(key) <= 90_000  # whole seconds, the TTL's
    # Another prefix (another gateway's state) does not see it.
    other = RedisResponseStore(client, prefix + "other:", 60)
    assert await other.get("resp_1") is None
    assert await other.delete("resp_1") is False
    store.configure(30.9, 1)  # a reload's TTL; max_items is Redis's own business
    await store.put("resp_2", b"2")
    await store.put("resp_3", b"3")
    assert 20_000 < await client.pttl(prefix + "resp:resp_2") <= 30_000
    assert await store.get("resp_2") == b"2" and await store.get("resp_1") == b'{"a":1}'
    assert await store.delete("resp_1") is True
    assert await store.get("resp_1") is None
    assert await store.delete("resp_1") is False
    # A TTL under a second is one second, never "keep forever" or an error.
    short = RedisResponseStore(client, prefix, 0.4)
    await short.put("resp_s", b"s")
    assert 0 < await client.pttl(prefix + "resp:resp_s") <= 1000
    short.configure(0.2, 1)
    await short.put("resp_t", b"t")
    assert 0 < await client.pttl(prefix + "resp:resp_t") <= 1000


def dead_redis() -> Any:
    """A client of a port where nothing listens; no retries (they only take time here)."""
    return redis.asyncio.Redis(
        port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )


async def test_redis_store_unreachable_is_store_unavailable() -> None:
    dead = dead_redis()
    for name, args in (("get", ("r",)), ("put", ("r", b"x")), ("delete", ("r",))):
        store = RedisResponseStore(dead, "p:", 60)  # each its own, past the outage guard
        with pytest.raises(StoreUnavailable):
            await getattr(store, name)(*args)
    await dead.aclose()


# ------------------------------------------------------------------ the conversation stage


def context(body: dict[str, Any], key: str | None = "alice") -> RequestContext:
    ctx = RequestContext("req_1", "responses", "/responses", [], 0.0, body=body, principal="fp")
    ctx.key = Principal(key, "default") if key is not None else None
    return ctx


def test_a_response_belongs_to_the_key_that_made_it() -> None:
    assert tenant_of(context({})) == "key:alice"
    assert tenant_of(context({}, key=None)) == "key:fp"  # a plain key: its fingerprint


async def stored(store: MemoryResponseStore, tenant: str, conversation: list[Any]) -> bytes:
    raw = encode({"tenant": tenant, "response": {"id": "resp_0"}, "conversation": conversation})
    await store.put("resp_0", raw)
    return raw


async def test_previous_response_id_puts_the_conversation_first() -> None:
    store = MemoryResponseStore(3600, 10)
    earlier = [
        {"type": "message", "role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
    ]
    raw = await stored(store, "key:alice", earlier)
    output = {"type": "function_call_output", "call_id": "c1", "output": "Sunny"}
    body = {
        "model": "m",
        "previous_response_id": "resp_0",
        "input": [output],
        "tools": [{"type": "function", "name": "get_weather"}],
        "store": False,
    }
    ctx = context(body)
    ctx.prompt_tokens_estimate = 7
    await ConversationStage(store)(ctx)
    # The id taken out, the whole conversation in: no upstream needs state of its own.
    assert ctx.body == {
        "model": "m",
        "input": [*earlier, output],
        "tools": body["tools"],
        "store": False,
    }
    assert ctx.body_changed and "tools" in ctx.needs
    assert ctx.prompt_tokens_estimate == 7 + len(raw) // 4  # the earlier turns count too
    turn = ctx.turn
    assert turn is not None and turn.request is body and turn.previous_id == "resp_0"
    assert turn.conversation == [*earlier, output] and turn.tenant == "key:alice"
    assert turn.store is False  # store: false keeps nothing
    assert [i["type"] for i in turn.input_items] == ["function_call_output"]
    assert re.fullmatch(r"resp_[0-9a-f]{32}", turn.response_id)
    assert abs(turn.created_at - time.time()) < 3600 and isinstance(turn.created_at, int)
    # Read again by the same key: the record is still there.
    assert (await read_record(store, "resp_0", "key:alice")) == (decode(raw), len(raw))


async def test_a_request_without_previous_id_is_left_as_sent() -> None:
    body = {"model": "m", "input": "Hi", "instructions": "Be brief."}
    ctx = context(body)
    await ConversationStage(MemoryResponseStore(3600, 10))(ctx)
    assert ctx.body is body and not ctx.body_changed and ctx.prompt_tokens_estimate == 0
    turn = ctx.turn
    assert turn is not None and turn.previous_id is None and turn.store is True
    assert turn.conversation == [{"type": "message", "role": "user", "content": "Hi"}]
    assert turn.input_items[0]["content"] == [{"type": "input_text", "text": "Hi"}]
    # Items only a native upstream takes pass the stage (their shape is still checked).
    hosted = {"type": "web_search_call", "id": "ws_1", "status": "completed"}
    ctx = context({"model": "m", "input": [hosted]})
    await ConversationStage(MemoryResponseStore(3600, 10))(ctx)
    assert ctx.turn is not None and ctx.turn.input_items == [hosted]


async def test_an_unknown_or_another_keys_previous_id_is_404() -> None:
    store = MemoryResponseStore(3600, 10)
    await stored(store, "key:bob", [{"role": "user", "content": "secret"}])
    for previous in ("resp_0", "resp_missing"):  # bob's, and nobody's: the same answer
        with pytest.raises(NotFound) as caught:
            await ConversationStage(store)(
                context({"input": "x", "previous_response_id": previous})
            )
        error = caught.value
        assert (error.status, error.code) == (404, "previous_response_not_found")
        assert (error.param, error.type) == ("previous_response_id", "invalid_request_error")
        assert f"'{previous}' not found" in error.message
    assert await read_record(store, "resp_0", "key:alice") is None
    long_id = "resp_" + "x" * 300
    with pytest.raises(NotFound) as caught:
        await ConversationStage(store)(context({"input": "x", "previous_response_id": long_id}))
    assert f"'{long_id[:128]}' not found" in caught.value.message


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"input": "x", "previous_response_id": 5}, "previous_response_id", "invalid_type"),
        ({"input": "x", "previous_response_id": ""}, "previous_response_id", None),
        ({"input": "x", "instructions": ["a"]}, "instructions", "invalid_type"),
        ({"input": [{"role": "user", "content": 5}]}, "input[0].content", "invalid_type"),
    ],
)
async def test_bad_stage_input_is_400(body: dict[str, Any], param: str, code: str | None) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await ConversationStage(MemoryResponseStore(3600, 10))(context(body))
    assert caught.value.param == param
    if code is not None:
        assert caught.value.code == code


async def test_an_unreachable_store_is_503() -> None:
    dead = dead_redis()
    stage = ConversationStage(RedisResponseStore(dead, "p:", 60))
    with pytest.raises(StateUnavailable) as caught:
        await stage(context({"input": "x", "previous_response_id": "resp_1"}))
    assert caught.value.status == 503 and "Redis" in caught.value.message
    await dead.aclose()


# ------------------------------------------------------------------ requests to chat


def test_new_ids_are_prefixed_and_unique() -> None:
    first, second = new_id("resp"), new_id("resp")
    assert re.fullmatch(r"resp_[0-9a-f]{32}", first) and first != second


@pytest.mark.parametrize(
    ("extra", "param", "wording"),
    [
        ({"prompt": {"id": "pmpt_1"}}, "prompt", "'prompt' is not supported on this model"),
        ({"conversation": "conv_1"}, "conversation", "'conversation' is not supported"),
        ({"background": True}, "background", "Background responses are not supported"),
    ],
)
def test_what_chat_cannot_take_is_refused_as_unsupported(
    extra: dict[str, Any], param: str, wording: str
) -> None:
    error = refused({"model": "m", "input": "x", **extra})
    assert (error.param, error.code) == (param, "unsupported_value")
    assert wording in error.message
    assert "through Chat Completions, which has no equivalent" in error.message


def test_what_is_dropped_or_passed_through() -> None:
    body = {
        "model": "m",
        "input": "x",
        "background": False,
        "prompt": None,
        "conversation": None,
        "include": ["reasoning.encrypted_content"],
        "truncation": "auto",
        "service_tier": "flex",
        "metadata": {"a": "b"},
        "store": True,
        "stop": ["\n"],
        "seed": 7,
        "frequency_penalty": 0.5,
        "presence_penalty": -0.5,
        "temperature": 0,
        "text": {"verbosity": "low"},
        "reasoning": {"effort": "none", "summary": "auto"},
        "stream": False,
    }
    assert to_chat(body, None) == {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "stop": ["\n"],
        "seed": 7,
        "frequency_penalty": 0.5,
        "presence_penalty": -0.5,
        "temperature": 0,
    }
    high = to_chat({"model": "m", "input": "x", "reasoning": {"effort": "high"}}, None)
    assert high["reasoning_effort"] == "high"
    assert "reasoning_effort" not in to_chat({"model": "m", "input": "x", "reasoning": {}}, None)


def test_instructions_alone_are_no_input() -> None:
    error = refused({"model": "m", "instructions": "Be brief."})
    assert (error.param, error.code) == ("input", "missing_required_parameter")
    assert error.message == "Missing required parameter: 'input'."
    # Only reasoning items: nothing a chat server can answer either.
    assert refused({"model": "m", "input": [{"type": "reasoning", "summary": []}]}).param == "input"
    # The earlier turns alone are enough (a follow-up may send no new input).
    history = [{"type": "message", "role": "user", "content": "Hi"}]
    assert to_chat({"model": "m"}, history)["messages"] == [{"role": "user", "content": "Hi"}]


def test_earlier_turns_are_checked_under_their_own_path() -> None:
    history = [{"type": "reasoning", "id": "rs_1"}, {"role": "user", "content": 5}]
    error = refused({"model": "m", "input": "x"}, history)
    assert error.param == "previous_response_id.items[1].content"


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"instructions": 5}, "instructions", "invalid_type"),
        ({"tools": {"type": "function"}}, "tools", "invalid_type"),
        ({"tools": ["get_weather"]}, "tools[0]", "invalid_type"),
        ({"tools": [{"type": "function"}]}, "tools[0].name", "missing_required_parameter"),
        (
            {"tools": [{"type": "function", "name": "f", "description": 3}]},
            "tools[0].description",
            "invalid_type",
        ),
        ({"tools": [{"name": "f"}]}, "tools[0].type", "unsupported_value"),
        ({"text": "json"}, "text", "invalid_type"),
        ({"text": {"format": "json_object"}}, "text.format", "invalid_type"),
        (
            {"text": {"format": {"type": "json_schema", "name": "n"}}},
            "text.format.schema",
            "missing_required_parameter",
        ),
        (
            {"text": {"format": {"type": "json_schema", "schema": {}}}},
            "text.format.name",
            "missing_required_parameter",
        ),
        ({"text": {"format": {}}}, "text.format.type", "missing_required_parameter"),
        ({"reasoning": "high"}, "reasoning", "invalid_type"),
        ({"input": {"role": "user"}}, "input", "invalid_type"),
        (
            {"input": [{"content": "no role, no type"}]},
            "input[0].type",
            "missing_required_parameter",
        ),
        ({"input": [{"type": 3}]}, "input[0].type", "invalid_type"),
        ({"input": [{"type": "message", "content": "x"}]}, "input[0].role", None),
        ({"input": [{"role": "user", "content": ["x"]}]}, "input[0].content[0]", "invalid_type"),
        (
            {"input": [{"role": "user", "content": [{"text": "x"}]}]},
            "input[0].content[0].type",
            None,
        ),
        ({"input": [{"role": "assistant", "content": 1}]}, "input[0].content", "invalid_type"),
        (
            {"input": [{"role": "assistant", "content": [{"type": "input_image"}]}]},
            "input[0].content[0].type",
            "invalid_value",
        ),
        (
            {"input": [{"role": "assistant", "content": [{"type": "refusal"}]}]},
            "input[0].content[0].refusal",
            "missing_required_parameter",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": ""}]}]},
            "input[0].content[0].image_url",
            "invalid_type",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image"}]}]},
            "input[0].content[0].image_url",
            "missing_required_parameter",
        ),
        (
            {"input": [{"type": "function_call", "call_id": "c", "arguments": "{}"}]},
            "input[0].name",
            None,
        ),
        (
            {"input": [{"type": "function_call", "call_id": "c", "name": "f"}]},
            "input[0].arguments",
            None,
        ),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id", None),
        (
            {
                "input": [
                    {"type": "function_call_output", "call_id": "c", "output": [{"type": "x"}]}
                ]
            },
            "input[0].output[0].type",
            "invalid_value",
        ),
        (
            {
                "input": [
                    {
                        "type": "function_call_output",
                        "call_id": "c",
                        "output": [{"type": "input_file"}],
                    }
                ]
            },
            "input[0].output[0].type",
            "unsupported_value",
        ),
        (
            {
                "input": [
                    {
                        "type": "function_call_output",
                        "call_id": "c",
                        "output": [{"type": "input_image"}],
                    }
                ]
            },
            "input[0].output[0].type",
            "unsupported_value",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "input[0].content[0].type",
            "unsupported_value",
        ),
    ],
)
def test_each_refusal_names_its_path(body: dict[str, Any], param: str, code: str | None) -> None:
    error = refused({"model": "m", "input": "x", **body})
    assert error.param == param, error.message
    if code is not None:
        assert error.code == code, error.message


def test_refusal_wording() -> None:
    bad_role = refused({"model": "m", "input": [{"role": "tool", "content": "x"}]})
    assert bad_role.code == "invalid_value"
    assert bad_role.message == (
        "Invalid value for 'input[0].role': 'tool'. Supported values are: "
        "'user', 'system', 'developer', 'assistant'."
    )
    no_role = refused({"model": "m", "input": [{"type": "message", "content": "x"}]})
    assert (no_role.code, no_role.message) == (
        "missing_required_parameter",
        "Missing required parameter: 'input[0].role'.",
    )
    long_kind = "k" * 100
    item = refused({"model": "m", "input": [{"type": long_kind}]})
    assert item.code == "unsupported_value"
    assert item.message.startswith(f"Input items of type {'k' * 64!r} are not supported on")
    tool = refused({"model": "m", "input": "x", "tools": [{"type": long_kind}]})
    assert tool.message.startswith(f"Tools of type {'k' * 64!r} are not supported, only func")
    part = refused({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file"}]}]})
    assert part.message.startswith("Content parts of type 'input_file' are not supported on")
    output = {"type": "function_call_output", "call_id": "c", "output": [{"type": "input_image"}]}
    tool_output = refused({"model": "m", "input": [output]})
    assert tool_output.message.startswith("Tool outputs of type 'input_image' are not supported")
    by_file = refused(
        {
            "model": "m",
            "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}],
        }
    )
    assert (by_file.param, by_file.code) == ("input[0].content[0].file_id", "unsupported_value")
    assert by_file.message.startswith("Images by file_id are not supported on this model")
    assert refused(
        {"model": "m", "input": [{"role": "user", "content": [{"type": "x"}]}]}
    ).message == (
        "Invalid value for 'input[0].content[0].type': 'x'. Supported values are: "
        "'input_text', 'input_image'."
    )
    fmt = refused({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}})
    assert fmt.message.endswith("Supported values are: 'text', 'json_object', 'json_schema'.")


def test_tools_and_tool_choice() -> None:
    tool = {"type": "function", "name": "f", "parameters": None, "strict": None}
    chat = to_chat({"model": "m", "input": "x", "tools": [tool], "tool_choice": "none"}, None)
    assert chat["tools"] == [{"type": "function", "function": {"name": "f"}}]
    assert chat["tool_choice"] == "none" and "parallel_tool_calls" not in chat
    for choice in ("auto", "required"):
        assert (
            to_chat({"model": "m", "input": "x", "tools": [tool], "tool_choice": choice}, None)[
                "tool_choice"
            ]
            == choice
        )
    # Chat refuses tool_choice and parallel_tool_calls without tools: both dropped with them.
    bare = to_chat(
        {
            "model": "m",
            "input": "x",
            "tools": [],
            "tool_choice": "required",
            "parallel_tool_calls": True,
        },
        None,
    )
    assert "tools" not in bare and "tool_choice" not in bare and "parallel_tool_calls" not in bare
    no_tools = to_chat({"model": "m", "input": "x", "tool_choice": "auto"}, None)
    assert "tool_choice" not in no_tools
    bad = refused({"model": "m", "input": "x", "tools": [tool], "tool_choice": "any"})
    assert (bad.param, bad.code) == ("tool_choice", "invalid_value")
    assert bad.message.endswith("Supported values are: 'auto', 'none', 'required'.")
    hosted = refused({"model": "m", "input": "x", "tools": [tool], "tool_choice": {"type": "mcp"}})
    assert (hosted.param, hosted.code) == ("tool_choice", "unsupported_value")
    assert hosted.message.startswith("tool_choice 'mcp' is not supported")
    odd = refused({"model": "m", "input": "x", "tools": [tool], "tool_choice": 3})
    assert odd.message.startswith("tool_choice '3' is not supported")
    unnamed = refused(
        {"model": "m", "input": "x", "tools": [tool], "tool_choice": {"type": "function"}}
    )
    assert unnamed.param == "tool_choice.name"


def test_json_schema_format_keeps_description_and_strict_only_when_given() -> None:
    schema = {"type": "object"}
    fmt = {
        "type": "json_schema",
        "name": "n",
        "schema": schema,
        "description": "d",
        "strict": False,
    }
    chat = to_chat({"model": "m", "input": "x", "text": {"format": fmt}}, None)
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "n", "schema": schema, "strict": False, "description": "d"},
    }
    bare = {"type": "json_schema", "name": "n", "schema": schema, "strict": None}
    chat = to_chat({"model": "m", "input": "x", "text": {"format": bare}}, None)
    assert chat["response_format"]["json_schema"] == {"name": "n", "schema": schema}
    assert "response_format" not in to_chat({"model": "m", "input": "x", "text": {}}, None)


def test_messages_and_parts_to_chat() -> None:
    body = {
        "model": "m",
        "input": [
            {"type": "message", "role": "system", "content": "Sys."},
            {"role": "developer", "content": [{"type": "input_text", "text": "Dev."}]},
            {
                "role": "user",
                "content": [
                    {"type": "input_image", "image_url": "https://x/a.png"},
                    {"type": "input_image", "image_url": "https://x/b.png", "detail": "high"},
                    {"type": "input_image", "image_url": "https://x/c.png", "detail": "original"},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "refusal", "refusal": "No. "},
                    {"type": "input_text", "text": "Then "},
                    {"type": "output_text", "text": "this."},
                ],
            },
            {"role": "assistant", "content": "Plain."},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"role": "user", "content": "Next."},
            {"type": "function_call", "call_id": "c2", "name": "g", "arguments": '{"a":1}'},
        ],
    }
    messages = to_chat(body, None)["messages"]
    assert messages == [
        {"role": "system", "content": "Sys."},
        {"role": "system", "content": "Dev."},  # developer is system to older chat servers
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "auto"}},
                {"type": "image_url", "image_url": {"url": "https://x/b.png", "detail": "high"}},
                {
                    "type": "image_url",
                    "image_url": {"url": "https://x/c.png"},
                },  # chat has no "original"
            ],
        },
        {"role": "assistant", "content": "No. Then this."},
        {
            "role": "assistant",
            "content": "Plain.",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "user", "content": "Next."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": '{"a":1}'}}
            ],
        },
    ]
    first_call = to_chat({"model": "m", "input": body["input"][5:6]}, None)["messages"]
    assert first_call == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        }
    ]


def test_input_items_as_listed_and_kept() -> None:
    assert input_items({"model": "m"}) == []
    image = {"type": "input_image", "image_url": "https://x/a.png", "detail": None}
    items = input_items(
        {
            "input": [
                {"id": "msg_given", "role": "user", "content": [image]},
                {"id": "", "role": "assistant", "content": "Hi"},
                {
                    "id": "fc_given",
                    "type": "function_call",
                    "call_id": "c",
                    "name": "f",
                    "arguments": "{}",
                },
                {"type": "function_call", "id": 5, "call_id": "c", "name": "f", "arguments": "{}"},
                {"id": "fco_given", "type": "function_call_output", "call_id": "c", "output": "ok"},
                {"type": "function_call_output", "call_id": "c", "output": []},
                {"type": "reasoning", "id": "rs_1"},
            ]
        }
    )
    assert [i["id"] for i in items][::2] == ["msg_given", "fc_given", "fco_given"]
    assert re.fullmatch(r"msg_[0-9a-f]{32}", items[1]["id"])
    assert re.fullmatch(r"fc_[0-9a-f]{32}", items[3]["id"])
    assert re.fullmatch(r"fco_[0-9a-f]{32}", items[5]["id"])
    assert items[0] == {
        "id": "msg_given",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_image", "image_url": "https://x/a.png", "detail": "auto"}],
    }
    assert items[1]["content"] == [{"type": "output_text", "text": "Hi", "annotations": []}]
    assert items[2] == {
        "id": "fc_given",
        "type": "function_call",
        "status": "completed",
        "arguments": "{}",
        "call_id": "c",
        "name": "f",
    }
    assert items[4] == {
        "id": "fco_given",
        "type": "function_call_output",
        "status": "completed",
        "call_id": "c",
        "output": "ok",
    }
    assert len(items) == 6  # the reasoning item is dropped for a chat upstream


def test_lenient_input_items_keep_what_only_a_native_upstream_takes() -> None:
    file_part = {"type": "input_file", "file_id": "file_1"}
    audio_part = {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}}
    image_by_id = {"type": "input_image", "file_id": "file_2"}
    reasoning = {"type": "reasoning", "id": "rs_1", "summary": []}
    body = {
        "input": [
            {"id": "msg_1", "role": "user", "content": [file_part, audio_part, image_by_id]},
            reasoning,
            {
                "id": "fco_1",
                "type": "function_call_output",
                "call_id": "c",
                "output": [image_by_id, {"type": "input_text", "text": "t"}],
            },
        ]
    }
    items = input_items(body, lenient=True)
    assert items[0]["content"] == [file_part, audio_part, image_by_id]
    assert items[1] == reasoning and items[1] is not reasoning
    assert items[2]["output"] == [image_by_id, {"type": "input_text", "text": "t"}]
    # Shapes are still checked.
    with pytest.raises(InvalidRequest) as caught:
        input_items({"input": [{"role": "user", "content": [{"type": "bogus"}]}]}, lenient=True)
    assert caught.value.param == "input[0].content[0].type"
    with pytest.raises(InvalidRequest):
        input_items({"input": [{"type": "message", "role": "user", "content": 5}]}, lenient=True)


def test_input_list_is_the_input_as_sent() -> None:
    assert input_list({}) == []
    assert input_list({"input": "Hi"}) == [{"type": "message", "role": "user", "content": "Hi"}]
    sent = [{"role": "user", "content": "a"}]
    listed = input_list({"input": sent})
    assert listed == sent and listed is not sent
    assert input_list({"input": 5}) == []


def test_tool_outputs_as_text() -> None:
    outputs = [
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {
            "type": "function_call_output",
            "call_id": "c",
            "output": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}],
        },
    ]
    messages = to_chat({"model": "m", "input": outputs}, None)["messages"]
    assert messages[-1] == {"role": "tool", "tool_call_id": "c", "content": "ab"}


# ------------------------------------------------------------------ chat answers to responses


def chat_answer(message: Any, finish: str | None = "stop", **extra: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish}], **extra}


def test_the_response_echoes_the_request_with_openais_defaults() -> None:
    body = response_object({"model": "m"}, "resp_1", CREATED, "served", "completed", [])
    assert body == {
        "id": "resp_1",
        "object": "response",
        "created_at": CREATED,
        "status": "completed",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "max_tool_calls": None,
        "model": "served",
        "output": [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": None,
        "user": None,
        "metadata": {},
    }
    request = {
        "instructions": "I",
        "max_output_tokens": 9,
        "max_tool_calls": 2,
        "parallel_tool_calls": False,
        "previous_response_id": "resp_0",
        "reasoning": {"effort": "low"},
        "store": False,
        "temperature": 0,
        "text": {"format": {"type": "json_object"}},
        "tool_choice": "none",
        "tools": [{"type": "function", "name": "f"}],
        "top_p": 0,
        "user": "u",
        "metadata": {"k": "v"},
    }
    echoed = response_object(request, "resp_2", CREATED, "m", "completed", [])
    assert {k: echoed[k] for k in request} == request  # falsy values given are kept
    Response.model_validate(echoed)


def test_text_and_tool_calls_in_one_answer() -> None:
    message = {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {"id": "call_1", "function": {"name": "f", "arguments": '{"a":1}'}},
            "junk",
            {"id": "call_1", "function": {"name": "g"}},  # the same id again: a new one
            {"function": None},
        ],
    }
    body = from_chat(chat_answer(message, "tool_calls"), {"model": "asked"}, "resp_1", CREATED)
    assert body["model"] == "asked" and body["status"] == "completed"
    output = body["output"]
    assert [o["type"] for o in output] == [
        "message",
        "function_call",
        "function_call",
        "function_call",
    ]
    assert output[0]["content"] == [
        {"type": "output_text", "annotations": [], "logprobs": [], "text": "Checking."}
    ]
    assert output[0]["role"] == "assistant" and output[0]["status"] == "completed"
    assert re.fullmatch(r"msg_[0-9a-f]{32}", output[0]["id"])
    assert output[1] == {
        "id": output[1]["id"],
        "type": "function_call",
        "status": "completed",
        "arguments": '{"a":1}',
        "call_id": "call_1",
        "name": "f",
    }
    assert re.fullmatch(r"fc_[0-9a-f]{32}", output[1]["id"])
    assert re.fullmatch(r"call_[0-9a-f]{32}", output[2]["call_id"])  # clients match on it
    assert (output[2]["name"], output[2]["arguments"]) == ("g", "")
    assert (output[3]["name"], output[3]["arguments"]) == ("", "")
    assert output[3]["call_id"] not in ("call_1", output[2]["call_id"])
    Response.model_validate(body)
    assert body["usage"] is None  # the upstream sent none


def test_answers_with_odd_shapes_are_still_responses() -> None:
    chats: list[dict[str, Any]] = [
        {},
        {"choices": []},
        {"choices": "x"},
        {"choices": ["x"]},
        chat_answer(None, None),
        chat_answer({"content": None}, None),
        chat_answer({"content": ["not", "text"]}),
    ]
    for chat in chats:
        body = from_chat(chat, {}, "resp_1", CREATED)
        assert body["status"] == "completed" and body["model"] == ""
        assert [o["type"] for o in body["output"]] == ["message"]
        assert body["output"][0]["content"][0]["text"] == ""
        Response.model_validate(body)


@pytest.mark.parametrize(
    ("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")]
)
def test_a_cut_answer_is_incomplete_with_its_reason(finish: str, reason: str) -> None:
    message = {"content": "Part", "tool_calls": [{"id": "c", "function": {"name": "f"}}]}
    body = from_chat(chat_answer(message, finish), {}, "resp_1", CREATED)
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": reason}
    assert [o["status"] for o in body["output"]] == ["incomplete", "incomplete"]
    done = from_chat(chat_answer(message, "tool_calls"), {}, "resp_1", CREATED)
    assert done["incomplete_details"] is None


def test_usage_in_the_responses_shape() -> None:
    assert usage_from_chat(None) is None and usage_from_chat([1]) is None
    full = {
        "prompt_tokens": 100,
        "completion_tokens": 40,
        "total_tokens": 150,  # as the upstream counted it
        "prompt_tokens_details": {"cached_tokens": 64},
        "completion_tokens_details": {"reasoning_tokens": 12},
    }
    assert usage_from_chat(full) == {
        "input_tokens": 100,
        "input_tokens_details": {"cached_tokens": 64, "cache_write_tokens": 0},
        "output_tokens": 40,
        "output_tokens_details": {"reasoning_tokens": 12},
        "total_tokens": 150,
    }
    odd = {
        "prompt_tokens": 5,
        "completion_tokens": 3,
        "prompt_tokens_details": None,
        "completion_tokens_details": {"reasoning_tokens": None},
    }
    assert usage_from_chat(odd) == {
        "input_tokens": 5,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 8,  # none given: the sum
    }
    junk = {"prompt_tokens": True, "completion_tokens": "3", "total_tokens": 2.5}
    assert usage_from_chat(junk) == {
        "input_tokens": 0,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 0,
    }
    body = from_chat(chat_answer({"content": "x"}, usage=full), {}, "r", CREATED)
    assert body["usage"]["total_tokens"] == 150


def test_failed_responses_carry_a_code_the_sdk_takes() -> None:
    for code in ("server_error", "rate_limit_exceeded", "invalid_prompt"):
        assert response_error("m", code) == {"code": code, "message": "m"}
    for other in ("upstream_error", "timeout", None):
        assert response_error("m", other) == {"code": "server_error", "message": "m"}
    item = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "status": "incomplete",
        "content": [],
    }
    body = failed_response(
        {"model": "m", "temperature": 0.5},
        "resp_f",
        CREATED,
        "broke",
        "rate_limit_exceeded",
        [item],
    )
    assert (body["status"], body["model"], body["temperature"]) == ("failed", "m", 0.5)
    assert body["error"] == {"code": "rate_limit_exceeded", "message": "broke"}
    assert body["output"] == [item] and body["usage"] is None
    default = failed_response({}, "resp_f", CREATED, "broke")
    assert default["error"]["code"] == "server_error" and default["output"] == []
    assert default["model"] == ""


# ------------------------------------------------------------------ translated streams


def sse(*events: Any) -> bytes:
    """Chat SSE events: dicts as JSON, bytes as given."""
    return b"".join(
        b"data: " + (e if isinstance(e, bytes) else orjson.dumps(e)) + b"\n\n" for e in events
    )


def delta(
    content: Any = None, calls: Any = None, finish: str | None = None, index: int = 0
) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if content is not None:
        d["content"] = content
    if calls is not None:
        d["tool_calls"] = calls
    return {"choices": [{"index": index, "delta": d, "finish_reason": finish}]}


def run(raw: bytes, close: bool = True, **kw: Any) -> tuple[ResponseStream, list[dict[str, Any]]]:
    stream = ResponseStream({"model": "asked", **kw}, "resp_1", CREATED)
    out = stream.feed(raw) + (stream.close() if close else b"")
    return stream, events_of(out)


def events_of(raw: bytes) -> list[dict[str, Any]]:
    events = []
    for block in raw.split(b"\n\n")[:-1]:
        name, data = block.split(b"\n")
        event = orjson.loads(data.removeprefix(b"data: "))
        assert name == b"event: " + event["type"].encode()
        EVENT.validate_python(event)
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"].removeprefix("response.") for e in events]


def test_stream_text_events_in_full() -> None:
    stream, events = run(sse(delta("Hel"), delta("lo"), delta(finish="stop"), b"[DONE]"))
    assert kinds(events) == [
        "created",
        "in_progress",
        "output_item.added",
        "content_part.added",
        "output_text.delta",
        "output_text.delta",
        "output_text.done",
        "content_part.done",
        "output_item.done",
        "completed",
    ]
    item_id = events[2]["item"]["id"]
    assert events[2] == {
        "type": "response.output_item.added",
        "sequence_number": 2,
        "output_index": 0,
        "item": {
            "id": item_id,
            "type": "message",
            "status": "in_progress",
            "content": [],
            "role": "assistant",
        },
    }
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    assert events[3] == {
        "type": "response.content_part.added",
        "sequence_number": 3,
        **where,
        "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""},
    }
    assert events[4] == {
        "type": "response.output_text.delta",
        "sequence_number": 4,
        **where,
        "logprobs": [],
        "delta": "Hel",
    }
    assert events[6] == {
        "type": "response.output_text.done",
        "sequence_number": 6,
        **where,
        "text": "Hello",
        "logprobs": [],
    }
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": "Hello"}
    assert events[7] == {
        "type": "response.content_part.done",
        "sequence_number": 7,
        **where,
        "part": part,
    }
    done_item = {
        "id": item_id,
        "type": "message",
        "status": "completed",
        "content": [part],
        "role": "assistant",
    }
    assert events[8] == {
        "type": "response.output_item.done",
        "sequence_number": 8,
        "output_index": 0,
        "item": done_item,
    }
    final = events[9]["response"]
    assert final["status"] == "completed" and final["output"] == [done_item]
    assert final["model"] == "asked" and final["usage"] is None  # no usage event was sent
    assert final["incomplete_details"] is None and final["error"] is None
    assert (
        events[0]["response"]["output"] == [] and events[1]["response"]["status"] == "in_progress"
    )
    assert stream.response == final and stream.finished


def test_stream_usage_and_model() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    stream = ResponseStream({"model": "asked"}, "resp_1", CREATED, model="served")
    out = stream.feed(
        sse(delta("x"), {"choices": [], "usage": usage}, {"choices": [], "usage": 5}, b"[DONE]")
    )
    final = events_of(out)[-1]["response"]
    assert stream.usage == usage  # for spend, in chat's shape
    assert final["model"] == "served" and final["usage"]["total_tokens"] == 5
    assert ResponseStream({}, "r", CREATED).model == ""


def test_stream_sse_lines_as_upstreams_write_them() -> None:
    raw = (
        b": keep-alive comment\n\n"
        b"event: message\n"
        b'data:{"choices":[{"delta":{"content":"a"}}]}\n\n'  # no space, no index: choice 0
        b'data: {"choices":[{"index":0,"delta":\n'
        b'data: {"content":" b"}}]}\n\n'  # one event over two data lines
        b'data:  {"choices":[{"index":1,"delta":{"content":"other choice"}}]}\n\n'
        b"data: [1, 2]\n\n"  # JSON, not an object: skipped
        b'data: {"choices":[{"index":0,"delta":{"content":""}}, "junk"]}\n\n'
        b"data: [DONE]\r\n\r\n"
    )
    for size in (len(raw), 1):
        stream = ResponseStream({"model": "m"}, "resp_1", CREATED)
        out = b"".join(stream.feed(raw[i : i + size]) for i in range(0, len(raw), size))
        events = events_of(out)
        assert kinds(events)[-1] == "completed"
        assert [e["delta"] for e in events if e["type"].endswith("text.delta")] == ["a", " b"]


def test_stream_end_of_body() -> None:
    # The last event without its blank line is still read.
    stream, events = run(sse(delta("a")) + b"data: [DONE]\n")
    assert kinds(events)[-1] == "completed"
    # A body that stops without [DONE] fails, saying so.
    stream, events = run(sse(delta("a"), delta(finish="stop")))
    assert kinds(events)[-1] == "failed"
    assert events[-1]["response"]["error"] == {
        "code": "server_error",
        "message": "The provider ended the stream without [DONE].",
    }
    assert stream.close() == b"" and stream.feed(b"data: [DONE]\n\n") == b""
    # Nothing at all: created, in_progress, failed.
    stream = ResponseStream({"model": "m"}, "resp_1", CREATED)
    assert kinds(events_of(stream.close())) == ["created", "in_progress", "failed"]


def test_stream_that_is_not_json_fails() -> None:
    stream, events = run(sse(delta("a"), b"{not json", delta("never")), close=False)
    assert kinds(events)[-4:] == [
        "output_text.done",
        "content_part.done",
        "output_item.done",
        "failed",
    ]
    assert events[-1]["response"]["error"] == {
        "code": "server_error",
        "message": "The provider's stream has an event that is not JSON.",
    }
    assert events[-2]["item"]["status"] == "incomplete"
    assert stream.finished and stream.close() == b""


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        ("overloaded", "server_error", "overloaded"),
        (
            {"message": "slow down", "code": "rate_limit_exceeded"},
            "rate_limit_exceeded",
            "slow down",
        ),
        ({"code": "boom"}, "server_error", "The provider failed mid-stream."),
    ],
)
def test_stream_error_event_fails_the_response(error: Any, code: str, message: str) -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
    _, events = run(
        sse({"choices": [], "usage": usage}, {"error": error}, delta("after")), close=False
    )
    assert kinds(events) == ["created", "in_progress", "failed"]
    failed = events[-1]["response"]
    assert failed["error"] == {"code": code, "message": message}
    assert failed["usage"]["input_tokens"] == 3 and failed["status"] == "failed"


def test_stream_line_over_16_mb_fails() -> None:
    limit = 1 << 24
    stream = ResponseStream({"model": "m"}, "resp_1", CREATED)
    out = stream.feed(b"x" * limit)  # exactly the limit: still waiting for its end
    assert not stream.finished
    events = events_of(out + stream.feed(b"x"))
    assert stream.finished and kinds(events) == ["created", "in_progress", "failed"]
    assert (
        events[-1]["response"]["error"]["message"] == "The provider's stream has a line over 16 MB."
    )


@pytest.mark.parametrize(
    ("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")]
)
def test_stream_cut_answer_is_incomplete(finish: str, reason: str) -> None:
    _, events = run(sse(delta("a"), delta(finish=finish), b"[DONE]"))
    assert kinds(events)[-1] == "incomplete"
    final = events[-1]["response"]
    assert final["status"] == "incomplete" and final["incomplete_details"] == {"reason": reason}
    assert events[-2]["item"]["status"] == "incomplete"
    # No text at all: one empty message, incomplete too.
    _, events = run(sse(delta(finish=finish), b"[DONE]"))
    assert [o["status"] for o in events[-1]["response"]["output"]] == ["incomplete"]
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == ""


def test_stream_text_after_a_call_opens_a_new_message() -> None:
    call = {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{}"}}
    _, events = run(sse(delta(calls=[call]), delta("then text"), delta(finish="stop"), b"[DONE]"))
    assert kinds(events) == [
        "created",
        "in_progress",
        "output_item.added",
        "function_call_arguments.delta",
        "function_call_arguments.done",
        "output_item.done",
        "output_item.added",
        "content_part.added",
        "output_text.delta",
        "output_text.done",
        "content_part.done",
        "output_item.done",
        "completed",
    ]
    assert events[5]["item"]["status"] == "completed"
    assert [e.get("output_index") for e in events[6:12]] == [1] * 6
    assert [o["type"] for o in events[-1]["response"]["output"]] == ["function_call", "message"]


def test_stream_call_events_in_full() -> None:
    calls = [
        {"index": 0, "id": "call_1", "function": {"arguments": ""}},  # the name comes later
        {"index": 0, "function": {"name": "f", "arguments": '{"a"'}},
        {"index": 0, "function": {"name": "ignored", "arguments": ":1}"}},
    ]
    _, events = run(sse(*(delta(calls=[c]) for c in calls), delta(finish="tool_calls"), b"[DONE]"))
    item_id = events[2]["item"]["id"]
    assert events[2] == {
        "type": "response.output_item.added",
        "sequence_number": 2,
        "output_index": 0,
        "item": {
            "id": item_id,
            "type": "function_call",
            "status": "in_progress",
            "arguments": "",
            "call_id": "call_1",
            "name": "",
        },
    }
    assert events[3] == {
        "type": "response.function_call_arguments.delta",
        "sequence_number": 3,
        "item_id": item_id,
        "output_index": 0,
        "delta": '{"a"',
    }
    assert events[5] == {
        "type": "response.function_call_arguments.done",
        "sequence_number": 5,
        "item_id": item_id,
        "output_index": 0,
        "arguments": '{"a":1}',
    }
    item = {
        "id": item_id,
        "type": "function_call",
        "status": "completed",
        "arguments": '{"a":1}',
        "call_id": "call_1",
        "name": "f",
    }
    assert events[6] == {
        "type": "response.output_item.done",
        "sequence_number": 6,
        "output_index": 0,
        "item": item,
    }
    assert events[7]["response"]["output"] == [item]


def test_stream_calls_without_index() -> None:
    calls = [
        {"id": "call_1", "function": {"name": "f", "arguments": '{"a":'}},
        {"id": "call_1", "function": {"arguments": "1}"}},  # its id: more of the same call
        {"function": {"arguments": " "}},  # no id, no name: more of the open call
        {"id": "call_1", "function": {"name": "f", "arguments": ""}},  # its id again: the same
        {"function": {"name": "g", "arguments": "{}"}},  # a name: another call
        {"id": "call_1", "function": {"name": 5, "arguments": 7}},  # its id, another's: new
    ]
    _, events = run(sse(delta(calls=calls), delta(finish="tool_calls"), b"[DONE]"))
    output = events[-1]["response"]["output"]
    assert [(o["name"], o["arguments"]) for o in output] == [
        ("f", '{"a":1} '),
        ("g", "{}"),
        ("", ""),
    ]
    # A repeated id gets a new one (clients match outputs to calls by it).
    assert output[0]["call_id"] == "call_1" and output[1]["call_id"] != "call_1"
    assert len({o["call_id"] for o in output}) == 3


def test_stream_arguments_for_a_call_already_closed() -> None:
    first = {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{"}}
    second = {"index": 1, "id": "call_2", "function": {"name": "g", "arguments": "{}"}}
    late = {"index": 0, "function": {"arguments": "}"}}
    _, events = run(
        sse(
            delta(calls=[first]),
            delta(calls=[second]),
            delta(calls=[late]),
            delta(finish="tool_calls"),
            b"[DONE]",
        )
    )
    deltas = [e for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert [d["delta"] for d in deltas] == ["{", "{}"]  # the closed call's item got no more
    output = events[-1]["response"]["output"]
    assert [o["arguments"] for o in output] == ["{}", "{}"]  # ... but the response has it all


def test_stream_failure_closes_the_open_call_as_incomplete() -> None:
    stream = ResponseStream({"model": "m"}, "resp_1", CREATED)
    call = {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{"}}
    out = stream.feed(sse(delta(calls=[call])))
    out += stream.fail("Provider 'x' timed out.", "rate_limit_exceeded")
    events = events_of(out)
    assert kinds(events)[-3:] == ["function_call_arguments.done", "output_item.done", "failed"]
    assert events[-2]["item"]["status"] == "incomplete" and events[-2]["item"]["arguments"] == "{"
    assert events[-1]["response"]["error"] == {
        "code": "rate_limit_exceeded",
        "message": "Provider 'x' timed out.",
    }
    assert stream.fail("again") == b"" and stream.close() == b""
    plain = ResponseStream({"model": "m"}, "resp_1", CREATED)
    assert events_of(plain.fail("x"))[-1]["response"]["error"]["code"] == "server_error"


# ------------------------------------------------------------------ native answers


def test_native_usage_in_chats_shape() -> None:
    assert chat_usage(None) is None and chat_usage("x") is None
    assert chat_usage({"input_tokens": 9, "output_tokens": 4, "total_tokens": 13}) == {
        "prompt_tokens": 9,
        "completion_tokens": 4,
        "total_tokens": 13,
    }
    assert chat_usage({"input_tokens": "9", "output_tokens": None}) == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
    }


def native_response(output: list[Any], status: str = "completed", **extra: Any) -> dict[str, Any]:
    """A whole response object, as OpenAI sends it."""
    body = response_object({}, "resp_n", CREATED, "gpt-x", status, output)
    body["usage"] = usage_from_chat({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7})
    return {**body, **extra}


def text_message(*texts: str) -> dict[str, Any]:
    parts = [{"type": "output_text", "text": t, "annotations": []} for t in texts]
    return {"type": "message", "role": "assistant", "content": parts}


def test_a_native_response_as_a_cacheable_answer() -> None:
    answer = answer_from_response(native_response([text_message("Hel", "lo"), text_message("!")]))
    assert answer is not None
    assert (answer.model, answer.finish_reason) == ("gpt-x", "stop")
    assert answer.message == {"role": "assistant", "content": "Hello!"}
    assert answer.usage == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    call = {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"}
    answer = answer_from_response(native_response([call]))
    assert answer is not None and answer.finish_reason == "tool_calls"
    assert answer.message == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    }
    cut = native_response(
        [text_message("Once")], "incomplete", incomplete_details={"reason": "max_output_tokens"}
    )
    answer = answer_from_response(cut)
    assert answer is not None and answer.finish_reason == "length"
    assert answer.message["content"] == "Once"
    cut_call = native_response(
        [call], "incomplete", incomplete_details={"reason": "max_output_tokens"}
    )
    assert answer_from_response(cut_call).finish_reason == "length"  # type: ignore[union-attr]
    empty = answer_from_response({"status": "completed", "output": None})
    assert empty is not None and empty.message == {"role": "assistant", "content": None}
    assert empty.model == "" and empty.usage is None


@pytest.mark.parametrize(
    "response",
    [
        native_response([text_message("x")], "failed"),
        native_response([text_message("x")], "in_progress"),
        native_response(
            [text_message("x")], "incomplete", incomplete_details={"reason": "content_filter"}
        ),
        native_response([text_message("x")], "incomplete"),
        native_response([{"type": "reasoning", "summary": []}, text_message("x")]),
        native_response([{"type": "web_search_call", "id": "ws"}]),
        native_response(["junk"]),
        native_response([{"type": "message", "content": [{"type": "refusal", "refusal": "no"}]}]),
        native_response([{"type": "message", "content": ["junk"]}]),
    ],
)
def test_what_chat_cannot_replay_is_not_cached(response: dict[str, Any]) -> None:
    assert answer_from_response(response) is None


def test_redacted_values_put_back_into_a_response() -> None:
    placeholders = {"[EMAIL_1]": 'ada "the" @example.com'}
    response: dict[str, Any] = {
        "output": [
            "junk",
            {
                "type": "message",
                "content": [
                    {"type": "output_text", "text": "Mail [EMAIL_1]."},
                    "junk",
                    {"text": 5},
                ],
            },
            {"type": "function_call", "arguments": '{"to": "[EMAIL_1]"}'},
        ]
    }
    assert restore_response(response, placeholders) is True
    assert response["output"][1]["content"][0]["text"] == 'Mail ada "the" @example.com.'
    # Inside JSON text the value is escaped, so the arguments stay valid JSON.
    assert orjson.loads(response["output"][2]["arguments"]) == {"to": 'ada "the" @example.com'}
    untouched = {
        "output": [text_message("nothing here"), {"type": "function_call", "arguments": "{}"}]
    }
    assert restore_response(untouched, placeholders) is False
    assert restore_response({"output": None}, placeholders) is False
    args_only = {"output": [{"type": "function_call", "arguments": "[EMAIL_1]"}]}
    assert restore_response(args_only, placeholders) is True
    text_only = {"output": [text_message("[EMAIL_1]")]}
    assert restore_response(text_only, placeholders) is True


def native_sse(*events: Any, crlf: bool = False) -> bytes:
    sep = b"\r\n" if crlf else b"\n"
    out = b""
    for i, e in enumerate(events):
        if isinstance(e, bytes):
            out += e + sep + sep
            continue
        event = {"sequence_number": i, **e}
        out += b"event: " + e["type"].encode() + sep + b"data: " + orjson.dumps(event) + sep + sep
    return out


def native_events(raw: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: ")]


def test_native_stream_passes_events_on_untouched() -> None:
    created = {"type": "response.created", "response": native_response([], "in_progress")}
    text = {"type": "response.output_text.delta", "item_id": "m", "output_index": 0, "delta": "Hi"}
    done = {"type": "response.completed", "response": native_response([text_message("Hi")])}
    raw = native_sse(
        created, b": ping", text, done, {"type": "response.output_text.delta", "delta": "late"}
    )
    stream = NativeStream(None, None)
    out = stream.feed(raw)
    assert out == raw[: raw.index(b"event: response.output_text.delta", raw.index(b"completed"))]
    assert stream.ended and stream.response == done["response"] and stream.last == done["response"]
    assert stream.sequence == 3 and not stream.garbage
    assert stream.feed(b"event: x\ndata: {}\n\n") == b""  # nothing after the end
    # CRLF events are cut the same way and sent with LF.
    stream = NativeStream(None, None)
    out = b"".join(stream.feed(bytes([b])) for b in native_sse(created, text, crlf=True))
    assert [e["type"] for e in native_events(out)] == [created["type"], text["type"]]
    assert stream.sequence == 1 and not stream.ended and stream.last == created["response"]


def test_native_stream_echoes_the_resolved_previous_id() -> None:
    created = {"type": "response.created", "response": native_response([], "in_progress")}
    text = {"type": "response.output_text.delta", "item_id": "m", "output_index": 0, "delta": "Hi"}
    done = {"type": "response.incomplete", "response": native_response([], "incomplete")}
    stream = NativeStream("resp_prev", None)
    events = native_events(stream.feed(native_sse(created, text, done)))
    assert [e.get("response", {}).get("previous_response_id") for e in events] == [
        "resp_prev",
        None,
        "resp_prev",
    ]
    assert events[1] == {"sequence_number": 1, **text}
    assert stream.ended and stream.response is not None
    assert stream.response["previous_response_id"] == "resp_prev"


@pytest.mark.parametrize(
    "terminal", ["response.completed", "response.incomplete", "response.failed"]
)
def test_native_stream_ends_at_its_terminal_event(terminal: str) -> None:
    stream = NativeStream(None, None)
    stream.feed(
        native_sse({"type": "response.in_progress", "response": native_response([], "in_progress")})
    )
    assert not stream.ended
    stream.feed(native_sse({"type": terminal, "response": native_response([])}))
    assert stream.ended


def test_native_stream_error_event_and_garbage() -> None:
    stream = NativeStream(None, None)
    error = {"type": "error", "code": "server_error", "message": "boom", "param": None}
    stream.feed(native_sse(error, {"type": "response.created", "response": {}}))
    assert stream.ended and stream.response == {
        "status": "failed",
        "error": {"sequence_number": 0, **error},
    }
    stream = NativeStream(None, None)
    text = {"type": "response.output_text.delta", "item_id": "m", "output_index": 0, "delta": "a"}
    out = stream.feed(native_sse(text, b"data: {oops", text))
    assert stream.garbage and len(native_events(out)) == 1  # what is not JSON is never sent
    assert stream.feed(native_sse(text)) == b""
    # Data that is JSON but no object, and an event line alone, pass as they are.
    stream = NativeStream(None, None)
    raw = b"data: [1]\n\nevent: ping\n\n"
    assert stream.feed(raw) == raw and not stream.garbage and stream.sequence == -1


def test_native_stream_failure_events() -> None:
    stream = NativeStream(None, None)
    created = native_response([], "in_progress")
    stream.feed(
        native_sse(
            {"type": "response.created", "response": created},
            {"type": "response.output_text.delta", "delta": "a"},
        )
    )
    tail = stream.fail("Provider 'openai' ended the stream before its last event.")
    assert tail.startswith(b"event: response.failed\ndata: ") and tail.endswith(b"\n\n")
    (event,) = native_events(tail)
    EVENT.validate_python(event)
    assert event["sequence_number"] == 2 and event["type"] == "response.failed"
    assert event["response"] == {
        **created,
        "status": "failed",
        "error": {
            "code": "server_error",
            "message": "Provider 'openai' ended the stream before its last event.",
        },
    }
    assert stream.response == event["response"] and stream.ended
    # Before any response object: an `error` event.
    stream = NativeStream(None, None)
    tail = stream.fail("cut")
    assert tail.startswith(b"event: error\ndata: ")
    (event,) = native_events(tail)
    EVENT.validate_python(event)
    assert event == {
        "type": "error",
        "sequence_number": 0,
        "param": None,
        "code": "server_error",
        "message": "cut",
    }
    assert stream.response == {
        "status": "failed",
        "error": {"code": "server_error", "message": "cut"},
    }


# ------------------------------------------------------------------ the endpoint, in process
# A gateway app in this process on the built-in demo model (a chat-only provider, so the
# translated path): what is stored after each answer, GET, DELETE and input_items. Native
# pass-through needs an upstream with /v1/responses: tests/test_responses_api.py.

GATEWAY_CONFIG = """
auth: {api_keys: "key-one,key-two"}
logging: {level: warning}
providers:
  mock: {type: mock, models: [demo]}
routing: {default_model: demo}
cache: {enabled: false}
"""
ONE = {"authorization": "Bearer key-one"}
TWO = {"authorization": "Bearer key-two"}


@pytest.fixture(scope="module")
async def gw() -> AsyncIterator[httpx.AsyncClient]:
    from gateway.app import create_app
    from gateway.config import parse_config

    app = create_app(parse_config(GATEWAY_CONFIG, {}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        yield client


async def create(
    gw: httpx.AsyncClient, headers: dict[str, str] = ONE, **body: Any
) -> httpx.Response:
    return await gw.post("/v1/responses", json={"model": "demo", **body}, headers=headers)


async def test_a_response_is_stored_for_its_key_only(gw: httpx.AsyncClient) -> None:
    answer = await create(gw, input="Hi there", metadata={"app": "t"})
    assert answer.status_code == 200
    body = answer.json()
    Response.model_validate(body)
    assert body["output"][0]["content"][0]["text"].endswith("You said: Hi there")
    stored = await gw.get(f"/v1/responses/{body['id']}", headers=ONE)
    assert stored.status_code == 200 and stored.json() == body
    for path in (f"/v1/responses/{body['id']}", f"/v1/responses/{body['id']}/input_items"):
        other = await gw.get(path, headers=TWO)
        assert other.status_code == 404
        assert other.json()["error"]["code"] == "response_not_found"
    assert (await gw.delete(f"/v1/responses/{body['id']}", headers=TWO)).status_code == 404
    deleted = await gw.delete(f"/v1/responses/{body['id']}", headers=ONE)
    assert deleted.json() == {"id": body["id"], "object": "response.deleted", "deleted": True}
    assert (await gw.get(f"/v1/responses/{body['id']}", headers=ONE)).status_code == 404
    # store: false keeps nothing.
    unkept = (await create(gw, input="Hi", store=False)).json()
    assert unkept["store"] is False
    assert (await gw.get(f"/v1/responses/{unkept['id']}", headers=ONE)).status_code == 404
    gone = await create(gw, input="Again", previous_response_id=unkept["id"])
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "previous_response_not_found"


async def test_the_next_turn_sends_the_whole_conversation(gw: httpx.AsyncClient) -> None:
    first = (await create(gw, input="one two three")).json()
    second = await create(gw, input="four", previous_response_id=first["id"])
    assert second.status_code == 200
    body = second.json()
    assert body["previous_response_id"] == first["id"]
    # The demo model counts the words of every message it was sent: all three turns.
    assert body["usage"]["input_tokens"] > first["usage"]["input_tokens"] + 1
    assert "You said: four" in body["output"][0]["content"][0]["text"]
    items = (await gw.get(f"/v1/responses/{body['id']}/input_items", headers=ONE)).json()
    assert [i["content"][0]["text"] for i in items["data"]] == ["four"]  # this turn's only


async def test_a_streamed_response_is_stored_as_its_last_event_says(gw: httpx.AsyncClient) -> None:
    answer = await create(gw, input="Stream me", stream=True)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    events = events_of(answer.content)
    assert kinds(events)[0] == "created" and kinds(events)[-1] == "completed"
    final = events[-1]["response"]
    stored = await gw.get(f"/v1/responses/{final['id']}", headers=ONE)
    assert stored.json() == final
    follow = await create(gw, input="more", previous_response_id=final["id"], stream=True)
    assert events_of(follow.content)[-1]["response"]["previous_response_id"] == final["id"]


async def test_input_items_pages(gw: httpx.AsyncClient) -> None:
    given = [{"id": f"msg_{n}", "role": "user", "content": f"part {n}"} for n in range(5)]
    body = (await create(gw, input=given)).json()
    path = f"/v1/responses/{body['id']}/input_items"

    async def page(**query: Any) -> dict[str, Any]:
        answer = await gw.get(path, params=query, headers=ONE)
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]

    newest = await page()
    assert [i["id"] for i in newest["data"]] == ["msg_4", "msg_3", "msg_2", "msg_1", "msg_0"]
    assert (newest["first_id"], newest["last_id"], newest["has_more"]) == ("msg_4", "msg_0", False)
    assert newest["object"] == "list"
    first = await page(order="asc", limit="2")
    assert [i["id"] for i in first["data"]] == ["msg_0", "msg_1"] and first["has_more"] is True
    assert (first["first_id"], first["last_id"]) == ("msg_0", "msg_1")
    rest = await page(order="asc", limit="3", after="msg_1")
    assert [i["id"] for i in rest["data"]] == ["msg_2", "msg_3", "msg_4"] and not rest["has_more"]
    assert [i["id"] for i in (await page(after="msg_2", limit="1"))["data"]] == ["msg_1"]
    assert [i["id"] for i in (await page(limit="100"))["data"]][-1] == "msg_0"
    assert [i["id"] for i in (await page(limit="1"))["data"]] == ["msg_4"]
    nothing = await page(after="msg_unknown")
    assert nothing == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }
    for query, param in (
        ({"order": "newest"}, "order"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "ten"}, "limit"),
    ):
        bad = await gw.get(path, params=query, headers=ONE)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == param
        assert bad.json()["error"]["code"] == "invalid_value"


async def test_a_cache_hit_is_a_new_stored_response() -> None:
    from gateway.app import create_app
    from gateway.config import parse_config

    config = GATEWAY_CONFIG.replace(
        "cache: {enabled: false}", "cache: {semantic: {enabled: false}}"
    )
    transport = httpx.ASGITransport(app=create_app(parse_config(config, {})))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        question = f"Cache me {uuid4().hex}"
        miss = await create(client, input=question)
        hit = await create(client, input=question)
        assert miss.headers["x-gateway-cache"] == "miss"
        assert hit.headers["x-gateway-cache"] == "hit-exact"
        first, again = miss.json(), hit.json()
        assert again["id"] != first["id"] and again["status"] == "completed"
        assert again["output"][0]["content"] == first["output"][0]["content"]
        assert again["output"][0]["id"] != first["output"][0]["id"]
        stored = await client.get(f"/v1/responses/{again['id']}", headers=ONE)
        assert stored.json() == again
        streamed = await create(client, input=question, stream=True)
        assert streamed.headers["x-gateway-cache"] == "hit-exact"
        assert streamed.headers["content-type"].startswith("text/event-stream")
        events = events_of(streamed.content)
        final = events[-1]["response"]
        assert kinds(events)[-1] == "completed" and final["id"] not in (first["id"], again["id"])
        assert final["output"][0]["content"][0]["text"] == first["output"][0]["content"][0]["text"]
        assert (await client.get(f"/v1/responses/{final['id']}", headers=ONE)).json() == final


def test_long_values_are_cut_in_messages() -> None:
    role = refused({"model": "m", "input": [{"role": "r" * 100, "content": "x"}]})
    assert f"{'r' * 64!r}. Supported" in role.message
    choice = refused(
        {
            "model": "m",
            "input": "x",
            "tools": [{"type": "function", "name": "f"}],
            "tool_choice": "c" * 100,
        }
    )
    assert f"{'c' * 64!r}. Supported" in choice.message
    hosted = {"type": "h" * 100}
    kind = refused(
        {
            "model": "m",
            "input": "x",
            "tools": [{"type": "function", "name": "f"}],
            "tool_choice": hosted,
        }
    )
    assert kind.message.startswith(f"tool_choice {'h' * 64!r} is not supported")


def test_an_empty_assistant_text_stays_empty() -> None:
    body = {
        "model": "m",
        "input": [{"role": "assistant", "content": ""}, {"role": "user", "content": "x"}],
    }
    assert to_chat(body, None)["messages"][0] == {"role": "assistant", "content": ""}


def test_native_stream_restores_calls_and_done_items() -> None:
    placeholders = {"[NAME_1]": 'Ada "L"'}
    args = {"item_id": "fc_1", "output_index": 0}
    item = {
        "id": "fc_1",
        "type": "function_call",
        "status": "completed",
        "call_id": "c",
        "name": "f",
        "arguments": '{"n": "[NAME_1]"}',
    }
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": "Hi [NAME_1]", "annotations": []}],
    }
    raw = native_sse(
        {"type": "response.function_call_arguments.delta", **args, "delta": '{"n": "[NAME'},
        {"type": "response.function_call_arguments.delta", **args, "delta": '_1]"}'},
        {"type": "response.function_call_arguments.done", **args, "arguments": item["arguments"]},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.output_item.done", "output_index": 1, "item": message},
    )
    stream = NativeStream(None, placeholders)
    events = split_events(b"".join(stream.feed(raw[i : i + 5]) for i in range(0, len(raw), 5)))
    restored = orjson.dumps({"n": 'Ada "L"'}).decode().replace(":", ": ")
    assert "".join(e["delta"] for e in events[:2]) == restored
    assert events[2]["arguments"] == restored
    assert events[3]["item"]["arguments"] == restored
    assert events[4]["item"]["content"][0]["text"] == 'Hi Ada "L"'
    assert [e["sequence_number"] for e in events] == list(range(5))


# ------------------------------------------------------------------ what the mutation run showed


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"instructions": 5}, "'instructions': expected a string, got an integer"),
        ({"reasoning": "high"}, "'reasoning': expected an object, got a string"),
        ({"tools": {}}, "'tools': expected an array of tools, got an object"),
        ({"tools": [1]}, "'tools[0]': expected an object, got an integer"),
        (
            {"tools": [{"type": "function", "name": "f", "description": 1}]},
            "'tools[0].description': expected a string, got an integer",
        ),
        (
            {"tools": [{"type": "function", "name": 1}]},
            "'tools[0].name': expected a string, got an integer",
        ),
        ({"text": []}, "'text': expected an object, got an array"),
        ({"text": {"format": "x"}}, "'text.format': expected an object, got a string"),
        (
            {"text": {"format": {"type": "json_schema", "name": "n", "schema": "s"}}},
            "'text.format.schema': expected an object, got a string",
        ),
        ({"input": 3}, "'input': expected a string or an array of input items, got an integer"),
        ({"input": ["x"]}, "'input[0]': expected an object, got a string"),
        ({"input": [{"type": 3}]}, "'input[0].type': expected a string, got an integer"),
        (
            {"input": [{"role": "user", "content": 3}]},
            "'input[0].content': expected a string or an array of content parts, got an integer",
        ),
        (
            {"input": [{"role": "assistant", "content": 3}]},
            "'input[0].content': expected a string or an array of content parts, got an integer",
        ),
        (
            {"input": [{"role": "user", "content": [3]}]},
            "'input[0].content[0]': expected an object, got an integer",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": 3}]}]},
            "'input[0].content[0].type': expected a string, got an integer",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
            "Missing required parameter: 'input[0].content[0].text'.",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": 3}]}]},
            "'input[0].content[0].image_url': expected a string (a URL or a data URL), got an integer",
        ),
        (
            {"input": [{"role": "assistant", "content": [3]}]},
            "'input[0].content[0]': expected an object, got an integer",
        ),
        (
            {"input": [{"role": "assistant", "content": [{"type": "output_text", "text": 3}]}]},
            "'input[0].content[0].text': expected a string, got an integer",
        ),
        (
            {"input": [{"role": "assistant", "content": [{"type": "audio"}]}]},
            "Supported values are: 'output_text', 'refusal'.",
        ),
        (
            {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": {}}]},
            "'input[0].arguments': expected a string, got an object",
        ),
        (
            {"input": [{"type": "function_call_output", "call_id": "c", "output": {}}]},
            "'input[0].output': expected a string or an array of content parts, got an object",
        ),
        (
            {"input": [{"type": "function_call_output", "call_id": "c", "output": [3]}]},
            "'input[0].output[0]': expected an object, got an integer",
        ),
        (
            {
                "input": [
                    {
                        "type": "function_call_output",
                        "call_id": "c",
                        "output": [{"type": "input_text"}],
                    }
                ]
            },
            "Missing required parameter: 'input[0].output[0].text'.",
        ),
        (
            {
                "input": [
                    {"type": "function_call_output", "call_id": "c", "output": [{"type": "x"}]}
                ]
            },
            "Supported values are: 'input_text'.",
        ),
        ({"background": True}, "Background responses are not supported on this model"),
    ],
)
def test_each_refusal_says_what_was_expected(body: dict[str, Any], message: str) -> None:
    error = refused({"model": "m", "input": "x", **body})
    if message.startswith("'"):
        assert error.message.startswith(f"Invalid type for {message}."), error.message
        assert error.code == "invalid_type"
    elif message.startswith("Missing"):
        assert error.message == message and error.code == "missing_required_parameter"
    else:
        assert error.message.startswith(message) or error.message.endswith(message)


async def test_stage_refusals_say_what_was_expected() -> None:
    for field in ("instructions", "previous_response_id"):
        with pytest.raises(InvalidRequest) as caught:
            await ConversationStage(MemoryResponseStore(3600, 10))(
                context({"input": "x", field: 5})
            )
        assert caught.value.message == (
            f"Invalid type for '{field}': expected a string, got an integer."
        )


async def test_previous_not_found_says_why() -> None:
    with pytest.raises(NotFound) as caught:
        stage = ConversationStage(MemoryResponseStore(3600, 10))
        await stage(context({"input": "x", "previous_response_id": "resp_gone"}))
    assert caught.value.message == (
        "Previous response with id 'resp_gone' not found. The gateway keeps responses for "
        "responses.store_ttl_seconds, only for the key that made them, and never those made "
        "with store: false."
    )


async def test_the_stage_recomputes_what_the_merged_request_needs() -> None:
    store = MemoryResponseStore(3600, 10)
    image = {"type": "input_image", "image_url": "https://x/a.png"}
    await stored(store, "key:alice", [{"role": "user", "content": [image]}])
    text = {"format": {"type": "json_schema", "name": "n", "schema": {"type": "object"}}}
    ctx = context({"input": "and now?", "previous_response_id": "resp_0", "text": text})
    await ConversationStage(store)(ctx)
    assert {"vision", "json_schema"} <= ctx.needs  # the earlier turn's image counts


async def test_an_unreachable_store_says_why() -> None:
    dead = dead_redis()
    with pytest.raises(StoreUnavailable) as caught:
        await RedisResponseStore(dead, "p:", 60).get("r")
    assert "ConnectionError" in str(caught.value) and "Connect" in str(caught.value)
    await dead.aclose()


def test_refusal_parts_are_listed_as_refusals() -> None:
    item = {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]}
    (listed,) = input_items({"input": [item]})
    assert listed["content"] == [{"type": "refusal", "refusal": "No."}]


def test_stream_usage_is_none_until_the_upstream_sends_it() -> None:
    stream, _ = run(sse(delta("a"), b"[DONE]"))
    assert stream.usage is None


def test_stream_nothing_after_a_failure_at_close() -> None:
    # [DONE] waiting for its blank line when a line over 16 MB failed the stream.
    stream = ResponseStream({"model": "m"}, "resp_1", CREATED)
    out = stream.feed(b"data: [DONE]\n" + b"x" * ((1 << 24) + 1))
    assert kinds(events_of(out))[-1] == "failed"
    assert stream.close() == b""


def test_an_empty_text_part_is_an_empty_cached_text() -> None:
    answer = answer_from_response(native_response([text_message("")]))
    assert answer is not None and answer.message["content"] == ""


def test_restore_reports_a_change_anywhere_in_the_output() -> None:
    placeholders = {"[X_1]": "secret"}
    texts = {"output": [text_message("[X_1]"), text_message("plain")]}
    assert restore_response(texts, placeholders) is True
    calls = {
        "output": [
            {"type": "function_call", "arguments": '"[X_1]"'},
            {"type": "function_call", "arguments": "{}"},
        ]
    }
    assert restore_response(calls, placeholders) is True


def split_events(raw: bytes) -> list[dict[str, Any]]:
    """Native SSE as sent: every block an `event:` line naming the data's type, then data."""
    events = []
    assert raw == b"" or raw.endswith(b"\n\n")
    for block in raw.split(b"\n\n")[:-1]:
        name, data = block.split(b"\n")
        event = orjson.loads(data.removeprefix(b"data: "))
        assert name == b"event: " + event["type"].encode(), block
        events.append(event)
    return events


def spaced(event: dict[str, Any]) -> bytes:
    """An event as a server may format it (spaces after separators, which orjson drops)."""
    name: str = event["type"]
    return b"event: " + name.encode() + b"\ndata: " + json.dumps(event).encode() + b"\n\n"


def test_native_events_unchanged_keep_their_bytes() -> None:
    placeholders = {"[X_1]": "secret"}
    created = {
        "type": "response.created",
        "sequence_number": 0,
        "response": native_response([], "in_progress"),
    }
    added = {
        "type": "response.output_item.added",
        "sequence_number": 1,
        "output_index": 0,
        "item": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        },
    }
    no_delta = {"type": "response.output_text.delta", "sequence_number": 2, "item_id": "msg_1"}
    raw = spaced(created) + spaced(added) + spaced(no_delta)
    for chosen in (None, placeholders):
        stream = NativeStream(None, chosen)
        assert stream.feed(raw) == raw
    # Two data lines make one event.
    two_lines = b'event: response.output_item.added\ndata: {"type": "response.output_item.added",\ndata: "sequence_number": 0}\n\n'
    stream = NativeStream(None, None)
    assert stream.feed(two_lines) == two_lines and not stream.garbage
    assert stream.sequence == 0


def test_native_garbage_is_never_sent() -> None:
    text = {"type": "response.output_text.delta", "item_id": "m", "output_index": 0, "delta": "a"}
    first = spaced({**text, "sequence_number": 0})
    stream = NativeStream(None, None)
    assert stream.feed(first + b"data: {oops\n\n" + first) == first
    assert stream.garbage


def test_native_crlf_events_in_one_chunk() -> None:
    events = [
        {
            "type": "response.created",
            "sequence_number": 0,
            "response": native_response([], "in_progress"),
        },
        {
            "type": "response.output_text.delta",
            "sequence_number": 1,
            "item_id": "m",
            "output_index": 0,
            "delta": "a",
        },
    ]
    raw = b"".join(spaced(e).replace(b"\n", b"\r\n") for e in events)
    stream = NativeStream(None, None)
    out = stream.feed(raw)
    assert not stream.garbage and [e["type"] for e in split_events(out)] == [
        e["type"] for e in events
    ]


def test_native_terminal_and_other_response_events_are_restored_and_echo_the_id() -> None:
    placeholders = {"[X_1]": 'a "q"'}
    created = {
        "type": "response.created",
        "sequence_number": 0,
        "response": native_response([], "in_progress"),
    }
    done = {
        "type": "response.completed",
        "sequence_number": 1,
        "response": native_response([text_message("Hi [X_1]")]),
    }
    stream = NativeStream("resp_prev", placeholders)
    events = split_events(stream.feed(spaced(created) + spaced(done)))
    assert [e["response"]["previous_response_id"] for e in events] == ["resp_prev", "resp_prev"]
    assert events[1]["response"]["output"][0]["content"][0]["text"] == 'Hi a "q"'
    assert stream.response is not None
    assert stream.response["output"][0]["content"][0]["text"] == 'Hi a "q"'
    # No previous id: the restored response alone is a change.
    stream = NativeStream(None, placeholders)
    events = split_events(stream.feed(spaced(done)))
    assert events[0]["response"]["output"][0]["content"][0]["text"] == 'Hi a "q"'


def test_native_text_with_quotes_and_tails_held_back_in_two_items() -> None:
    """Text deltas get the values as they are (not JSON-escaped); a tail held back at each
    item's end goes out before its `.done`, every later event renumbered."""
    placeholders = {"[X_1]": 'a "q"'}
    events: list[dict[str, Any]] = []
    for item in ("msg_1", "msg_2"):
        where = {"item_id": item, "output_index": 0, "content_index": 0}
        events += [
            {"type": "response.output_text.delta", **where, "delta": "Hi [X_1] [X", "logprobs": []},
            {"type": "response.output_text.done", **where, "text": "Hi [X_1] [X", "logprobs": []},
        ]
    raw = b"".join(spaced({**e, "sequence_number": i}) for i, e in enumerate(events))
    stream = NativeStream(None, placeholders)
    out = split_events(stream.feed(raw))
    for event in out:
        EVENT.validate_python(event)
    assert [e["type"].rsplit(".", 1)[1] for e in out] == ["delta", "delta", "done"] * 2
    assert [e["sequence_number"] for e in out] == list(range(6))
    assert [e["delta"] for e in out if "delta" in e] == ['Hi a "q" ', "[X"] * 2
    assert [e["text"] for e in out if "text" in e] == ['Hi a "q" [X'] * 2


def test_native_arguments_cut_inside_a_placeholder() -> None:
    """A call cut short (max_output_tokens) where its arguments end like a placeholder: the
    held-back tail still goes out before `.done`."""
    args = {"item_id": "fc_1", "output_index": 0}
    raw = spaced(
        {
            "type": "response.function_call_arguments.delta",
            "sequence_number": 0,
            **args,
            "delta": '{"to": "[EM',
        }
    )
    raw += spaced(
        {
            "type": "response.function_call_arguments.done",
            "sequence_number": 1,
            **args,
            "arguments": '{"to": "[EM',
        }
    )
    stream = NativeStream(None, {"[EMAIL_1]": "ada@example.com"})
    out = split_events(stream.feed(raw))
    assert [e["type"].rsplit(".", 1)[1] for e in out] == ["delta", "delta", "done"]
    assert (
        "".join(e["delta"] for e in out[:2]) == '{"to": "[EM'
        and out[2]["arguments"] == '{"to": "[EM'
    )


def test_native_done_without_deltas() -> None:
    placeholders = {"[X_1]": "secret"}
    where = {"item_id": "msg_9", "output_index": 0, "content_index": 0}
    done = {
        "type": "response.output_text.done",
        "sequence_number": 0,
        **where,
        "text": "[X_1]",
        "logprobs": [],
    }
    stream = NativeStream(None, placeholders)
    out = split_events(stream.feed(spaced(done)))
    assert [e["type"] for e in out] == ["response.output_text.done"] and out[0]["text"] == "secret"


async def test_endpoint_answers_json_and_keeps_the_whole_conversation(
    gw: httpx.AsyncClient,
) -> None:
    first = await create(gw, input="one two three")
    assert first.headers["content-type"] == "application/json"
    body = first.json()
    stored = await gw.get(f"/v1/responses/{body['id']}", headers=ONE)
    assert stored.headers["content-type"] == "application/json"
    second = (await create(gw, input="four", previous_response_id=body["id"])).json()
    # The demo counts the words of all it was sent: the first input, its answer, "four".
    used = body["usage"]
    assert second["usage"]["input_tokens"] == used["input_tokens"] + used["output_tokens"] + 1
    third = (await create(gw, input="five", previous_response_id=second["id"])).json()
    expected = second["usage"]["input_tokens"] + second["usage"]["output_tokens"] + 1
    assert third["usage"]["input_tokens"] == expected


async def test_endpoint_errors_say_what_is_wrong(gw: httpx.AsyncClient) -> None:
    missing = await gw.get("/v1/responses/resp_nope", headers=ONE)
    assert missing.json()["error"] == {
        "message": "Response with id 'resp_nope' not found.",
        "type": "invalid_request_error",
        "param": "response_id",
        "code": "response_not_found",
    }
    long_id = "resp_" + "y" * 300
    cut = (await gw.get(f"/v1/responses/{long_id}", headers=ONE)).json()["error"]["message"]
    assert cut == f"Response with id '{long_id[:128]}' not found."
    body = (await create(gw, input="x")).json()
    path = f"/v1/responses/{body['id']}/input_items"
    order = (await gw.get(path, params={"order": "sideways-and-more"}, headers=ONE)).json()
    assert order["error"]["message"] == (
        "Invalid value for 'order': 'sideways-and-mor'. Supported values are: 'asc', 'desc'."
    )
    limit = (await gw.get(path, params={"limit": "0"}, headers=ONE)).json()
    assert limit["error"]["message"] == "Invalid 'limit': expected an integer from 1 to 100."
    assert limit["error"]["type"] == "invalid_request_error"


def tokens_counted(metrics: str) -> dict[str, float]:
    """gateway_tokens_total for the demo model, by type, from /metrics."""
    counted = {"prompt": 0.0, "completion": 0.0}
    for line in metrics.splitlines():
        if line.startswith("gateway_tokens_total{") and 'provider="mock"' in line:
            kind = line.split('type="')[1].split('"')[0]
            counted[kind] = float(line.rsplit(" ", 1)[1])
    return counted


async def test_tokens_counted_are_the_upstreams_and_none_for_a_cache_hit() -> None:
    from gateway.app import create_app
    from gateway.config import parse_config

    config = GATEWAY_CONFIG.replace(
        "cache: {enabled: false}", "cache: {semantic: {enabled: false}}"
    )
    transport = httpx.ASGITransport(app=create_app(parse_config(config, {})))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:

        async def counted() -> dict[str, float]:
            return tokens_counted((await client.get("/metrics")).text)

        assert await counted() == {"prompt": 0.0, "completion": 0.0}
        question = f"Count me {uuid4().hex}"
        usage = (await create(client, input=question)).json()["usage"]
        after_one = await counted()
        assert after_one == {"prompt": usage["input_tokens"], "completion": usage["output_tokens"]}
        streamed = await create(client, input=f"Stream me {uuid4().hex}", stream=True)
        final = events_of(streamed.content)[-1]["response"]["usage"]
        assert final is not None  # the gateway asked the upstream for stream usage
        after_two = await counted()
        assert after_two == {
            "prompt": after_one["prompt"] + final["input_tokens"],
            "completion": after_one["completion"] + final["output_tokens"],
        }
        for stream in (False, True):  # cache hits: no tokens spent
            hit = await create(client, input=question, stream=stream)
            assert hit.headers["x-gateway-cache"] == "hit-exact"
        assert await counted() == after_two


# ------------------------------------------------------------------ against the fake upstream
# The app built in each test (mutmut applies a mutant after import), its lifespan run by hand,
# against the fake upstream process: `native` answers /v1/responses, `translate` the same
# through /v1/chat/completions. What a client sees, what the upstream was sent, and what the
# decision feed and /metrics say (status, error code, tokens, cost).

ADMIN = {"authorization": "Bearer admin-key"}
AWS_KEY_ID = "AKIA" + "IOSFODNN7EXAMPLE"  # a secret the scan redacts, in pieces for scanners
MODELS = {"native": "native:gpt-4o-mini", "translate": "translate:gpt-4o-mini-2024-07-18"}
PATHS = {"native": "/v1/responses", "translate": "/v1/chat/completions"}
PRICES = {"native": (150, 600), "translate": (300, 1200)}  # USD per 1M input, output tokens


def upstream_config(fake: FakeUpstream, extra: str = "cache: {enabled: false}") -> str:
    def provider(name: str, model: str, mode: str) -> str:
        return (
            f"  {name}: {{type: openai, responses: {mode}, base_url: '{fake.base_url}', "
            f"api_key: {UPSTREAM_KEY}, models: ['{model}'], breaker: {{enabled: false}}, "
            "timeouts: {connect: 2, read: 5}}\n"
        )

    return (
        'auth: {api_keys: "key-one,key-two", admin_keys: "admin-key"}\n'
        "logging: {level: warning}\n"
        "providers:\n"
        + provider("native", "gpt-4o-mini", "native")
        + provider("translate", "gpt-4o-mini-2024-07-18", "translate")
        + f"  local: {{type: ollama, base_url: '{fake.url}', api_key: {UPSTREAM_KEY}, "
        "models: [gpt-4o-mini-local]}\n" + "routing: {default_model: 'native:gpt-4o-mini'}\n"
        "privacy: {actions: {secret: redact, pii: redact, keyword: redact}}\n"
        "pricing:\n"
        "  gpt-4o-mini: {input_per_1m: 150, output_per_1m: 600}\n"
        "  gpt-4o-mini-2024-07-18: {input_per_1m: 300, output_per_1m: 1200}\n" + extra + "\n"
    )


serving = in_process  # the app of a config, in this process, with its lifespan run


def cost_of(mode: str, usage: dict[str, Any]) -> float:
    per_in, per_out = PRICES[mode]
    return (usage["input_tokens"] * per_in + usage["output_tokens"] * per_out) / 1_000_000


def cost_header(cost: float) -> str:
    return f"{cost:.9f}".rstrip("0").rstrip(".")


async def last_decision(client: httpx.AsyncClient) -> dict[str, Any]:
    feed = (await client.get("/admin/decisions", params={"limit": "1"}, headers=ADMIN)).json()
    return feed["data"][0]  # type: ignore[no-any-return]


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of /metrics' text (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def ttfb_count(text: str, stream: str) -> float:
    return metric(
        text, "gateway_time_to_first_byte_seconds_count", endpoint="responses", stream=stream
    )


def output_text(response: dict[str, Any]) -> str:
    return "".join(
        part["text"]
        for item in response["output"]
        if item["type"] == "message"
        for part in item["content"]
    )


@pytest.mark.parametrize("mode", ["native", "translate"])
async def test_an_answer_its_cost_and_the_next_turn(fake_upstream: FakeUpstream, mode: str) -> None:
    async with serving(upstream_config(fake_upstream)) as client:
        fake_upstream.clear()
        before = (await client.get("/metrics")).text
        answer = await create(client, model=MODELS[mode], input="Hello there")
        after = (await client.get("/metrics")).text
        assert answer.status_code == 200
        assert ttfb_count(after, "false") == ttfb_count(before, "false") + 1
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["x-gateway-provider"] == mode
        body = answer.json()
        Response.model_validate(body)
        assert output_text(body) == "Fake reply to: Hello there"
        assert body["previous_response_id"] is None
        assert [r["path"] for r in fake_upstream.requests()] == [PATHS[mode]]
        cost = cost_of(mode, body["usage"])
        assert answer.headers["x-gateway-cost-usd"] == cost_header(cost)
        decision = await last_decision(client)
        assert (decision["status"], decision["error"]) == (200, None)
        assert decision["total_tokens"] == body["usage"]["total_tokens"]
        assert decision["cost_usd"] == pytest.approx(cost)
        stored = await client.get(f"/v1/responses/{body['id']}", headers=ONE)
        assert stored.json() == body
        # The next turn: the upstream is sent the whole conversation, the id is echoed.
        fake_upstream.clear()
        follow = await create(
            client, model=MODELS[mode], input="And again", previous_response_id=body["id"]
        )
        assert follow.status_code == 200
        second = follow.json()
        assert second["previous_response_id"] == body["id"]
        assert output_text(second) == "Fake reply to: And again"
        (sent,) = [r["body"] for r in fake_upstream.requests()]
        said = json.dumps(sent)
        assert "Hello there" in said and "Fake reply to: Hello there" in said
        assert "previous_response_id" not in sent
        assert (await client.get(f"/v1/responses/{second['id']}", headers=ONE)).json() == second


@pytest.mark.parametrize("mode", ["native", "translate"])
async def test_a_stream_its_cost_and_the_next_turn(fake_upstream: FakeUpstream, mode: str) -> None:
    async with serving(upstream_config(fake_upstream)) as client:
        before = (await client.get("/metrics")).text
        answer = await create(client, model=MODELS[mode], input="Stream this", stream=True)
        after = (await client.get("/metrics")).text
        assert answer.status_code == 200
        assert ttfb_count(after, "true") == ttfb_count(before, "true") + 1
        assert answer.content.endswith(b"\n\n")  # nothing after the last event
        assert answer.headers["content-type"].startswith("text/event-stream")
        assert answer.headers["cache-control"] == "no-cache"
        assert answer.headers["x-accel-buffering"] == "no"
        events = events_of(answer.content)
        assert kinds(events)[0] == "created" and kinds(events)[-1] == "completed"
        final = events[-1]["response"]
        assert output_text(final) == "Fake reply to: Stream this"
        deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
        assert "".join(deltas) == "Fake reply to: Stream this"
        decision = await last_decision(client)
        assert (decision["status"], decision["error"], decision["stream"]) == (200, None, True)
        assert decision["total_tokens"] == final["usage"]["total_tokens"]
        assert decision["cost_usd"] == pytest.approx(cost_of(mode, final["usage"]))
        assert (await client.get(f"/v1/responses/{final['id']}", headers=ONE)).json() == final
        follow = await create(
            client, model=MODELS[mode], input="more", previous_response_id=final["id"], stream=True
        )
        events = events_of(follow.content)
        assert events[0]["response"]["previous_response_id"] == final["id"]
        assert events[-1]["response"]["previous_response_id"] == final["id"]
        assert kinds(events)[-1] == "completed"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("mode", ["native", "translate"])
async def test_redacted_values_are_put_back_for_the_client(
    fake_upstream: FakeUpstream, mode: str, stream: bool
) -> None:
    async with serving(upstream_config(fake_upstream)) as client:
        fake_upstream.clear()
        question = f"my key is {AWS_KEY_ID} ok"
        answer = await create(client, model=MODELS[mode], input=question, stream=stream)
        assert answer.status_code == 200
        assert "secret" in answer.headers["x-gateway-privacy"].split(",")
        (sent,) = fake_upstream.requests()
        assert AWS_KEY_ID not in sent["raw"] and "[SECRET_1]" in sent["raw"]
        if stream:
            events = events_of(answer.content)
            assert kinds(events)[-1] == "completed"
            response = events[-1]["response"]
            deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
            assert "".join(deltas) == f"Fake reply to: {question}"
        else:
            response = answer.json()
        assert output_text(response) == f"Fake reply to: {question}"
        stored = (await client.get(f"/v1/responses/{response['id']}", headers=ONE)).json()
        assert output_text(stored) == f"Fake reply to: {question}"
        if not stream:
            return
        # Cut short (no [DONE] / no terminal event): the values are put back all the same.
        cut = await create(
            client, {**ONE, "x-fake-no-done": "1"}, model=MODELS[mode], input=question, stream=True
        )
        events = events_of(cut.content)
        deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
        assert "".join(deltas) == f"Fake reply to: {question}"
        assert kinds(events)[-1] == "failed"
        (item,) = [e["item"] for e in events if e["type"] == "response.output_item.done"]
        assert output_text({"output": [item]}) == f"Fake reply to: {question}"
        # Cut mid-event, paced so that the cut event comes alone: nothing of it is sent.
        headers = {**ONE, "x-fake-cut-bytes": "40", "x-fake-interval-ms": "20"}
        paced = await create(client, headers, model=MODELS[mode], input=question, stream=True)
        assert paced.content.endswith(b"\n\n")
        events = events_of(paced.content)
        assert kinds(events)[-1] == "failed"
        deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
        assert "".join(deltas) == f"Fake reply to: {question}"


# mode, fake option, value -> the last event, the feed's error code, an upstream error counted
# (gateway_upstream_errors_total's kind), the failed response's message
STREAM_FAULTS = [
    ("native", "bad-event", "1", "failed", "upstream_error", "invalid_response",
     "Provider 'native' sent a stream event that is not JSON."),
    ("native", "cut-bytes", "2", "completed", None, None, None),
    ("native", "cut-bytes", "40", "failed", "upstream_stream_incomplete", None,
     "Provider 'native' ended the stream before its last event."),
    ("native", "no-done", "1", "failed", "upstream_stream_incomplete", None,
     "Provider 'native' ended the stream before its last event."),
    ("native", "fail-after", "2", "failed", "upstream_error", "upstream_error",
     "failed: Response payload is not completed"),
    ("translate", "bad-event", "1", "failed", "upstream_error", None, "not JSON"),
    ("translate", "cut-bytes", "2", "completed", None, None, None),
    ("translate", "cut-bytes", "40", "failed", "upstream_error", None, None),
    ("translate", "no-done", "1", "failed", "upstream_error", None, "without [DONE]"),
    ("translate", "fail-after", "2", "failed", "upstream_error", "upstream_error",
     "failed: Response payload is not completed"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("mode", "option", "value", "last", "code", "counted", "message"), STREAM_FAULTS
)
async def test_a_broken_stream_ends_with_its_own_event(
    fake_upstream: FakeUpstream,
    mode: str,
    option: str,
    value: str,
    last: str,
    code: str | None,
    counted: str | None,
    message: str | None,
) -> None:
    """Whatever the upstream does to a stream, the client gets whole, numbered events and a
    last one that says how it ended; only a completed response is stored."""
    async with serving(upstream_config(fake_upstream)) as client:
        before = (await client.get("/metrics")).text
        headers = {**ONE, f"x-fake-{option}": value}
        answer = await create(client, headers, model=MODELS[mode], input="Cut me", stream=True)
        after = (await client.get("/metrics")).text
        assert answer.status_code == 200
        assert answer.content.endswith(b"\n\n")  # nothing after the last event
        events = events_of(answer.content)  # every event whole, valid, numbered from 0
        assert kinds(events)[:4] == ["created", "in_progress", "output_item.added",
                                     "content_part.added"]  # fmt: skip
        assert kinds(events)[-1] == last and kinds(events).count(last) == 1
        final = events[-1]["response"]
        assert final["id"] == events[0]["response"]["id"]
        decision = await last_decision(client)
        assert (decision["status"], decision["error"]) == (200, code)
        stored = await client.get(f"/v1/responses/{final['id']}", headers=ONE)
        if last == "completed":
            assert output_text(final) == "Fake reply to: Cut me"
            assert decision["total_tokens"] == final["usage"]["total_tokens"]
            assert stored.json() == final
        else:
            assert final["status"] == "failed" and final["error"]["code"] == "server_error"
            assert message is None or message in final["error"]["message"]
            assert stored.status_code == 404
        for kind in ("invalid_response", "upstream_error"):
            errors = [metric(t, "gateway_upstream_errors_total", provider=mode, kind=kind)
                      for t in (before, after)]  # fmt: skip
            assert errors[1] - errors[0] == (1 if kind == counted else 0), kind


@pytest.mark.parametrize(("option", "last"), [("1", "failed"), ("2", "error")])
async def test_a_native_stream_the_upstream_fails_is_relayed_counted_and_never_kept(
    fake_upstream: FakeUpstream, option: str, last: str
) -> None:
    """A native upstream that ends its stream with its own `response.failed` or `error`
    event: the client gets that event as the last one, the request is recorded as an
    upstream error (the breaker counts it), and nothing is stored or cached."""
    config = upstream_config(fake_upstream, "cache: {semantic: {enabled: false}}")
    async with serving(config) as client:
        question = f"Fail me {uuid4().hex}"
        failing = {**ONE, "x-fake-failed-event": option}
        answer = await create(client, failing, model=MODELS["native"], input=question, stream=True)
        assert answer.status_code == 200 and answer.headers["x-gateway-cache"] == "miss"
        events = events_of(answer.content)
        assert kinds(events)[:2] == ["created", "in_progress"]
        assert kinds(events)[-1] == last and kinds(events).count(last) == 1
        error = events[-1]["response"]["error"] if last == "failed" else events[-1]
        assert (error["code"], error["message"]) == ("server_error", "The fake model failed.")
        decision = await last_decision(client)
        assert (decision["status"], decision["error"]) == (200, "upstream_error")
        created = events[0]["response"]["id"]
        assert (await client.get(f"/v1/responses/{created}", headers=ONE)).status_code == 404
        fake_upstream.clear()
        again = await create(client, model=MODELS["native"], input=question, stream=True)
        assert again.headers["x-gateway-cache"] == "miss"  # the failure was never cached
        assert kinds(events_of(again.content))[-1] == "completed"
        assert len(fake_upstream.requests()) == 1


@pytest.mark.parametrize("first_streamed", [False, True])
@pytest.mark.parametrize("mode", ["native", "translate"])
async def test_an_answer_cached_from_either_mode_is_replayed_as_new_responses(
    fake_upstream: FakeUpstream, mode: str, first_streamed: bool
) -> None:
    config = upstream_config(fake_upstream, "cache: {semantic: {enabled: false}}")
    async with serving(config) as client:
        fake_upstream.clear()
        question = f"Cache me {uuid4().hex}"
        miss = await create(client, model=MODELS[mode], input=question, stream=first_streamed)
        assert miss.headers["x-gateway-cache"] == "miss"
        first = events_of(miss.content)[-1]["response"] if first_streamed else miss.json()
        assert output_text(first) == f"Fake reply to: {question}"
        for stream in (False, True):
            before = (await client.get("/metrics")).text
            hit = await create(client, model=MODELS[mode], input=question, stream=stream)
            after = (await client.get("/metrics")).text
            assert hit.status_code == 200
            assert hit.headers["x-gateway-cache"] == "hit-exact"
            if stream:
                assert hit.headers["content-type"].startswith("text/event-stream")
                assert hit.headers["cache-control"] == "no-cache"
                events = events_of(hit.content)
                assert kinds(events)[-1] == "completed"
                again = events[-1]["response"]
                deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
                assert "".join(deltas) == output_text(first)
            else:
                assert hit.headers["content-type"] == "application/json"
                assert hit.headers["x-gateway-cost-usd"] == "0"
                again = hit.json()
                Response.model_validate(again)
            assert again["id"] != first["id"] and again["status"] == "completed"
            assert again["model"] == first["model"]
            assert (
                isinstance(again["created_at"], int) and again["created_at"] >= first["created_at"]
            )
            assert output_text(again) == output_text(first)
            assert again["usage"]["input_tokens"] == first["usage"]["input_tokens"]
            assert (await client.get(f"/v1/responses/{again['id']}", headers=ONE)).json() == again
            decision = await last_decision(client)
            assert (decision["status"], decision["error"], decision["cache"]) == (
                200, None, "hit_exact",
            )  # fmt: skip
            assert (decision["total_tokens"], decision["cost_usd"]) == (0, 0.0)
            flag = "true" if stream else "false"
            assert ttfb_count(after, flag) == ttfb_count(before, flag) + 1
        assert len(fake_upstream.requests()) == 1  # the hits never reached the upstream


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("mode", ["native", "translate"])
async def test_an_answer_redis_cannot_keep_is_served_and_counted(
    fake_upstream: FakeUpstream, mode: str, stream: bool
) -> None:
    dead = f"state: {{redis_url: 'redis://127.0.0.1:{free_port()}/0'}}\ncache: {{enabled: false}}"
    async with serving(upstream_config(fake_upstream, dead)) as client:
        before = (await client.get("/metrics")).text
        answer = await create(client, model=MODELS[mode], input="Keep me", stream=stream)
        after = (await client.get("/metrics")).text
        assert answer.status_code == 200
        response = events_of(answer.content)[-1]["response"] if stream else answer.json()
        assert response["status"] == "completed"
        assert output_text(response) == "Fake reply to: Keep me"
        counted = [metric(t, "gateway_redis_errors_total", op="response_store")
                   for t in (before, after)]  # fmt: skip
        assert counted[1] == counted[0] + 1
        gone = await client.get(f"/v1/responses/{response['id']}", headers=ONE)
        assert gone.status_code == 503
        assert gone.json()["error"]["code"] == "state_unavailable"


@pytest.mark.parametrize("mode", ["native", "translate"])
async def test_an_answer_that_is_not_a_json_object_is_502(
    fake_upstream: FakeUpstream, mode: str
) -> None:
    async with serving(upstream_config(fake_upstream)) as client:
        before = (await client.get("/metrics")).text
        headers = {**ONE, "x-fake-status": "200", "x-fake-error-body": "[1, 2]"}
        answer = await create(client, headers, model=MODELS[mode], input="A list?")
        after = (await client.get("/metrics")).text
        assert answer.status_code == 502
        assert answer.json()["error"]["message"] == (
            f"Provider '{mode}' answered HTTP 200 with JSON that is not an object."
        )
        headers = {**ONE, "x-fake-garbage": "1"}  # not JSON at all
        garbage = await create(client, headers, model=MODELS[mode], input="Garbage?")
        assert garbage.status_code == 502
        assert garbage.json()["error"]["message"] == (
            f"Provider '{mode}' answered HTTP 200 with a body that is not JSON."
        )
        last = (await client.get("/metrics")).text
        counted = [metric(t, "gateway_upstream_errors_total", provider=mode,
                          kind="invalid_response") for t in (before, after, last)]  # fmt: skip
        assert counted[1] == counted[0] + 1 and counted[2] == counted[1] + 1


async def test_a_translated_answer_with_odd_usage_counts_none(fake_upstream: FakeUpstream) -> None:
    chat = {
        "id": "chatcmpl-odd",
        "object": "chat.completion",
        "created": CREATED,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Odd."},
                     "finish_reason": "stop"}],
        "usage": "plenty",
    }  # fmt: skip
    async with serving(upstream_config(fake_upstream)) as client:
        headers = {**ONE, "x-fake-status": "200", "x-fake-error-body": json.dumps(chat)}
        answer = await create(client, headers, model=MODELS["translate"], input="Odd usage?")
        assert answer.status_code == 200
        body = answer.json()
        assert output_text(body) == "Odd." and body["usage"] is None
        decision = await last_decision(client)
        assert (decision["status"], decision["error"], decision["total_tokens"]) == (
            200,
            None,
            None,
        )


async def test_a_local_provider_costs_nothing_whatever_its_model_is_called(
    fake_upstream: FakeUpstream,
) -> None:
    """`gpt-4o-mini-local` matches the `gpt-4o-mini` price, but an ollama provider is free."""
    async with serving(upstream_config(fake_upstream)) as client:
        answer = await create(client, model="local:gpt-4o-mini-local", input="Free?")
        assert answer.status_code == 200
        assert answer.json()["usage"]["output_tokens"] > 0
        assert answer.headers["x-gateway-cost-usd"] == "0"
