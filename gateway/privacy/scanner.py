"""PrivacyScanner: secrets, personal data and sensitive words in the texts of a request.

The texts are joined and scanned as one string (see `detect` for how each detector keeps
to a few literal searches); overlapping findings are resolved by detector rank, and each
finding points back to its text with a span. Values never appear in a repr.
"""

from __future__ import annotations

import itertools
import re
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from gateway.privacy.detect import (
    ASSIGN_STEMS,
    BUILTIN_DETECTORS,
    DEFAULT_KEYWORDS,
    KEYWORD,
    PII,
    SECRET,
    SEPARATOR,
    Scan,
    compile_keywords,
)
from gateway.privacy.texts import TextRef

__all__ = [
    "BUILTIN_DETECTORS",
    "DEFAULT_KEYWORDS",
    "KEYWORD",
    "PII",
    "SECRET",
    "Finding",
    "PrivacyDetectorSpec",
    "PrivacyScanner",
    "PrivacySummary",
    "summarize",
]

_CUSTOM_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class PrivacyDetectorSpec:
    """A custom detector from settings: every match of `regex` is a finding."""

    name: str
    regex: str
    category: str


class Finding(NamedTuple):
    """One detected value: `ref.text[start:end]`. Its repr never shows the value.

    A named tuple, not a frozen dataclass: a scan may make dozens, and a frozen
    dataclass's __init__ costs several times as much.
    """

    detector: str
    category: str
    start: int
    end: int
    ref: TextRef

    @property
    def value(self) -> str:
        return self.ref.text[self.start : self.end]

    @property
    def path(self) -> str:
        return self.ref.path

    def __repr__(self) -> str:
        return (
            f"Finding(detector={self.detector!r}, category={self.category!r}, "
            f"path={self.path!r}, span=({self.start}, {self.end}))"
        )


@dataclass(frozen=True, slots=True)
class PrivacySummary:
    """What logs and headers may say: categories and counts, never values."""

    categories: tuple[str, ...]
    by_category: dict[str, int]
    by_detector: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_detector.values())


def summarize(findings: Iterable[Finding]) -> PrivacySummary:
    by_category: dict[str, int] = {}
    by_detector: dict[str, int] = {}
    for finding in findings:
        by_category[finding.category] = by_category.get(finding.category, 0) + 1
        by_detector[finding.detector] = by_detector.get(finding.detector, 0) + 1
    return PrivacySummary(
        categories=tuple(sorted(by_category)),
        by_category=dict(sorted(by_category.items())),
        by_detector=dict(sorted(by_detector.items())),
    )


class PrivacyScanner:
    """Compiled once from settings; `scan` is pure and safe to call from any task."""

    def __init__(
        self, custom: Sequence[PrivacyDetectorSpec] = (), keywords: Sequence[str] | None = None
    ) -> None:
        names = [name for name, _ in BUILTIN_DETECTORS] + [KEYWORD]
        categories = [category for _, category in BUILTIN_DETECTORS] + [KEYWORD]
        self._custom: list[tuple[int, re.Pattern[str]]] = []
        for spec in custom:
            self._custom.append((len(names), _compile_custom(spec, names)))
            names.append(spec.name)
            categories.append(spec.category)
        self._names, self._categories = tuple(names), tuple(categories)
        # (name, category) of every detector, built-in and custom, for docs and metrics.
        self.detectors = tuple(zip(names, categories, strict=True))
        # Custom detectors rank first: the operator's own patterns are the most specific.
        first = len(BUILTIN_DETECTORS) + 1
        ranks = [len(self._custom) + i for i in range(first)]
        self._ranks = ranks + list(range(len(self._custom)))
        self._keywords, self._unicode_keywords = compile_keywords(
            DEFAULT_KEYWORDS if keywords is None else keywords
        )
        needles = {k.needle for k in self._keywords} | set(ASSIGN_STEMS)
        # A needle that starts with a shorter needle is found among the shorter one's hits.
        self._bases = {n: min((m for m in needles if n.startswith(m)), key=len) for n in needles}
        prefixes = sorted(set(self._bases.values()))
        self._needles = re.compile(b"|".join(re.escape(p) for p in prefixes)) if prefixes else None

    def scan_text(self, text: str) -> list[Finding]:
        return self.scan([TextRef((), text)])

    def scan(self, texts: Sequence[TextRef]) -> list[Finding]:
        """Findings in `texts`, ordered by text then position; overlaps resolved by rank."""
        texts = [t for t in texts if t.text]
        if not texts:
            return []
        starts: list[int] = []
        offset = 0
        for ref in texts:
            starts.append(offset)
            offset += len(ref.text) + 1
        joined = texts[0].text if len(texts) == 1 else SEPARATOR.join(t.text for t in texts)
        scan = Scan(joined, [s + len(t.text) for s, t in zip(starts, texts, strict=True)])
        scan.run(self._bases, self._needles)
        for det, pattern in self._custom:
            scan.hits.extend(
                (m.start(), m.end(), det) for m in pattern.finditer(joined) if m.end() > m.start()
            )
        kept = _resolve(scan.hits, self._ranks)
        keyword_hits = scan.keywords(self._keywords, self._unicode_keywords)
        if keyword_hits and kept:
            # A word inside a finding (`PRIVATE KEY` in a PEM block) says nothing more.
            kept_starts = [hit[0] for hit in kept]
            keyword_hits = [hit for hit in keyword_hits if not _inside(hit[0], kept_starts, kept)]
        findings: list[Finding] = []
        for begin, end, det in sorted(kept + keyword_hits):
            i = bisect_right(starts, begin) - 1
            ref, base = texts[i], starts[i]
            if begin < end and end - base <= len(ref.text):
                findings.append(
                    Finding(self._names[det], self._categories[det], begin - base, end - base, ref)
                )
        return findings


def _compile_custom(spec: PrivacyDetectorSpec, taken: Sequence[str]) -> re.Pattern[str]:
    if not isinstance(spec.name, str) or not _CUSTOM_NAME.fullmatch(spec.name):
        raise ValueError(
            f"privacy detector {spec.name!r}: the name must be letters, digits and underscores,"
            " starting with a letter"
        )
    if spec.name in taken:
        raise ValueError(f"privacy detector {spec.name!r}: the name is already taken")
    if not isinstance(spec.category, str) or not spec.category.strip():
        raise ValueError(f"privacy detector {spec.name!r}: the category must not be empty")
    try:
        return re.compile(spec.regex)
    except (re.error, TypeError) as exc:
        raise ValueError(
            f"privacy detector {spec.name!r}: invalid regex {spec.regex!r}: {exc}"
        ) from None


def _inside(pos: int, starts: list[int], kept: list[tuple[int, int, int]]) -> bool:
    i = bisect_right(starts, pos) - 1
    return i >= 0 and kept[i][1] > pos


def _resolve(hits: list[tuple[int, int, int]], ranks: list[int]) -> list[tuple[int, int, int]]:
    """Keep the hits that no better-ranked (or earlier, longer) hit overlaps, by position."""
    if len(hits) < 2:
        return hits
    hits.sort()
    kept: list[tuple[int, int, int]] = []
    cluster = [hits[0]]
    cluster_end = hits[0][1]
    for hit in itertools.islice(hits, 1, None):
        if hit[0] < cluster_end:  # overlaps the cluster: decided together
            cluster.append(hit)
            cluster_end = max(cluster_end, hit[1])
            continue
        kept += cluster if len(cluster) == 1 else _pick(cluster, ranks)
        cluster = [hit]
        cluster_end = hit[1]
    kept += cluster if len(cluster) == 1 else _pick(cluster, ranks)
    return kept


def _pick(cluster: list[tuple[int, int, int]], ranks: list[int]) -> list[tuple[int, int, int]]:
    """From overlapping hits, the best-ranked first, then whatever still fits beside it."""
    cluster.sort(key=lambda h: (ranks[h[2]], h[0], -h[1]))
    starts: list[int] = []
    ends: list[int] = []
    kept: list[tuple[int, int, int]] = []
    for hit in cluster:
        begin, end = hit[0], hit[1]
        i = bisect_right(starts, begin)
        if (i and ends[i - 1] > begin) or (i < len(starts) and starts[i] < end):
            continue
        starts.insert(i, begin)
        ends.insert(i, end)
        kept.insert(i, hit)
    return kept
