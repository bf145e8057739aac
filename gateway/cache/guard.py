"""The near-miss guard: may a cached answer to question A be served for question B?

Embeddings say two questions are *about* the same thing; they barely notice that
"2+2" is not "2+3". `facts` pulls out what must be equal for two questions to share an
answer (numbers, dates, units and quantities, quantifiers, negations, quoted strings,
named entities and rare content words), once per question; `conflict` compares two such
records in a few microseconds and names the first kind of difference it finds.

Paraphrases survive because everything is normalized first: case, punctuation,
contractions ("isn't" = "is not"), number words ("two" = "2"), articles and politeness
are not facts, and plain words may be swapped for others; only rare words (names,
products, drugs, places...) must reappear. No model, no I/O; regexes compile at import.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from typing import Any

KINDS = ("quoted", "date", "number", "unit", "quantifier", "negation", "entity")

# ---------------------------------------------------------------- vocabulary


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_ARTICLES_ETC = """
a an the this that these those there here it its it's itself they them their theirs
themselves he him his she her hers we us our ours you your yours yourself yourselves i me
my mine myself one's and or but if then else so than too very also just really actually
of to in on at by for with from into onto about as up down out off over under again
further once is are was were be been being am do does did doing done have has had having
will would shall should can could may might must what which who whom whose when where why
how whether while because since until unless though although per via vs versus etc
please kindly thanks thank hi hello hey dear ok okay yes yeah like want wondering know
tell explain describe show give let need help i'd i'm i've i'll im ive id whats hows
wheres whos thats theres heres
"""

# Words that carry no fact: plain verbs, adjectives, adverbs and abstract nouns that
# paraphrases swap freely. A content word outside this list is "rare" (a name, a product,
# a drug, a concrete thing) and a swap of rare words on both sides is a different question.
_PLAIN = """
able accept access account act action add address advice affect afraid after against
age ago agree ahead aim allow almost alone along already alright alter alternative
amount angle another answer anyway apart appear apply approach appropriate area argue
arise around arrange ask aspect assume attach attempt attention available average avoid
aware away bad badly bag base basic basically basis bear beat become before begin
beginner behave behavior behaviour behind believe belong below benefit beside best
better between beyond big bit block bottom brief briefly bring broad build busy buy call
calm capable care careful carry case catch cause certain chance change cheap check
choice choose claim class clean clear clearly close cold combine come comfortable
command common compare complete completely complex concept concern condition consider
constant contain content context continue control convert cool copy correct correctly
cost count couple course cover create creative current currently cut damage deal
decide decision deep default define definition degree delete deliver depend describe
design detail determine develop difference different difficult direct directly discuss
do document doesn double doubt draft drop due during each early easy easily effect
effective effectively efficient efficiently effort else empty enable end enough ensure
enter entire entirely equal error especially essential even event eventually ever
every everyday exact exactly example except exist expect expensive experience expert
explain express extend extra fact factor fail fair fairly false familiar far fast
feature feel fetch figure fill final finally find fine finish first fit fix flat
follow force form formal format forward free frequent frequently fresh friendly full
fully function further future gain general generally get give go goal good great
group grow guess guide half handle hang happen hard hardly harm head hear heavy help
helpful hide high highly hold huge idea ideal identify ignore image imagine impact
important improve include increase indeed information initial inside instance instead
intend interest interesting issue item join keep key kind large last late later
latest lead learn least leave left legit length less let level lie light likely limit
line link list little live local long look lose loss lot love low lower main mainly
maintain major make manage manner mark match matter maybe mean meaning measure meet
mention method middle mind minor miss mistake mode modern modify more move much name
narrow natural near nearly necessary need new next nice normal normally note nothing
notice number object obtain obvious occur offer official often old open opinion
opposite option order ordinary original other otherwise own part particular
particularly pass past pattern pay perfect perform perhaps period person pick piece
place plain plan point popular portion possible possibly potential practical practice
prefer prepare present pretty prevent previous price primary print probably problem
process produce proper properly provide public pull purpose push put quality quick
quickly quiet quite raise range rank rate rather reach read ready real reason
receive recent recently recommend reduce refer regular related relation remain
remember remove repeat replace reply report request require result return reverse
review right rise risk role rule run safe safely same save say second see seem
select send sense separate serious serve set setting several shape share short
should side sign significant similar simple simply single size skip slow small smart
solution solve sort source space special specific specifically spend split stand
standard start state stay step stick still stop straight strange strong structure
stuff style succeed success successful such suggest suggestion suitable summary
support suppose sure switch system take talk task tend term test thing think though
through throw tip together top total touch toward towards track treat trick true
truly try turn type typical typically understand unique unit update usage use used
useful user usual usually value various version view wait walk want way weak well
whole wide wish within without wonder word work worth write wrong yet
amazing awesome brilliant catchy clever cute decent elegant excellent fancy funny
gentle great happy honest ideal neat nice polite pleasant proud quick rough sad shy
sorry strict super sweet terrible tiny vast warm weird wise wonderful
ability advantage alternative analysis aspect attempt background balance behavior
category challenge characteristic choice circumstance concept conclusion connection
consequence consideration criteria detail difference difficulty direction disadvantage
effect element environment event evidence example experience explanation factor
feature form guidance guideline idea impact importance improvement information
insight instruction intent intention issue kind knowledge lesson manner meaning
measure method mistake mode model need nature note objective option outcome overview
pattern perspective piece plan point policy possibility practice principle priority
procedure process progress property purpose quality question reason recommendation
relationship requirement resource response result role rule scenario selection sense
sequence situation solution sort standard statement step strategy structure style
suggestion summary technique term thing thought tip topic trend type use value
variety version view way
"""

# Verbs that name the operation asked for: "reverse a list" is not "sort a list", so
# these stay rare (must match) even where they read like plain words.
_TASK_WORDS = """
reverse sort split merge rename restart install uninstall delete copy move replace update
print convert compare increase decrease raise lower reduce improve enable disable encrypt
decrypt upload download import export undo redo parse buy sell rent cancel
"""

# Pairs whose swap turns a question into its opposite; reported as a negation.
_ANTONYMS = """
high:low increase:decrease raise:lower add:remove enable:disable start:stop open:close
before:after min:max more:less best:worst fast:slow hot:cold old:new big:small up:down
push:pull import:export upload:download encrypt:decrypt buy:sell win:lose gain:lose
rise:fall upper:lower true:false allow:deny accept:reject include:exclude
positive:negative long:short early:late first:last love:hate safe:dangerous
cheap:expensive easy:hard light:heavy wet:dry left:right input:output send:receive
borrow:lend encode:decode compress:decompress overweight:underweight over:under
maximum:minimum above:below inside:outside legal:illegal good:bad better:worse
"""

# A small table of everyday synonyms (the embedder uses it too): paraphrases swap these.
SYNONYMS: dict[str, str] = {
    "kid": "child", "kids": "child", "children": "child", "youngster": "child",
    "big": "large", "huge": "large", "little": "small", "tiny": "small",
    "fast": "quick", "quickly": "quick", "rapid": "quick", "faster": "quick",
    "begin": "start", "commence": "start", "end": "finish", "stop": "finish",
    "quit": "exit", "leave": "exit", "make": "create", "build": "create",
    "generate": "create", "produce": "create", "remove": "delete", "erase": "delete",
    "get": "obtain", "fetch": "obtain", "retrieve": "obtain", "acquire": "obtain",
    "buy": "purchase", "fix": "solve", "resolve": "solve", "repair": "solve",
    "issue": "problem", "trouble": "problem", "error": "problem", "bug": "problem",
    "job": "work", "position": "work", "role": "work", "occupation": "work",
    "simple": "easy", "hard": "difficult", "tough": "difficult", "car": "vehicle",
    "automobile": "vehicle", "doctor": "physician", "medication": "medicine",
    "drug": "medicine", "pill": "medicine", "combine": "merge", "join": "merge",
    "modify": "change", "alter": "change", "edit": "change", "look": "see",
    "view": "see", "display": "show", "speak": "talk", "say": "talk",
    "purpose": "goal", "aim": "goal", "method": "way", "approach": "way",
    "technique": "way", "tip": "advice", "suggestion": "advice", "hint": "advice",
    "loop": "iterate", "cost": "price", "fee": "price", "brief": "short",
    "sea": "ocean", "autumn": "fall", "photo": "picture", "image": "picture",
    "kill": "terminate", "locate": "find", "discover": "find", "search": "find",
    "correct": "right", "proper": "right", "incorrect": "wrong", "ill": "sick",
    "unwell": "sick", "person": "people", "human": "people", "individual": "people",
    "folk": "people", "dictionary": "dict", "repository": "repo", "directory": "folder",
    "configuration": "config", "application": "app", "program": "app",
    "environment": "env", "variable": "var", "maximum": "max", "minimum": "min",
    "information": "info", "documentation": "docs", "utilize": "use", "employ": "use",
    "raise": "increase", "boost": "increase", "reduce": "decrease", "lower": "decrease",
}  # fmt: skip

STOP: frozenset[str] = _words(_ARTICLES_ETC)

_CONTRACTION_WORDS = {
    "can't": ("can", "not"), "cannot": ("can", "not"), "won't": ("will", "not"),
    "shan't": ("shall", "not"), "ain't": ("is", "not"), "dont": ("do", "not"),
    "doesnt": ("does", "not"), "didnt": ("did", "not"), "isnt": ("is", "not"),
    "arent": ("are", "not"), "wasnt": ("was", "not"), "werent": ("were", "not"),
    "cant": ("can", "not"), "couldnt": ("could", "not"), "wouldnt": ("would", "not"),
    "shouldnt": ("should", "not"), "wont": ("will", "not"), "havent": ("have", "not"),
    "hasnt": ("has", "not"), "hadnt": ("had", "not"), "mustnt": ("must", "not"),
    "ca": ("can",), "wo": ("will",), "sha": ("shall",),
}  # fmt: skip

_SMALL = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "dozen": 12,
    "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
    "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "twentieth": 20,
    "hundredth": 100,
}  # fmt: skip
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9,
           "trillion": 10**12}  # fmt: skip
# "one" is also a pronoun ("which one", "one of"): then it is no number.
_ONE_NOT_BEFORE = _words("of is are or and another that which who by more else")
_ONE_NOT_AFTER = _words("which this that the each every any no some another other")
_ORDINAL_SUFFIX = frozenset(("st", "nd", "rd", "th"))

_OPERATOR_WORDS = {"plus": "+", "minus": "-", "times": "*", "x": "*", "\u00d7": "*", "\u00f7": "/"}
_OPERATORS = frozenset("+-*/^")

_MONTHS = {
    "january": 1, "february": 2, "march": 3, "april": 4, "may": 5, "june": 6, "july": 7,
    "august": 8, "september": 9, "october": 10, "november": 11, "december": 12,
    "jan": 1, "feb": 2, "apr": 4, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "sept": 9,
    "oct": 10, "nov": 11, "dec": 12,
}  # fmt: skip
_WEEKDAYS = {
    "monday": "mon", "tuesday": "tue", "wednesday": "wed", "thursday": "thu",
    "friday": "fri", "saturday": "sat", "sunday": "sun", "weekday": "weekday",
    "weekend": "weekend",
}  # fmt: skip
_RELATIVE_DAYS = _words("today tonight tomorrow yesterday midnight noon")
_RELATIVE = {"this": "this", "next": "next", "last": "last", "previous": "last",
             "coming": "next", "past": "last", "current": "this"}  # fmt: skip
_PERIODS = _words("week weekend month year quarter season semester decade century")
_SEASONS = {"spring": "spring", "summer": "summer", "autumn": "fall", "winter": "winter",
            "fall": "fall"}  # fmt: skip
# Words before a bare 4-digit number that make it a year rather than a count.
_YEAR_CUES = _words(
    "in of since from until till by before after during year circa early late mid around "
    "between to and the"
)

# Canonical unit per spelling. Plurals are found by stripping "s"/"es".
_UNITS = {
    "millimeter": "mm", "millimetre": "mm", "mm": "mm", "centimeter": "cm",
    "centimetre": "cm", "cm": "cm", "meter": "m", "metre": "m", "kilometer": "km",
    "kilometre": "km", "km": "km", "inch": "in", "inche": "in", "foot": "ft",
    "feet": "ft", "ft": "ft", "yard": "yd", "yd": "yd", "mile": "mi", "mi": "mi",
    "acre": "acre", "hectare": "ha", "milligram": "mg", "mg": "mg", "gram": "g",
    "kilogram": "kg", "kg": "kg", "kilo": "kg", "pound": "lb", "lb": "lb",
    "lbs": "lb", "ounce": "oz", "oz": "oz", "ton": "t", "tonne": "t", "stone": "st",
    "milliliter": "ml", "millilitre": "ml", "ml": "ml", "liter": "l", "litre": "l",
    "gallon": "gal", "gal": "gal", "cup": "cup", "tablespoon": "tbsp", "tbsp": "tbsp",
    "teaspoon": "tsp", "tsp": "tsp", "pint": "pt", "quart": "qt", "celsius": "degc",
    "centigrade": "degc", "fahrenheit": "degf", "kelvin": "degk", "degree": "deg",
    "deg": "deg", "radian": "rad", "nanosecond": "ns", "ns": "ns", "microsecond": "us",
    "µs": "us", "millisecond": "ms", "second": "s", "sec": "s", "minute": "min",
    "hour": "h", "hr": "h", "day": "day", "week": "wk", "month": "mo", "year": "yr",
    "decade": "decade", "century": "century", "bit": "bit", "byte": "byte",
    "kilobyte": "kb", "kb": "kb", "kib": "kib", "megabyte": "mb", "mb": "mb",
    "mib": "mib", "gigabyte": "gb", "gb": "gb", "gib": "gib", "terabyte": "tb",
    "tb": "tb", "tib": "tib", "petabyte": "pb", "pb": "pb", "kbps": "kbps",
    "mbps": "mbps", "gbps": "gbps", "dollar": "usd", "usd": "usd", "buck": "usd",
    "euro": "eur", "eur": "eur", "gbp": "gbp", "sterling": "gbp", "yen": "jpy",
    "jpy": "jpy", "yuan": "cny", "rmb": "cny", "cny": "cny", "rupee": "inr",
    "inr": "inr", "cad": "cad", "aud": "aud", "chf": "chf", "btc": "btc",
    "mph": "mph", "kph": "kph", "kmh": "kph", "knot": "kn", "calorie": "kcal",
    "kcal": "kcal", "joule": "j", "kj": "kj", "watt": "w", "kw": "kw", "kwh": "kwh",
    "mah": "mah", "volt": "v", "amp": "a", "ampere": "a", "psi": "psi",
    "pascal": "pa", "atm": "atm", "hz": "hz", "khz": "khz", "mhz": "mhz", "ghz": "ghz",
    "percent": "%", "pct": "%", "%": "%",
}  # fmt: skip
# Spellings that are units only right after a number ("5 m", "10 s", "3 g", "98.6 F").
_UNITS_AFTER_NUMBER = {
    "m": "m", "g": "g", "l": "l", "s": "s", "h": "h", "k": "k", "c": "degc", "f": "degf",
    "min": "min", "mins": "min", "w": "w", "v": "v", "us": "us", "b": "b", "t": "t",
    "in": "in", "bar": "bar", "pa": "pa", "cal": "kcal",
}  # fmt: skip
_CURRENCY_SIGNS = {"$": "usd", "€": "eur", "£": "gbp", "¥": "jpy"}
_TEMPERATURE = {"c": "degc", "f": "degf", "k": "degk"}
_LENGTHS = frozenset(("mm", "cm", "m", "km", "in", "ft", "yd", "mi"))
# "daily" is "1 day": the same as "a day", "per day" and "every day".
_RATE_ADVERBS = {"hourly": "h", "daily": "day", "nightly": "day", "weekly": "wk",
                 "monthly": "mo", "yearly": "yr", "annually": "yr", "annual": "yr"}  # fmt: skip
_UNIT_ONE = frozenset(("a", "an", "per", "every", "each"))

_QUANTIFIERS = {
    "all": "all", "every": "all", "each": "all", "everyone": "all", "everybody": "all",
    "everything": "all", "always": "all", "most": "most",
    "majority": "most", "many": "many", "several": "some", "some": "some",
    "someone": "some", "somebody": "some", "something": "some", "sometimes": "some",
    "occasionally": "some", "few": "few", "rarely": "few", "seldom": "few",
    "both": "both", "either": "either", "exactly": "=",
}  # fmt: skip
# "What are some ideas", "give me some tips": a request, not "some but not all".
_SOME_AFTER = _words("are me us give suggest list recommend name share")
_NOT_QUANTITY_AFTER = frozenset(("how", "as", "so", "too", "the", "at", "a"))
_NEGATIONS = _words("not no never none nothing nobody nowhere neither nor without")
_NEGATING_PREFIXES = ("un", "in", "im", "il", "ir", "dis", "non")

_ENTITY_STOP = STOP | _words("i ok okay mr mrs ms dr vs please thanks hi hello hey what why how")

# ------------------------------------------------------------------ patterns

# Quoted strings: straight, curly and back quotes, and '...' that is no apostrophe.
_QUOTED = re.compile(
    r"\"([^\"\n]+)\"|\u201c([^\u201d\n]+)\u201d|\u2018([^\u2019\n]+)\u2019|`([^`\n]+)`"
    r"|(?<![\w'])'(?=\S)([^'\n]+?)'(?!\w)"
)
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_SLASH_DATE = re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{2,4})\b")
_CLOCK = re.compile(r"\b(\d{1,2}):(\d{2})(?::\d{2})?\s*([ap]\.?m\.?)?", re.IGNORECASE)
# One pass over the text. Code-like tokens (--flags, dotted.names, snake_case, operators
# such as "==" or "->") come out whole: they must match exactly, like names.
_TOKEN = re.compile(
    r"(?<![\w-])--?[A-Za-z][\w-]*"
    r"|(?>[A-Za-z_]\w*)(?:\.\w+)+|(?>[A-Za-z]+_\w*)"
    r"|\d+(?:[.,]\d+)*"
    r"|[^\W\d_]+(?:['\u2019][^\W\d_]+)*"
    r"|[=!<>&|+*/%^~:-]{2,}"
    r"|[%$€£¥°+*/\u00d7\u00f7^=<>-]|[.!?;:¿¡\n]"
)
# Without code in sight (most questions) plain string methods split the text: sentence
# ends become ".", other punctuation a space, and the few symbols the reader needs get
# spaces around them.
_ENDS = "!?;:\u00bf\u00a1\n\u2026"
_SPACES = '"(),[]{}#@&|~`\u201c\u201d\u2018\u00ab\u00bb\t\r'
_SPACING_PAIRS = (
    *((c, ".") for c in _ENDS),
    *((c, " ") for c in _SPACES),
    ("\u2019", "'"),
)
_SYMBOLS = tuple("%$€£¥°+*/\u00d7\u00f7^=<>-")
_DIGITS = tuple("0123456789")
_CODE_MARKS = tuple("_=&|<>~^")
_CODE_CHARS = (*_CODE_MARKS, ".", "-")  # any code-like token needs one of these
# Patterns that start with a literal or a digit, so the scan for them stays cheap.
_GROUP_COMMA = re.compile(r",(?<=\d,)(?=\d{3}(?!\d))")
_SENTENCE_DOT = re.compile(r"\.(?!\d)")
_DIGIT_LETTER = re.compile(r"\d[^\W\d_]")
_DIGIT_LETTER_SPLIT = re.compile(r"(?<=\d)(?=[^\W\d_])")
_SUBWORD = re.compile(r"[^\W\d_]+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
# Comparators read at "than": "more than", "fewer than"; "no more than" is "<=".
_COMPARE_THAN = {
    "more": ">", "greater": ">", "larger": ">", "higher": ">", "less": "<", "fewer": "<",
    "smaller": "<", "lower": "<",
}  # fmt: skip
_OPERATOR_PHRASES = {"multiplied": "*", "divided": "/"}  # followed by "by"

# ------------------------------------------------------------------- helpers

_SUFFIXES = (
    ("ies", "y"), ("ied", "y"), ("ions", ""), ("ion", ""), ("ments", ""), ("ment", ""),
    ("ness", ""), ("ings", ""), ("ing", ""), ("edly", ""), ("ed", ""), ("ly", ""),
    ("sses", "ss"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("s", ""),
)  # fmt: skip


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A light suffix stripper: plurals, -ing, -ed, -ly, -ion, -ment, -ness, then -er."""
    w = word
    if len(w) <= 3 or not w.isalpha():
        return w
    for suffix, repl in _SUFFIXES:
        if w.endswith(suffix):
            base = w[: len(w) - len(suffix)] + repl
            if len(base) < 3 or (suffix == "s" and w[-2] in "sui"):
                continue
            w = base
            break
    # a second pass for agents and comparatives: painters -> painter -> paint
    if w.endswith("er") and len(w) >= 5:
        w = w[:-2]
    if len(w) > 4 and w.endswith("e"):
        w = w[:-1]
    if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "aeiouls":
        w = w[:-1]  # running -> run, stopped -> stop
    return w


# Synonyms by stem, so that inflected forms ("kids", "biggest") find them too.
SYNONYM_STEMS: dict[str, str] = {stem(k): stem(v) for k, v in SYNONYMS.items()}


@lru_cache(maxsize=65536)
def key(word: str) -> str:
    """What two spellings of one word share: installation/installed -> 'instal'."""
    s = stem(word)
    return SYNONYM_STEMS.get(s, s)[:6]


_PLAIN_KEYS: frozenset[str] = (
    frozenset(key(w) for w in _PLAIN.split()) | frozenset(key(w) for w in SYNONYMS.values())
) - frozenset(key(w) for w in _TASK_WORDS.split())
_OPPOSITE: dict[str, set[str]] = {}
for _pair in _ANTONYMS.split():
    _left, _right = (key(w) for w in _pair.split(":"))
    _OPPOSITE.setdefault(_left, set()).add(_right)
    _OPPOSITE.setdefault(_right, set()).add(_left)


def is_plain_key(word_key: str) -> bool:
    """Whether a word key (see `key`) is plain vocabulary rather than a rare word."""
    return word_key in _PLAIN_KEYS


def _unit_spelling(word: str) -> str | None:
    """The canonical unit of a word that is always a unit, plurals included."""
    unit = _UNITS.get(word)
    if unit is None and len(word) > 3 and word.endswith("s"):
        unit = _UNITS.get(word[:-1]) or (_UNITS.get(word[:-2]) if word.endswith("es") else None)
    if unit is None and word in ("kbs", "mbs", "gbs", "tbs"):
        unit = _UNITS.get(word[:-1])
    return unit


_NUMBER_WORDS = frozenset(_SMALL) | frozenset(_SCALES)
_CONTRACTED = frozenset(_CONTRACTION_WORDS)


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


_Token = tuple[tuple[str, ...], str | None]
_CACHE_LIMIT = 100_000
# Plain dicts, read inline with .get(): cheaper per word than an lru_cache call.
_TOKENS: dict[str, _Token] = {}
_WORDS: dict[str, tuple[str, str]] = {}
_NOT_WORDS: set[str] = set()

# Contractions, as two plain substitutions (no callback): "isn't" -> "is not", "it's" ->
# "it"; the irregular "can't"/"won't" come out as "ca not"/"wo not" and are mapped back.
_NOT_SUFFIX = re.compile(r"n['\u2019]t\b")
_CLITIC = re.compile(r"['\u2019](?:s|re|ve|ll|d|m)\b")


def _uncontract(lower: str) -> str:
    """Contractions of lower-case text spelled out; 's 're 've 'll 'd 'm are function words."""
    return _CLITIC.sub("", _NOT_SUFFIX.sub(" not", lower))


def _token(tok: str) -> _Token:
    if len(_TOKENS) >= _CACHE_LIMIT:
        _TOKENS.clear()
    info = _TOKENS[tok] = _read_token(tok)
    return info


def _read_token(tok: str) -> _Token:
    """A raw token of code-like text as lower-case words and, for code, the whole token."""
    first = tok[:1]
    flag = first == "-" and tok.lstrip("-")[:1].isalpha()
    if not first.isalpha() and first != "_" and not flag:
        if len(tok) == 1 or first.isdecimal():
            return (tok,), None
        if set(tok) <= {"-", "!", "?", "."}:
            return (), None  # prose: "--", "?!"
        return (), tok  # a code operator: "==", "->", "&&"
    low = tok.lower().replace("\u2019", "'")
    if first in "-_" or "." in low or "_" in low:
        return tuple(_SUBWORD.findall(low)), low  # --force, requirements.txt, snake_case
    if "'" in low:
        return tuple(_uncontract(low).split()), None
    return (low,), None


def _number_words(tokens: list[str], i: int) -> tuple[str, int] | None:
    """The number spelled from tokens[i] on ("forty-four", "a hundred"), and where it ends."""
    total = 0
    current = 0
    seen = False
    j = i
    n = len(tokens)
    while j < n:
        tok = tokens[j]
        if tok in _SMALL:
            if tok == "one" and not seen:
                before = tokens[i - 1] if i > 0 else ""
                after = tokens[j + 1] if j + 1 < n else ""
                if after in _ONE_NOT_BEFORE or before in _ONE_NOT_AFTER or not after:
                    break
            if tok == "dozen":
                current = (current or 1) * 12
            else:
                current += _SMALL[tok]
            seen = True
        elif tok in _SCALES and (seen or tok != "hundred" or j > i):
            scale = _SCALES[tok]
            if scale == 100:
                current = (current or 1) * 100
            else:
                total += (current or 1) * scale
                current = 0
            seen = True
        elif (
            tok in ("a", "an")
            and not seen
            and j + 1 < n
            and (tokens[j + 1] in _SCALES or tokens[j + 1] == "dozen")
        ):
            current = 0
        elif (
            tok in ("and", "-")
            and seen
            and j + 1 < n
            and (tokens[j + 1] in _SMALL or tokens[j + 1] in _SCALES)
        ):
            pass
        else:
            break
        j += 1
    if not seen:
        return None
    return str(total + current), j


def _numbers_in_words(words: list[str]) -> list[str]:
    """Number words to digits and ordinal suffixes dropped."""
    out: list[str] = []
    i = 0
    n = len(words)
    while i < n:
        w = words[i]
        if w[:1].isdecimal():
            value = w  # group commas are gone: _split removed them
            # "100 million", "1.5 billion"
            if i + 1 < n and words[i + 1] in _SCALES and _NUMBER.fullmatch(value):
                value = _format_number(float(value) * _SCALES[words[i + 1]])
                i += 1
            out.append(value)
            if i + 1 < n and words[i + 1] in _ORDINAL_SUFFIX:
                i += 1
            i += 1
            continue
        if w in _NUMBER_WORDS or w == "a" or w == "an":
            spelled = _number_words(words, i)
            if spelled is not None:
                out.append(spelled[0])
                i = spelled[1]
                continue
        out.append(w)
        i += 1
    return out


def _split(text: str) -> tuple[list[str], list[str], list[str], list[str], bool]:
    """The text as lower-case words (contractions split, number words as digits, sentence
    ends as "."), its tokens as written (for the capital letters), the same lower-cased,
    its code-like tokens, and whether it holds a number.

    Mostly C-level string work: a Python loop over the words, or a regex scan for a class
    of characters, costs more here than all the rest (measured with callgrind).
    """
    # `c in text` per character of interest: building set(text) costs more than all of them
    digits = any(d in text for d in _DIGITS)
    if digits and "," in text:
        text = _GROUP_COMMA.sub("", text)  # 1,000 -> 1000
    if any(c in text for c in _CODE_CHARS) and _looks_like_code(text):
        words, written, plain, code = _split_code(text)
        return words, written, plain, code, digits or not _NUMBER_WORDS.isdisjoint(plain)
    for char, spacing in _SPACING_PAIRS:  # `in` and replace beat str.translate here
        if char in text:
            text = text.replace(char, spacing)
    if "." in text:  # "?", "!", ";" ... are dots by now
        text = _SENTENCE_DOT.sub(" . ", text)  # a dot that is no decimal point
    for symbol in _SYMBOLS:
        if symbol in text:
            text = text.replace(symbol, f" {symbol} ")
    if digits and _DIGIT_LETTER.search(text):
        text = _DIGIT_LETTER_SPLIT.sub(" ", text)  # 10am -> 10 am, 3rd -> 3 rd
    written = text.split()
    lower = text.lower()
    plain = lower.split()
    contracted = "'" in text  # the table made every \u2019 a "'"
    words = _uncontract(lower).replace("'", "").split() if contracted else plain
    return _finish(words), written, plain, [], digits or not _NUMBER_WORDS.isdisjoint(plain)


def _split_code(text: str) -> tuple[list[str], list[str], list[str], list[str]]:
    """_split for text with --flags, dotted.names, snake_case or operators: regex tokens."""
    tokens = _TOKEN.findall(text)
    cached = _TOKENS.get
    infos = [cached(tok) or _token(tok) for tok in tokens]
    words = [w for pieces, _ in infos for w in pieces]
    code = [whole for _, whole in infos if whole is not None]
    return _finish(words), tokens, [t.lower() for t in tokens], code


def _finish(words: list[str]) -> list[str]:
    if not _CONTRACTED.isdisjoint(words):
        words = [p for w in words for p in _CONTRACTION_WORDS.get(w, (w,))]
    if not _NUMBER_WORDS.isdisjoint(words) or not _ORDINAL_SUFFIX.isdisjoint(words):
        words = _numbers_in_words(words)
    return words


def _capitalized(written: list[str], plain: list[str]) -> tuple[set[str], set[str]]:
    """Words written as names, lower-case: (acronyms and inner capitals, capitalized words
    not first in their sentence). Capitals say nothing in ALL CAPS or Title Case text."""
    capped = set(written).difference(plain)  # the tokens that lower-casing changes
    if not capped:
        return set(), set()
    strong: set[str] = set()
    weak: set[str] = set()
    for token in capped:
        low = token.lower().partition("'")[0]
        if low in _NOT_CONTENT or not token[:1].isalpha():
            continue  # "How", "What", "I": never a name
        rest = token[1:]
        if rest != rest.lower() or not token[0].isupper():
            strong.add(low)  # CSS, JavaScript, iPhone
            continue
        i = -1
        try:
            while True:
                i = written.index(token, i + 1)
                if i and written[i - 1] != ".":
                    weak.add(low)
                    break
        except ValueError:
            pass  # only ever first in its sentence
    if len(strong) > 3 and len(strong) * 2 > len(set(plain)):
        strong = set()  # ALL CAPS
    if len(weak) >= 3:
        long_caps = sum(1 for w in weak if len(w) >= 4)
        if long_caps * 5 >= sum(1 for t in plain[1:] if len(t) >= 4) * 4:
            weak = set()  # Title Case
    return strong, weak


def _looks_like_code(text: str) -> bool:
    """Whether the text may hold --flags, dotted.names, snake_case or operators like '=='."""
    if any(c in text for c in _CODE_MARKS) or "--" in text:
        return True
    for mark in (".", " -"):  # a dotted.name, or a -flag
        at = text.find(mark)
        while at != -1:
            if text[at + len(mark) : at + len(mark) + 1].isalpha():
                return True
            at = text.find(mark, at + 1)
    return False


def words(text: str) -> list[str]:
    """Lower-case words as the guard reads them: contractions split, numbers as digits,
    and the symbols it reads ("%", "$", "+", ...) and sentence ends (".") as words too."""
    return _split(text)[0]


def _unit_at(words: list[str], i: int, after_number: bool) -> tuple[str, int] | None:
    """The canonical unit spelled at words[i] (and how many words it takes), if any."""
    w = words[i]
    n = len(words)
    nxt = words[i + 1] if i + 1 < n else ""
    if w == "°" and nxt in _TEMPERATURE:
        return _TEMPERATURE[nxt], 2
    if w in ("degree", "degrees", "deg") and nxt in ("celsius", "fahrenheit", "kelvin"):
        return _UNITS[nxt], 2
    if (w == "square" or w == "sq") and nxt:
        inner = _unit_at(words, i + 1, True)
        if inner and inner[0] in _LENGTHS:
            return "sq" + inner[0], 1 + inner[1]
    if after_number and w in _UNITS_AFTER_NUMBER:
        unit: str | None = _UNITS_AFTER_NUMBER[w]
    else:
        unit = _unit_spelling(w)
    if unit is None:
        return None
    if w == "second" and not after_number and i > 0 and words[i - 1] == "the":
        return None  # "the second one"
    # a rate: "km/h", "mb/s"
    if nxt == "/" and i + 2 < n:
        per = _UNITS_AFTER_NUMBER.get(words[i + 2]) or _unit_spelling(words[i + 2])
        if per is not None:
            return f"{unit}/{per}", 3
    return _RATE_UNITS.get(unit, unit), 1


_RATE_UNITS = {"kph": "km/h", "mph": "mi/h", "kbps": "kb/s", "mbps": "mb/s", "gbps": "gb/s"}


# --------------------------------------------------------------------- facts


@dataclass(frozen=True, slots=True)
class Facts:
    """What must match between two questions; computed once per question."""

    numbers: tuple[str, ...] = ()  # in order, with the operators between them
    dates: tuple[str, ...] = ()  # sorted: "m3d4", "y2024", "mon", "next:week", "t10am"
    units: tuple[str, ...] = ()  # sorted canonical units mentioned
    quantities: tuple[str, ...] = ()  # sorted "5 km", "1 day": which number has which unit
    quantifiers: tuple[str, ...] = ()  # sorted: "all", "most", ">=", ...
    negations: int = 0
    quoted: tuple[str, ...] = ()  # in order, case kept
    entities: tuple[str, ...] = ()  # lower-case names, identifiers, flags
    terms: frozenset[str] = frozenset()  # every word and its stem, for entity look-ups
    content: frozenset[str] = frozenset()  # content words' keys (plain and rare)
    rare: frozenset[str] = frozenset()  # content keys outside the plain vocabulary
    negatable: frozenset[str] = frozenset()  # content words as written: "unsafe" vs "safe"

    def to_json(self) -> dict[str, Any]:
        """orjson-serializable; empty fields are left out."""
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if value:
                out[name] = sorted(value) if isinstance(value, frozenset) else value
        return out

    @classmethod
    def from_json(cls, data: Any) -> Facts:
        if not isinstance(data, dict):
            raise ValueError("Facts.from_json expects an object")
        return cls(
            numbers=tuple(data.get("numbers", ())),
            dates=tuple(data.get("dates", ())),
            units=tuple(data.get("units", ())),
            quantities=tuple(data.get("quantities", ())),
            quantifiers=tuple(data.get("quantifiers", ())),
            negations=int(data.get("negations", 0)),
            quoted=tuple(data.get("quoted", ())),
            entities=tuple(data.get("entities", ())),
            terms=frozenset(data.get("terms", ())),
            content=frozenset(data.get("content", ())),
            rare=frozenset(data.get("rare", ())),
            negatable=frozenset(data.get("negatable", ())),
        )


def _strip_quotes(text: str) -> tuple[tuple[str, ...], str]:
    quoted: list[str] = []

    def keep(match: re.Match[str]) -> str:
        inner = next(g for g in match.groups() if g is not None)
        quoted.append(" ".join(inner.split()))
        return " \n "  # a quote ends a sentence for the capital-letter rule

    # one apostrophe is a contraction ("what's"); a quote needs two
    if (
        '"' not in text
        and "`" not in text
        and "\u201c" not in text
        and "\u2018" not in text
        and text.count("'") < 2
    ):
        return (), text
    rest = _QUOTED.sub(keep, text)
    return tuple(quoted), rest


def _strip_dates(text: str, dates: list[str]) -> str:
    def iso(match: re.Match[str]) -> str:
        y, m, d = (int(g) for g in match.groups())
        dates.append(f"y{y}")
        dates.append(f"m{m}d{d}")
        return " "

    def slash(match: re.Match[str]) -> str:
        first, second, _ = (int(g) for g in match.groups())
        if not (1 <= first <= 31 and 1 <= second <= 31 and min(first, second) <= 12):
            return match.group(0)  # "50/30/20" is a ratio, not a date
        dates.append("/".join(str(int(g)) for g in match.groups()))
        return " "

    def clock(match: re.Match[str]) -> str:
        half = (match.group(3) or "").replace(".", "").lower()
        dates.append(f"t{int(match.group(1))}:{match.group(2)}{half}")
        return " "

    if "-" in text:
        text = _ISO_DATE.sub(iso, text)
    if "/" in text:
        text = _SLASH_DATE.sub(slash, text)
    if ":" in text:
        text = _CLOCK.sub(clock, text)
    return text


def _word_info(word: str) -> None:
    """Files a word under _WORDS with its (stem, key) if it is a content word, else under
    _NOT_WORDS (too short, a number or a symbol)."""
    if len(_WORDS) >= _CACHE_LIMIT:
        _WORDS.clear()
        _NOT_WORDS.clear()
    if len(word) < 2 or not word.isalpha():
        _NOT_WORDS.add(word)
    else:
        _WORDS[word] = (stem(word), key(word))


class _Reader:
    """Walks a question's words once and collects its facts.

    Only words in _KINDS (and numbers) start a fact; each kind has one small handler.
    Common function words ("a", "at", "to") are no anchors: the rarer word after them
    ("day", "least", "power") looks back at them instead.
    """

    __slots__ = ("capitalized", "dates", "negations", "numbers", "quantifiers", "quantities",
                 "units", "words")  # fmt: skip

    def __init__(self, words: list[str], capitalized: set[str], dates: list[str]) -> None:
        self.words = words
        self.capitalized = capitalized
        self.dates = dates
        self.numbers: list[str] = []
        self.quantities: list[str] = []
        self.units: set[str] = set()
        self.quantifiers: list[str] = []
        self.negations = 0

    def read(self, anchors: set[str]) -> None:
        """Read from each place where one of the anchor words stands, in order."""
        words = self.words
        if len(anchors) > 2:
            places = [i for i, w in enumerate(words) if w in anchors]
        else:
            places = []
            for w in anchors:
                i = -1
                try:
                    while True:  # list.index runs in C: cheaper than a pass for one word
                        i = words.index(w, i + 1)
                        places.append(i)
                except ValueError:
                    pass
            places.sort()
        kinds = _KINDS
        done = 0
        for i in places:
            if i >= done:
                w = words[i]
                done = self.number(i) if w[:1].isdecimal() else kinds[w](self, i)

    def at(self, i: int, offset: int) -> str:
        k = i + offset
        return self.words[k] if 0 <= k < len(self.words) else ""

    def currency(self, i: int) -> int:
        nxt = self.at(i, 1)
        w = self.words[i]
        if nxt[:1].isdecimal():
            self.units.add(_CURRENCY_SIGNS[w])
            self.quantities.append(f"{nxt} {_CURRENCY_SIGNS[w]}")
        return i + 1

    def operator(self, i: int) -> int:
        w = self.words[i]
        self._operator(_OPERATOR_WORDS.get(w, w), self.at(i, -1), self.at(i, 1))
        return i + 1

    def operator_by(self, i: int) -> int:
        """'multiplied by', 'divided by'."""
        if self.at(i, 1) != "by":
            return i + 1
        self._operator(_OPERATOR_PHRASES[self.words[i]], self.at(i, -1), self.at(i, 2))
        return i + 2

    def power(self, i: int) -> int:
        """'to the power of'."""
        if self.at(i, -2) == "to" and self.at(i, -1) == "the" and self.at(i, 1) == "of":
            self._operator("^", self.at(i, -3), self.at(i, 2))
            return i + 2
        return i + 1

    def _operator(self, op: str, before: str, after: str) -> None:
        # only between two numbers: "2 + 2", "12 times 13"; "5 times a week" is no product
        if self.numbers and before[:1].isdecimal() and after[:1].isdecimal():
            self.numbers.append(op)

    def than(self, i: int) -> int:
        """'more than', 'fewer than', 'no more than'."""
        prev = self.at(i, -1)
        op = _COMPARE_THAN.get(prev)
        if op is not None:
            if self.at(i, -2) in ("no", "not"):
                op = "<=" if op == ">" else ">="
            self.quantifiers.append(op)
        return i + 1

    def least(self, i: int) -> int:
        if self.at(i, -1) == "at":
            self.quantifiers.append(">=")
        return i + 1

    def up(self, i: int) -> int:
        if self.at(i, 1) == "to" and self.at(i, 2)[:1].isdecimal():
            self.quantifiers.append("<=")
            return i + 2
        return i + 1

    def month(self, i: int) -> int:
        """A month, with the day after or before it ("March 3rd", "3 March") and the year."""
        words = self.words
        w = words[i]
        if w == "may" and not _may_is_month(words, i):
            return i + 1
        month = _MONTHS[w]
        j = i + 1
        prev = self.at(i, -1)
        before = self.at(i, -2)
        day = None
        if prev == "of" and before.isdecimal() and 1 <= int(before) <= 31:
            day = before  # "3rd of March": number() left it for us
        elif prev.isdecimal() and 1 <= int(prev) <= 31:
            day = prev  # "3 March": number() left it for us
        if day is None and j < len(words) and words[j].isdecimal() and 1 <= int(words[j]) <= 31:
            day = words[j]
            j = j + 1
        if day is not None:
            self.dates.append(f"m{month}d{int(day)}")
        else:
            rel = _RELATIVE.get(prev)
            self.dates.append(f"{rel}:m{month}" if rel else f"m{month}")
        if j < len(words) and len(words[j]) == 4 and words[j].isdecimal():
            self.dates.append(f"y{words[j]}")
            j = j + 1
        return j

    def weekday(self, i: int) -> int:
        w = self.words[i]
        day = _WEEKDAYS.get(w) or _WEEKDAYS[w[:-1]]
        rel = _RELATIVE.get(self.at(i, -1))
        self.dates.append(f"{rel}:{day}" if rel else day)
        return i + 1

    def relative_day(self, i: int) -> int:
        self.dates.append(self.words[i])
        return i + 1

    def relative(self, i: int) -> int:
        """'next week', 'last year'; 'last Monday' is read by weekday()."""
        nxt = self.at(i, 1)
        if nxt in _PERIODS:
            self.dates.append(f"{_RELATIVE[self.words[i]]}:{nxt}")
            return i + 2
        return i + 1

    def season(self, i: int) -> int:
        w = self.words[i]
        prev = self.at(i, -1)
        if w != "fall" or prev in _RELATIVE or prev in _YEAR_CUES:
            self.dates.append(_SEASONS[w])
            return i + 1
        return i + 1

    def quarter(self, i: int) -> int:
        self.dates.append(self.words[i])  # "q1" .. "q4"
        return i + 1

    def rate(self, i: int) -> int:
        self.one(_RATE_ADVERBS[self.words[i]])
        return i + 1

    def unit(self, i: int) -> int:
        unit = _unit_at(self.words, i, False)
        if unit is None:
            return i + 1
        if self.at(i, -1) in _UNIT_ONE:
            self.one(unit[0])  # "a day", "per hour", "every week"
        else:
            self.units.add(unit[0])
        return i + unit[1]

    def one(self, unit: str) -> None:
        """'a day', 'per day', 'daily': one of the unit."""
        self.numbers.append("1")
        self.quantities.append(f"1 {unit}")
        self.units.add(unit)

    def negation(self, i: int) -> int:
        if self.at(i, 1) in _COMPARE_THAN and self.at(i, 2) == "than":
            return i + 1  # "no more than": than() reads it
        self.negations += 1
        return i + 1

    def quantifier(self, i: int) -> int:
        w = self.words[i]
        prev = self.at(i, -1)
        if w == "most" and prev == "at":
            self.quantifiers.append("<=")
            return i + 1
        if _counts_as_quantifier(w, prev, self.at(i, 1)):
            self.quantifiers.append("some" if w == "few" and prev == "a" else _QUANTIFIERS[w])
            return i + 1
        return i + 1

    def number(self, i: int) -> int:
        """A day before a month, a year, a clock time, or a count with its unit."""
        words = self.words
        w = words[i]
        prev = self.at(i, -1)
        nxt = self.at(i, 1)
        after = self.at(i, 2)
        if w.isdecimal():
            value = int(w)
            if 1 <= value <= 31 and (nxt in _MONTHS or (nxt == "of" and after in _MONTHS)):
                return i + 1  # the month reads it
            if len(w) == 4 and 1000 <= value <= 2199 and (prev in _YEAR_CUES or nxt == "s"):
                self.dates.append(f"y{w}{'s' if nxt == 's' else ''}")
                return i + (2 if nxt == "s" else 1)
        if nxt in ("am", "pm"):
            self.dates.append(f"t{w}{nxt}")
            return i + 1 + 1
        self.numbers.append(w)
        if prev in _CURRENCY_SIGNS or not nxt:
            return i + 1
        unit = _unit_at(words, i + 1, True)
        if unit is None:
            return i + 1
        self.quantities.append(f"{w} {unit[0]}")
        self.units.add(unit[0])
        return i + 1 + unit[1]


_Handler = Callable[[_Reader, int], int]


def _kinds() -> dict[str, _Handler]:
    kinds: dict[str, _Handler] = {}
    for words, handler in (
        (_UNITS, _Reader.unit),
        ((w + "s" for w in _UNITS), _Reader.unit),
        ((w + "es" for w in _UNITS), _Reader.unit),
        (("°", "square", "sq", "degree", "degrees", "kbs", "mbs", "gbs", "tbs"), _Reader.unit),
        (_QUANTIFIERS, _Reader.quantifier),
        (_NEGATIONS, _Reader.negation),
        (_CURRENCY_SIGNS, _Reader.currency),
        (_OPERATOR_WORDS, _Reader.operator),
        (_OPERATORS, _Reader.operator),
        (_OPERATOR_PHRASES, _Reader.operator_by),
        (("power",), _Reader.power),
        (("than",), _Reader.than),
        (("least",), _Reader.least),
        (("up",), _Reader.up),
        (_RATE_ADVERBS, _Reader.rate),
        (_RELATIVE, _Reader.relative),
        (_SEASONS, _Reader.season),
        (("q1", "q2", "q3", "q4"), _Reader.quarter),
        (_RELATIVE_DAYS, _Reader.relative_day),
        (_WEEKDAYS, _Reader.weekday),
        ((w + "s" for w in _WEEKDAYS), _Reader.weekday),
        (_MONTHS, _Reader.month),
    ):
        for word in words:
            kinds[word] = handler  # later rows win: "may" is a month, "second" a unit
    return kinds


_KINDS = _kinds()
_KIND_WORDS = frozenset(_KINDS)
# Words that are never content: function words and every word the reader reads as a fact.
_NOT_CONTENT = STOP | _KIND_WORDS | frozenset(_QUANTIFIERS) | frozenset(_OPERATOR_WORDS)


def facts(text: str) -> Facts:
    """The facts of one question (its last user message)."""
    quoted, rest = _strip_quotes(text)
    dates: list[str] = []
    rest = _strip_dates(rest, dates)
    words, written, plain, code, has_numbers = _split(rest)
    strong, weak = _capitalized(written, plain)
    unique = set(words)
    reader = _Reader(words, weak, dates)
    anchors = unique & _KIND_WORDS
    if has_numbers:
        anchors.update(_numbers(unique))
    if anchors:
        reader.read(anchors)

    # Content words: not a function word, nor one of the words the reader reads.
    candidates = unique - _NOT_CONTENT
    # set.difference(dict) probes the dict per word; `set - dict.keys()` would walk it all
    for w in candidates.difference(_WORDS, _NOT_WORDS):
        _word_info(w)
    known = _WORDS
    content_words = {w for w in candidates if w in known}
    infos = list(map(_WORDS.__getitem__, content_words))
    content = set(map(itemgetter(1), infos))
    terms = unique | set(map(itemgetter(0), infos))
    terms.update(code)
    entities = set(code)
    for w in (strong | weak) & content_words:
        if w not in _ENTITY_STOP:
            entities.add(stem(w))

    return Facts(
        numbers=tuple(reader.numbers),
        dates=tuple(sorted(dates)),
        units=tuple(sorted(reader.units)),
        quantities=tuple(sorted(reader.quantities)),
        quantifiers=tuple(sorted(reader.quantifiers)),
        negations=reader.negations,
        quoted=quoted,
        entities=tuple(sorted(entities)),
        terms=frozenset(terms),
        content=frozenset(content),
        rare=frozenset(content - _PLAIN_KEYS),
        negatable=frozenset(content_words),
    )


def _numbers(unique: set[str]) -> list[str]:
    """The words that start with a digit. Sorted, symbols come first, then digits, then
    letters: a C-level sort and a short walk instead of a test of every word."""
    found: list[str] = []
    for w in sorted(unique):
        first = w[0]
        if first > "9":
            break
        if first >= "0":
            found.append(w)
    return found


def _may_is_month(words: list[str], i: int) -> bool:
    """'may' is the month next to a number or after 'in'/'of'/'early'...; a capital alone
    says nothing ("May I ...", and stop words are never read as names)."""
    prev = words[i - 1] if i else ""
    nxt = words[i + 1] if i + 1 < len(words) else ""
    return nxt[:1].isdecimal() or prev[:1].isdecimal() or prev in _YEAR_CUES


def _counts_as_quantifier(word: str, prev: str, nxt: str) -> bool:
    if prev in _NOT_QUANTITY_AFTER and word in ("many", "most", "few", "much"):
        return prev == "a" and word == "few"  # "a few" is "some"; "how many" is a question
    if word == "some" and prev in _SOME_AFTER:
        return False
    if word == "each" and nxt == "other":
        return False
    if word == "all" and prev == "at":
        return False
    # "every 8 hours", "every day": a rate, read with the unit
    return not (word in ("every", "each") and (nxt[:1].isdecimal() or _unit_spelling(nxt)))


DIGITS = "digits"  # the entry's facts key for digits_of(question)
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_DIGIT_RUNS = re.compile(r"\d+(?:\.\d+)?")


def digits_of(text: str) -> str:
    """The numbers written in digits, sorted, for `other_digits`."""
    return " ".join(sorted(set(_DIGIT_RUNS.findall(_THOUSANDS.sub("", text)))))


def other_digits(a: str, b: str) -> bool:
    """Both questions write numbers in digits and neither's are among the other's: a near
    miss whatever else they share, known without `facts` (a number may also be spelled
    out, "3" and "three", so anything less is left to `conflict`)."""
    if a == b or not a or not b:
        return False
    x, y = set(a.split()), set(b.split())
    return not (x <= y or y <= x)


def conflict(a: Facts, b: Facts) -> str | None:
    """The first kind of fact that differs between two questions, or None if none does."""
    if a.quoted != b.quoted:
        return "quoted"
    if a.dates != b.dates:
        return "date"
    if a.numbers != b.numbers:
        return "number"
    if a.units != b.units or a.quantities != b.quantities:
        return "unit"
    if a.quantifiers != b.quantifiers:
        return "quantifier"
    if a.negations != b.negations or _negated_word(a, b) or _negated_word(b, a) or _opposite(a, b):
        return "negation"
    if _missing_entity(a, b) or _missing_entity(b, a) or _swapped_rare_word(a, b):
        return "entity"
    return None


def _negated_word(a: Facts, b: Facts) -> bool:
    """'unsafe' in one question where the other says 'safe'."""
    for word in a.negatable - b.negatable:
        for prefix in _NEGATING_PREFIXES:
            rest = word[len(prefix) :]
            if word.startswith(prefix) and len(rest) >= 4 and rest in b.negatable:
                return True
    return False


def _opposite(a: Facts, b: Facts) -> bool:
    """'high' in one question where the other has 'low' instead."""
    only_b = b.content - a.content
    return any(not only_b.isdisjoint(_OPPOSITE.get(k, ())) for k in a.content - b.content)


def _missing_entity(a: Facts, b: Facts) -> bool:
    return any(e not in b.terms for e in a.entities)


def _swapped_rare_word(a: Facts, b: Facts) -> bool:
    """Each side has a rare word the other lacks: 'python' for 'rust', not 'fix' for 'solve'."""
    return bool(a.rare - b.content) and bool(b.rare - a.content)
