"""A chat completion stream, as it arrives, as a Responses API event stream.

Translated: the first choice's content deltas (one `message` item, `output_text` events), its
tool call deltas (one `function_call` item per call, `function_call_arguments` events), the
finish reason (`length` and `content_filter` end in `response.incomplete`), the usage event,
`[DONE]` (`response.completed`) and an upstream `{"error": ...}` event (`response.failed`).
Items are opened and closed one after another, as OpenAI streams them. Not translated: other
choices, refusals, logprobs, reasoning text.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.responses.request import new_id
from gateway.responses.response import (
    INCOMPLETE,
    call_id,
    function_call_item,
    response_error,
    response_object,
    text_part,
    usage_from_chat,
)

_MAX_LINE = 1 << 24  # an upstream line this long is not a chat stream
_DELTA = b"response.output_text.delta"
_DELTA_HEAD = b"event: " + _DELTA + b'\ndata: {"type":"' + _DELTA + b'","sequence_number":'


class _Call:
    """A function_call item being streamed: its item dict and its argument pieces."""

    __slots__ = ("arguments", "given_id", "index", "item", "position")

    def __init__(self, item: dict[str, Any], index: int, position: int, given_id: Any) -> None:
        self.item = item
        self.index = index  # its output_index
        self.position = position  # its index among the chat tool calls
        self.given_id = given_id  # the upstream's id (the item's call_id may be a new one)
        self.arguments: list[str] = []


class ResponseStream:
    """Feed it the upstream's chat SSE bytes chunk by chunk (split anywhere); each call
    returns the Responses SSE bytes to send. Work per chunk is linear in the chunk."""

    def __init__(
        self,
        request: dict[str, Any],
        response_id: str,
        created_at: int,
        model: str | None = None,
    ) -> None:
        self.request = request
        self.response_id = response_id
        self.created_at = created_at
        self.model = model or request.get("model") or ""
        self.usage: dict[str, Any] | None = None  # the upstream's, in chat's shape, for spend
        self.response: dict[str, Any] | None = None  # the final response object, once ended
        self._seq = 0
        self._out: list[bytes] = []
        self._partial = b""  # the start of a line whose end has not arrived
        self._data: list[bytes] = []  # the data lines of the event being read
        self._started = False
        self._output: list[dict[str, Any]] = []
        self._message: dict[str, Any] | None = None  # the open message item
        self._message_index = 0
        self._text: list[str] = []
        self._delta_fields = b""  # the open message's ids, as JSON members
        self._call: _Call | None = None  # the open function_call item
        self._calls: dict[int, _Call] = {}  # by the chat tool call index
        self._call_ids: set[str] = set()
        self._finish: str | None = None

    @property
    def finished(self) -> bool:
        """True once a terminal event (completed, incomplete or failed) was produced."""
        return self.response is not None

    def start(self) -> bytes:
        """`response.created` and `response.in_progress`, if not sent yet."""
        if not self._started:
            self._start()
        return self._take()

    def feed(self, chunk: bytes) -> bytes:
        if self.response is not None:
            return b""
        if not self._started:
            self._start()
        partial = self._partial
        data = partial + chunk if partial else chunk
        start, end = 0, data.find(b"\n", len(partial))  # the partial line has no newline
        while end >= 0 and self.response is None:
            self._line(data[start:end])
            start = end + 1
            end = data.find(b"\n", start)
        self._partial = data[start:] if self.response is None else b""
        if len(self._partial) > _MAX_LINE:
            self._fail("The provider's stream has a line over 16 MB.", "server_error")
        return self._take()

    def close(self) -> bytes:
        """The upstream's body ended: its last event even without the blank line after it,
        then `response.failed` if the stream never reached `[DONE]`."""
        if self.response is None and self._partial:
            self._line(self._partial)
        if self.response is None and self._data:
            self._line(b"")
        self._partial = b""
        if self.response is None:
            return self.fail("The provider ended the stream without [DONE].")
        return self._take()

    def fail(self, message: str, code: str | None = "server_error") -> bytes:
        """`response.failed` (after closing open items) for an upstream that broke off."""
        if self.response is not None:
            return b""
        if not self._started:
            self._start()
        self._fail(message, code)
        return self._take()

    def _take(self) -> bytes:
        out, self._out = self._out, []
        return b"".join(out)

    def _emit(self, kind: str, fields: dict[str, Any]) -> None:
        data = orjson.dumps({"type": kind, "sequence_number": self._seq, **fields})
        self._seq += 1
        self._out.append(b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n")

    def _envelope(self, status: str) -> dict[str, Any]:
        request, output = self.request, self._output if status != "in_progress" else []
        return response_object(
            request, self.response_id, self.created_at, self.model, status, output
        )

    def _start(self) -> None:
        self._started = True
        self._emit("response.created", {"response": self._envelope("in_progress")})
        self._emit("response.in_progress", {"response": self._envelope("in_progress")})

    def _line(self, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.startswith(b"data:"):
            self._data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif not line and self._data:
            data, self._data = b"\n".join(self._data), []
            self._event(data)

    def _event(self, data: bytes) -> None:
        if data == b"[DONE]":
            self._complete()
            return
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._fail("The provider's stream has an event that is not JSON.", "server_error")
            return
        if not isinstance(chunk, dict):
            return
        error = chunk.get("error")
        if error:
            message = error.get("message") if isinstance(error, dict) else error
            code = error.get("code") if isinstance(error, dict) else None
            self._fail(str(message or "The provider failed mid-stream."), code)
            return
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._choice(choice)

    def _choice(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta") or {}
        text = delta.get("content")
        if text and isinstance(text, str):
            self._text_delta(text)
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                self._call_delta(call)
        finish = choice.get("finish_reason")
        if finish:
            self._finish = finish
            self._close_open("incomplete" if finish in INCOMPLETE else "completed")

    def _text_delta(self, text: str) -> None:
        if self._call is not None:
            self._close_call("completed")
        if self._message is None:
            self._open_message()
        self._text.append(text)
        # The hot path: the event's fixed part is built once per message, not per delta.
        seq, self._seq = self._seq, self._seq + 1
        self._out.append(
            _DELTA_HEAD + str(seq).encode() + self._delta_fields + orjson.dumps(text) + b"}\n\n"
        )

    def _open_message(self) -> None:
        item = {
            "id": new_id("msg"),
            "type": "message",
            "status": "in_progress",
            "content": [],
            "role": "assistant",
        }
        self._message, self._message_index, self._text = item, len(self._output), []
        where = {"item_id": item["id"], "output_index": self._message_index, "content_index": 0}
        self._delta_fields = b"," + orjson.dumps({**where, "logprobs": []})[1:-1] + b',"delta":'
        self._output.append(item)
        self._emit(
            "response.output_item.added", {"output_index": self._message_index, "item": item}
        )
        self._emit(
            "response.content_part.added",
            {
                "item_id": item["id"],
                "output_index": self._message_index,
                "content_index": 0,
                "part": text_part(""),
            },
        )

    def _close_message(self, status: str) -> None:
        item, index = self._message, self._message_index
        assert item is not None
        text = "".join(self._text)
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        self._emit("response.output_text.done", {**where, "text": text, "logprobs": []})
        part = text_part(text)
        self._emit("response.content_part.done", {**where, "part": part})
        item["content"], item["status"] = [part], status
        self._emit("response.output_item.done", {"output_index": index, "item": item})
        self._message = None

    def _call_delta(self, call: dict[str, Any]) -> None:
        function = call.get("function") or {}
        position = call.get("index")
        if not isinstance(position, int):  # servers that send whole calls may leave it out
            current, given = self._call, call.get("id")
            # More of the open call: its id, or no id and no name (a name starts another call).
            if current is not None and (
                given == current.given_id if given else not function.get("name")
            ):
                position = current.position
            else:
                position = max(self._calls, default=-1) + 1
        state = self._calls.get(position)
        if state is None:
            state = self._open_call(position, call.get("id"), function.get("name"))
        elif function.get("name") and not state.item["name"]:
            state.item["name"] = function["name"]
        arguments = function.get("arguments")
        if arguments and isinstance(arguments, str):
            state.arguments.append(arguments)
            if state is self._call:  # a call already closed keeps it for the final response
                self._emit(
                    "response.function_call_arguments.delta",
                    {"item_id": state.item["id"], "output_index": state.index, "delta": arguments},
                )
            else:
                state.item["arguments"] = "".join(state.arguments)

    def _open_call(self, position: int, given_id: Any, name: Any) -> _Call:
        self._close_open("completed")
        item = function_call_item(
            new_id("fc"),
            call_id(given_id, self._call_ids),
            name if isinstance(name, str) else "",
            "",
            "in_progress",
        )
        state = _Call(item, len(self._output), position, given_id)
        self._output.append(item)
        self._calls[position] = self._call = state
        self._emit("response.output_item.added", {"output_index": state.index, "item": item})
        return state

    def _close_call(self, status: str) -> None:
        state = self._call
        assert state is not None
        item = state.item
        item["arguments"], item["status"] = "".join(state.arguments), status
        self._emit(
            "response.function_call_arguments.done",
            {"item_id": item["id"], "output_index": state.index, "arguments": item["arguments"]},
        )
        self._emit("response.output_item.done", {"output_index": state.index, "item": item})
        self._call = None

    def _close_open(self, status: str) -> None:
        if self._message is not None:
            self._close_message(status)
        if self._call is not None:
            self._close_call(status)

    def _complete(self) -> None:
        reason = INCOMPLETE.get(self._finish or "")
        status = "incomplete" if reason else "completed"
        self._close_open(status)
        if not self._output:  # an empty answer is still an (empty) message
            self._open_message()
            self._close_message(status)
        response = self._envelope(status)
        response["usage"] = usage_from_chat(self.usage)
        if reason:
            response["incomplete_details"] = {"reason": reason}
        self._end(f"response.{status}", response)

    def _fail(self, message: str, code: str | None) -> None:
        self._close_open("incomplete")
        response = self._envelope("failed")
        response["usage"] = usage_from_chat(self.usage)
        response["error"] = response_error(message, code)
        self._end("response.failed", response)

    def _end(self, kind: str, response: dict[str, Any]) -> None:
        self.response = response
        self._emit(kind, {"response": response})
