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
        # Per coordinate, the projections it is added to (+1.0) or subtracted from (-1.0).
        self._members: list[list[tuple[int, float]]] = [[] for _ in range(dimensions)]
        for bit in range(BITS):
            picks = rng.sample(range(dimensions), min(2 * width, dimensions))
            self._planes.append((_getter(picks[:width]), _getter(picks[width:])))
            for i, pick in enumerate(picks):
                self._members[pick].append((bit, 1.0 if i < width else -1.0))

    def simhash(
        self, vector: Sequence[float], nonzero: Sequence[tuple[int, float]] | None = None
    ) -> int:
        """With `nonzero` (the vector's nonzero coordinates, from `sparse`) the same hash
        from those alone: the built-in embedder's vectors are mostly zeros."""
        value = 0
        if nonzero is not None:
            sums = [0.0] * BITS
            members = self._members
            for index, x in nonzero:
                for bit, sign in members[index]:
                    sums[bit] += sign * x
            for bit, total in enumerate(sums):
                if total > 0.0:
                    value |= 1 << bit
            return value
        for bit, (plus, minus) in enumerate(self._planes):
            if sum(plus(vector)) > sum(minus(vector)):
                value |= 1 << bit
        return value


def sparse(vector: Sequence[float]) -> list[tuple[int, float]] | None:
    """The nonzero coordinates, when they are few enough to be worth using."""
    nonzero = [(i, x) for i, x in enumerate(vector) if x]
    return nonzero if 4 * len(nonzero) < len(vector) else None


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


_TIGHT = 2  # bits: a candidate this close is as good as any the other lists could add


def close_items(lists: Iterable[Iterable[Item]], simhash: int, enough: int) -> list[str]:
    """Distinct entries whose hash is near enough, nearest first. The band lists are read
    in turn, and no further once `enough` entries are within _TIGHT bits: in a crowded
    context every list holds the same newest entries, and reading all 8 costs 8 times one."""
    near: dict[str, int] = {}
    tight = 0  # distinct entries within _TIGHT bits so far
    for items in lists:
        for exact, other in items:
            distance = (other ^ simhash).bit_count()
            if distance <= MAX_HAMMING:
                if distance <= _TIGHT and exact not in near:
                    tight += 1
                near[exact] = distance
        if tight >= enough:
            break
    return sorted(near, key=near.__getitem__)
