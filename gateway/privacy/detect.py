"""The built-in detectors: one `Scan` per request, over the joined texts.

Why it is fast: no pass tries a pattern at every character. Each detector family starts
from a literal that `bytes.find` or a literal-prefixed regex locates at memory speed:
`@`, `:`, `-----BEGIN `, a stem such as `pass`, or a literal in a translated copy of
the text (every digit → `0`, every letter → `a`/`A`, every token character → `x`, so
"sixteen token characters" is the literal `xxxxxxxxxxxxxxxx`). Checksums, issuer tables
and JSON decoding run only on the few candidates. Every pass is linear in the text, and
no pattern nests quantifiers that could backtrack.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.privacy.checks import (
    IBAN_LENGTHS,
    aws_secret_ok,
    card_ok,
    iban_ok,
    ipv4_ok,
    ipv6_ok,
    is_code,
    is_placeholder,
    jwt_ok,
    phone_ok,
    random_ok,
    ssn_ok,
)

SECRET, PII, KEYWORD = "secret", "pii", "keyword"
DEFAULT_KEYWORDS = (
    "password", "passwords", "secret", "secrets", "token", "tokens", "key", "keys",
    "credential", "credentials", "confidential", "private", "ssn", "social security",
)  # fmt: skip

# Built-in detectors, most specific first: of two overlapping findings the earlier wins.
BUILTIN_DETECTORS: tuple[tuple[str, str], ...] = (
    ("private_key", SECRET),
    ("jwt", SECRET),
    ("anthropic_key", SECRET),
    ("openai_key", SECRET),
    ("github_token", SECRET),
    ("gitlab_token", SECRET),
    ("slack_token", SECRET),
    ("aws_access_key", SECRET),
    ("aws_secret_key", SECRET),
    ("connection_string", SECRET),
    ("secret_assignment", SECRET),
    ("email", PII),
    ("iban", PII),
    ("card", PII),
    ("ssn", PII),
    ("phone", PII),
    ("ipv6", PII),
    ("ipv4", PII),
)
(
    PRIVATE_KEY, JWT, ANTHROPIC, OPENAI, GITHUB, GITLAB, SLACK, AWS_ACCESS, AWS_SECRET,
    CONNECTION, ASSIGNMENT, EMAIL, IBAN, CARD, SSN, PHONE, IPV6, IPV4,
) = range(len(BUILTIN_DETECTORS))  # fmt: skip
KEYWORD_ID = len(BUILTIN_DETECTORS)
SEPARATOR = "\x00"  # between joined texts; no built-in pattern matches it


def _table(default: int | None, *groups: tuple[bytes, int]) -> bytes:
    table = bytearray(range(256)) if default is None else bytearray([default]) * 256
    for chars, to in groups:
        for char in chars:
            table[char] = to
    return bytes(table)


_UPPER = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = b"abcdefghijklmnopqrstuvwxyz"
_DIGITS = b"0123456789"
# Shape: digits → 0, letters → A / a, everything else kept. Number patterns then start
# with the literal `0`, IBANs with the literal `AA00`.
_SHAPE = _table(None, (_UPPER, ord("A")), (_LOWER, ord("a")), (_DIGITS, ord("0")))
# Token characters, with base64's `/` and `+` for AWS secret keys.
_TOKEN_CHARS = _table(ord(" "), (_UPPER + _LOWER + _DIGITS + b"_-/+", ord("x")))
_DIGIT_SET = frozenset("0123456789")
_NOT_DIGITS = bytes(c for c in range(256) if c not in _DIGITS)
_EMAIL_LOCAL = frozenset(_UPPER + _LOWER + _DIGITS + b"._%+-")
_WORD_BYTES = frozenset(_UPPER + _LOWER + _DIGITS + b"_")
_HEX_BYTES = frozenset(_DIGITS + b"abcdefABCDEF")
_IPV6_BYTES = _HEX_BYTES | frozenset(b":.")
_IPV6_LONGEST = 45  # with an embedded IPv4 address
_NAME_LONGEST = 64  # a key name (`aws_secret_access_key`) longer than this is not one
_VALUE_LONGEST = 512  # nor is a password or key value longer than this

_TOKEN_RUN = b"x" * 16
_TOKEN_PREFIXES = (
    b"sk-", b"AKIA", b"ASIA", b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_", b"github_pat_",
    b"glpat-", b"xoxb-", b"xoxa-", b"xoxp-", b"xoxr-", b"xoxs-", b"eyJ",
)  # fmt: skip
_JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")

# Numbers, on the shape: start at a digit that no word character, `.`, `+` or `-` precedes
# (the look-behind sits after the first literal so the regex keeps its fast literal search).
_NUMBERS = re.compile(
    rb"0(?<![\w.+\-]0)(?:"
    rb"00-00-0000(?![\w-])(?P<ssn>)"
    rb"|00(?P<sep>[ .-])000(?P=sep)0000(?![\w-]|\.0)(?P<nanp>)"
    rb"|[ .-]?(?:\(000\)[ .-]?|000[ .-])000[ .-]0000(?![\w-]|\.0)(?P<nanp1>)"
    rb"|0{0,2}\.0{1,3}\.0{1,3}\.0{1,3}(?!\w|\.0)(?P<ipv4>)"
    rb"|(?:[ -]?0){12,18}(?!0)(?P<card>)"
    rb")"
)
_PLUS_PHONE = re.compile(rb"\+0(?<![\w+]\+0)0{0,2}(?:[ .-]?\(0{1,4}\))?[ .-]?0+(?:[ .-]0+)*(?!\w)")
_PAREN_PHONE = re.compile(rb"\(000\)(?<!\w\(000\))[ .-]?000[ .-]0000(?![\w-]|\.0)")
_IBAN = re.compile(rb"AA00(?<!\wAA00)(?: ?[A0]){11,30}")
_VERSION_BEFORE = re.compile(rb"(?<![a-z])(?:version|ver|release|build|rev|v)[\s:=#]*\Z")

# The local part is matched backwards from the `@`, on the reversed 65 bytes before it.
_EMAIL_LOCAL_REVERSED = re.compile(rb"[A-Za-z0-9._%+-]{1,64}")
_EMAIL_DOMAIN = re.compile(
    rb"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])"
)
_BREAK = re.compile(rb"[\s\x00]")
_USERINFO = re.compile(rb"://([^\s:/@\\\x00]*):([^\s@/\\\x00]+)@[^\s/@\\\x00]")
_PEM_HEAD = re.compile(rb"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----")
_PEM_BODY = re.compile(rb"(?:\s+[A-Za-z0-9+/=]{16,})*")
_AWS_SECRET = re.compile(r"[A-Za-z0-9/+]{40}")
_AWS_CONTEXT = 120  # how far before an AWS secret key `aws` or `secret` must appear
_SLASH_OR_PLUS = re.compile(r"[/+]")
_COLON = re.compile(rb":(?:(?<=\w:)//(?P<url>)|:|(?<=[0-9A-Fa-f]:)[0-9A-Fa-f])")

ASSIGN_STEMS = (b"pass", b"secret", b"token", b"key", b"credential")
_IDENTIFIER_REST = re.compile(rb"[A-Za-z0-9_.-]*")
# A key name must end in one of these (so `api_key` and `apiKey`, but not `monkey`).
_KEY_QUALIFIERS = (
    b"api", b"secret", b"private", b"access", b"auth", b"encryption", b"signing", b"master",
    b"client", b"app", b"account", b"subscription", b"license", b"service", b"session",
)  # fmt: skip
_KEY_NAME_ENDS = (
    b"password", b"passwd", b"passphrase", b"pwd", b"secret", b"token", b"credential",
    b"credentials", *(q + sep + b"key" for q in _KEY_QUALIFIERS for sep in (b"", b"_", b"-", b".")),
)  # fmt: skip
_ASSIGN = re.compile(
    rb"[\"']?[ \t]*(?P<sep>=>|:=|={1,3}|:)[ \t]*(?:"
    rb"\"(?P<dq>[^\"\\\n\x00]*(?:\\.[^\"\\\n\x00]*)*)\""
    rb"|'(?P<sq>[^'\\\n\x00]*(?:\\.[^'\\\n\x00]*)*)'"
    rb"|(?P<bare>[^\s\"'`,;&{}\[\]()<>\\\x00][^\s\"'`,;\\\x00]*))"
)
_BARE_TRAILING = ".,;:!?)]}>"
_NEXT_QUERY_PARAMETER = re.compile(r"&[\w.-]+=")  # `?token=abc&user=1`: the value is abc


@dataclass(frozen=True, slots=True)
class Keyword:
    needle: bytes  # the first word, searched with bytes.find in the lower-cased text
    phrase: re.Pattern[bytes] | None  # words after the first, if any


def compile_keywords(
    keywords: Sequence[str],
) -> tuple[list[Keyword], list[re.Pattern[str]]]:
    ascii_words: list[Keyword] = []
    unicode_words: list[re.Pattern[str]] = []
    seen: set[tuple[str, ...]] = set()
    for keyword in keywords:
        words = tuple(keyword.lower().split()) if isinstance(keyword, str) else ()
        if not words:
            raise ValueError(f"privacy keyword {keyword!r}: must be a non-empty string")
        if words in seen:
            continue
        seen.add(words)
        if not keyword.isascii():
            joined = r"\s+".join(map(re.escape, words))
            unicode_words.append(re.compile(rf"(?<!\w){joined}(?!\w)", re.IGNORECASE))
            continue
        rest = rb"".join(rb"\s+" + re.escape(w.encode()) for w in words[1:])
        phrase = re.compile(re.escape(words[0].encode()) + rest) if rest else None
        ascii_words.append(Keyword(words[0].encode(), phrase))
    return ascii_words, unicode_words


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


class Scan:
    """The state of one scan: views of the joined text and the hits found so far."""

    __slots__ = ("_bases", "_found", "hits", "low", "needles", "raw", "text_ends", "view")

    def __init__(self, joined: str, text_ends: list[int]) -> None:
        # Inside JSON strings (tool arguments) `\n` would glue a value to the letter `n`:
        # blank such escapes for detection (same length, so spans still fit `joined`).
        if "\\" in joined:
            joined = joined.replace("\\n", "  ").replace("\\r", "  ").replace("\\t", "  ")
        self.view = joined
        # One byte per character, so byte offsets are text offsets; non-ASCII becomes `?`.
        if joined.isascii():
            self.raw = joined.encode("ascii")
        else:
            self.raw = joined.encode("ascii", "replace")
        self.low = self.raw.lower()
        self.text_ends = text_ends
        self.hits: list[tuple[int, int, int]] = []
        self._found: dict[bytes, list[int]] = {}
        self._bases: dict[bytes, bytes] = {}
        self.needles = True  # whether any keyword or assignment stem occurs at all

    def run(self, bases: dict[bytes, bytes], needles: re.Pattern[bytes] | None = None) -> None:
        """`needles`: every keyword's and stem's shortest prefix; where none occurs (most
        prompts), one search spares the per-needle finds of keywords and assignments."""
        self._bases = bases
        if needles is not None:
            self.needles = needles.search(self.low) is not None
        self.tokens()
        self.private_keys()
        self.colons()
        self.emails()
        self.numbers()
        if self.needles:
            self.assignments()

    def text_end(self, pos: int) -> int:
        """The end of the text that holds `pos`."""
        return self.text_ends[min(bisect_right(self.text_ends, pos), len(self.text_ends) - 1)]

    def found(self, needle: bytes) -> list[int]:
        """Every position of `needle` in the lower-cased text (computed once per scan)."""
        hits = self._found.get(needle)
        if hits is None:
            low = self.low
            base = self._bases.get(needle, needle)
            if base != needle:
                hits = [p for p in self.found(base) if low.startswith(needle, p)]
            else:
                hits = []
                pos = low.find(needle)
                while pos != -1:
                    hits.append(pos)
                    pos = low.find(needle, pos + 1)
            self._found[needle] = hits
        return hits

    def tokens(self) -> None:
        """API keys and tokens: runs of 16+ token characters that start with a known prefix."""
        raw, hits = self.raw, self.hits
        marks = raw.translate(_TOKEN_CHARS)
        pos = marks.find(_TOKEN_RUN)
        while pos != -1:
            end = marks.find(b" ", pos)
            if end == -1:
                end = len(marks)
            if raw.startswith(_TOKEN_PREFIXES, pos):
                token = raw[pos:end].decode()
                cut = _SLASH_OR_PLUS.search(token)
                if cut is not None:
                    token, end = token[: cut.start()], pos + cut.start()
                det = _token_kind(token)
                if det == JWT:
                    match = _JWT.match(raw, pos)
                    if match is not None and jwt_ok(token):
                        end = match.end()
                        hits.append((pos, end, JWT))
                elif det >= 0:
                    hits.append((pos, end, det))
            elif end - pos == 40 and self.aws_secret(pos):
                hits.append((pos, end, AWS_SECRET))
            pos = marks.find(_TOKEN_RUN, end)

    def private_keys(self) -> None:
        raw = self.raw
        pos = raw.find(b"-----BEGIN ")
        while pos != -1:
            after = pos + 11
            head = _PEM_HEAD.match(raw, pos)
            if head is not None:
                # Look for the footer up to the next header only: many headers without
                # footers must not make the scan quadratic.
                limit = raw.find(b"-----BEGIN ", head.end(), self.text_end(pos))
                limit = self.text_end(pos) if limit == -1 else limit
                footer = b"-----END " + head.group(1) + b"PRIVATE KEY-----"
                at = raw.find(footer, head.end(), limit)
                if at != -1:
                    after = at + len(footer)
                else:
                    body = _PEM_BODY.match(raw, head.end(), limit)
                    after = body.end() if body is not None else head.end()
                self.hits.append((pos, after, PRIVATE_KEY))
            pos = raw.find(b"-----BEGIN ", after)

    def aws_secret(self, pos: int) -> bool:
        """40 base64 characters, mixed case and digits, after `aws` or `secret`."""
        raw, low = self.raw, self.low
        candidate = raw[pos : pos + 40].decode()
        if raw[pos + 40 : pos + 41] == b"=" or not _AWS_SECRET.fullmatch(candidate):
            return False
        floor = max(pos - _AWS_CONTEXT, 0)
        return aws_secret_ok(candidate) and (
            low.find(b"aws", floor, pos) != -1 or low.find(b"secret", floor, pos) != -1
        )

    def colons(self) -> None:
        """At `://`, a connection string; at `::` or `h:h`, perhaps an IPv6 address."""
        raw = self.raw
        match = _COLON.search(raw)
        while match is not None:
            pos = match.start()
            if match.lastgroup == "url":
                self.connection_string(pos)
                pos += 2
            else:
                pos = max(self.ipv6(pos), pos)
            match = _COLON.search(raw, pos + 1)

    def connection_string(self, pos: int) -> None:
        """`scheme://user:password@host`: the finding is the password."""
        match = _USERINFO.match(self.raw, pos)
        if match is not None and not is_placeholder(self.view[match.start(2) : match.end(2)]):
            self.hits.append((match.start(2), match.end(2), CONNECTION))

    def ipv6(self, pos: int) -> int:
        """The run of hex digits, `:` and `.` around `pos`, if ipaddress takes it; its end."""
        raw = self.raw
        start, floor = pos, max(pos - _IPV6_LONGEST, 0)
        while start > floor and raw[start - 1] in _IPV6_BYTES:
            start -= 1
        end, ceiling = pos + 1, min(pos + _IPV6_LONGEST, len(raw))
        while end < ceiling and raw[end] in _IPV6_BYTES:
            end += 1
        text = raw[start:end].decode().rstrip(".")
        if text.endswith(":") and not text.endswith("::"):
            text = text[:-1]
        stop = start + len(text)
        if (
            (start == 0 or raw[start - 1] not in _WORD_BYTES)
            and (stop == len(raw) or raw[stop] not in _WORD_BYTES)
            and ipv6_ok(text)
        ):
            self.hits.append((start, stop, IPV6))
        return end - 1

    def emails(self) -> None:
        raw = self.raw
        at = raw.find(b"@")
        if at == -1:
            return
        while at != -1:
            domain = _EMAIL_DOMAIN.match(raw, at + 1)
            floor = max(at - 65, 0)
            local = _EMAIL_LOCAL_REVERSED.match(raw[floor:at][::-1]) if domain else None
            if domain is not None and local is not None:
                start = at - local.end()
                if start and raw[start - 1] == 63:  # `?`: a non-ASCII character
                    start = _unicode_local_start(self.view, start, floor)
                if (
                    (start == 0 or raw[start - 1] not in _EMAIL_LOCAL)
                    and at - start <= 64  # non-ASCII letters may have taken it to 65
                    and _local_part_ok(raw[start:at])
                    and not _in_url(raw, start)
                ):
                    self.hits.append((start, domain.end(), EMAIL))
            at = raw.find(b"@", at + 1)

    def numbers(self) -> None:
        """Cards, SSNs, phone numbers, IPv4 addresses and IBANs, on the shape of the text."""
        raw, hits = self.raw, self.hits
        shape = raw.translate(_SHAPE)
        if shape.count(b"0") < 4:  # the shortest, an IPv4 address like 1.2.3.4
            return
        for match in _NUMBERS.finditer(shape):
            start, end = match.span()
            kind = match.lastgroup
            text = raw[start:end].decode()
            if kind == "card":
                end = _card_end(text, start)
                if end:
                    hits.append((start, end, CARD))
            elif kind == "ssn":
                if ssn_ok(text.replace("-", "")):
                    hits.append((start, end, SSN))
            elif kind == "ipv4":
                if ipv4_ok(text) and not _VERSION_BEFORE.search(
                    self.low, max(start - 12, 0), start
                ):
                    hits.append((start, end, IPV4))
            elif phone_ok(raw[start:end].translate(None, _NOT_DIGITS).decode(), plus=False):
                hits.append((start, end, PHONE))
        for pattern, plus in ((_PLUS_PHONE, True), (_PAREN_PHONE, False)):
            if plus and b"+" not in shape:
                continue
            for match in pattern.finditer(shape):
                start, end = match.span()
                if phone_ok(raw[start:end].translate(None, _NOT_DIGITS).decode(), plus):
                    hits.append((start, end, PHONE))
        for match in _IBAN.finditer(shape):
            start = match.start()
            end = _iban_end(raw[start : match.end()].decode(), start)
            if end:
                hits.append((start, end, IBAN))

    def assignments(self) -> None:
        """`password=...`, `"api_key": "..."`, `secret: ...`: the finding is the value."""
        raw, low, view = self.raw, self.low, self.view
        seen: set[int] = set()
        for stem in ASSIGN_STEMS:
            for pos in self.found(stem):
                name = _IDENTIFIER_REST.match(raw, pos, pos + _NAME_LONGEST)
                name_end = name.end() if name is not None else pos
                if name_end in seen:
                    continue
                seen.add(name_end)
                limit = name_end + _VALUE_LONGEST
                match = _ASSIGN.match(raw, name_end, limit)
                if match is None or not low.endswith(
                    _KEY_NAME_ENDS, max(name_end - 40, 0), name_end
                ):
                    continue
                group = "dq" if match.start("dq") >= 0 else "sq" if match.start("sq") >= 0 else ""
                if group:
                    start, end = match.span(group)
                    if start == end or is_placeholder(view[start:end]):
                        continue
                else:
                    start, end = match.span("bare")
                    if end == limit:
                        continue
                    value = view[start:end]
                    query = _NEXT_QUERY_PARAMETER.search(value)
                    value = (value[: query.start()] if query else value).rstrip(_BARE_TRAILING)
                    end = start + len(value)
                    if len(value) < 3 or is_placeholder(value) or is_code(value):
                        continue
                    # `Secret: the ingredient is love` is prose, not a credential.
                    if match.group("sep") == b":" and value.isalpha() and _prose_after(low, end):
                        continue
                self.hits.append((start, end, ASSIGNMENT))

    def keywords(
        self, keywords: list[Keyword], unicode_keywords: list[re.Pattern[str]]
    ) -> list[tuple[int, int, int]]:
        """Whole-word, case-insensitive matches (word edges judged on the real characters)."""
        low, view = self.low, self.view
        size = len(view)
        out: list[tuple[int, int, int]] = []
        for keyword in keywords if self.needles else ():
            width = len(keyword.needle)
            for pos in self.found(keyword.needle):
                if keyword.phrase is None:
                    end = pos + width
                else:
                    match = keyword.phrase.match(low, pos)
                    if match is None:
                        continue
                    end = match.end()
                # Word edges on the bytes; `?` stands for any non-ASCII character: ask it.
                before = low[pos - 1] if pos else 32
                after = low[end] if end < size else 32
                if (before in _WORD_BYTES or (before == 63 and _is_word(view[pos - 1]))) or (
                    after in _WORD_BYTES or (after == 63 and _is_word(view[end]))
                ):
                    continue
                out.append((pos, end, KEYWORD_ID))
        for pattern in unicode_keywords:
            out.extend((m.start(), m.end(), KEYWORD_ID) for m in pattern.finditer(view))
        return out


def _token_kind(token: str) -> int:
    """Which secret a token with a known prefix is, or -1 if it only looks like one."""
    if token.startswith("sk-"):
        kind, body = (ANTHROPIC, token[7:]) if token.startswith("sk-ant-") else (OPENAI, token[3:])
        return kind if len(body) >= 20 and random_ok(body) else -1
    if token.startswith(("AKIA", "ASIA")):
        body = token[4:]
        return AWS_ACCESS if len(body) == 16 and body.isalnum() and body.isupper() else -1
    if token.startswith("github_pat_"):
        return GITHUB if len(token) >= 50 and random_ok(token[11:]) else -1
    if token.startswith("gh"):
        body = token[4:]
        return GITHUB if 36 <= len(body) <= 251 and body.isalnum() and random_ok(body) else -1
    if token.startswith("glpat-"):
        return GITLAB if len(token) >= 26 and random_ok(token[6:]) else -1
    if token.startswith("xox"):
        body = token[5:]
        return SLACK if len(body) >= 10 and any(c.isdigit() for c in body) else -1
    return JWT


def _unicode_local_start(view: str, start: int, floor: int) -> int:
    """Extend an address's local part left over non-ASCII letters (`maría@`)."""
    while start > floor and (view[start - 1].isalnum() or view[start - 1] in "._%+-"):
        start -= 1
    return start


def _local_part_ok(local: bytes) -> bool:
    return local[:1] != b"." and local[-1:] != b"." and b".." not in local


def _in_url(raw: bytes, start: int) -> bool:
    """`postgres://user:pass@host`: the `pass@host` is a URL's user info, not an address."""
    scheme = raw.rfind(b"://", max(start - 256, 0), start)
    return scheme != -1 and _BREAK.search(raw, scheme, start) is None


def _card_end(text: str, start: int) -> int:
    """The end of the longest valid card number at the start of `text`, or 0."""
    separators = set(text.strip("0123456789")) - _DIGIT_SET
    if len(separators) > 1:
        return 0
    sep = separators.pop() if separators else ""
    groups = text.split(sep) if sep else [text]
    if sep and len(groups[0]) != 4:
        return 0
    for count in range(len(groups), 0, -1):
        digits = "".join(groups[:count])
        if len(digits) < 13:
            break
        if card_ok(digits):
            return start + len(sep.join(groups[:count]))
    return 0


def _iban_end(text: str, start: int) -> int:
    """The end of a valid IBAN at the start of `text` (groups of four if spaced), or 0."""
    length = IBAN_LENGTHS.get(text[:2])
    if length is None:
        return 0
    groups = text.split(" ")
    compact, count = "", 0
    while count < len(groups) and len(compact) < length:
        compact += groups[count]
        count += 1
    if len(compact) != length or any(len(g) != 4 for g in groups[: count - 1]):
        return 0
    return start + len(" ".join(groups[:count])) if iban_ok(compact) else 0


def _prose_after(low: bytes, end: int) -> bool:
    return low[end : end + 1] == b" " and low[end + 1 : end + 2].isalpha()
