"""Redacted values back into the answer: whole bodies, and streams whose chunks may split
a placeholder anywhere (each choice has its own restorer; what one holds back goes out
with that choice's next piece or its finish)."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.privacy import PlaceholderRestorer
from gateway.wire import EventBuffer, event_json, rewrite_events


def restore_body(body: bytes, placeholders: dict[str, str]) -> bytes:
    return PlaceholderRestorer(placeholders).restore_json(body.decode()).encode()


class RestoringStream(EventBuffer):
    __slots__ = ("_by_choice", "_placeholders")

    def __init__(self, placeholders: dict[str, str]) -> None:
        super().__init__()
        self._placeholders = placeholders
        self._by_choice: dict[int, PlaceholderRestorer] = {}

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
        restorer = self._by_choice.get(index)
        if restorer is None:
            restorer = self._by_choice[index] = PlaceholderRestorer(self._placeholders)
        delta = choice.get("delta")
        holder, key = (delta, "content") if isinstance(delta, dict) else (choice, "text")
        text = holder.get(key)
        if isinstance(text, str):
            holder[key] = restorer.feed(text)
        if choice.get("finish_reason") is not None:
            tail = restorer.flush()
            if tail:
                holder[key] = (holder.get(key) or "") + tail
