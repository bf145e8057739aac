"""python -m bench.responses [--iterations N]

Micro-benchmark of the /v1/responses work on the request path, in process (no sockets):

- a non-streamed translated response: `to_chat` + its JSON, then `from_chat` + its JSON
  (what translation adds to a chat round trip), for a plain question and for an agent turn
  (instructions, two tools, a tool call and its output in the input), p50 and p99;
- a streamed translated chunk: `ResponseStream.feed` of one chat content chunk, beside
  `StreamTap.feed` (what chat's own relay does per chunk);
- a native stream's event: `NativeStream.feed` of one `response.output_text.delta`, beside
  `StreamTap.feed` of a chat chunk.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import orjson

from gateway.responses.native import NativeStream
from gateway.responses.request import to_chat
from gateway.responses.response import from_chat
from gateway.responses.stream import ResponseStream
from gateway.wire import StreamTap

TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
    {
        "type": "function",
        "name": "transfer_to_spanish_agent",
        "description": "Handoff to the Spanish agent.",
        "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
        "strict": True,
    },
]
PLAIN = {"model": "llama3.2", "input": "What is the capital of France? Answer in one line."}
AGENT = {
    "model": "llama3.2",
    "instructions": "You are a helpful travel assistant. Use the tools when they help. " * 4,
    "input": [
        {"role": "user", "content": "What is the weather in Paris, and should I pack a coat?"},
        {
            "type": "function_call",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city":"Paris"}',
        },
        {"type": "function_call_output", "call_id": "call_1", "output": "Sunny, 21 C, light wind"},
    ],
    "tools": TOOLS,
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "temperature": 0.2,
    "max_output_tokens": 512,
    "store": True,
    "include": [],
}
ANSWER = (
    "It is sunny and 21 C in Paris with a light wind, so a light jacket is enough; "
    "a coat would be too warm during the day. " * 3
)
USAGE = {"prompt_tokens": 180, "completion_tokens": 64, "total_tokens": 244}


def completion(text: str) -> bytes:
    choice = {"index": 0, "message": {"role": "assistant", "content": text},
              "finish_reason": "stop", "logprobs": None}  # fmt: skip
    return orjson.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1_767_000_000,
            "model": "llama3.2",
            "choices": [choice],
            "usage": USAGE,
        }
    )


def chat_chunk(text: str) -> bytes:
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": None, "logprobs": None}
    body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_767_000_000,
            "model": "llama3.2", "choices": [choice]}  # fmt: skip
    return b"data: " + orjson.dumps(body) + b"\n\n"


def native_delta(n: int, text: str) -> bytes:
    event = {"type": "response.output_text.delta", "sequence_number": n,
             "item_id": "msg_0123456789abcdef", "output_index": 0, "content_index": 0,
             "delta": text, "logprobs": []}  # fmt: skip
    return b"event: response.output_text.delta\ndata: " + orjson.dumps(event) + b"\n\n"


def timed(call: Callable[[], Any], iterations: int) -> list[float]:
    """Microseconds per call, one sample per call."""
    for _ in range(min(iterations // 10, 1000)):
        call()
    samples = []
    clock = time.perf_counter
    for _ in range(iterations):
        start = clock()
        call()
        samples.append((clock() - start) * 1e6)
    return samples


def report(name: str, samples: list[float]) -> None:
    samples.sort()
    p50 = statistics.median(samples)
    p99 = samples[int(len(samples) * 0.99) - 1]
    print(f"  {name:<58} p50 {p50:8.2f} us   p99 {p99:8.2f} us")


def translate_once(request: dict[str, Any], answer: bytes) -> bytes:
    body = orjson.dumps(to_chat(request, None))
    chat = orjson.loads(answer)  # chat's relay reads the body too (usage): counted here anyway
    response = from_chat(chat, request, "resp_0123456789abcdef", 1_767_000_000)
    return body + orjson.dumps(response)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.responses", description=__doc__)
    parser.add_argument("--iterations", type=int, default=20_000)
    args = parser.parse_args(argv)
    n = args.iterations
    gc.collect()
    gc.freeze()
    print(f"/v1/responses translation, {n} iterations each")
    print("non-streamed response (to_chat + JSON, from_chat + JSON):")
    for name, request in (
        ("plain question", PLAIN),
        ("agent turn (tools, tool call, output)", AGENT),
    ):
        answer = completion(ANSWER)
        report(name, timed(lambda r=request, a=answer: translate_once(r, a), n))  # type: ignore[misc]

    print("streamed, per chunk:")
    chunk = chat_chunk("Paris is ")
    events = ResponseStream(AGENT, "resp_0123456789abcdef", 1_767_000_000)
    events.start()
    events.feed(chat_chunk(""))  # the message item is open: every later chunk is a delta
    report(
        "translated: ResponseStream.feed(one chat content chunk)",
        timed(lambda: events.feed(chunk), n),
    )
    tap = StreamTap()
    report("chat's own relay: StreamTap.feed(the same chunk)", timed(lambda: tap.feed(chunk), n))
    native = NativeStream(None, None)
    deltas = [native_delta(i, "Paris is ") for i in range(n + min(n // 10, 1000))]
    it = iter(deltas)
    report(
        "native: NativeStream.feed(one output_text.delta event)",
        timed(lambda: native.feed(next(it)), n),
    )


if __name__ == "__main__":
    main()
