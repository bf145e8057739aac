"""The built-in `demo` model: deterministic answers with real usage, no network.

It speaks the OpenAI wire format as an httpx transport, so it goes through exactly the
same forwarding path as a real upstream.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

_CHUNKS = 6
_EMBEDDING_DIMENSIONS = 16


def _words(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_words(v) for v in value)
    if isinstance(value, dict):
        return _words(value.get("content")) + _words(value.get("text"))
    return 0


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content or "")
    prompt = body.get("prompt")
    return prompt if isinstance(prompt, str) else ""


def reply_text(body: dict[str, Any]) -> str:
    said = " ".join(_last_user_text(body).split())
    if len(said) > 80:
        said = said[:77] + "..."
    return f"Hello from the gateway's demo model. You said: {said}"


def _pieces(text: str, n: int) -> list[str]:
    words = text.split(" ")
    size = max(1, -(-len(words) // n))
    groups = [words[i : i + size] for i in range(0, len(words), size)]
    return [(" " if i else "") + " ".join(g) for i, g in enumerate(groups)]


def _usage(body: dict[str, Any], text: str) -> dict[str, int]:
    prompt = _words(body.get("messages")) + _words(body.get("prompt")) + _words(body.get("input"))
    completion = len(text.split())
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _embedding(text: str, dimensions: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    while len(digest) < dimensions:
        digest += hashlib.sha256(digest).digest()
    return [round(b / 127.5 - 1.0, 6) for b in digest[:dimensions]]


class _Events(httpx.AsyncByteStream):
    def __init__(self, events: list[bytes]) -> None:
        self.events = events

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for event in self.events:
            yield event


class DemoTransport(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET" and path.endswith("/models"):
            data = [{"id": "demo", "object": "model", "created": 0, "owned_by": "gateway"}]
            return self._json(200, {"object": "list", "data": data})
        body = orjson.loads(await request.aread())
        if path.endswith("/chat/completions"):
            return self._complete(body, chat=True)
        if path.endswith("/completions"):
            return self._complete(body, chat=False)
        if path.endswith("/embeddings"):
            return self._embeddings(body)
        error = {"message": f"demo model has no {path}", "type": "invalid_request_error"}
        return self._json(404, {"error": error | {"param": None, "code": None}})

    def _json(self, status: int, data: dict[str, Any]) -> httpx.Response:
        return httpx.Response(
            status, content=orjson.dumps(data), headers={"content-type": "application/json"}
        )

    def _complete(self, body: dict[str, Any], *, chat: bool) -> httpx.Response:
        text = reply_text(body)
        usage = _usage(body, text)
        created = int(time.time())
        rid = "chatcmpl-demo" if chat else "cmpl-demo"
        obj = "chat.completion" if chat else "text_completion"
        base = {"id": rid, "created": created, "model": body.get("model", "demo")}
        if not body.get("stream"):
            choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None}
            if chat:
                choice["message"] = {"role": "assistant", "content": text, "refusal": None}
            else:
                choice["text"] = text
            return self._json(200, base | {"object": obj, "choices": [choice], "usage": usage})
        chunk_obj = "chat.completion.chunk" if chat else "text_completion"
        deltas: list[dict[str, Any]] = []
        if chat:
            deltas.append({"delta": {"role": "assistant", "content": ""}, "finish_reason": None})
        for piece in _pieces(text, _CHUNKS):
            key = "delta" if chat else "text"
            deltas.append({key: {"content": piece} if chat else piece, "finish_reason": None})
        deltas.append({"delta" if chat else "text": {} if chat else "", "finish_reason": "stop"})
        events = [
            b"data: "
            + orjson.dumps(base | {"object": chunk_obj, "choices": [{"index": 0} | d]})
            + b"\n\n"
            for d in deltas
        ]
        if (body.get("stream_options") or {}).get("include_usage"):
            final = base | {"object": chunk_obj, "choices": [], "usage": usage}
            events.append(b"data: " + orjson.dumps(final) + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=_Events(events)
        )

    def _embeddings(self, body: dict[str, Any]) -> httpx.Response:
        inputs = body.get("input")
        items = inputs if isinstance(inputs, list) and not _is_tokens(inputs) else [inputs]
        dimensions = body.get("dimensions") or _EMBEDDING_DIMENSIONS
        data = []
        for i, item in enumerate(items):
            vector = _embedding(orjson.dumps(item).decode(), int(dimensions))
            value: Any = vector
            if body.get("encoding_format") == "base64":
                value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": value})
        tokens = _words(items)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return self._json(
            200, {"object": "list", "data": data, "model": body.get("model"), "usage": usage}
        )


def _is_tokens(value: list[Any]) -> bool:
    return bool(value) and all(isinstance(v, int) for v in value)
