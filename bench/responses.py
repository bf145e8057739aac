"""python -m bench.responses [--iterations N]

Micro-benchmark of the /v1/responses work on the request path, in process (no sockets):

- a non-streamed translated response: `to_chat` + its JSON, then `from_chat` + its JSON
  (what translation adds to a chat round trip), for a plain question and for an agent turn
  (instructions, two tools, a tool call and its output in the input), p50 and p99;
- a streamed translated chunk: `ResponseStream.feed` of one chat content chunk, beside
  `StreamTap.feed` (what chat's own relay does per chunk);
- a native stream's event: `NativeStream.feed` of one `response.output_text.delta`, beside
  `StreamTap.feed` of a chat chunk.

With --http N, also over loopback HTTP, side by side in one run: N sequential non-streamed
requests each (httpx, one connection, interleaved) straight to the fake upstream and
through a gateway (cache and policy off) as chat, as native Responses and as translated
Responses; p50 and what the gateway adds to the same request sent direct.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.procs import free_port, start, wait_ready
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
    parser.add_argument("--http", type=int, default=0, help="also N requests over HTTP")
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
    if args.http:
        over_http(args.http)


HTTP_CONFIG = """
logging: {{level: warning}}
cache: {{enabled: false}}
privacy: {{enabled: false}}
providers:
  native: {{type: openai, base_url: "{url}", api_key: k, models: [m-native], responses: native}}
  translate: {{type: openai, base_url: "{url}", api_key: k, models: [m-translate],
              responses: translate}}
routing: {{default_model: m-native}}
"""


def over_http(n: int) -> None:
    """Sequential requests, interleaved so that each kind sees the same machine."""
    import httpx

    tmp = Path(tempfile.mkdtemp(prefix="bench-responses-"))
    fake_port, gw_port = free_port(), free_port()
    fake_cmd = [sys.executable, "-m", "tests.fake_upstream", "--port", str(fake_port)]
    fake = start("fake", fake_cmd, tmp / "fake.log")
    config = tmp / "gateway.yaml"
    config.write_text(HTTP_CONFIG.format(url=f"http://127.0.0.1:{fake_port}/v1"))
    gw_cmd = [sys.executable, "-m", "gateway", "serve", "--config", str(config),
              "--port", str(gw_port)]  # fmt: skip
    gateway = start("gateway", gw_cmd, tmp / "gateway.log")
    chat = {"messages": [{"role": "user", "content": "What is the capital of France?"}]}
    resp = {"input": "What is the capital of France?"}
    direct, via = f"http://127.0.0.1:{fake_port}/v1", f"http://127.0.0.1:{gw_port}/v1"
    kinds = {
        "chat, direct": (direct + "/chat/completions", chat | {"model": "m-native"}),
        "chat, gateway": (via + "/chat/completions", chat | {"model": "m-native"}),
        "responses, direct": (direct + "/responses", resp | {"model": "m-native"}),
        "responses native, gateway": (via + "/responses", resp | {"model": "m-native"}),
        "responses native, store: false, gateway": (
            via + "/responses",
            resp | {"model": "m-native", "store": False},
        ),
        "responses translated, gateway": (via + "/responses", resp | {"model": "m-translate"}),
    }
    times: dict[str, list[float]] = {name: [] for name in kinds}
    try:
        wait_ready(fake, "127.0.0.1", fake_port, "GET", "/health", None, {}, 30)
        wait_ready(gateway, "127.0.0.1", gw_port, "GET", "/healthz", None, {}, 30)
        with httpx.Client(timeout=30) as client:
            for i in range(n + 100):
                for name, (url, body) in kinds.items():
                    started = time.perf_counter_ns()
                    response = client.post(url, json=body, headers={"authorization": "Bearer k"})
                    took = (time.perf_counter_ns() - started) / 1000
                    assert response.status_code == 200, (name, response.text[:300])
                    if i >= 100:  # after a warm-up
                        times[name].append(took)
    finally:
        gateway.stop()
        fake.stop()
    p50 = {name: statistics.median(values) for name, values in times.items()}
    print(f"over loopback HTTP, {n} sequential requests each, interleaved (p50 us):")
    print("| request | p50 us | added by the gateway, p50 us |")
    print("|---|---|---|")
    for name, value in p50.items():
        base = p50["responses, direct" if name.startswith("responses") else "chat, direct"]
        added = "" if name.endswith("direct") else f"{value - base:.0f}"
        print(f"| {name} | {value:.0f} | {added} |")


if __name__ == "__main__":
    main()
