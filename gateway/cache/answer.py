"""A cached answer: taken from a JSON body or a recorded stream, replayed as either.

What is stored is the assistant's message, its finish reason, the usage and the model,
never the upstream's id: every replay gets a fresh `id` and `created`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

# Answers worth keeping: a complete one, or one cut by the request's own max_tokens.
_KEPT_FINISH = frozenset({"stop", "tool_calls", "length", "function_call"})
_PIECE = 48  # characters per replayed content chunk (split at a space when there is one)


@dataclass(frozen=True, slots=True)
class Answer:
    model: str
    message: dict[str, Any]
    finish_reason: str
    usage: dict[str, Any] | None
    system_fingerprint: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "message": self.message,
            "finish_reason": self.finish_reason,
            "usage": self.usage,
            "system_fingerprint": self.system_fingerprint,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Answer:
        return cls(
            data["model"],
            data["message"],
            data["finish_reason"],
            data.get("usage"),
            data.get("system_fingerprint"),
        )


def answer_from_body(raw: bytes) -> Answer | None:
    """The answer in a chat.completion body, if it is one worth caching."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return answer_from_data(body)


def answer_from_data(body: Any) -> Answer | None:
    """The same from the body already parsed."""
    if not isinstance(body, dict) or body.get("object") != "chat.completion":
        return None
    choices = body.get("choices")
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
        return None
    message, finish = choices[0].get("message"), choices[0].get("finish_reason")
    if not isinstance(message, dict) or finish not in _KEPT_FINISH:
        return None
    return Answer(
        str(body.get("model") or ""),
        message,
        finish,
        _usage(body.get("usage")),
        body.get("system_fingerprint"),
    )


class StreamRecorder:
    """Keeps a copy of a stream's bytes as they pass (up to a size), parsed at the end."""

    __slots__ = ("_chunks", "_limit", "_size")

    def __init__(self, limit: int) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._limit = limit

    def feed(self, chunk: bytes) -> None:
        if self._size <= self._limit:
            self._chunks.append(chunk)
            self._size += len(chunk)

    def answer(self) -> Answer | None:
        """The whole answer, if the stream ended with [DONE] and fitted the limit."""
        if self._size > self._limit:
            return None
        data = b"".join(self._chunks).replace(b"\r\n", b"\n")
        if not data.rstrip().endswith(b"data: [DONE]"):
            return None
        builder = _MessageBuilder()
        for event in data.split(b"\n\n"):
            for line in event.split(b"\n"):
                if line.startswith(b"data:") and line[5:].strip() != b"[DONE]":
                    try:
                        chunk = orjson.loads(line[5:])
                    except orjson.JSONDecodeError:
                        return None
                    if not builder.add(chunk):
                        return None
        return builder.answer()


class _MessageBuilder:
    def __init__(self) -> None:
        self.model = ""
        self.fingerprint: str | None = None
        self.usage: dict[str, Any] | None = None
        self.finish: str | None = None
        self.role = "assistant"
        self.content: list[str] = []
        self.refusal: list[str] = []
        self.tools: dict[int, dict[str, Any]] = {}
        self.has_content = False

    def add(self, chunk: Any) -> bool:
        if not isinstance(chunk, dict) or "error" in chunk:
            return False
        self.model = chunk.get("model") or self.model
        self.fingerprint = chunk.get("system_fingerprint") or self.fingerprint
        if chunk.get("usage"):
            self.usage = _usage(chunk["usage"])
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                return False  # n > 1 is never cached
            delta = choice.get("delta") or {}
            self.role = delta.get("role") or self.role
            if isinstance(delta.get("content"), str):
                self.content.append(delta["content"])
                self.has_content = True
            if isinstance(delta.get("refusal"), str):
                self.refusal.append(delta["refusal"])
            for call in delta.get("tool_calls") or ():
                self._tool_call(call)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return True

    def _tool_call(self, call: dict[str, Any]) -> None:
        slot = self.tools.setdefault(
            call.get("index", 0), {"id": "", "type": "function", "name": "", "arguments": []}
        )
        slot["id"] = call.get("id") or slot["id"]
        slot["type"] = call.get("type") or slot["type"]
        function = call.get("function") or {}
        slot["name"] += function.get("name") or ""
        slot["arguments"].append(function.get("arguments") or "")

    def answer(self) -> Answer | None:
        if self.finish not in _KEPT_FINISH:
            return None
        message: dict[str, Any] = {
            "role": self.role,
            "content": "".join(self.content) if self.has_content else None,
        }
        if self.refusal:
            message["refusal"] = "".join(self.refusal)
        if self.tools:
            message["tool_calls"] = [
                {
                    "id": t["id"],
                    "type": t["type"],
                    "function": {"name": t["name"], "arguments": "".join(t["arguments"])},
                }
                for _, t in sorted(self.tools.items())
            ]
        return Answer(self.model, message, self.finish, self.usage, self.fingerprint)


def _usage(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def new_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


def replay_body(answer: Answer) -> bytes:
    body: dict[str, Any] = {
        "id": new_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answer.model,
        "choices": [
            {
                "index": 0,
                "message": answer.message,
                "logprobs": None,
                "finish_reason": answer.finish_reason,
            }
        ],
        "usage": answer.usage,
    }
    if answer.system_fingerprint:
        body["system_fingerprint"] = answer.system_fingerprint
    return orjson.dumps(body)


def replay_stream(answer: Answer, include_usage: bool) -> bytes:
    """The answer as a complete SSE stream: role, content pieces, tool calls, finish, usage."""
    head: dict[str, Any] = {
        "id": new_id(),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": answer.model,
    }
    if answer.system_fingerprint:
        head["system_fingerprint"] = answer.system_fingerprint
    events: list[bytes] = []

    def emit(delta: dict[str, Any], finish: str | None = None) -> None:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        chunk = {**head, "choices": [choice]}
        if include_usage:
            chunk["usage"] = None
        events.append(b"data: " + orjson.dumps(chunk) + b"\n\n")

    message = answer.message
    emit({"role": message.get("role") or "assistant", "content": ""})
    for piece in _pieces(message.get("content") or ""):
        emit({"content": piece})
    if message.get("refusal"):
        emit({"refusal": message["refusal"]})
    for i, call in enumerate(message.get("tool_calls") or ()):
        emit({"tool_calls": [{"index": i, **call}]})
    emit({}, answer.finish_reason)
    if include_usage:
        events.append(
            b"data: " + orjson.dumps({**head, "choices": [], "usage": answer.usage}) + b"\n\n"
        )
    events.append(b"data: [DONE]\n\n")
    return b"".join(events)


def _pieces(text: str) -> list[str]:
    out: list[str] = []
    while len(text) > _PIECE:
        cut = text.rfind(" ", 1, _PIECE) + 1 or _PIECE
        out.append(text[:cut])
        text = text[cut:]
    if text:
        out.append(text)
    return out
