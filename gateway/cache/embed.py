"""The built-in embedder: signed feature hashing, no model, no dependency.

A question becomes a bag of weighted features hashed into a fixed number of dimensions
(the sign of each feature's hash decides whether it adds or subtracts, so collisions
cancel out on average): word stems (with everyday synonyms folded together), unordered
pairs of neighbouring content words, and character 3-grams within words, which give
partial credit to morphological variants ("dehydration" and "dehydrated"). Stop words
and politeness carry no weight. crc32 keeps the vector identical across processes and
runs (Python's hash() is salted per process).
"""

from __future__ import annotations

import math
import operator
import zlib
from collections.abc import Sequence
from functools import lru_cache

from gateway.cache.guard import STOP, is_plain_key, key, words

DIMENSIONS = 256
# Feature weights, tuned on the even rows of tests/data/cache_pairs.jsonl (bench.cache_eval).
WORD_WEIGHT = 1.0
RARE_BONUS = 0.5  # added for words outside the plain vocabulary: names and topics
PAIR_WEIGHT = 0.5
CHAR_WEIGHT = 0.6  # spread over a word's 3-grams
NEGATION_WEIGHT = 0.3  # the guard decides negations; here they only nudge
_NEGATIONS = frozenset(("not", "no", "never", "without"))


def _hash(feature: str) -> int:
    return zlib.crc32(feature.encode("utf-8"))


@lru_cache(maxsize=65536)
def _word_features(word: str, dimensions: int) -> tuple[tuple[int, float], ...]:
    """(index, signed weight) of one word's own features: its stem key and its 3-grams."""

    stem_key = key(word)
    weight = WORD_WEIGHT + (0.0 if is_plain_key(stem_key) or word.isdecimal() else RARE_BONUS)
    out = [_signed("w:" + stem_key, weight, dimensions)]
    if not word.isdecimal() and len(word) > 2:
        padded = f"<{word}>"
        grams = [padded[i : i + 3] for i in range(len(padded) - 2)]
        each = CHAR_WEIGHT / math.sqrt(len(grams))
        out += [_signed("c:" + gram, each, dimensions) for gram in grams]
    return tuple(out)


def _signed(feature: str, weight: float, dimensions: int) -> tuple[int, float]:
    h = _hash(feature)
    return h % dimensions, (weight if h & 0x80000000 else -weight)


class BuiltinEmbedder:
    """Unit-norm dense vectors from feature hashing; deterministic and fast."""

    name = "builtin"

    def __init__(self, dimensions: int = DIMENSIONS) -> None:
        self.dimensions = dimensions

    def embed(self, text: str) -> list[float]:
        dims = self.dimensions
        vector = [0.0] * dims
        previous: str | None = None
        for word in words(text):
            if word in STOP:
                continue
            if word in _NEGATIONS:
                index, value = _signed("n:" + word, NEGATION_WEIGHT, dims)
                vector[index] += value
                continue
            for index, value in _word_features(word, dims):
                vector[index] += value
            current = key(word)
            if previous is not None and previous != current:
                # unordered, so "reverse a list" and "list reverse" share it
                first, second = sorted((previous, current))
                index, value = _signed(f"p:{first}|{second}", PAIR_WEIGHT, dims)
                vector[index] += value
            previous = current
        norm = math.sqrt(sum(map(operator.mul, vector, vector)))
        if norm == 0.0:
            return vector
        scale = 1.0 / norm
        return [x * scale for x in vector]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two unit vectors: their dot product."""
    return float(sum(map(operator.mul, a, b)))
