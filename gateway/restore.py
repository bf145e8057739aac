"""Redacted values back into the answer: whole bodies, and streams whose chunks may split
a placeholder anywhere (each streamed text of a choice, its content, refusal or a tool
call's arguments, has its own restorer; what one holds back goes out with that text's
next piece or the choice's finish)."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.privacy import PlaceholderRestorer
from gateway.wire import EventBuffer, event_json, rewrite_events


def restore_body(body: bytes, placeholders: dict[str, str]) -> bytes:
    text = body.decode()
    if '"arguments"' in text:
        text = _restore_arguments(text, placeholders)
    return PlaceholderRestorer(placeholders).restore_json(text).encode()


def _restore_arguments(text: str, placeholders: dict[str, str]) -> str:
    """Tool call arguments are JSON inside a JSON string: a value there is escaped twice,
    so they are restored here, in the parsed body, before the rest of the body."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    choices = data.get("choices") if isinstance(data, dict) else None
    restorer = PlaceholderRestorer(_escaped(placeholders))
    changed = False
    for choice in choices if isinstance(choices, list) else ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        calls = message.get("tool_calls")
        functions = (
            [c.get("function") for c in calls if isinstance(c, dict)]
            if isinstance(calls, list)
            else []
        )
        for function in (*functions, message.get("function_call")):
            arguments = function.get("arguments") if isinstance(function, dict) else None
            if isinstance(arguments, str):
                restored = restorer.restore(arguments)
                if restored != arguments:
                    function["arguments"] = restored  # type: ignore[index]
                    changed = True
    return orjson.dumps(data).decode() if changed else text


def _escaped(placeholders: dict[str, str]) -> dict[str, str]:
    """Each value as it appears inside a JSON string."""
    return {p: orjson.dumps(v).decode()[1:-1] for p, v in placeholders.items()}


class RestoringStream(EventBuffer):
    __slots__ = ("_escaped", "_placeholders", "_restorers")

    def __init__(self, placeholders: dict[str, str]) -> None:
        super().__init__()
        self._placeholders = placeholders
        # Tool call arguments are JSON text: a value goes back as inside a JSON string.
        self._escaped = _escaped(placeholders)
        # One restorer per streamed text: (choice, field, tool call index).
        self._restorers: dict[tuple[int, str, int], PlaceholderRestorer] = {}

    def feed(self, chunk: bytes) -> bytes:
        complete = super().feed(chunk)
        return rewrite_events(complete, self._event) if complete else complete

    def _event(self, event: bytes) -> bytes:
        if b'"choices"' not in event:
            return event
        prefix, data = event_json(event)
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list):
            return event
        for choice in choices:
            if isinstance(choice, dict):
                self._choice(choice)
        return prefix + b"data: " + orjson.dumps(data)

    def _choice(self, choice: dict[str, Any]) -> None:
        index = choice.get("index")
        index = index if isinstance(index, int) else 0
        delta = choice.get("delta")
        if isinstance(delta, dict):
            self._text(delta, "content", (index, "content", 0))
            self._text(delta, "refusal", (index, "refusal", 0))
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    k = call.get("index")
                    self._text(
                        function, "arguments", (index, "arguments", k if isinstance(k, int) else 0)
                    )
        else:
            self._text(choice, "text", (index, "text", 0))
        if choice.get("finish_reason") is not None:
            self._flush(index, choice, delta)

    def _text(self, holder: dict[str, Any], field: str, key: tuple[int, str, int]) -> None:
        text = holder.get(field)
        if not isinstance(text, str):
            return
        restorer = self._restorers.get(key)
        if restorer is None:
            values = self._escaped if field == "arguments" else self._placeholders
            restorer = self._restorers[key] = PlaceholderRestorer(values)
        holder[field] = restorer.feed(text)

    def _flush(self, index: int, choice: dict[str, Any], delta: Any) -> None:
        """The choice ends: what its restorers still hold back (never a placeholder) goes out."""
        for (i, field, k), restorer in self._restorers.items():
            tail = restorer.flush() if i == index else ""
            if not tail:
                continue
            if field == "text" or not isinstance(delta, dict):
                choice["text"] = (choice.get("text") or "") + tail
            elif field != "arguments":
                delta[field] = (delta.get(field) or "") + tail
            else:
                calls = delta.get("tool_calls")
                if not isinstance(calls, list):
                    calls = delta["tool_calls"] = []
                calls.append({"index": k, "function": {"arguments": tail}})
