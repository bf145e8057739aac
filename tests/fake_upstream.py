"""A fake OpenAI-compatible server, run in its own process by the tests and the benchmark.

    python -m tests.fake_upstream --host 127.0.0.1 --port 9000 [--delay-ms 0] [--chunks 8]
        [--interval-ms 0] [--workers 1] [--require-key KEY] [--log-level warning]

Pure ASGI (no framework) so that it is never the bottleneck of a benchmark. Replies are
deterministic; latency and faults are set per request with `x-fake-<name>` headers
(`x-fake-delay-ms: 500`) or a `"fake": {...}` body field (`{"delay_ms": 500}`; the body
wins). "Content chunks" are a stream's events after its role chunk.

    delay_ms      slow headers: wait this long before the response head (or until the
                  client hangs up)
    chunks        content chunks in a stream (default 8)
    interval_ms   pause between content chunks
    status        answer this HTTP status with an OpenAI error envelope (500, 429, ...)
    error_body    ... or with this body instead (JSON, else sent as text/plain)
    retry_after   with `status`: a Retry-After header of this value (seconds)
    reply_headers extra response headers, a JSON object (`{"retry-after-ms": "250"}`), on
                  any reply: success, stream or error
    no_done       1: a stream ends after its last event without `data: [DONE]` (a
                  Responses stream: without its terminal `response.completed` event)
    failed_event  a Responses stream ends with its own failure instead of
                  `response.completed`: 1 a `response.failed` event (the response with
                  status "failed" and an error), 2 an `error` event
    bad_event     a stream's content chunk N (0-based) is sent as a data line that is
                  not JSON; the rest of the stream is unchanged
    cut_bytes     a stream's last N bytes are never sent (2: the last event without its
                  closing blank line; more: the stream ends mid-event)
    tags          the models `GET /api/tags` lists, comma-separated (Ollama's listing;
                  without it that path is 404, as llama.cpp answers): send it as a
                  provider's `headers: {x-fake-tags: ...}`
    fail_after    connection reset mid-stream: drop the connection after N content
                  chunks (non-streamed: after the response head, before any body)
    stall_after   stall mid-stream: stop after N content chunks (non-streamed: after the
                  head and N bytes of the body), hold the connection open `stall_ms`
                  (default 10000), then finish the reply if the client is still there
    stall_ms      how long a stall lasts
    garbage       1: a 200 whose body is not JSON (a stream: every data line but
                  [DONE] is not JSON), sent as application/json or text/event-stream
    seed          deterministic content: `seeded_text(seed, size)`, a fixed id and created
                  time; a stream also sends `: sha256=<hex>` (an SSE comment, which
                  clients skip) before [DONE], the digest of every byte sent before it
    size          characters of seeded content (default 1024)
    content       the reply's text
    arguments     the tool call's arguments, when the request has tools

`/v1/responses` is the Responses API as OpenAI serves it (non-streamed, and the typed event
stream with sequence numbers, no [DONE]), with the same options and the same script as chat:
a function tool in the request gets a function_call, a last `function_call_output` item gets
"Tool said: <output>", else "Fake reply to: <last user text>". It is stateless: a request with
`previous_response_id` gets 404 `previous_response_not_found`.

See docs/BENCHMARKS.md and the tests (test_streaming, test_faults, test_soak) for uses.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CONFIG_ENV = "FAKE_UPSTREAM_CONFIG"
RECORD_LIMIT = 200
CREATED = 1_700_000_000
MODEL_IDS = ("fake-model", "gpt-4o-mini", "text-embedding-3-small")
# As OpenAI answers: every other 4xx is invalid_request_error, a 5xx server_error.
ERROR_TYPES = {429: "requests"}
INT_OPTIONS = (
    "delay_ms", "chunks", "interval_ms", "status", "fail_after", "stall_after", "stall_ms",
    "garbage", "seed", "size", "no_done", "bad_event", "cut_bytes",
    "failed_event",
)  # fmt: skip
STR_OPTIONS = ("error_body", "content", "arguments", "retry_after", "reply_headers", "tags")
JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
]
DONE_EVENT = b"data: [DONE]\n\n"
# What a confused proxy in front of a real upstream might answer with a 200.
GARBAGE_BODY = b"<html><body><h1>200 OK</h1>upstream says hello</body></html>"
SEED_WORDS = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
    "juliett", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
    "sierra", "tango", "uniform", "victor", "whiskey", "x-ray", "yankee", "zulu",
)  # fmt: skip


@dataclass(frozen=True)
class Options:
    """Behaviour of one request: the CLI defaults, overridden per request."""

    delay_ms: int = 0
    chunks: int = 8
    interval_ms: int = 0
    status: int | None = None
    error_body: str | None = None
    fail_after: int | None = None
    content: str | None = None
    arguments: str | None = None
    retry_after: str | None = None
    stall_after: int | None = None
    stall_ms: int = 10_000
    garbage: int = 0
    seed: int | None = None
    size: int = 1024
    reply_headers: str | None = None
    no_done: int = 0
    bad_event: int | None = None
    cut_bytes: int = 0
    failed_event: int = 0
    tags: str | None = None


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 9000
    workers: int = 1
    require_key: str | None = None
    log_level: str = "warning"
    defaults: Options = field(default_factory=Options)


@dataclass
class Stats:
    open_streams: int = 0
    completed_streams: int = 0
    cancelled_streams: int = 0
    failed_streams: int = 0


class FailAfter(Exception):
    """Raised after the response started, so that uvicorn drops the connection."""


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def error_envelope(status: int, message: str, code: str | None = None) -> bytes:
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    if code is None and status == 429:
        code = "rate_limit_exceeded"
    return dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})


def word_count(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(word_count(part) for part in value)
    if isinstance(value, dict):
        return word_count(value.get("text") or value.get("content"))
    return 0


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def split_pieces(text: str, count: int) -> list[str]:
    """Exactly `count` pieces whose concatenation is `text` (pieces may be empty)."""
    count = max(1, count)
    size = len(text)
    return [text[i * size // count : (i + 1) * size // count] for i in range(count)]


def seeded_text(seed: int, size: int = 1024) -> str:
    """`size` characters of words picked by a PRNG seeded with `seed`: a client that knows
    the seed knows the text, so it can check every byte of it arrived, in order."""
    rng = random.Random(seed)
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(SEED_WORDS) + (f"{rng.randrange(1000)} " if rng.random() < 0.2 else " ")
        words.append(word)
        length += len(word)
    return "".join(words)[:size]


def tool_arguments(tool: dict[str, Any]) -> str:
    params = (tool.get("function") or {}).get("parameters") or {}
    props = params.get("properties") or {}
    values: dict[str, Any] = {}
    for name in params.get("required") or []:
        kind = (props.get(name) or {}).get("type")
        if kind == "string":
            values[name] = "Paris"
        elif kind in ("number", "integer"):
            values[name] = 1
        elif kind == "boolean":
            values[name] = True
        else:
            values[name] = None
    return dumps(values).decode()


def embedding_vector(item: Any, dimensions: int) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(dumps(item)).digest()[:8], "little")
    rng = random.Random(seed)
    raw = [rng.uniform(-1.0, 1.0) for _ in range(dimensions)]
    norm = sum(x * x for x in raw) ** 0.5 or 1.0
    packed = struct.pack(f"<{dimensions}f", *(x / norm for x in raw))
    return list(struct.unpack(f"<{dimensions}f", packed))  # float32-exact, as base64 gives


class FakeUpstream:
    """The ASGI application."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.stats = Stats()
        self.requests: deque[dict[str, Any]] = deque(maxlen=RECORD_LIMIT)
        self.counter = 0
        self.expected_auth = f"Bearer {config.require_key}".encode() if config.require_key else None
        models = [self._model(m) for m in MODEL_IDS]
        self.models_body = dumps({"object": "list", "data": models})
        self.health_body = dumps({"ok": True})

    @staticmethod
    def _model(model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": CREATED, "owned_by": "fake"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method: str = scope["method"]
        path: str = scope["path"]
        body = await read_body(receive)
        if path.startswith("/v1/") or path == "/api/tags":
            await self._v1(scope, method, path, body, receive, send)
        elif path in ("/health", "/healthz"):
            await respond(send, 200, self.health_body)
        elif path == "/_fake/requests":
            if method == "DELETE":
                self.requests.clear()
                await respond(send, 200, self.health_body)
            else:
                await respond(send, 200, dumps(list(self.requests)))
        elif path == "/_fake/stats":
            if method == "DELETE":
                self.stats = Stats()
            await respond(send, 200, dumps(asdict(self.stats)))
        else:
            await respond(send, 404, error_envelope(404, f"no route {method} {path}"))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _v1(
        self, scope: Scope, method: str, path: str, raw: bytes, receive: Receive, send: Send
    ) -> None:
        headers: dict[str, str] = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
        }
        body: Any = None
        invalid = False
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                invalid = True
        self.requests.append(
            {
                "method": method,
                "path": path,
                "headers": headers,
                # every header as sent, repeats included (`headers` keeps the last of each)
                "header_list": [
                    [k.decode("latin-1").lower(), v.decode("latin-1")] for k, v in scope["headers"]
                ],
                "body": body,
                "raw": raw.decode("utf-8", "replace"),
            }
        )
        if self.expected_auth is not None:
            auth = headers.get("authorization", "").encode("latin-1")
            if auth != self.expected_auth:
                envelope = dumps(
                    {
                        "error": {
                            "message": "Incorrect API key provided",
                            "type": "invalid_request_error",
                            "param": None,
                            "code": "invalid_api_key",
                        }
                    }
                )
                await respond(send, 401, envelope)
                return
        if invalid:
            await respond(send, 400, error_envelope(400, "invalid JSON body"))
            return
        try:
            opts = self._options(headers, body)
        except (TypeError, ValueError) as exc:
            await respond(send, 400, error_envelope(400, f"bad fake option: {exc}"))
            return
        if opts.delay_ms > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wait_disconnect(receive), opts.delay_ms / 1000)
                return  # the client hung up while it waited (its timeout): nothing to send
        if opts.status is not None:
            await self._error(send, opts)
            return
        if method == "GET" and path == "/api/tags":
            await self._tags(send, opts)
            return
        if method == "GET" and path == "/v1/models":
            await respond(send, 200, self.models_body)
            return
        if method == "GET" and path.startswith("/v1/models/"):
            await respond(send, 200, dumps(self._model(path[len("/v1/models/") :])))
            return
        handler = {
            "/v1/chat/completions": self._chat,
            "/v1/completions": self._completions,
            "/v1/embeddings": self._embeddings,
            "/v1/responses": self._responses,
        }.get(path)
        if handler is None:
            await respond(send, 404, error_envelope(404, f"no route {method} {path}"))
            return
        if method != "POST":
            await respond(send, 405, error_envelope(405, f"method {method} not allowed"))
            return
        if not isinstance(body, dict):
            await respond(send, 400, error_envelope(400, "body must be a JSON object"))
            return
        await handler(body, opts, receive, send)

    def _options(self, headers: dict[str, str], body: Any) -> Options:
        overrides: dict[str, Any] = {}
        for name, value in headers.items():
            if name.startswith("x-fake-"):
                overrides[name[7:].replace("-", "_")] = value
        if isinstance(body, dict) and isinstance(body.get("fake"), dict):
            overrides.update(body["fake"])
        if isinstance(overrides.get("reply_headers"), dict):
            overrides["reply_headers"] = dumps(overrides["reply_headers"]).decode()
        if not overrides:
            return self.config.defaults
        changes: dict[str, Any] = {}
        for name in INT_OPTIONS:
            if overrides.get(name) is not None:
                changes[name] = int(overrides[name])
        for name in STR_OPTIONS:
            if overrides.get(name) is not None:
                changes[name] = str(overrides[name])
        if changes.get("reply_headers") is not None and not isinstance(
            orjson.loads(changes["reply_headers"]), dict
        ):
            raise ValueError("reply_headers must be a JSON object")
        return replace(self.config.defaults, **changes)

    async def _tags(self, send: Send, opts: Options) -> None:
        """Ollama's `GET /api/tags`: the pulled models, when the `tags` option names them."""
        if opts.tags is None:
            await respond(send, 404, error_envelope(404, "no route GET /api/tags"))
            return
        names = [n.strip() for n in opts.tags.split(",") if n.strip()]
        models = [{"name": n, "model": n, "size": 1, "digest": "0" * 64} for n in names]
        await respond(send, 200, dumps({"models": models}), extra_headers(opts))

    async def _error(self, send: Send, opts: Options) -> None:
        status = opts.status or 500
        extra = [] if opts.retry_after is None else [(b"retry-after", opts.retry_after.encode())]
        extra += extra_headers(opts)
        if opts.error_body is None:
            body = error_envelope(status, f"fake error {status}")
            await respond(send, status, body, [*JSON_HEADERS, *extra])
            return
        try:
            orjson.loads(opts.error_body)
            content_type = b"application/json"
        except orjson.JSONDecodeError:
            content_type = b"text/plain; charset=utf-8"
        headers = [(b"content-type", content_type), *extra]
        await respond(send, status, opts.error_body.encode(), headers)

    def _next_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-fake{os.getpid()}x{self.counter}"

    async def _chat(
        self, body: dict[str, Any], opts: Options, receive: Receive, send: Send
    ) -> None:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            await respond(send, 400, error_envelope(400, "messages must be a non-empty list"))
            return
        model = str(body.get("model") or "fake-model")
        last = messages[-1] if isinstance(messages[-1], dict) else {}
        tools = body.get("tools")
        tool_call: dict[str, Any] | None = None
        if last.get("role") == "tool":
            text = "Tool said: " + content_text(last.get("content"))
        elif isinstance(tools, list) and tools and isinstance(tools[0], dict):
            name = (tools[0].get("function") or {}).get("name") or "tool"
            arguments = opts.arguments if opts.arguments is not None else tool_arguments(tools[0])
            tool_call = {"name": name, "arguments": arguments}
            text = ""
        else:
            user = next(
                (m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"),
                {},
            )
            text = "Fake reply to: " + content_text(user.get("content"))[:200]
        if opts.content is not None and tool_call is None:
            text = opts.content
        if opts.seed is not None and tool_call is None:
            text = seeded_text(opts.seed, opts.size)
        prompt_tokens = sum(word_count(m.get("content")) for m in messages if isinstance(m, dict))
        completion_tokens = word_count(tool_call["arguments"] if tool_call else text)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        finish = "tool_calls" if tool_call else "stop"
        seeded = opts.seed is not None
        base = {
            "id": f"chatcmpl-seed{opts.seed}" if seeded else self._next_id("chatcmpl"),
            "object": "chat.completion",
            "created": CREATED if seeded else int(time.time()),
            "model": model,
            "system_fingerprint": "fp_fake",
        }
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
            if tool_call:
                message["content"] = None
                message["tool_calls"] = [
                    {"id": "call_fake_1", "type": "function", "function": tool_call}
                ]
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            await self._non_stream(send, opts, {**base, "choices": [choice], "usage": usage})
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base["object"] = "chat.completion.chunk"
        if include_usage:
            base["usage"] = None

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return {**base, "choices": [choice]}

        head = [chunk({"role": "assistant", "content": "" if tool_call is None else None})]
        if tool_call:
            head.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_fake_1",
                                "type": "function",
                                "function": {"name": tool_call["name"], "arguments": ""},
                            }
                        ]
                    }
                )
            )
            pieces = [
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                for piece in split_pieces(tool_call["arguments"], opts.chunks)
            ]
        else:
            pieces = [chunk({"content": piece}) for piece in split_pieces(text, opts.chunks)]
        tail = [chunk({}, finish)]
        if include_usage:
            tail.append({**base, "choices": [], "usage": usage})
        await self._stream(receive, send, opts, head, pieces, tail)

    async def _responses(
        self, body: dict[str, Any], opts: Options, receive: Receive, send: Send
    ) -> None:
        previous = body.get("previous_response_id")
        if previous is not None:
            error = {
                "message": f"Previous response with id '{previous}' not found.",
                "type": "invalid_request_error",
                "param": "previous_response_id",
                "code": "previous_response_not_found",
            }
            await respond(send, 404, dumps({"error": error}))
            return
        items = body.get("input")
        if isinstance(items, str):
            items = [{"type": "message", "role": "user", "content": items}]
        if not isinstance(items, list) or not items:
            await respond(send, 400, error_envelope(400, "input must be a string or a list"))
            return
        last = items[-1] if isinstance(items[-1], dict) else {}
        tools = [t for t in body.get("tools") or () if isinstance(t, dict)]
        functions = [t for t in tools if t.get("type") == "function"]
        call: dict[str, Any] | None = None
        if last.get("type") == "function_call_output":
            text = "Tool said: " + content_text(last.get("output"))
        elif functions:
            tool = functions[0]
            arguments = opts.arguments
            if arguments is None:
                arguments = tool_arguments({"function": tool})
            call = {"name": tool.get("name") or "tool", "arguments": arguments}
            text = ""
        else:
            user = next(
                (i for i in reversed(items) if isinstance(i, dict) and i.get("role") == "user"),
                {},
            )
            text = "Fake reply to: " + content_text(user.get("content"))[:200]
        if opts.content is not None and call is None:
            text = opts.content
        if opts.seed is not None and call is None:
            text = seeded_text(opts.seed, opts.size)
        texts = [body.get("instructions")]
        for item in items:
            if isinstance(item, dict):
                texts += [item.get("content"), item.get("output"), item.get("arguments")]
        input_tokens = sum(word_count(t) for t in texts)
        output_tokens = word_count(call["arguments"] if call else text)
        response_id = self._next_id("resp")
        message_id, call_item_id = f"msg_{response_id}", f"fc_{response_id}"
        response: dict[str, Any] = {
            "id": response_id,
            "object": "response",
            "created_at": int(time.time()),
            "status": "in_progress",
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": str(body.get("model") or "fake-model"),
            "output": [],
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": None,
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": tools,
            "top_p": body.get("top_p", 1.0),
            "usage": None,
            "metadata": body.get("metadata") or {},
        }
        usage = {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        }
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
        message = {"id": message_id, "type": "message", "role": "assistant",
                   "status": "completed", "content": [part]}  # fmt: skip
        item = message
        if call is not None:
            item = {"id": call_item_id, "type": "function_call", "status": "completed",
                    "call_id": "call_fake_1", **call}  # fmt: skip
        done = {**response, "status": "completed", "output": [item], "usage": usage}
        if not body.get("stream"):
            await self._non_stream(send, opts, done)
            return
        events: list[tuple[str, dict[str, Any]]] = [
            ("response.created", {"response": response}),
            ("response.in_progress", {"response": response}),
        ]
        where = {"item_id": item["id"], "output_index": 0}
        if call is None:
            events += [
                ("response.output_item.added",
                 {"output_index": 0, "item": {**message, "status": "in_progress", "content": []}}),
                ("response.content_part.added",
                 {**where, "content_index": 0, "part": {**part, "text": ""}}),
            ]  # fmt: skip
            pieces = [
                ("response.output_text.delta",
                 {**where, "content_index": 0, "delta": piece, "logprobs": []})
                for piece in split_pieces(text, opts.chunks)
            ]  # fmt: skip
            tail = [
                ("response.output_text.done",
                 {**where, "content_index": 0, "text": text, "logprobs": []}),
                ("response.content_part.done", {**where, "content_index": 0, "part": part}),
            ]  # fmt: skip
        else:
            events.append(
                ("response.output_item.added",
                 {"output_index": 0, "item": {**item, "status": "in_progress", "arguments": ""}})
            )  # fmt: skip
            pieces = [
                ("response.function_call_arguments.delta", {**where, "delta": piece})
                for piece in split_pieces(call["arguments"], opts.chunks)
            ]
            tail = [
                ("response.function_call_arguments.done",
                 {**where, "name": call["name"], "arguments": call["arguments"]}),
            ]  # fmt: skip
        tail.append(("response.output_item.done", {"output_index": 0, "item": item}))
        failure = {"code": "server_error", "message": "The fake model failed."}
        if opts.failed_event == 1:
            failed = {**response, "status": "failed", "error": failure}
            tail.append(("response.failed", {"response": failed}))
        elif opts.failed_event == 2:
            tail.append(("error", {**failure, "param": None}))
        else:
            tail.append(("response.completed", {"response": done}))
        numbered = [
            (kind, {"type": kind, "sequence_number": n, **fields})
            for n, (kind, fields) in enumerate([*events, *pieces, *tail])
        ]
        sse = [b"event: " + k.encode() + b"\ndata: " + dumps(e) + b"\n\n" for k, e in numbered]
        if opts.garbage:
            sse = [b"event: x\ndata: {not json, event %d}\n\n" % i for i in range(len(sse))]
        if opts.no_done:
            sse.pop()
        await self._send_events(receive, send, opts, sse, len(events))

    async def _completions(
        self, body: dict[str, Any], opts: Options, receive: Receive, send: Send
    ) -> None:
        prompt = body.get("prompt", "")
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            prompt_text = prompt[0]
        else:
            prompt_text = prompt if isinstance(prompt, str) else json.dumps(prompt)
        text = opts.content if opts.content is not None else "Fake reply to: " + prompt_text[:200]
        if opts.seed is not None:
            text = seeded_text(opts.seed, opts.size)
        prompt_tokens = (
            word_count(prompt)
            if not isinstance(prompt, list) or (prompt and isinstance(prompt[0], str))
            else len(prompt)
        )
        completion_tokens = word_count(text)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        base = {
            "id": self._next_id("cmpl"),
            "object": "text_completion",
            "created": int(time.time()),
            "model": str(body.get("model") or "fake-model"),
            "system_fingerprint": "fp_fake",
        }

        def choice(piece: str, finish_reason: str | None) -> dict[str, Any]:
            return {"text": piece, "index": 0, "logprobs": None, "finish_reason": finish_reason}

        if not body.get("stream"):
            await self._non_stream(
                send, opts, {**base, "choices": [choice(text, "stop")], "usage": usage}
            )
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if include_usage:
            base["usage"] = None
        pieces = [{**base, "choices": [choice(p, None)]} for p in split_pieces(text, opts.chunks)]
        tail: list[dict[str, Any]] = [{**base, "choices": [choice("", "stop")]}]
        if include_usage:
            tail.append({**base, "choices": [], "usage": usage})
        await self._stream(receive, send, opts, [], pieces, tail)

    async def _embeddings(
        self, body: dict[str, Any], opts: Options, receive: Receive, send: Send
    ) -> None:
        value = body.get("input")
        items: list[Any]
        if isinstance(value, str) or (
            isinstance(value, list) and value and all(isinstance(v, int) for v in value)
        ):
            items = [value]
        elif isinstance(value, list) and value:
            items = value
        else:
            await respond(send, 400, error_envelope(400, "input must be a string or a list"))
            return
        dimensions = int(body.get("dimensions") or 8)
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        tokens = 0
        for index, item in enumerate(items):
            vector = embedding_vector(item, dimensions)
            embedding: Any = vector
            if as_base64:
                embedding = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
            tokens += len(item) if isinstance(item, list) else word_count(item)
        reply = {
            "object": "list",
            "data": data,
            "model": str(body.get("model") or "text-embedding-3-small"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        await self._non_stream(send, opts, reply)

    async def _non_stream(self, send: Send, opts: Options, reply: dict[str, Any]) -> None:
        if opts.fail_after is not None:
            await send({"type": "http.response.start", "status": 200, "headers": JSON_HEADERS})
            raise FailAfter("fail_after on a non-streamed reply: headers, then no body")
        body = GARBAGE_BODY if opts.garbage else dumps(reply)
        if opts.stall_after is None:
            await respond(send, 200, body, [*JSON_HEADERS, *extra_headers(opts)])
            return
        cut = min(max(opts.stall_after, 0), len(body) - 1)
        head = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": head})
        await send({"type": "http.response.body", "body": body[:cut], "more_body": True})
        await asyncio.sleep(opts.stall_ms / 1000)
        await send({"type": "http.response.body", "body": body[cut:]})

    async def _stream(
        self,
        receive: Receive,
        send: Send,
        opts: Options,
        head: list[dict[str, Any]],
        pieces: list[dict[str, Any]],
        tail: list[dict[str, Any]],
    ) -> None:
        if opts.garbage:
            count = len(head) + len(pieces) + len(tail)
            events = [b"data: {not json, event %d}\n\n" % i for i in range(count)]
        else:
            events = [b"data: " + dumps(obj) + b"\n\n" for obj in (*head, *pieces, *tail)]
        if opts.seed is not None:
            digest = hashlib.sha256(b"".join(events)).hexdigest().encode()
            events.append(b": sha256=" + digest + b"\n\n")
        if not opts.no_done:
            events.append(DONE_EVENT)
        await self._send_events(receive, send, opts, events, len(head))

    async def _send_events(
        self, receive: Receive, send: Send, opts: Options, events: list[bytes], head: int
    ) -> None:
        """Send SSE events with the options' faults; `head` events precede the content."""
        events = stream_faults(events, opts, head)
        fail_at = head + opts.fail_after if opts.fail_after is not None else -1
        stall_at = head + opts.stall_after if opts.stall_after is not None else -1
        interval = opts.interval_ms / 1000
        disconnected = asyncio.ensure_future(wait_disconnect(receive))
        self.stats.open_streams += 1
        outcome = "completed"
        try:
            start = [*SSE_HEADERS, *extra_headers(opts)]
            await send({"type": "http.response.start", "status": 200, "headers": start})
            for index, event in enumerate(events):
                if index == fail_at:
                    outcome = "failed"
                    raise FailAfter(f"fail_after={opts.fail_after}: dropping the connection")
                if index == stall_at:
                    await asyncio.wait((disconnected,), timeout=opts.stall_ms / 1000)
                # the interval separates content chunks: the first one follows the role chunk
                if index > head and interval > 0:
                    await asyncio.wait((disconnected,), timeout=interval)
                if disconnected.done():
                    outcome = "cancelled"
                    return
                await send({"type": "http.response.body", "body": event, "more_body": True})
            if disconnected.done():
                outcome = "cancelled"
                return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            disconnected.cancel()
            self.stats.open_streams -= 1
            if outcome == "completed":
                self.stats.completed_streams += 1
            elif outcome == "cancelled":
                self.stats.cancelled_streams += 1
            else:
                self.stats.failed_streams += 1


def stream_faults(events: list[bytes], opts: Options, head: int) -> list[bytes]:
    """The `bad_event` and `cut_bytes` options applied to a stream's events."""
    events = list(events)
    if opts.bad_event is not None and 0 <= head + opts.bad_event < len(events):
        events[head + opts.bad_event] = b"data: {not json, bad_event}\n\n"
    cut = opts.cut_bytes
    while cut > 0 and events:
        last = events.pop()
        if len(last) > cut:
            events.append(last[:-cut])
        cut -= len(last)
    return events


def extra_headers(opts: Options) -> list[tuple[bytes, bytes]]:
    """The `reply_headers` option as raw headers."""
    if not opts.reply_headers:
        return []
    pairs = orjson.loads(opts.reply_headers)
    return [(str(k).lower().encode(), str(v).encode()) for k, v in pairs.items()]


async def read_body(receive: Receive) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body
    parts = [body]
    while message.get("more_body"):
        message = await receive()
        parts.append(message.get("body", b""))
    return b"".join(parts)


async def wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = JSON_HEADERS
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def config_from_env() -> ServerConfig:
    raw = json.loads(os.environ.get(CONFIG_ENV, "{}"))
    defaults = Options(**raw.pop("defaults", {}))
    return ServerConfig(**raw, defaults=defaults)


def create_app() -> FakeUpstream:
    """uvicorn factory: reads the config the CLI put in the environment (one per worker)."""
    return FakeUpstream(config_from_env())


def parse_args(argv: list[str] | None = None) -> ServerConfig:
    parser = argparse.ArgumentParser(prog="python -m tests.fake_upstream", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--delay-ms", type=int, default=0)
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--interval-ms", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--require-key", default=None)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    defaults = Options(delay_ms=args.delay_ms, chunks=args.chunks, interval_ms=args.interval_ms)
    return ServerConfig(
        host=args.host,
        port=args.port,
        workers=args.workers,
        require_key=args.require_key,
        log_level=args.log_level,
        defaults=defaults,
    )


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    config = parse_args(argv)
    os.environ[CONFIG_ENV] = json.dumps(asdict(config))
    uvicorn.run(
        "tests.fake_upstream:create_app",
        factory=True,
        host=config.host,
        port=config.port,
        workers=config.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level=config.log_level,
        lifespan="on",
        backlog=4096,
        timeout_keep_alive=60,
    )


if __name__ == "__main__":
    main()
