"""The response cache's parts in the test process (docs/CACHE.md): the semantic index,
the stores (memory, and Redis at 127.0.0.1:6379 under a prefix of the test's own), the
stored answer and its replay as a body or an SSE stream, and ResponseCache's lookup and
store decisions. tests/test_cache.py shows the same through gateway processes; these run
in a fraction of a second each, for the mutation run (docs/TESTING.md)."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from array import array
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import redis

from gateway.cache.answer import (
    Answer,
    StreamRecorder,
    answer_from_body,
    replay_body,
    replay_stream,
)
from gateway.cache.embed import BuiltinEmbedder
from gateway.cache.guard import digits_of
from gateway.cache.guard import facts as guard_facts
from gateway.cache.index import (
    BANDS,
    MAX_HAMMING,
    Entry,
    Projector,
    band_keys,
    close_items,
    pack_item,
    sparse,
    unpack_item,
)
from gateway.cache.service import (
    BUILTIN_THRESHOLD,
    NEURAL_THRESHOLD,
    CachePlan,
    ResponseCache,
    build_cache,
    tenant_of,
    tenant_prefix,
)
from gateway.cache.store import LruMemoryCache, MemoryCacheStore, RedisCacheStore
from gateway.chain.auth import Principal
from gateway.chain.cache import CacheStage
from gateway.config import parse_config
from gateway.context import RequestContext
from gateway.observability import Metrics, get_logger
from gateway.pricing import Pricing
from gateway.providers import Provider
from gateway.stores import StoreUnavailable
from tests.conftest import require

REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_reason() -> str | None:
    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping()
    except redis.RedisError:
        return "redis not reachable at 127.0.0.1:6379"
    return None


def dead_url() -> str:
    from bench.procs import free_port

    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there


# ------------------------------------------------------------------ the index


def test_entry_round_trips_with_and_without_a_vector() -> None:
    vector = array("f", [0.5, -0.25, 0.0, 1.0])
    entry = Entry({"model": "m", "x": [1]}, vector, {"numbers": ["2"]}, 12.5)
    raw = entry.to_bytes()
    assert Entry.from_bytes(raw) == entry
    assert entry.size == len(raw)
    assert raw.endswith(vector.tobytes())
    bare = Entry({"model": "m"}, None, None, 1.0)
    assert Entry.from_bytes(bare.to_bytes()) == bare
    assert bare.size < entry.size


def test_simhash_is_seeded_and_the_sparse_path_agrees() -> None:
    embed = BuiltinEmbedder().embed
    texts = ["How do I reverse a list in Python?", "What is the boiling point of water?",
             "Convert 5 km to miles", "Who wrote Hamlet and when?"]  # fmt: skip
    first, again = Projector(256), Projector(256)
    hashes = set()
    for text in texts:
        vector = embed(text)
        nonzero = sparse(vector)
        assert nonzero is not None  # the built-in embedder's vectors are mostly zeros
        value = first.simhash(vector)
        assert value == again.simhash(vector) == first.simhash(vector, nonzero)
        assert 0 <= value < 1 << 32
        hashes.add(value)
    assert len(hashes) == len(texts)
    # No coordinate: no projection is positive, in either path.
    assert first.simhash([0.0] * 256) == 0 == first.simhash([0.0] * 256, [])
    assert first.simhash([1.0] + [0.0] * 255, [(0, 1.0)]) == first.simhash([1.0] + [0.0] * 255)


def test_simhash_of_dense_vectors_splits_by_sign() -> None:
    """Each bit is the sign of one projection: a vector and its opposite differ in all 32
    (dense vectors of any dimension, tiny ones too)."""
    for dimensions in (2, 5, 24, 384):
        projector = Projector(dimensions)
        vector = [math.sin(1.7 * i + 0.3) for i in range(dimensions)]
        value = projector.simhash(vector)
        opposite = projector.simhash([-x for x in vector])
        assert value ^ opposite == 0xFFFFFFFF, dimensions
        assert projector.simhash(vector, sparse(vector)) == value
    # Wide planes: a vector along one coordinate sets the bits of the planes it is in.
    projector = Projector(384)
    ones = [projector.simhash([1.0 if i == k else 0.0 for i in range(384)]) for k in range(384)]
    assert all(v.bit_count() <= 32 for v in ones)
    assert sum(v.bit_count() for v in ones) == 32 * 12  # 12 coordinates added per plane


def test_planes_add_twelve_coordinates_and_subtract_twelve() -> None:
    """A vector along one coordinate sets the bits of the planes that add it; its opposite,
    those of the planes that subtract it: 12 and 12 per plane (fewer in tiny dimensions)."""
    for dimensions, width in ((24, 12), (384, 12), (8, 4)):
        projector = Projector(dimensions)
        basis = [[1.0 if i == k else 0.0 for i in range(dimensions)] for k in range(dimensions)]
        plus = sum(projector.simhash(v).bit_count() for v in basis)
        minus = sum(projector.simhash([-x for x in v]).bit_count() for v in basis)
        assert (plus, minus) == (32 * width, 32 * width), dimensions


def test_the_sparse_path_agrees_on_mixed_signs_and_magnitudes() -> None:
    projector = Projector(384)
    for seed in range(20):
        vector = [0.0] * 384
        for j in range(60):  # under a quarter set: the sparse path is taken
            vector[(seed * 37 + j * 11) % 384] = math.sin(seed + 3.1 * j) * (1 + j % 5)
        nonzero = sparse(vector)
        assert nonzero is not None
        assert projector.simhash(vector, nonzero) == projector.simhash(vector), seed


def test_paraphrases_get_near_hashes_and_unrelated_questions_far_ones() -> None:
    embed, projector = BuiltinEmbedder().embed, Projector(256)

    def distance(a: str, b: str) -> int:
        return (projector.simhash(embed(a)) ^ projector.simhash(embed(b))).bit_count()

    assert distance("How do I reverse a list in Python?",
                    "what's the way to reverse a python list") <= MAX_HAMMING  # fmt: skip
    assert distance("How do I reverse a list in Python?", "Best pizza toppings ever") > 4


def test_builtin_embedding_values_are_pinned() -> None:
    """The built-in embedding of a text is fixed, not only within a run: entries in Redis
    outlive a gateway restart, and replicas of one version must agree with the vectors
    already stored. Words, their signs, negations and unordered pairs of neighbours all
    count; a change to the features is a change to every stored vector (update this)."""
    embed = BuiltinEmbedder().embed

    def nonzero(text: str) -> list[tuple[int, float]]:
        return [(i, round(x, 6)) for i, x in enumerate(embed(text)) if x]

    assert nonzero("list") == [(249, -1.0)]
    text = "Why doesn't my Python script reverse the list? Not the list: the python script, never."
    assert nonzero(text) == [
        (0, -0.046806), (24, 0.046806), (74, 0.093613), (101, -0.624086), (114, -0.312043),
        (141, -0.046806), (147, 0.093613), (209, 0.046806), (231, 0.624086), (249, -0.312043),
    ]  # fmt: skip
    assert embed("reverse list") == embed("list reverse")  # pairs are unordered


def test_sparse_only_when_few_coordinates_are_set() -> None:
    assert sparse([0.0, 2.0, 0.0, 0.0, 0.0]) == [(1, 2.0)]
    assert sparse([0.0, 2.0, 0.0, 0.0]) is None  # a quarter set: dense is as cheap
    assert sparse([0.0] * 8) == []
    assert sparse([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]) == [(0, 1.0), (1, 1.0)]


def test_band_keys_name_each_four_bits() -> None:
    assert band_keys("ctx", 0x12345678) == [
        "ctx:0:8", "ctx:1:7", "ctx:2:6", "ctx:3:5", "ctx:4:4", "ctx:5:3", "ctx:6:2", "ctx:7:1",
    ]  # fmt: skip
    assert band_keys("c", 0xFFFFFFFF) == [f"c:{b}:f" for b in range(BANDS)]
    assert band_keys("c", 0) == [f"c:{b}:0" for b in range(BANDS)]


def test_items_pack_to_twenty_bytes() -> None:
    item = ("00112233445566778899aabbccddeeff", 0x01020304)
    raw = pack_item(item)
    assert raw == bytes.fromhex(item[0]) + b"\x04\x03\x02\x01"
    assert unpack_item(raw) == item
    assert unpack_item(pack_item(("f" * 32, 0xFFFFFFFF))) == ("f" * 32, 0xFFFFFFFF)


def test_close_items_keeps_near_hashes_nearest_first() -> None:
    h = 0
    lists = [
        [("far", (1 << 11) - 1), ("edge", (1 << 10) - 1), ("b", 0b11)],
        [("a", 0b1), ("b", 0b11), ("same", 0)],
    ]
    assert close_items(lists, h, 8) == ["same", "a", "b", "edge"]
    assert close_items([], h, 8) == []


def test_close_items_stops_once_enough_are_tight() -> None:
    later = [("later", 0)]
    tight = [("x", 0b11), ("y", 0b101)]  # 2 bits each
    assert close_items([tight, later], 0, 2) == ["x", "y"]  # stopped before `later`
    assert close_items([tight, later], 0, 3) == ["later", "x", "y"]  # not enough yet
    loose = [("x", 0b111), ("y", 0b1011)]  # 3 bits: near, not tight
    assert close_items([loose, later], 0, 2) == ["later", "x", "y"]
    one_tight = [("x", 0b11), ("y", 0b111)]
    assert close_items([one_tight, later], 0, 2) == ["later", "x", "y"]


# ------------------------------------------------------------------ the stores


def entry(text: str = "hi", vector: bool = False) -> Entry:
    answer = Answer("m", {"role": "assistant", "content": text}, "stop", None).to_json()
    return Entry(answer, array("f", [1.0, 0.0]) if vector else None, None, 0.0)


async def test_lru_memory_cache_drops_the_least_recently_used() -> None:
    cache = LruMemoryCache(2)
    await cache._set("a", entry("a"))
    await cache._set("b", entry("b"))
    assert (await cache._get("a")) == entry("a")  # a is now the most recent
    await cache._set("c", entry("c"))
    assert await cache._multi_get(["a", "b", "c"]) == [entry("a"), None, entry("c")]
    assert len(cache) == 2
    assert cache.bytes == entry("a").size + entry("c").size
    await cache._set("c", entry("cc"))  # replaced, not added
    assert len(cache) == 2 and cache.bytes == entry("a").size + entry("cc").size
    await cache._set("other", b"not an entry")
    assert cache.bytes == entry("cc").size + 0
    assert await cache._delete("c") == 1 and await cache._delete("c") == 0
    assert cache.bytes == 0
    await cache._set("x:1", entry())
    await cache._set("y:1", entry())
    assert await cache._clear("x:") is True
    assert len(cache) == 1 and await cache._get("y:1") == entry()
    await cache._clear()
    assert len(cache) == 0 and cache.bytes == 0


async def test_lru_memory_cache_expires_entries_lazily() -> None:
    cache = LruMemoryCache(10)
    await cache._set("short", entry(), ttl=0.01)
    await cache._set("forever", entry())
    await cache._set("long", entry(), ttl=3600)
    assert await cache._get("short") == entry()
    await asyncio.sleep(0.05)
    assert await cache._get("short") is None
    assert len(cache) == 2 and cache.bytes == 2 * entry().size  # dropped when read
    assert await cache._get("forever") == entry() and await cache._get("long") == entry()


async def test_memory_store_lists_are_capped_newest_first_and_bounded() -> None:
    store = MemoryCacheStore(max_items=1)
    assert store.shared is False
    await store.put("t:x:1", entry("1"), 60, ["t:s:a", "t:s:b"], ("1" * 32, 1), cap=2)
    await store.put("t:x:2", entry("2"), 60, ["t:s:a"], ("2" * 32, 2), cap=2)
    await store.put("t:x:3", entry("3"), 60, ["t:s:a"], ("3" * 32, 3), cap=2)
    lists = await store.read_lists(["t:s:a", "t:s:b", "t:s:none"])
    assert [list(items) for items in lists] == [[("3" * 32, 3), ("2" * 32, 2)], [("1" * 32, 1)]]
    # one entry kept (max_items 1), the newest
    assert await store.get_many(["t:x:1", "t:x:3"]) == [None, entry("3")]
    assert await store.get_many([]) == []
    assert await store.get("t:x:3") == entry("3")
    assert store.usage() == (1, entry("3").size)
    # At most 8 lists per entry: the least recently written go first.
    for i in range(6):  # 8 lists now: b, a, n0 ... n5
        await store.put(f"t:x:{i}", entry(), 60, [f"t:s:n{i}"], ("0" * 32, 0), cap=2)
    await store.put("t:x:a", entry(), 60, ["t:s:a"], ("a" * 32, 0), cap=2)  # a written again
    await store.put("t:x:z", entry(), 60, ["t:s:z"], ("f" * 32, 0), cap=2)  # b goes
    kept = await store.read_lists(["t:s:a", "t:s:b", "t:s:n0", "t:s:n5", "t:s:z"])
    assert [next(iter(items))[0][0] for items in kept] == ["a", "0", "0", "f"]
    assert [len(items) for items in kept] == [2, 1, 1, 1]


async def test_memory_store_entries_expire_with_their_ttl() -> None:
    store = MemoryCacheStore(max_items=10)
    await store.put("t:x:1", entry("1"), 0.01, [], ("1" * 32, 1), cap=2)
    await store.put("t:x:2", entry("2"), 3600, [], ("2" * 32, 2), cap=2)
    await asyncio.sleep(0.05)
    assert await store.get_many(["t:x:1", "t:x:2"]) == [None, entry("2")]


async def test_memory_store_purges_by_prefix() -> None:
    store = MemoryCacheStore(max_items=10)
    await store.put("t1:x:1", entry(), 60, ["t1:s:a"], ("1" * 32, 1), cap=4)
    await store.put("t1:x:2", entry(), 60, [], ("2" * 32, 2), cap=4)
    await store.put("t2:x:1", entry(), 60, ["t2:s:a"], ("1" * 32, 1), cap=4)
    assert await store.purge("t1:") == 2
    assert await store.read_lists(["t1:s:a", "t2:s:a"]) != []
    assert len(await store.read_lists(["t1:s:a"])) == 0
    assert await store.get("t2:x:1") == entry()
    assert store.usage() == (1, entry().size)
    assert await store.purge("") == 1
    assert store.usage() == (0, 0) and await store.read_lists(["t2:s:a"]) == []
    assert await store.aclose() is None


@pytest.fixture
async def redis_store() -> AsyncIterator[RedisCacheStore]:
    require(redis_reason())
    prefix = f"test-cache-units-{uuid.uuid4().hex[:8]}:"
    store = RedisCacheStore(REDIS_URL, prefix)
    yield store
    await store.purge("")
    await store.aclose()


async def test_redis_store_keeps_the_same_records(redis_store: RedisCacheStore) -> None:
    store = redis_store
    assert store.shared is True and store.usage() is None
    e = entry("x", vector=True)
    await store.put("t:x:1", e, 30, ["t:s:a", "t:s:b"], ("1" * 32, 1), cap=2)
    await store.put("t:x:2", e, 30, ["t:s:a"], ("2" * 32, 2), cap=2)
    await store.put("t:x:3", e, 30, ["t:s:a"], ("3" * 32, 3), cap=2)
    assert await store.get("t:x:1") == e
    assert await store.get("t:x:none") is None
    assert await store.get_many(["t:x:2", "t:x:none"]) == [e, None]
    assert await store.get_many([]) == []
    lists = await store.read_lists(["t:s:a", "t:s:none", "t:s:b"])
    assert [list(items) for items in lists] == [[("3" * 32, 3), ("2" * 32, 2)], [("1" * 32, 1)]]
    raw = redis.Redis(host="127.0.0.1", port=6379)
    for name in ("x:1", "s:a"):  # entries and lists expire with the TTL, in milliseconds
        assert 25_000 < raw.pttl(store.prefix + "t:" + name) <= 30_000
    assert raw.llen(store.prefix + "t:s:a") == 2
    for i in range(4, 8):  # a longer list is read whole
        await store.put(f"v:x:{i}", e, 30, ["v:s:a"], (f"{i}" * 32, i), cap=3)
    (items,) = await store.read_lists(["v:s:a"])
    assert list(items) == [(f"{i}" * 32, i) for i in (7, 6, 5)]
    await store.put("u:x:1", e, 30, ["u:s:a"], ("1" * 32, 1), cap=2)
    assert await store.purge("t:") == 5  # 3 entries, 2 lists
    assert await store.purge("v:") == 5
    assert await store.get("t:x:1") is None and await store.get("u:x:1") == e


async def test_redis_store_purges_in_batches(redis_store: RedisCacheStore) -> None:
    raw = redis.Redis(host="127.0.0.1", port=6379)
    raw.mset({f"{redis_store.prefix}t:x:{i}": b"" for i in range(1203)})
    assert await redis_store.purge("t:") == 1203
    assert raw.keys(redis_store.prefix + "*") == []


def test_redis_store_reads_the_url() -> None:
    store = RedisCacheStore("redis://:p%40ss@db.example:6390/3", "pre:")
    kwargs = store.cache.client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("db.example", 6390, 3)
    assert kwargs["password"] == "p@ss"
    plain = RedisCacheStore("redis://", "pre:").cache.client.connection_pool.connection_kwargs
    assert (plain["host"], plain["port"], plain["db"], plain["password"]) == (
        "127.0.0.1", 6379, 0, None,
    )  # fmt: skip
    slash = RedisCacheStore("redis://h/", "p:").cache.client.connection_pool.connection_kwargs
    assert slash["db"] == 0
    assert store.prefix == "pre:"


async def test_redis_unreachable_fails_fast_after_the_first_failure() -> None:
    store = RedisCacheStore(dead_url(), "p:")
    with pytest.raises(StoreUnavailable) as first:
        await store.get("k")
    assert "less than a second" not in str(first.value)
    for call in (store.get("k"), store.get_many(["k"]), store.read_lists(["l"]),
                 store.put("k", entry(), 1, ["l"], ("0" * 32, 0), 2), store.purge("")):  # fmt: skip
        with pytest.raises(StoreUnavailable, match="Redis failed less than a second ago"):
            await call
    await store.aclose()


# ------------------------------------------------------------------ the answer

TOOL_CALL = {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}  # fmt: skip
USAGE = {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42}


def completion(**changes: Any) -> bytes:
    body: dict[str, Any] = {
        "id": "chatcmpl-upstream",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini-2024",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"},
                     "finish_reason": "stop"}],
        "usage": USAGE,
        "system_fingerprint": "fp_1",
    }  # fmt: skip
    body.update(changes)
    return orjson.dumps(body)


def test_answer_from_a_body_keeps_what_a_replay_needs() -> None:
    answer = answer_from_body(completion())
    assert answer == Answer("gpt-4o-mini-2024", {"role": "assistant", "content": "4"}, "stop",
                            USAGE, "fp_1")  # fmt: skip
    assert Answer.from_json(orjson.loads(orjson.dumps(answer.to_json()))) == answer
    assert Answer.from_json({"model": "m", "message": {}, "finish_reason": "stop"}) == Answer(
        "m", {}, "stop", None, None
    )
    for finish in ("tool_calls", "length", "function_call"):
        choice = {"index": 0, "message": {"role": "assistant"}, "finish_reason": finish}
        assert answer_from_body(completion(choices=[choice])).finish_reason == finish
    odd = answer_from_body(completion(model=None, usage="many", system_fingerprint=None))
    assert (odd.model, odd.usage, odd.system_fingerprint) == ("", None, None)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1]",
        completion(object="chat.completion.chunk"),
        completion(choices=[]),
        completion(choices="x"),
        completion(choices=["x"]),
        completion(choices=[{"message": {"content": "a"}, "finish_reason": "stop"}] * 2),
        completion(choices=[{"message": "a", "finish_reason": "stop"}]),
        completion(choices=[{"message": {"content": "a"}, "finish_reason": "content_filter"}]),
        completion(choices=[{"message": {"content": "a"}, "finish_reason": None}]),
    ],
)
def test_bodies_not_worth_caching(raw: bytes) -> None:
    assert answer_from_body(raw) is None


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    data: dict[str, Any] = {"id": "c", "object": "chat.completion.chunk", "model": "m-1"}
    if delta is not None:
        data["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
    data.update(extra)
    return b"data: " + orjson.dumps(data) + b"\n\n"


def record(*events: bytes, limit: int = 1 << 20) -> Answer | None:
    recorder = StreamRecorder(limit)
    for event in events:
        recorder.feed(event)
    return recorder.answer()


DONE = b"data: [DONE]\n\n"


def test_a_recorded_stream_gives_the_whole_answer() -> None:
    answer = record(
        b": keep-alive\n\n",
        chunk({"role": "assistant", "content": ""}, system_fingerprint="fp_9"),
        chunk({"content": "Hello"}),
        chunk({"content": ", world"}),
        chunk({"refusal": "I "}),
        chunk({"refusal": "won't"}),
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                               "function": {"name": "second", "arguments": "{}"}}]}),
        chunk({"tool_calls": [{"index": 0, "id": "call_a",
                               "function": {"name": "get_", "arguments": '{"a"'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"name": "weather",
                                                        "arguments": ": 1}"}}]}),
        chunk({}, "tool_calls"),
        chunk(choices=[], usage=USAGE, model=""),
        DONE,
    )  # fmt: skip
    assert answer == Answer(
        "m-1",
        {
            "role": "assistant",
            "content": "Hello, world",
            "refusal": "I won't",
            "tool_calls": [
                {"id": "call_a", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"a": 1}'}},
                {"id": "call_b", "type": "function",
                 "function": {"name": "second", "arguments": "{}"}},
            ],
        },
        "tool_calls",
        USAGE,
        "fp_9",
    )  # fmt: skip


def test_a_recorded_stream_with_crlf_and_no_content() -> None:
    events = [chunk({"role": "assistant"}), chunk({}, "length"), DONE]
    answer = record(*(e.replace(b"\n", b"\r\n") for e in events))
    assert answer is not None
    assert answer.message == {"role": "assistant", "content": None}
    assert (answer.finish_reason, answer.usage, answer.model) == ("length", None, "m-1")
    # An empty content delta is content all the same.
    assert record(chunk({"content": ""}), chunk({}, "stop"), DONE).message["content"] == ""
    # No role: an assistant's.
    assert record(chunk({"content": "a"}, "stop"), DONE).message["role"] == "assistant"


def test_a_recorded_stream_read_as_sse() -> None:
    """Lines of an event besides its data, data without the space, a stream without model
    or fingerprint, a choice without its index."""
    plain = {"object": "chat.completion.chunk"}
    first = {**plain, "choices": [{"delta": {"role": "assistant", "content": "a"}}]}
    answer = record(
        b"event: message\n: comment\ndata: " + orjson.dumps(first) + b"\n\n",
        b"data:" + orjson.dumps({**plain, "choices": [{"index": 0, "delta": {"content": "b"}}]})
        + b"\n\n",
        b"data: " + orjson.dumps({**plain, "choices": [{"delta": {}, "finish_reason": "stop"}]})
        + b"\n\n",
        DONE,
    )  # fmt: skip
    assert answer == Answer("", {"role": "assistant", "content": "ab"}, "stop", None, None)


def test_tool_calls_streamed_in_pieces() -> None:
    """As OpenAI streams them: the first delta of a call has its id and name, the next ones
    only pieces of the arguments (their index alone, or none)."""
    answer = record(
        chunk({"role": "assistant", "content": None}),
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                               "function": {"name": "get_weather"}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        chunk({"tool_calls": [{"function": {"arguments": ' "Paris"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"name": "noop", "arguments": "{}"}}]}),
        chunk({}, "tool_calls"),
        DONE,
    )  # fmt: skip
    assert answer is not None
    assert answer.message["tool_calls"] == [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "", "type": "function", "function": {"name": "noop", "arguments": "{}"}},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("events", "why"),
    [
        ([chunk({"content": "a"}, "stop")], "no [DONE]"),
        ([chunk({"content": "a"}), DONE], "no finish reason"),
        ([chunk({"content": "a"}, "content_filter"), DONE], "filtered"),
        ([chunk({"content": "a"}, "stop"), b"data: {oops\n\n", DONE], "garbage"),
        ([chunk({"content": "a"}, "stop"), b'data: {"error": {"message": "x"}}\n\n', DONE],
         "an error event"),
        ([b"data: [1]\n\n", chunk({"content": "a"}, "stop"), DONE], "not an object"),
        ([chunk(choices=[{"index": 1, "delta": {"content": "b"}}]), chunk({}, "stop"), DONE],
         "n > 1"),
        ([chunk(choices=["x"]), chunk({}, "stop"), DONE], "a choice that is no object"),
    ],
)  # fmt: skip
def test_streams_not_worth_caching(events: list[bytes], why: str) -> None:
    assert record(*events) is None, why


def test_a_stream_over_the_limit_is_not_kept() -> None:
    events = [chunk({"content": "a"}, "stop"), DONE]
    size = sum(map(len, events))
    assert record(*events, limit=size) is not None
    assert record(*events, limit=size - 1) is None
    assert record(*events, limit=len(events[0])) is None
    # Nothing more is held once over the limit.
    recorder = StreamRecorder(4)
    recorder.feed(b"12345")
    recorder.feed(b"6")
    assert recorder._chunks == [b"12345"]


def test_a_replayed_body_has_a_fresh_id_and_created() -> None:
    answer = Answer("m", {"role": "assistant", "content": "4", "tool_calls": [TOOL_CALL]},
                    "tool_calls", USAGE, "fp_1")  # fmt: skip
    before = int(time.time())
    first, second = orjson.loads(replay_body(answer)), orjson.loads(replay_body(answer))
    assert first["id"] != second["id"]
    for body in (first, second):
        assert body["id"].startswith("chatcmpl-") and len(body["id"]) == 9 + 32
        assert before <= body["created"] <= int(time.time())
    assert {k: v for k, v in first.items() if k not in ("id", "created")} == {
        "object": "chat.completion",
        "model": "m",
        "choices": [{"index": 0, "message": answer.message, "logprobs": None,
                     "finish_reason": "tool_calls"}],
        "usage": USAGE,
        "system_fingerprint": "fp_1",
    }  # fmt: skip
    plain = orjson.loads(replay_body(Answer("m", {"content": "x"}, "stop", None)))
    assert "system_fingerprint" not in plain and plain["usage"] is None


def events_of(raw: bytes) -> list[Any]:
    assert raw.endswith(b"data: [DONE]\n\n")
    parts = raw.split(b"\n\n")
    assert parts[-1] == b"" and parts[-2] == b"data: [DONE]"
    out = []
    for part in parts[:-2]:
        assert part.startswith(b"data: ") and b"\n" not in part
        out.append(orjson.loads(part[6:]))
    return out


def test_a_replayed_stream_is_a_complete_sse_stream() -> None:
    content = "The quick brown fox jumps over the lazy dog. " * 3 + "Done."
    message = {"role": "assistant", "content": content, "refusal": "no",
               "tool_calls": [TOOL_CALL, TOOL_CALL | {"id": "call_2"}]}  # fmt: skip
    answer = Answer("m", message, "tool_calls", USAGE, "fp_1")
    before = int(time.time())
    chunks = events_of(replay_stream(answer, include_usage=True))
    heads = {(c["id"], c["object"], c["created"], c["model"], c["system_fingerprint"])
             for c in chunks}  # fmt: skip
    assert len(heads) == 1
    rid, obj, created, model, _ = heads.pop()
    assert rid.startswith("chatcmpl-") and obj == "chat.completion.chunk" and model == "m"
    assert before <= created <= int(time.time())
    *body, last = chunks
    assert last["choices"] == [] and last["usage"] == USAGE
    assert all(c["usage"] is None for c in body)
    choices = [c["choices"] for c in body]
    assert all(len(ch) == 1 and ch[0]["index"] == 0 and ch[0]["logprobs"] is None
               for ch in choices)  # fmt: skip
    deltas = [ch[0]["delta"] for ch in choices]
    finishes = [ch[0]["finish_reason"] for ch in choices]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert finishes == [None] * (len(body) - 1) + ["tool_calls"] and deltas[-1] == {}
    pieces = [d["content"] for d in deltas[1:] if "content" in d]
    assert "".join(pieces) == content
    assert all(len(p) <= 48 for p in pieces) and len(pieces) == 4
    assert all(p.endswith(" ") for p in pieces[:-1])  # cut at a space
    assert [d for d in deltas if "refusal" in d] == [{"refusal": "no"}]
    calls = [d["tool_calls"] for d in deltas if "tool_calls" in d]
    assert calls == [[{"index": 0, **TOOL_CALL}], [{"index": 1, **TOOL_CALL, "id": "call_2"}]]
    # What the recorder reads back from it is the answer again.
    assert record(replay_stream(answer, include_usage=True)) == answer


def test_a_replayed_stream_without_usage_and_its_pieces() -> None:
    answer = Answer("m", {"content": "x" * 100}, "stop", USAGE)
    chunks = events_of(replay_stream(answer, include_usage=False))
    assert all("usage" not in c and "system_fingerprint" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]]
    assert pieces == ["x" * 48, "x" * 48, "x" * 4]  # no space: cut at 48
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                        "finish_reason": "stop"}  # fmt: skip

    def pieces_of(text: str) -> list[str]:
        deltas = [c["choices"][0]["delta"] for c in events_of(
            replay_stream(Answer("m", {"content": text}, "stop", None), False))]  # fmt: skip
        return [d["content"] for d in deltas[1:-1]]

    assert pieces_of("y" * 48) == ["y" * 48]
    assert pieces_of("y" * 49) == ["y" * 48, "y"]
    assert pieces_of(" " + "y" * 60) == [" " + "y" * 47, "y" * 13]  # no empty piece
    assert pieces_of("a" * 46 + " bc") == ["a" * 46 + " ", "bc"]  # after the last space
    assert pieces_of("a" * 47 + " bc") == ["a" * 47 + " ", "bc"]
    assert pieces_of("a" * 48 + " bc") == ["a" * 48, " bc"]  # never over 48
    assert pieces_of("a " + "b" * 46) == ["a " + "b" * 46]  # 48: one piece
    assert pieces_of("a " + "b" * 60) == ["a ", "b" * 48, "b" * 12]
    assert pieces_of("") == [] and pieces_of(None) == []  # type: ignore[arg-type]


# ------------------------------------------------------------------ the service

KEYS = {name: f"{i:064x}" for i, name in enumerate(("alice", "bob", "carol", "dave"), 1)}


def config_text(cache: str = "", state: str = "") -> str:
    return f"""
providers:
  mock: {{type: mock, models: [demo]}}
  cloud:
    type: openai
    base_url: http://127.0.0.1:9/v1
    api_key: sk-x
    models: [gpt-4o-mini, text-embedding-3-small]
    timeouts: {{connect: 1, read: 1}}
auth:
  keys:
    - {{name: alice, sha256: "{KEYS["alice"]}", team: red, cache_ttl_seconds: 60}}
    - {{name: bob, sha256: "{KEYS["bob"]}", team: red}}
    - {{name: carol, sha256: "{KEYS["carol"]}", team: blue}}
    - {{name: dave, sha256: "{KEYS["dave"]}"}}
pricing:
  gpt-4o-mini: {{input_per_1m: 1.0, output_per_1m: 2.0}}
routing: {{default_model: demo}}
{cache}
{state}
"""


class Cache:
    """A ResponseCache built as the gateway builds it, with its metrics at hand."""

    def __init__(self, cache: str = "", state: str = "", store: Any = None) -> None:
        self.config = parse_config(config_text(cache, state), env={})
        self.providers = {n: Provider(n, p) for n, p in self.config.providers.items()}
        self.metrics = Metrics()
        built = build_cache(self.config, self.providers, self.metrics, Pricing(self.config),
                            get_logger(), store=store)  # fmt: skip
        assert built is not None
        self.cache: ResponseCache = built

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def errors(self, op: str) -> float:
        return sum(s.value for m in self.metrics.registry.collect()
                   for s in m.samples if s.name == "gateway_cache_errors_total"
                   and s.labels["op"] == op)  # fmt: skip

    async def ask(self, question: str | None = None, *, who: str | None = "alice",
                  provider: str = "cloud", **kw: Any) -> RequestContext:  # fmt: skip
        ctx = context(question, who=who, provider=provider, **kw)
        await CacheStage(self.cache)(ctx)
        return ctx

    async def answer(self, ctx: RequestContext, text: str = "an answer") -> Answer:
        answer = Answer("gpt-4o-mini", {"role": "assistant", "content": text}, "stop", USAGE)
        await self.cache.save(ctx, answer)
        return answer


def context(
    question: str | None = None,
    *,
    who: str | None = "alice",
    provider: str = "cloud",
    body: dict[str, Any] | None = None,
    endpoint: str = "chat",
    headers: list[tuple[bytes, bytes]] | None = None,
    **fields: Any,
) -> RequestContext:
    teams = {"alice": "red", "bob": "red", "carol": "blue", "dave": ""}
    key = Principal(who, "t", teams[who]) if who else None
    if body is None:
        body = {"model": "gpt-4o-mini", "temperature": 0,
                "messages": [{"role": "user", "content": question or "What is 2+2?"}]}  # fmt: skip
    return RequestContext(
        request_id="r", endpoint=endpoint, upstream_path="/chat/completions",
        headers=headers or [], started=0.0, body=body, key=key,
        principal=who or "-", provider=provider, model="gpt-4o-mini", **fields,
    )  # fmt: skip


async def test_a_miss_is_stored_and_then_an_exact_hit() -> None:
    c = Cache()
    ctx = await c.ask("What is the capital of France?")
    assert ctx.cache_status == "miss" and ctx.cached is None
    plan = ctx.cache_plan
    assert plan is not None and plan.lists is not None and plan.ttl == 60  # alice's TTL
    assert plan.prefix == tenant_prefix("key:alice")
    stored = await c.answer(ctx)
    assert c.metric("gateway_cache_stores_total") == 1
    assert c.metric("gateway_cache_entries") == 1
    assert c.metric("gateway_cache_bytes") == c.cache.store.usage()[1] > 0
    hit = await c.ask("What is the capital of France?")
    assert (hit.cache_status, hit.cached, hit.cache_plan) == ("hit_exact", stored, None)
    assert hit.cache_similarity is None
    assert c.metric("gateway_cache_lookups_total", result="hit_exact") == 1
    assert c.metric("gateway_cache_lookups_total", result="miss") == 1
    # What the hit saved: its tokens, and their price.
    assert c.metric("gateway_cache_saved_tokens_total", type="prompt") == 12
    assert c.metric("gateway_cache_saved_tokens_total", type="completion") == 30
    assert c.metric("gateway_cache_saved_usd_total") == pytest.approx((12 + 60) / 1e6)


async def test_a_hit_on_a_local_model_saves_tokens_not_money() -> None:
    c = Cache()
    ctx = await c.ask("Why is the sky blue?", provider="mock")
    usage = {"prompt_tokens": 1, "completion_tokens": "9"}  # the model is priced elsewhere
    await c.cache.save(ctx, Answer("demo", {"content": "x"}, "stop", usage))
    hit = await c.ask("Why is the sky blue?", provider="mock")
    assert hit.cache_status == "hit_exact"
    assert c.metric("gateway_cache_saved_tokens_total", type="prompt") == 1
    assert c.metric("gateway_cache_saved_tokens_total", type="completion") == 0
    assert c.metric("gateway_cache_saved_usd_total") == 0


async def test_a_paraphrase_is_a_semantic_hit_and_a_near_miss_is_not() -> None:
    c = Cache()
    assert c.cache.threshold == BUILTIN_THRESHOLD == 0.75
    stored = await c.answer(await c.ask("How do I reverse a list in Python?"))
    hit = await c.ask("what's the way to reverse a python list")
    assert hit.cache_status == "hit_semantic" and hit.cached == stored
    assert BUILTIN_THRESHOLD <= hit.cache_similarity < 1
    assert c.metric("gateway_cache_lookups_total", result="hit_semantic") == 1
    # Other digits, another name, another kind of question: misses.
    await c.answer(await c.ask("What is 12 times 12?"))
    for question in ("What is 12 times 13?", "how do I reverse a list in Rust?",
                     "What is the boiling point of water?"):  # fmt: skip
        ctx = await c.ask(question)
        assert ctx.cache_status == "miss" and ctx.cache_plan is not None, question
    # The same question in another conversation is not a paraphrase.
    history = [{"role": "system", "content": "Answer in French."},
               {"role": "user", "content": "what's the way to reverse a python list"}]  # fmt: skip
    body = {"temperature": 0, "messages": history}
    assert (await c.ask(body=body)).cache_status == "miss"


async def test_the_closest_candidate_answers() -> None:
    c = Cache("cache: {semantic: {threshold: 0.9}}")  # the two stored are 0.885 apart
    first = await c.answer(await c.ask("How do I reverse a list in Python quickly?"), "first")
    second = await c.answer(await c.ask("what is the way to reverse a python list"), "second")
    assert c.metric("gateway_cache_stores_total") == 2
    # cosine 0.945 to the first, 0.936 to the second; 0.842 and 0.951
    assert (await c.ask("reverse my list in python")).cached == first
    assert (await c.ask("best way to reverse a python list")).cached == second


BOILING = "What is the boiling point of water at 2000 meters?"
FIRST_REJECTED = {  # the nearer candidate, and what makes it no answer for BOILING
    "no record": ("elsewhere", "same", BOILING),  # its record is gone (expired, evicted)
    "no vector": ("record", None, BOILING),  # an exact-only entry
    "another embedder": ("record", "short", BOILING),  # another dimension count
    "below the threshold": ("record", "orthogonal", BOILING),
    "other digits": ("record", "same", "What is the boiling point of water at 3000 meters?"),
    "a conflict": ("record", "same", "What is the boiling point of mercury at 2000 meters?"),
}


async def planned(c: Cache, question: str) -> tuple[CachePlan, dict[str, array[float]]]:
    """A missed lookup's plan, and vectors to file candidates with: the question's own,
    one orthogonal to it, and one of another embedder (3 dimensions)."""
    plan = (await c.ask(question)).cache_plan
    assert plan is not None and plan.lists is not None and plan.nonzero
    same = array("f", bytes(4 * plan.dimensions))
    for index, value in plan.nonzero:
        same[index] = value
    orthogonal = array("f", bytes(4 * plan.dimensions))
    orthogonal[next(i for i in range(plan.dimensions) if not same[i])] = 1.0
    return plan, {"same": same, "short": array("f", [1.0, 0.0, 0.0]), "orthogonal": orthogonal}


async def file_candidate(c: Cache, plan: CachePlan, name: str, entry: Entry, bits: int,
                         record: bool = True) -> None:  # fmt: skip
    """Files `entry` under the plan's own band lists, `bits` away from its hash (`record`
    False: listed, but its record is elsewhere, as after an eviction)."""
    assert plan.lists is not None
    key = plan.prefix + ("x:" + name if record else "elsewhere")
    await c.cache.store.put(key, entry, 60, plan.lists, (name, plan.simhash ^ bits), 8)


def entry_of(text: str, vector: array[float] | None, facts: dict[str, Any]) -> Entry:
    answer = Answer("gpt-4o-mini", {"role": "assistant", "content": text}, "stop", USAGE)
    return Entry(answer.to_json(), vector, facts, 1.0)


def facts_of(question: str) -> dict[str, Any]:
    """What save() files with a semantic entry."""
    return {"question": question, "digits": digits_of(question)}


@pytest.mark.parametrize("why", FIRST_REJECTED)
async def test_a_rejected_candidate_does_not_hide_a_farther_good_one(why: str) -> None:
    """Candidates are compared nearest hash first; one that cannot answer is skipped and
    the next one is still compared. Both are filed under the question's own band lists, one
    and two bits from its hash, so the rejected one is always examined first."""
    c = Cache()
    plan, vectors = await planned(c, BOILING)
    where, vector, question = FIRST_REJECTED[why]
    # the farther one filed first: the newest is not the nearest
    await file_candidate(
        c, plan, "b" * 32, entry_of("second", vectors["same"], facts_of(BOILING)), 0b11
    )
    near = entry_of("first", vectors[vector] if vector else None, facts_of(question))
    await file_candidate(c, plan, "a" * 32, near, 0b1, record=where == "record")
    hit = await c.ask(BOILING)
    assert hit.cache_status == "hit_semantic", why
    assert hit.cached is not None and hit.cached.message["content"] == "second"
    assert hit.cache_similarity == pytest.approx(1.0)


async def test_an_entry_filed_by_an_earlier_version_still_answers() -> None:
    """Entries filed before questions were stored hold their facts instead, and no digits:
    read as they are, never taken for a question with other digits."""
    c = Cache()
    plan, vectors = await planned(c, BOILING)
    old = entry_of("old", vectors["same"], guard_facts(BOILING).to_json())
    assert "question" not in old.facts and "digits" not in old.facts
    await file_candidate(c, plan, "a" * 32, old, 0b1)
    hit = await c.ask(BOILING)
    assert hit.cache_status == "hit_semantic"
    assert hit.cached is not None and hit.cached.message["content"] == "old"
    # and their facts still guard: the same entry is no answer for another number
    plan, _ = await planned(c, "What is the boiling point of water at 3000 meters?")
    await file_candidate(c, plan, "c" * 32, old, 0b1)
    miss = await c.ask("What is the boiling point of water at 3000 meters?")
    assert miss.cache_status == "miss"


async def test_a_similarity_equal_to_the_threshold_is_enough() -> None:
    """'At least `threshold` similar': the measured similarity of a paraphrase, set as the
    threshold, still answers it."""
    stored_question, paraphrase = "How do I reverse a list in Python?", "reverse a python list"
    c = Cache()
    await c.answer(await c.ask(stored_question))
    similarity = (await c.ask(paraphrase)).cache_similarity
    assert similarity is not None and BUILTIN_THRESHOLD < similarity < 1
    c = Cache(f"cache: {{semantic: {{threshold: {similarity!r}}}}}")
    assert c.cache.threshold == similarity
    stored = await c.answer(await c.ask(stored_question))
    hit = await c.ask(paraphrase)
    assert hit.cache_status == "hit_semantic" and hit.cached == stored


async def test_digits_inside_words_are_a_near_miss_at_any_threshold() -> None:
    """'mp3' and 'mp4' differ in their digits: a miss even where the embedding finds the
    two close enough (0.66 here, over this cache's threshold)."""
    c = Cache("cache: {semantic: {threshold: 0.5}}")
    mp3 = await c.answer(await c.ask("How do I convert mp3 to wav?"))
    ctx = await c.ask("How do I convert mp4 to wav?")
    assert ctx.cache_status == "miss" and ctx.cached is None
    again = await c.ask("how do I convert an mp3 to wav")  # the same digits: a paraphrase
    assert again.cache_status == "hit_semantic" and again.cached == mp3


async def test_a_neural_embedder_finds_the_same_question_sent_as_text_parts() -> None:
    """A provider's embedding is dense: compared coordinate by coordinate. The same words
    as a list of text parts are another request (no exact hit) with the same question."""
    c = Cache("cache: {semantic: {embedder: 'mock:demo'}}")
    assert c.cache.threshold == NEURAL_THRESHOLD
    stored = await c.answer(await c.ask("hello there"))
    parts = [{"type": "text", "text": "hello there"}]
    body = {"temperature": 0, "messages": [{"role": "user", "content": parts}]}
    hit = await c.ask(body=body)
    assert hit.cache_status == "hit_semantic" and hit.cached == stored
    assert hit.cache_similarity == pytest.approx(1.0)


async def test_a_number_spelled_out_still_finds_its_paraphrase() -> None:
    c = Cache()
    stored = await c.answer(await c.ask("Is 17 a prime number?"))
    hit = await c.ask("Is seventeen a prime number?")
    assert hit.cache_status == "hit_semantic" and hit.cached == stored


async def test_the_target_is_part_of_the_key() -> None:
    c = Cache()
    await c.answer(await c.ask("What is the capital of France?"))
    other_provider = await c.ask("What is the capital of France?", provider="mock")
    assert other_provider.cache_status == "miss"
    other_model = context("What is the capital of France?")
    other_model.model = "gpt-4o"
    await CacheStage(c.cache)(other_model)
    assert other_model.cache_status == "miss"


async def test_a_refreshed_answer_replaces_the_old_one_for_exact_and_semantic_hits() -> None:
    """A no-cache refresh skips the lookup but embeds the question, so the new answer is
    filed for paraphrases as the old one was."""
    c = Cache()
    await c.answer(await c.ask("How do I reverse a list in Python?"), "old")
    paraphrase = await c.ask("what's the way to reverse a python list")
    assert paraphrase.cache_status == "hit_semantic"
    fresh = [(b"cache-control", b"no-cache")]
    refresh = await c.ask("How do I reverse a list in Python?", headers=fresh)
    assert refresh.cache_status == "bypass" and refresh.cached is None
    new = await c.answer(refresh)
    assert (await c.ask("How do I reverse a list in Python?")).cached == new
    again = await c.ask("what's the way to reverse a python list")
    assert again.cache_status == "hit_semantic" and again.cached == new


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"n": 2}, "n > 1"),
        ({"temperature": 1.5}, "above max_temperature"),
        ({"temperature": "0"}, "a temperature that is no number"),
        ({"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "1"}]},
         "a tool result"),
        ({"messages": [{"role": "function", "content": "1"}]}, "a function result"),
        ({"messages": []}, "no messages"),
        ({"messages": "hi"}, "messages not a list"),
        ({"messages": ["hi"]}, "a message that is no object"),
    ],
)  # fmt: skip
async def test_requests_that_are_never_cached(changes: dict[str, Any], why: str) -> None:
    c = Cache()
    body = {"temperature": 0, "messages": [{"role": "user", "content": "Hi"}]} | changes
    ctx = await c.ask(body=body)
    assert ctx.cache_status == "bypass" and ctx.cache_plan is None, why
    assert c.metric("gateway_cache_lookups_total", result="bypass") == 1


async def test_temperature_up_to_the_maximum_is_cached() -> None:
    c = Cache()
    for temperature in (1.0, 1, None):
        body = {"messages": [{"role": "user", "content": "Hi"}], "temperature": temperature}
        assert (await c.ask(body=body)).cache_status == "miss", temperature
    strict = Cache("cache: {max_temperature: 0.5}")
    no_temperature = {"messages": [{"role": "user", "content": "Hi"}]}
    assert (await strict.ask(body=no_temperature)).cache_status == "bypass"  # 1.0 by default
    assert (await strict.ask(body=no_temperature | {"temperature": 0.5})).cache_status == "miss"


async def test_redacted_requests_are_never_cached() -> None:
    ctx = await Cache().ask("Mail [EMAIL_1] about it", redacted=1)
    assert ctx.cache_status == "bypass" and ctx.cache_plan is None


async def test_responses_requests_use_the_exact_layer() -> None:
    c = Cache()
    for items, status in (
        ("What is 2+2?", "miss"),
        ("", "bypass"),
        ([{"type": "message", "role": "user", "content": "What is 2+2?"}], "miss"),
        ([{"type": "function_call_output", "call_id": "c", "output": "4"}], "bypass"),
        ([], "bypass"),
        (["x"], "bypass"),
        (None, "bypass"),
    ):
        ctx = await c.ask(body={"input": items}, endpoint="responses")
        assert ctx.cache_status == status, items
        assert (ctx.cache_plan is not None) == (status == "miss")
    ctx = await c.ask(body={"input": "What is 2+2?"}, endpoint="responses")
    assert ctx.cache_plan is not None and ctx.cache_plan.lists is None  # exact only
    await c.answer(ctx)
    assert (await c.ask(body={"input": "What is 2+2?"}, endpoint="responses")).cached


async def test_only_chat_and_responses_are_looked_up() -> None:
    c = Cache()
    for endpoint in ("completions", "embeddings"):
        ctx = await c.ask("x", endpoint=endpoint)
        assert ctx.cache_status == "" and ctx.cache_plan is None


@pytest.mark.parametrize(
    ("header", "status", "plan"),
    [
        (b"no-cache", "bypass", True),  # a refresh: stored all the same
        (b"No-Store", "hit_exact", False),
        (b"max-age=0, no-store", "hit_exact", False),
        (b"no-cache, no-store", "bypass", False),
        (b"no-store,no-cache=x", "bypass", False),
        (b"private", "hit_exact", False),  # a hit has no plan
        (b"", "hit_exact", False),
    ],
)
async def test_cache_control(header: bytes, status: str, plan: bool) -> None:
    c = Cache()
    await c.answer(await c.ask("What is the capital of France?"))
    ctx = await c.ask("What is the capital of France?", headers=[(b"cache-control", header)])
    assert ctx.cache_status == status
    assert (ctx.cache_plan is not None) == plan


async def test_no_store_misses_are_not_stored_and_no_cache_refreshes() -> None:
    c = Cache()
    ctx = await c.ask("Why is the sky blue?", headers=[(b"cache-control", b"no-store")])
    assert ctx.cache_status == "miss" and ctx.cache_plan is None
    await c.answer(ctx)
    assert (await c.ask("Why is the sky blue?")).cache_status == "miss"
    first = await c.answer(await c.ask("Why is the sky blue?"), "old")
    refresh = await c.ask("Why is the sky blue?", headers=[(b"cache-control", b"no-cache")])
    assert refresh.cached is None
    new = await c.answer(refresh, "new")
    assert (await c.ask("Why is the sky blue?")).cached == new != first


def test_whose_answers_a_request_may_receive() -> None:
    alice, dave = context(who="alice"), context(who="dave")
    anonymous = context(who=None)
    assert anonymous.principal == "-"
    assert [tenant_of(ctx, "tenant") for ctx in (alice, dave, anonymous)] == [
        "key:alice", "key:dave", "key:-"]  # fmt: skip
    assert [tenant_of(ctx, "team") for ctx in (alice, dave, anonymous)] == [
        "team:red", "key:dave", "key:-"]  # fmt: skip
    assert [tenant_of(ctx, "shared") for ctx in (alice, dave, anonymous)] == [
        "shared", "shared", "key:-"]  # fmt: skip
    local = context(who="alice", keep_local=True)
    assert tenant_of(local, "shared") == tenant_of(local, "team") == "key:alice"
    assert len({tenant_prefix(t) for t in ("key:a", "key:b", "team:a", "shared")}) == 4
    assert tenant_prefix("shared").endswith(":") and len(tenant_prefix("shared")) == 17


@pytest.mark.parametrize(
    ("scope", "sharing"),
    [
        ("tenant", {"alice": {"alice"}, "bob": {"bob"}, "carol": {"carol"}, "dave": {"dave"}}),
        ("team", {"alice": {"alice", "bob"}, "bob": {"alice", "bob"}, "carol": {"carol"},
                  "dave": {"dave"}}),
        ("shared", {w: {"alice", "bob", "carol", "dave"} for w in ("alice", "bob", "carol",
                                                                    "dave")}),
    ],
)  # fmt: skip
async def test_scope(scope: str, sharing: dict[str, set[str]]) -> None:
    for writer, readers in sharing.items():
        c = Cache(f"cache: {{scope: {scope}}}")
        await c.answer(await c.ask("What is the capital of France?", who=writer))
        for reader in sharing:
            ctx = await c.ask("What is the capital of France?", who=reader)
            assert (ctx.cache_status == "hit_exact") == (reader in readers), (writer, reader)


async def test_a_request_kept_local_is_never_shared_nor_sent_to_a_cloud_embedder() -> None:
    c = Cache("cache: {scope: shared}")
    ctx = await c.ask("My diagnosis is diabetes, what now?", keep_local=True)
    assert ctx.cache_plan is not None and ctx.cache_plan.prefix == tenant_prefix("key:alice")
    assert ctx.cache_plan.lists is not None  # the built-in embedder is local
    await c.answer(ctx)
    assert (await c.ask("My diagnosis is diabetes, what now?", who="bob")).cached is None
    cloud = Cache("cache: {semantic: {embedder: 'cloud:text-embedding-3-small'}}")
    assert cloud.cache.threshold == NEURAL_THRESHOLD == 0.93
    local = await cloud.ask("My diagnosis is diabetes, what now?", keep_local=True)
    assert local.cache_status == "miss" and local.cache_plan is not None
    assert local.cache_plan.lists is None  # never embedded
    assert cloud.errors("embed") == 0


async def test_an_embedder_failure_is_a_miss_and_counted() -> None:
    c = Cache("cache: {semantic: {embedder: 'cloud:text-embedding-3-small', threshold: 0.9}}")
    assert c.cache.threshold == 0.9
    ctx = await c.ask("Why is the sky blue?")
    assert ctx.cache_status == "miss" and ctx.cache_plan is not None
    assert ctx.cache_plan.lists is None
    assert c.errors("embed") == 1
    reasons = {s.labels["reason"] for m in c.metrics.registry.collect() for s in m.samples
               if s.name == "gateway_cache_errors_total"}  # fmt: skip
    assert reasons <= {"ConnectError", "ConnectTimeout"}  # the exception's type
    await c.answer(ctx)  # stored for exact hits
    assert (await c.ask("Why is the sky blue?")).cache_status == "hit_exact"


async def test_a_provider_embedder_gives_unit_vectors() -> None:
    tagged = Cache("cache: {semantic: {embedder: 'mock:demo:latest'}}").cache.embedder
    assert tagged is not None and tagged.name == "mock:demo:latest"  # a tag in the model name
    c = Cache("cache: {semantic: {embedder: 'mock:demo'}}")
    embedder = c.cache.embedder
    assert embedder is not None and embedder.name == "mock:demo" and embedder.local
    vector = await embedder.embed("hello")
    assert sum(x * x for x in vector) == pytest.approx(1.0)
    raw = await c.providers["mock"].embed("demo", "hello", 1.0)
    assert vector == pytest.approx([x / sum(y * y for y in raw) ** 0.5 for x in raw])
    stored = await c.answer(await c.ask("hello there"))
    assert (await c.ask("hello there")).cached == stored
    same = await c.ask("hello there", body={"temperature": 0, "messages": [
        {"role": "user", "content": "hello there"}], "user": "u1"})  # fmt: skip
    assert same.cache_status == "hit_exact"


async def test_semantic_off_long_questions_and_images_are_exact_only() -> None:
    off = Cache("cache: {semantic: {enabled: false}}")
    assert off.cache.embedder is None
    await off.answer(await off.ask("How do I reverse a list in Python?"))
    assert (await off.ask("what's the way to reverse a python list")).cache_status == "miss"
    short = Cache("cache: {semantic: {max_question_chars: 40}}")
    at_limit = "How do I reverse a list in Python? Quick"  # 40 characters
    assert len(at_limit) == 40
    assert (await short.ask(at_limit)).cache_plan.lists is not None
    assert (await short.ask(at_limit + "!")).cache_plan.lists is None
    image = [{"type": "text", "text": "What is this?"}, {"type": "image_url",
             "image_url": {"url": "data:image/png;base64,AA=="}}]  # fmt: skip
    ctx = await Cache().ask(
        body={"temperature": 0, "messages": [{"role": "user", "content": image}]}
    )
    assert ctx.cache_status == "miss" and ctx.cache_plan.lists is None


async def test_an_answer_larger_than_max_entry_bytes_is_not_stored() -> None:
    c = Cache("cache: {max_entry_bytes: 2000}")
    ctx = await c.ask("What is the capital of France?")
    await c.answer(ctx, "x" * 2000)
    assert c.metric("gateway_cache_stores_total") == 0
    assert (await c.ask("What is the capital of France?")).cache_status == "miss"
    ctx = await c.ask("What is the capital of France?")
    await c.answer(ctx, "Paris")
    assert (await c.ask("What is the capital of France?")).cache_status == "hit_exact"


async def test_ttl_per_key_or_the_default() -> None:
    c = Cache("cache: {ttl_seconds: 120}")
    assert (await c.ask("q", who="alice")).cache_plan.ttl == 60
    assert (await c.ask("q", who="bob")).cache_plan.ttl == 120
    assert (await c.ask("q", who=None)).cache_plan.ttl == 120


async def test_purge_one_tenant_or_all() -> None:
    c = Cache()
    for who in ("alice", "bob"):
        await c.answer(await c.ask("What is the capital of France?", who=who))
    assert c.metric("gateway_cache_entries") == 2
    assert await c.cache.purge("key:alice") == 1
    assert c.metric("gateway_cache_entries") == 1
    assert c.metric("gateway_cache_bytes") == c.cache.store.usage()[1] > 0
    assert (await c.ask("What is the capital of France?", who="alice")).cached is None
    assert (await c.ask("What is the capital of France?", who="bob")).cached is not None
    assert await c.cache.purge(None) == 1
    assert c.metric("gateway_cache_entries") == 0 and c.metric("gateway_cache_bytes") == 0


async def test_save_without_a_plan_stores_nothing() -> None:
    c = Cache()
    hit_ctx = context("x")
    await c.answer(hit_ctx)
    assert c.metric("gateway_cache_stores_total") == 0 and c.cache.store.usage() == (0, 0)


def test_build_cache_follows_the_config() -> None:
    config = parse_config(config_text("cache: {enabled: false}"), env={})
    assert build_cache(config, {}, Metrics(), Pricing(config), get_logger()) is None
    store = MemoryCacheStore(5)
    c = Cache("cache: {max_items: 7}", store=store)
    assert c.cache.store is store and store.entries.max_items == 7
    assert isinstance(Cache().cache.store, MemoryCacheStore)
    assert Cache().cache.store.entries.max_items == 10_000
    on_redis = Cache(state='state: {redis_url: "redis://127.0.0.1:6390/2", key_prefix: "gw:"}')
    assert isinstance(on_redis.cache.store, RedisCacheStore)
    assert on_redis.cache.store.prefix == "gw:cache:"


async def test_redis_down_is_a_bypass_and_the_store_is_skipped() -> None:
    c = Cache(state=f'state: {{redis_url: "{dead_url()}"}}')
    ctx = await c.ask("What is the capital of France?")
    assert ctx.cache_status == "bypass" and ctx.cache_plan is None
    assert c.metric("gateway_cache_errors_total", op="lookup", reason="store_unavailable") == 1
    miss = await Cache().ask("Why is the sky blue?")  # a plan made elsewhere, to file here
    await c.answer(miss)  # Redis still down: skipped, counted, no exception
    assert c.metric("gateway_cache_errors_total", op="store", reason="store_unavailable") == 1
    assert c.metric("gateway_cache_stores_total") == 0
    await c.cache.aclose()


async def test_the_cache_on_redis(redis_store: RedisCacheStore) -> None:
    c = Cache(store=redis_store)
    stored = await c.answer(await c.ask("How do I reverse a list in Python?"))
    assert c.metric("gateway_cache_entries") == 0  # Redis reports its own size
    assert (await c.ask("How do I reverse a list in Python?")).cached == stored
    hit = await c.ask("what's the way to reverse a python list")
    assert hit.cache_status == "hit_semantic" and hit.cached == stored
    raw = redis.Redis(host="127.0.0.1", port=6379)
    names = raw.keys(redis_store.prefix + "*")
    assert len(names) == 1 + BANDS
    assert all(60_000 - 5_000 < raw.pttl(n) <= 60_000 for n in names)
    assert await c.cache.purge("key:alice") == 1 + BANDS
