"""Redaction of findings into typed placeholders, and restoring them in responses.

`redact` swaps each value for `[EMAIL_1]`, `[SECRET_2]`, ... in a copy of the body (the
same value gets the same placeholder throughout the request). `PlaceholderRestorer` puts
the values back into what the model answers, whole or streamed in chunks that may split
a placeholder anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.privacy.scanner import KEYWORD, Finding
from gateway.privacy.texts import Step, TextRef

_LABELS = {
    "email": "EMAIL",
    "phone": "PHONE",
    "card": "CARD",
    "ssn": "SSN",
    "iban": "IBAN",
    "ipv4": "IP",
    "ipv6": "IP",
}
_PLACEHOLDER = re.compile(r"\[[A-Z][A-Z0-9_]*_[0-9]+\]")


def label_of(finding: Finding) -> str:
    """The placeholder type: EMAIL, PHONE, CARD, SSN, IBAN, IP, SECRET, or a custom name."""
    label = _LABELS.get(finding.detector)
    if label is not None:
        return label
    if finding.category == "secret":
        return "SECRET"
    return re.sub(r"[^A-Z0-9]+", "_", finding.detector.upper()).strip("_") or "REDACTED"


@dataclass(frozen=True, slots=True)
class Redaction:
    """The redacted body (a copy), its redacted texts, and placeholder → original value."""

    body: dict[str, Any]
    texts: list[TextRef]
    placeholders: dict[str, str]

    def restorer(self) -> PlaceholderRestorer:
        return PlaceholderRestorer(self.placeholders)

    def __repr__(self) -> str:
        return f"Redaction(texts={len(self.texts)}, placeholders={len(self.placeholders)})"


def redact(
    body: Mapping[str, Any], texts: Sequence[TextRef], findings: Iterable[Finding]
) -> Redaction:
    """Replace every finding's value (keywords excepted: a word is not a value).

    `texts` are those the findings came from (`texts_of(endpoint, body)`); `body` is not
    changed: containers on the way to a changed text are copied, the rest is shared.
    """
    by_text: dict[tuple[Step, ...], list[Finding]] = {}
    for finding in findings:
        if finding.category != KEYWORD and finding.start < finding.end:
            by_text.setdefault(finding.ref.at, []).append(finding)
    placeholders: dict[str, str] = {}
    if not by_text:
        return Redaction(dict(body), list(texts), placeholders)
    # A placeholder the client already wrote must not be restored into a value.
    existing = "\x00".join(ref.text for ref in texts)
    by_value: dict[str, str] = {}
    counts: dict[str, int] = {}
    out: list[TextRef] = []
    changes: list[tuple[tuple[Step, ...], str]] = []
    for ref in texts:
        found = by_text.get(ref.at)
        if not found:
            out.append(ref)
            continue
        pieces: list[str] = []
        done = 0
        for finding in sorted(found, key=lambda f: (f.start, -f.end)):
            if finding.start < done or finding.end > len(ref.text):
                continue  # overlaps one already replaced
            value = ref.text[finding.start : finding.end]
            placeholder = by_value.get(value)
            if placeholder is None:
                label = label_of(finding)
                while True:
                    counts[label] = counts.get(label, 0) + 1
                    placeholder = f"[{label}_{counts[label]}]"
                    if placeholder not in existing:
                        break
                by_value[value] = placeholder
                placeholders[placeholder] = value
            pieces += (ref.text[done : finding.start], placeholder)
            done = finding.end
        pieces.append(ref.text[done:])
        text = "".join(pieces)
        out.append(TextRef(ref.at, text))
        if ref.at:  # a text scanned on its own (`scan_text`) has no place in the body
            changes.append((ref.at, text))
    return Redaction(_with_texts(body, changes), out, placeholders)


def _with_texts(
    body: Mapping[str, Any], changes: list[tuple[tuple[Step, ...], str]]
) -> dict[str, Any]:
    """A copy of `body` with each path set to its new text; untouched branches are shared."""
    root = dict(body)
    fresh = {id(root)}
    for at, text in changes:
        node: Any = root
        for step in at[:-1]:
            child = node[step]
            if id(child) not in fresh:
                child = dict(child) if isinstance(child, dict) else list(child)
                fresh.add(id(child))
                node[step] = child
            node = child
        node[at[-1]] = text
    return root


class PlaceholderRestorer:
    """Puts the original values back in place of the placeholders of one request.

    `restore` handles a whole text; `feed` / `flush` a stream of text pieces (one restorer
    per stream, e.g. per choice's `delta.content`). `feed` holds back only a tail that is
    the start of one of this request's placeholders, never more than the longest one.
    """

    def __init__(self, placeholders: Mapping[str, str]) -> None:
        self._values = dict(placeholders)
        self._json_values = {p: orjson.dumps(v).decode()[1:-1] for p, v in self._values.items()}
        self._starts = frozenset(p[:i] for p in self._values for i in range(1, len(p)))
        self._longest = max(map(len, self._values), default=0)
        self._pending = ""

    def restore(self, text: str) -> str:
        if not self._values or "[" not in text:
            return text
        values = self._values
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(), m.group()), text)

    def restore_json(self, text: str) -> str:
        """For a serialized JSON document: values are escaped as inside a JSON string."""
        if not self._values or "[" not in text:
            return text
        values = self._json_values
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(), m.group()), text)

    def feed(self, chunk: str) -> str:
        """The restored text that can be sent now; a possible placeholder start waits."""
        if not self._values:
            return chunk
        text = self._pending + chunk if self._pending else chunk
        self._pending = ""
        cut = text.rfind("[")
        if cut != -1 and len(text) - cut < self._longest and text[cut:] in self._starts:
            self._pending = text[cut:]
            text = text[:cut]
        return self.restore(text)

    def flush(self) -> str:
        """What is still held back, at the end of the stream (it was not a placeholder)."""
        tail, self._pending = self._pending, ""
        return tail
