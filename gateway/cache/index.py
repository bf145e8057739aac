"""The semantic index: which stored questions a new one is compared with.

A question's embedding gets a 32-bit SimHash (signs of sparse random projections, the
same in every process). The hash is cut into 8 bands of 4 bits; an entry is listed under
its context digest and each band's value, so a lookup reads 8 short lists whatever the
cache holds. Each list keeps only the newest `bucket_size` entries. Candidates whose hash
differs in too many bits cannot be similar enough and are dropped before any cosine.
"""

from __future__ import annotations

import random
import struct
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import orjson

BITS = 32
BANDS = 8
_BAND_BITS = BITS // BANDS
_BAND_MASK = (1 << _BAND_BITS) - 1
# Paraphrases at or above cosine 0.8 differ in at most 9 of the 32 bits on the labelled
# pairs (tests/data/cache_pairs.jsonl); unrelated questions in about 16.
MAX_HAMMING = 10
_PLANE_WIDTH = 12  # coordinates added and subtracted per projection


@dataclass(frozen=True, slots=True)
class Entry:
    """What the store keeps per cached request: the answer and how to compare with it."""

    answer: dict[str, Any]  # Answer.to_json()
    vector: array[float] | None  # the question's unit embedding (semantic entries)
    facts: Any  # guard Facts.to_json()
    created: float

    def to_bytes(self) -> bytes:
        head = orjson.dumps({"a": self.answer, "f": self.facts, "t": self.created})
        vector = self.vector.tobytes() if self.vector is not None else b""
        return struct.pack("<I", len(head)) + head + vector

    @classmethod
    def from_bytes(cls, raw: bytes) -> Entry:
        (size,) = struct.unpack_from("<I", raw)
        head = orjson.loads(raw[4 : 4 + size])
        rest = raw[4 + size :]
        vector = array("f", rest) if rest else None
        return cls(head["a"], vector, head["f"], head["t"])

    @property
    def size(self) -> int:
        """Bytes as stored (the serialized form; memory holds about as much)."""
        return len(self.to_bytes())


class Projector:
    """SimHash for vectors of one dimension; planes are seeded, so replicas agree."""

    def __init__(self, dimensions: int) -> None:
        rng = random.Random(dimensions)
        width = min(_PLANE_WIDTH, max(dimensions // 2, 1))
        self._planes = []
        for _ in range(BITS):
            picks = rng.sample(range(dimensions), min(2 * width, dimensions))
            self._planes.append((_getter(picks[:width]), _getter(picks[width:])))

    def simhash(self, vector: Sequence[float]) -> int:
        value = 0
        for bit, (plus, minus) in enumerate(self._planes):
            if sum(plus(vector)) > sum(minus(vector)):
                value |= 1 << bit
        return value


def _getter(indexes: list[int]) -> Any:
    get = itemgetter(*indexes)
    return get if len(indexes) > 1 else lambda v: (get(v),)


def band_keys(context: str, simhash: int) -> list[str]:
    return [f"{context}:{b}:{(simhash >> (b * _BAND_BITS)) & _BAND_MASK:x}" for b in range(BANDS)]


Item = tuple[str, int]  # (exact digest, simhash): one entry in a band list


def pack_item(item: Item) -> bytes:
    return bytes.fromhex(item[0]) + item[1].to_bytes(4, "little")


def unpack_item(raw: bytes) -> Item:
    return raw[:16].hex(), int.from_bytes(raw[16:20], "little")


def close_items(items: Iterable[Item], simhash: int) -> list[str]:
    """Distinct entries whose hash is near enough, nearest first."""
    near: dict[str, int] = {}
    for exact, other in items:
        distance = (other ^ simhash).bit_count()
        if distance <= MAX_HAMMING:
            near[exact] = distance
    return sorted(near, key=near.__getitem__)
