"""The built-in embedder: signed feature hashing, no model, no dependency.

A question becomes a bag of weighted features hashed into a fixed number of dimensions
(the sign of each feature's hash decides whether it adds or subtracts, so collisions
cancel out on average): the key of each content word (its stem, with everyday synonyms
folded together), weighted up for rare words (names, topics), and unordered pairs of
neighbouring content words. Stop words and politeness carry no weight. crc32 keeps the
vector identical across processes and runs (Python's hash() is salted per process).

Measured on tests/data/cache_pairs.jsonl (python -m bench.cache_eval): character n-grams
within words, the usual next feature, served no more paraphrases once words are stemmed,
so they are left out.
"""

from __future__ import annotations

import math
import operator
import zlib
from collections.abc import Sequence

from gateway.cache.guard import STOP, is_plain_key, key, words

DIMENSIONS = 256
# Feature weights, tuned on the even rows of tests/data/cache_pairs.jsonl (bench.cache_eval).
WORD_WEIGHT = 1.0
RARE_BONUS = 1.0  # added for words outside the plain vocabulary: names and topics
PAIR_WEIGHT = 0.3
NEGATION_WEIGHT = 0.3  # the guard decides negations; here they only nudge
_NEGATIONS = frozenset(("not", "no", "never", "without"))
# Tokens that are no feature: function words, and the "." and symbols the guard reads.
_SKIP = (STOP - _NEGATIONS) | frozenset(".%$€£¥°+*/\u00d7\u00f7^=<>-")
_CACHE_LIMIT = 100_000

_Feature = tuple[int, float, str | None]  # index, signed weight, key for pairs (or None)


def _signed(feature: str, weight: float, dimensions: int) -> tuple[int, float]:
    h = zlib.crc32(feature.encode("utf-8"))
    return h % dimensions, (weight if h & 0x80000000 else -weight)


class BuiltinEmbedder:
    """Unit-norm dense vectors from feature hashing; deterministic and fast."""

    name = "builtin"

    def __init__(self, dimensions: int = DIMENSIONS) -> None:
        self.dimensions = dimensions
        self._words: dict[str, _Feature] = {}
        self._pairs: dict[tuple[str, str], tuple[int, float]] = {}

    def embed(self, text: str) -> list[float]:
        vector = [0.0] * self.dimensions
        for index, value in self.sparse_embed(text):
            vector[index] = value
        return vector

    def sparse_embed(self, text: str) -> list[tuple[int, float]]:
        """The unit vector's nonzero coordinates (index, value): a question has a few dozen
        of the 256, and the cache's lookup needs no more (index.sparse, cosine)."""
        weights: dict[int, float] = {}
        get = weights.get
        cached = self._words.get
        previous: str | None = None
        for word in [w for w in words(text) if w not in _SKIP]:
            index, value, word_key = cached(word) or self._word(word)
            weights[index] = get(index, 0.0) + value
            if word_key is None:
                continue
            if previous is not None and previous != word_key:
                index, value = self._pair(previous, word_key)
                weights[index] = get(index, 0.0) + value
            previous = word_key
        norm = math.sqrt(sum(v * v for v in weights.values()))
        if norm == 0.0:
            return []
        return [(index, value / norm) for index, value in weights.items() if value]

    def _word(self, word: str) -> _Feature:
        if len(self._words) >= _CACHE_LIMIT:
            self._words.clear()
        if word in _NEGATIONS:
            feature: _Feature = (*_signed("n:" + word, NEGATION_WEIGHT, self.dimensions), None)
        else:
            word_key = key(word)
            plain = is_plain_key(word_key) or word.isdecimal()
            weight = WORD_WEIGHT + (0.0 if plain else RARE_BONUS)
            feature = (*_signed("w:" + word_key, weight, self.dimensions), word_key)
        self._words[word] = feature
        return feature

    def _pair(self, first: str, second: str) -> tuple[int, float]:
        """Neighbouring content words, unordered: "reverse a list" and "list reverse" share it."""
        pair = (first, second) if first < second else (second, first)
        found = self._pairs.get(pair)
        if found is None:
            if len(self._pairs) >= _CACHE_LIMIT:
                self._pairs.clear()
            found = self._pairs[pair] = _signed(
                f"p:{pair[0]}|{pair[1]}", PAIR_WEIGHT, self.dimensions
            )
        return found


def cosine(
    a: Sequence[float], b: Sequence[float], nonzero: Sequence[tuple[int, float]] | None = None
) -> float:
    """Cosine similarity of two unit vectors: their dot product (over `a`'s nonzero
    coordinates when given)."""
    if nonzero is not None:
        return float(sum([x * b[i] for i, x in nonzero]))
    return float(sum(map(operator.mul, a, b)))
