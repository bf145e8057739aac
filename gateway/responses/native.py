"""A native upstream's Responses answer, passed on: its usage, its final response object
(to store and cache), redacted values put back, and a `response.failed` of its own when the
upstream breaks off, so a client never sees a silent cut.

The stream is passed on in whole events (a client cannot use half an event); each event's
JSON is read once. Events are re-serialized only when something in them changes: the
`previous_response_id` the gateway resolved, or a placeholder put back.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.cache.answer import Answer
from gateway.privacy import PlaceholderRestorer
from gateway.responses.response import response_error
from gateway.wire import EventBuffer

# The events that end a Responses stream.
TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})


def chat_usage(usage: Any) -> dict[str, Any] | None:
    """Responses usage (input/output tokens) in chat's shape, which limits and spend read."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("input_tokens")
    completion = usage.get("output_tokens")
    total = usage.get("total_tokens")
    return {
        "prompt_tokens": prompt if isinstance(prompt, int) else 0,
        "completion_tokens": completion if isinstance(completion, int) else 0,
        "total_tokens": total if isinstance(total, int) else 0,
    }


def answer_from_response(response: dict[str, Any]) -> Answer | None:
    """A completed response as a cacheable chat answer: text and function calls only (a
    reasoning item or a hosted tool's call cannot be replayed through chat)."""
    status = response.get("status")
    incomplete = response.get("incomplete_details") or {}
    cut = status == "incomplete" and incomplete.get("reason") == "max_output_tokens"
    if status != "completed" and not cut:
        return None
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in response.get("output") or ():
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "message":
            for part in item.get("content") or ():
                if not isinstance(part, dict) or part.get("type") != "output_text":
                    return None
                texts.append(str(part.get("text") or ""))
        elif kind == "function_call":
            calls.append(
                {
                    "id": item.get("call_id"),
                    "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments")},
                }
            )
        else:
            return None
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    finish = "length" if cut else "tool_calls" if calls else "stop"
    model = str(response.get("model") or "")
    return Answer(model, message, finish, chat_usage(response.get("usage")))


def restore_response(response: dict[str, Any], placeholders: dict[str, str]) -> bool:
    """Put redacted values back into a response object's output; True if any changed."""
    plain = PlaceholderRestorer(placeholders)
    escaped = PlaceholderRestorer(_escaped(placeholders))
    changed = False
    for item in response.get("output") or ():
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("arguments"), str):
            restored = escaped.restore(item["arguments"])
            changed |= restored != item["arguments"]
            item["arguments"] = restored
        for part in item.get("content") or ():
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                restored = plain.restore(part["text"])
                changed |= restored != part["text"]
                part["text"] = restored
    return changed


def _escaped(placeholders: dict[str, str]) -> dict[str, str]:
    """Each value as it appears inside a JSON string (function arguments are JSON text)."""
    return {p: orjson.dumps(v).decode()[1:-1] for p, v in placeholders.items()}


class NativeStream(EventBuffer):
    """Feed it the upstream's bytes; it returns whole events to send on."""

    __slots__ = (
        "_escaped",
        "_offset",
        "_placeholders",
        "_restorers",
        "garbage",
        "last",
        "previous_id",
        "response",
        "sequence",
    )

    def __init__(self, previous_id: str | None, placeholders: dict[str, str] | None) -> None:
        super().__init__()
        self.previous_id = previous_id  # the id the gateway resolved: echoed back
        self.response: dict[str, Any] | None = None  # the terminal event's response
        self.last: dict[str, Any] | None = None  # the latest response object seen
        self.sequence = -1  # the last sequence_number sent
        self.garbage = False  # an event that is not JSON (never sent on)
        self._placeholders = placeholders
        self._escaped = _escaped(placeholders) if placeholders else {}
        self._restorers: dict[tuple[str, str], PlaceholderRestorer] = {}
        self._offset = 0  # events the gateway added (a held-back tail), for sequence numbers

    @property
    def ended(self) -> bool:
        return self.response is not None

    def feed(self, chunk: bytes) -> bytes:
        complete = super().feed(chunk)
        if not complete or self.garbage or self.ended:
            return b""
        out: list[bytes] = []
        for event in complete.replace(b"\r\n", b"\n").split(b"\n\n"):
            if event and not self.garbage and not self.ended:
                out.append(self._event(event))
        return b"".join(out)

    def _event(self, event: bytes) -> bytes:
        head, _, payload = event.partition(b"data:")
        if not payload:
            return event + b"\n\n"  # a comment or a bare `event:` line: harmless
        try:
            data = orjson.loads(payload.replace(b"\ndata:", b"\n"))
        except orjson.JSONDecodeError:
            self.garbage = True
            return b""
        if not isinstance(data, dict):
            return event + b"\n\n"
        kind = data.get("type")
        changed = False
        response = data.get("response")
        if isinstance(response, dict):
            if self.previous_id is not None:
                response["previous_response_id"] = self.previous_id
                changed = True
            if self._placeholders and restore_response(response, self._placeholders):
                changed = True
            self.last = response
            if kind in TERMINAL:
                self.response = response
        elif kind == "error":
            self.response = {"status": "failed", "error": data}
        extra = b""
        if self._placeholders:
            restored, extra = self._restore(data, kind)
            changed |= restored
        if self._offset and isinstance(data.get("sequence_number"), int):
            data["sequence_number"] += self._offset
            changed = True
        if isinstance(data.get("sequence_number"), int):
            self.sequence = data["sequence_number"]
        if not changed:
            return extra + event + b"\n\n"
        return extra + head + b"data: " + orjson.dumps(data) + b"\n\n"

    def _restore(self, data: dict[str, Any], kind: Any) -> tuple[bool, bytes]:
        """Deltas through a restorer per item (a placeholder may span two deltas); a tail
        held back at an item's `.done` goes out as one more delta just before it."""
        if kind in ("response.output_text.delta", "response.function_call_arguments.delta"):
            field = "text" if kind == "response.output_text.delta" else "arguments"
            key = (str(data.get("item_id")), field)
            restorer = self._restorers.get(key)
            if restorer is None:
                values = self._placeholders if field == "text" else self._escaped
                restorer = self._restorers[key] = PlaceholderRestorer(values or {})
            delta = data.get("delta")
            if isinstance(delta, str):
                data["delta"] = restorer.feed(delta)
                return True, b""
            return False, b""
        if kind in ("response.output_text.done", "response.function_call_arguments.done"):
            field = "text" if kind == "response.output_text.done" else "arguments"
            restorer = self._restorers.pop((str(data.get("item_id")), field), None)
            tail = restorer.flush() if restorer is not None else ""
            values = self._placeholders if field == "text" else self._escaped
            if isinstance(data.get(field), str):
                data[field] = PlaceholderRestorer(values or {}).restore(data[field])
            extra = b""
            if tail and isinstance(data.get("sequence_number"), int):
                delta_kind = kind.replace(".done", ".delta")
                added: dict[str, Any] = {"type": delta_kind}
                for k in ("item_id", "output_index", "content_index"):
                    if k in data:
                        added[k] = data[k]
                added["delta"] = tail
                if field == "text":
                    added["logprobs"] = []  # required on a text delta
                added["sequence_number"] = data["sequence_number"] + self._offset
                self._offset += 1
                extra = b"event: " + delta_kind.encode() + b"\ndata: " + orjson.dumps(added)
                extra += b"\n\n"
            return True, extra
        if kind in ("response.content_part.done", "response.output_item.done"):
            holder = data.get("part") if kind == "response.content_part.done" else data.get("item")
            if isinstance(holder, dict):
                restore_response({"output": [holder]}, self._placeholders or {})
                if isinstance(holder.get("text"), str):
                    holder["text"] = PlaceholderRestorer(self._placeholders or {}).restore(
                        holder["text"]
                    )
                return True, b""
        return False, b""

    def fail(self, message: str) -> bytes:
        """The event that ends a broken stream: `response.failed` with the response seen so
        far, or an `error` event when none was."""
        sequence = self.sequence + 1
        error = response_error(message, "server_error")
        if self.last is not None:
            response = {**self.last, "status": "failed", "error": error}
            self.response = response
            event = {"type": "response.failed", "sequence_number": sequence, "response": response}
            return b"event: response.failed\ndata: " + orjson.dumps(event) + b"\n\n"
        self.response = {"status": "failed", "error": error}
        event = {"type": "error", "sequence_number": sequence, "param": None, **error}
        return b"event: error\ndata: " + orjson.dumps(event) + b"\n\n"
