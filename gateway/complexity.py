"""ComplexityScorer: how hard is what the user asks, as a score in [0, 1] with named factors.

Pure Python, no model call, no I/O. Only the last user message is read: the system
prompt, earlier turns and tool results are not, so a long scaffold does not make "hi"
look hard (turns and tools add a little each, as context). The text is walked a few
times, each pass linear and in C: bytes → lowercase → punctuation flattened → words (a
set, intersected with the term lists), and one regex for code and math symbols whose
first item is a character class, so `re` skips plain text quickly.

Every factor is in [0, 1]; a weight is what its factor adds at full strength:

    score = min(1, (w.length * length + w.sentences * sentences) * (1 - w.rewrite * rewrite)
                   + sum(w[f] * f for the other factors))

so one strong signal (two reasoning terms, three questions, a proof, pasted code with
anything else) can pass the threshold alone, which the seed's formula could not do
without its term list. A request to transform supplied text ("fix the typos",
"translate") discounts the size of that text instead of adding anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

FACTORS = (
    "length",
    "sentences",
    "terms",
    "questions",
    "code",
    "math",
    "depth",
    "tools",
    "structured",
    "rewrite",
)

# Reasoning and analysis terms: the seed's list, its "complex" markers, and verbs that ask
# for judgement or multi-step work. Regular inflections are matched automatically.
REASONING_TERMS: tuple[str, ...] = (
    # seed terms
    "analyze", "synthesize", "evaluate", "compare", "contrast", "explain", "technical",
    "detailed", "comprehensive", "algorithm", "implementation", "architecture", "design",
    "optimize", "complex",
    # seed markers
    "thorough", "in-depth", "in depth", "step by step", "step-by-step", "advanced",
    "sophisticated", "nuanced",
    # irregular forms of the above
    "analysis", "analyses", "analytical", "synthesis", "comparison", "explanation",
    "thoroughly", "technically", "implement",
    # judgement and multi-step work
    "assess", "critique", "critically", "justify", "derive", "prove", "proof", "reasoning",
    "argue", "tradeoff", "trade-off", "trade off", "implication", "consequence",
    "pros and cons", "strategy", "investigate", "diagnose", "debug", "troubleshoot",
    "refactor", "root cause", "edge case", "rigorous", "first principles", "scalable",
    "scalability", "concurrency", "bottleneck", "discuss", "examine", "hypothesis",
    "counterexample", "generalize", "prioritize", "to what extent", "what would happen",
    "how would you", "walk me through", "why",
)  # fmt: skip

# Asks to transform text the user supplies: easy for a small model however long the text.
REWRITE_TERMS: tuple[str, ...] = (
    "translate", "translation", "summarize", "summarise", "summary", "proofread", "typo",
    "spelling", "grammar", "rephrase", "rewrite", "reword", "paraphrase", "shorten",
    "reformat", "capitalize", "alphabetically", "bullet", "extract", "headline", "polite",
)  # fmt: skip

MATH_TERMS: tuple[str, ...] = (
    "prove", "proof", "theorem", "lemma", "corollary", "integral", "integrate",
    "derivative", "differentiate", "equation", "eigenvalue", "eigenvector", "matrix",
    "matrices", "determinant", "probability", "probabilities", "expected value", "variance",
    "polynomial", "logarithm", "converge", "diverge", "induction", "irrational", "prime",
    "modulo", "divisible", "recurrence", "permutation", "combinatorics", "integer",
    "infinitely", "infinity", "asymptotic", "calculus", "factorial", "vector", "gradient",
    "inequality", "derivation", "bijection", "isomorphism", "convex", "regression",
    "confidence interval", "statistically significant", "distribution",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ComplexityWeights:
    """What each factor adds to the score at full strength."""

    length: float = 0.3
    sentences: float = 0.5
    terms: float = 0.8
    questions: float = 0.7
    code: float = 0.6
    math: float = 0.8
    depth: float = 0.1
    tools: float = 0.1
    structured: float = 0.1
    rewrite: float = 0.5  # discounts length and sentences, adds nothing

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ValueError(f"complexity weight '{f.name}' must be in [0, 1], got {value!r}")


@dataclass(frozen=True, slots=True)
class ComplexitySettings:
    """Threshold, weights, term lists, and the count at which each factor reaches 1."""

    threshold: float = 0.65  # strictly greater goes to the strong model
    weights: ComplexityWeights = field(default_factory=ComplexityWeights)
    terms: tuple[str, ...] = REASONING_TERMS
    math_terms: tuple[str, ...] = MATH_TERMS
    rewrite_terms: tuple[str, ...] = REWRITE_TERMS
    length_full_tokens: int = 500  # estimated tokens (chars / 4)
    sentence_full_words: int = 25  # average words per sentence
    terms_full: int = 2  # distinct reasoning terms
    questions_full: int = 3  # question marks; one question alone scores 0
    code_full: int = 4  # code-looking lines or operators; any ``` fence scores 1
    math_full: int = 3  # distinct math words plus math symbols and equations
    depth_full: int = 10  # user turns; the first scores 0

    def __post_init__(self) -> None:
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"complexity threshold must be in [0, 1], got {self.threshold!r}")
        minimum = {"questions_full": 2, "depth_full": 2}  # the first question or turn scores 0
        for name in (
            "length_full_tokens",
            "sentence_full_words",
            "terms_full",
            "questions_full",
            "code_full",
            "math_full",
            "depth_full",
        ):
            if getattr(self, name) < minimum.get(name, 1):
                raise ValueError(
                    f"complexity setting '{name}' must be at least {minimum.get(name, 1)}"
                )


@dataclass(frozen=True, slots=True)
class ComplexityResult:
    score: float
    factors: dict[str, float]


# The word pass works on ASCII bytes (every step runs in C): non-ASCII characters become
# "?", which is never part of an English term. "!" and ";" become newlines (sentence
# breaks); other punctuation becomes a space: "?" too (questions are counted on the text)
# and "." (a period ends a sentence only before a space or newline: not in "3.11").
_PUNCTUATION = b"".join(bytes([c]) for c in range(33, 127) if not chr(c).isalnum())
_SENTENCE_ENDS = b"!;\n"
_OTHERS = bytes(c for c in _PUNCTUATION if c not in _SENTENCE_ENDS and c != ord("-"))
_FLATTEN = bytes.maketrans(
    _SENTENCE_ENDS + _OTHERS, b"\n" * len(_SENTENCE_ENDS) + b" " * len(_OTHERS)
)

# One pass over the rare code and math symbols: the pattern starts with a character class
# (so `re` skips plain text at C speed), then a lookbehind picks the alternative. Each
# alternative ends in an empty group whose number says what was seen.
_SYMBOLS = re.compile(
    r"[`{};:=<>!&|+*/^\-$\\∫∑∏√∞≤≥≠≈∂π±\u00d7÷²³]"
    r"(?:"
    r"(?<=`)``()"  # 1 fence
    r"|(?<=[{;])(?=[ \t]*(?:\n|$))()"  # 2 code line end
    r"|(?<=})()"  # 3 closing brace
    r"|(?<==)[=>]()|(?<=!)=()|(?<=&)&()|(?<=\|)\|()|(?<=:):()|(?<=-)>()"  # 4-9 operators
    r"|(?<=\):)(?=[ \t]*\n)()"  # 10 "):" at the end of a line
    r"|(?<=[+*/^=<>])(?<![A-Za-z]{2}.)(?<![A-Za-z]{2}\ .)"  # 11 binary operator between
    r"(?:(?<=[0-9A-Za-z)].)|(?<=[0-9A-Za-z)]\ .))"  # a number, a single letter or ")"
    r"\ ?(?=[0-9(]|[A-Za-z](?![A-Za-z]))()"
    r"|(?<=[0-9]\ -)\ (?=[0-9])()"  # 12 minus between numbers
    r"|(?<=[∫∑∏√∞≤≥≠≈∂π±\u00d7÷²³])()"  # 13 math symbol
    r"|(?<=\\)(?:frac|int|sum|prod|sqrt|lim|infty|partial|cdot|leq|geq|neq|approx|alpha|"
    r"beta|gamma|delta|theta|lambda|sigma|mathbb|mathrm|begin)(?![A-Za-z])()"  # 14 LaTeX
    r"|(?<=\$)(?=[^\s$\d][^$\n]{0,80}?(?<=[^\s$])\$)()"  # 15 inline $...$ (its inside counts too)
    r")"
)
_QUESTIONS = re.compile(r"\?\?*")  # starts with a literal, which `re` searches for in C
_FENCE, _CODE, _MATH = range(3)
_KIND = (-1, _FENCE, *[_CODE] * 9, *[_MATH] * 5)


def _inflections(term: str) -> set[str]:
    """The term and its regular forms: analyze → analyzes, analyzed, analyzing, analyse...

    Only suffixes that keep the meaning: "designer" is not a form of "design".
    """
    if not term.isalpha():
        return {term}
    if term.endswith("e"):  # compare: compares, compared, comparing
        stem = term[:-1]
        forms = {term, term + "s", term + "d", stem + "ing"}
    elif term.endswith("y") and term[-2] not in "aeiou":  # justify: justifies, justified
        stem = term[:-1]
        forms = {term, stem + "ies", stem + "ied", term + "ing"}
    else:
        stem = term
        plural = "es" if term.endswith(("s", "x", "z", "ch", "sh")) else "s"
        forms = {term, term + plural, term + "ed", term + "ing"}
        if (
            len(term) > 3
            and term[-1] in "bgmnpt"
            and term[-2] in "aeiou"
            and term[-3] not in "aeiou"
        ):
            forms |= {term + term[-1] + "ed", term + term[-1] + "ing"}  # debug: debugging
    if term.endswith("ate"):  # evaluate: evaluation
        forms |= {stem + "ion", stem + "ions"}
    if term.endswith(("ize", "yze", "ment")):  # optimize: optimization; implement: -ation
        forms |= {stem + "ation", stem + "ations"}
    if term.endswith(("ize", "yze")):  # British spelling: analyse, optimisation
        z = len(term) - 2
        forms |= {form[:z] + "s" + form[z + 1 :] for form in forms}
    return forms


class _Lexicon:
    """Term list → a form→term map for single words; phrases are found by substring."""

    def __init__(self, terms: Iterable[str]) -> None:
        self.words: dict[bytes, str] = {}
        # Each phrase is keyed by its longest word: a set intersection rules most out.
        self.phrases: dict[bytes, list[tuple[str, bytes]]] = {}
        for term in terms:
            term = " ".join(term.lower().split())
            key = term.encode("ascii", "replace")
            if " " in term:
                longest = max(key.split(), key=len)
                self.phrases.setdefault(longest, []).append((term, key))
            elif term:
                self.words |= dict.fromkeys(
                    (f.encode("ascii", "replace") for f in _inflections(term)), term
                )
        self.keys = frozenset(self.words)
        self.phrase_keys = frozenset(self.phrases)

    def count(self, words: set[bytes], flat: bytes) -> int:
        """Distinct terms among the words: repeating a term does not count again."""
        found = {self.words[w] for w in self.keys.intersection(words)}
        for key in self.phrase_keys.intersection(words):
            found.update(term for term, phrase in self.phrases[key] if phrase in flat)
        return len(found)


class ComplexityScorer:
    def __init__(self, settings: ComplexitySettings | None = None) -> None:
        self.settings = settings or ComplexitySettings()
        self.threshold = self.settings.threshold
        self._terms = _Lexicon(self.settings.terms)
        self._math = _Lexicon(self.settings.math_terms)
        self._rewrite = _Lexicon(self.settings.rewrite_terms)
        weights = self.settings.weights
        self._weights = tuple(
            (name, getattr(weights, name))
            for name in FACTORS
            if name not in ("length", "sentences", "rewrite")
        )

    def is_complex(self, result: ComplexityResult) -> bool:
        return result.score > self.threshold

    def score(self, endpoint: str, body: Mapping[str, Any]) -> ComplexityResult:
        """Score a parsed request body; endpoint is "chat", "completions" or "responses"."""
        if endpoint == "chat":
            messages = body.get("messages")
            if not isinstance(messages, list):
                return self._empty()
            text, user_turns = _last_user_text(messages)
            if text is None:
                return self._empty()
            factors = self._text_factors(text)
            s = self.settings
            factors["depth"] = min(max(user_turns - 1, 0) / max(s.depth_full - 1, 1), 1.0)
            factors["tools"] = 1.0 if body.get("tools") or body.get("functions") else 0.0
            factors["structured"] = _structured(body.get("response_format"))
            return self._result(factors)
        if endpoint == "completions":
            prompts = body.get("prompt")
            if isinstance(prompts, str):
                return self._result(self._text_factors(prompts))
            if isinstance(prompts, list):
                # A batch goes to one model: the hardest prompt decides.
                texts = [p for p in prompts if isinstance(p, str)]
                return max(
                    (self._result(self._text_factors(t)) for t in texts),
                    key=lambda r: r.score,
                    default=self._empty(),
                )
        if endpoint == "responses":
            return self._responses(body)
        return self._empty()

    def _responses(self, body: Mapping[str, Any]) -> ComplexityResult:
        """As chat: the last user message of the input, turns, tools, a text format."""
        items = body.get("input")
        if isinstance(items, str):
            items = [{"role": "user", "content": items}]
        if not isinstance(items, list):
            return self._empty()
        text, user_turns = _last_user_text(items)
        if text is None:
            return self._empty()
        factors = self._text_factors(text)
        s = self.settings
        factors["depth"] = min(max(user_turns - 1, 0) / max(s.depth_full - 1, 1), 1.0)
        factors["tools"] = 1.0 if body.get("tools") else 0.0
        text_format = body.get("text")
        fmt = text_format.get("format") if isinstance(text_format, dict) else None
        factors["structured"] = _structured(fmt)
        return self._result(factors)

    def _empty(self) -> ComplexityResult:
        return ComplexityResult(0.0, dict.fromkeys(FACTORS, 0.0))

    def _result(self, found: dict[str, float]) -> ComplexityResult:
        factors = {name: found.get(name, 0.0) for name in FACTORS}
        w = self.settings.weights
        # Transforming supplied text is easy however long the text: discount its size.
        size = w.length * factors["length"] + w.sentences * factors["sentences"]
        size *= 1 - w.rewrite * factors["rewrite"]
        rest = sum(weight * factors[name] for name, weight in self._weights)
        return ComplexityResult(min(size + rest, 1.0), factors)

    def _text_factors(self, text: str) -> dict[str, float]:
        s = self.settings
        lowered = text.encode("ascii", "replace").lower()
        flat = lowered.translate(_FLATTEN)
        tokens = flat.split()
        words = set(tokens)
        questions = len(_QUESTIONS.findall(text))  # a run of "???" is one question
        # Sentences: the breaks inside the text, plus the last sentence.
        inside = flat.rstrip()
        breaks = inside.count(b"\n") - inside.count(b"\n\n")  # a blank line is one break
        sentences = questions + lowered.count(b". ") + breaks + 1
        if text[-64:].rstrip().endswith("?"):
            sentences -= 1  # that question mark was the last sentence's end
        seen = [0, 0, 0]
        seen[_CODE] = text.count("\n    ") + text.count("\n\t")  # indented lines
        for match in _SYMBOLS.finditer(text):
            seen[_KIND[match.lastindex or 0]] += 1
            if seen[_FENCE] + seen[_CODE] >= s.code_full and seen[_MATH] >= s.math_full:
                break  # both factors are full: the rest of the text cannot add to them
        math = self._math.count(words, flat) + seen[_MATH]
        return {
            "length": min(len(text) / 4 / s.length_full_tokens, 1.0),
            "sentences": min(len(tokens) / max(sentences, 1) / s.sentence_full_words, 1.0),
            "terms": min(self._terms.count(words, flat) / s.terms_full, 1.0),
            "questions": min(max(questions - 1, 0) / (s.questions_full - 1), 1.0),
            "code": 1.0 if seen[_FENCE] else min(seen[_CODE] / s.code_full, 1.0),
            "math": min(math / s.math_full, 1.0),
            "rewrite": 1.0 if self._rewrite.count(words, flat) else 0.0,
        }


def _last_user_text(messages: list[Any]) -> tuple[str | None, int]:
    """The text of the last user message (None without one) and the number of user turns."""
    last: dict[str, Any] | None = None
    turns = 0
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "user":
            turns += 1
            last = message
    return (None, 0) if last is None else (_content_text(last.get("content")), turns)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") in ("text", "input_text")  # chat's, and the Responses API's
            and isinstance(part.get("text"), str)
        ]
        return "\n".join(parts)
    return ""


_STRUCTURED = {"json_schema": 1.0, "json_object": 0.5}  # a schema asks more than "any JSON"


def _structured(response_format: Any) -> float:
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    return _STRUCTURED.get(kind, 0.0) if isinstance(kind, str) else 0.0
