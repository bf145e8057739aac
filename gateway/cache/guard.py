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
from dataclasses import dataclass
from functools import lru_cache
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
    "in": "in", "bar": "bar", "pa": "pa", "cal": "kcal", "am": "am", "pm": "pm",
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
# Code-like tokens (snake_case, file.names, --flags) must match exactly, like names.
_IDENTIFIER = re.compile(r"(?<![\w-])(?:--?[A-Za-z][\w-]*|\w*[A-Za-z]\w*(?:[._]\w+)+)")
_TOKEN = re.compile(
    r"\d+(?:[.,]\d+)*|[^\W\d_]+(?:['\u2019][^\W\d_]+)*|[%$€£¥°+*/\u00d7\u00f7^=<>-]|[.!?;:¿¡\n]"
)
# Operators in code questions ("==" vs "===", "->", "&&") name different things.
_CODE_OPERATOR = re.compile(r"[=!<>:&|+\-*/%^~?.]{2,}")
_GROUPED = re.compile(r"\d{1,3}(?:,\d{3})+")
_PHRASES = re.compile(
    r"\b(?:multiplied by|divided by|to the power of|at least|at most|no more than|"
    r"no less than|more than|greater than|larger than|less than|fewer than|smaller than|"
    r"up to|per cent|km/h|m/s|sq\.? ?ft)(?!\w)",
    re.IGNORECASE,
)
_PHRASE_TOKENS = {
    "multiplied by": " * ", "divided by": " / ", "to the power of": " ^ ",
    "at least": " qge ", "no less than": " qge ", "at most": " qle ", "no more than": " qle ",
    "up to": " qle ", "more than": " qgt ", "greater than": " qgt ", "larger than": " qgt ",
    "less than": " qlt ", "fewer than": " qlt ", "smaller than": " qlt ",
    "per cent": " percent ", "km/h": " kph ", "m/s": " mps ", "sq ft": " sqft ",
    "sq. ft": " sqft ", "sq.ft": " sqft ", "sqft": " sqft ",
}  # fmt: skip
_COMPARATORS = {"qge": ">=", "qle": "<=", "qgt": ">", "qlt": "<"}
_BOUNDARY = frozenset(".!?;:¿¡\n")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")

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


def key(word: str) -> str:
    """What two spellings of one word share: installation/installed -> 'instal'."""
    s = stem(word)
    return SYNONYM_STEMS.get(s, s)[:6]


_PLAIN_KEYS: frozenset[str] = (
    frozenset(key(w) for w in _PLAIN.split()) | frozenset(key(w) for w in SYNONYMS.values())
) - frozenset(key(w) for w in _TASK_WORDS.split())
_OPPOSITE: dict[str, str] = {}
for _pair in _ANTONYMS.split():
    _left, _right = (key(w) for w in _pair.split(":"))
    _OPPOSITE[_left] = _right
    _OPPOSITE[_right] = _left


def is_plain_key(word_key: str) -> bool:
    """Whether a word key (see `key`) is plain vocabulary rather than a rare word."""
    return word_key in _PLAIN_KEYS


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _plain_number(text: str) -> str:
    if _GROUPED.fullmatch(text):
        return text.replace(",", "")
    return text


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
            value = _SMALL[tok]
            if tok == "dozen":
                current = (current or 1) * 12
            else:
                current += value
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


def _expand(raw_tokens: list[str]) -> tuple[list[str], list[str]]:
    """Lower-cased words with contractions split, and each one's original spelling."""
    words: list[str] = []
    originals: list[str] = []
    for tok in raw_tokens:
        low = tok.lower().replace("\u2019", "'")
        if "'" in low or low in _CONTRACTION_WORDS:
            if low in _CONTRACTION_WORDS:
                first, second = _CONTRACTION_WORDS[low]
                words += (first, second)
                originals += (tok, "not")
                continue
            if low.endswith("n't"):
                words += (low[:-3], "not")
                originals += (tok, "not")
                continue
            head, _, tail = low.partition("'")
            # 's 're 've 'll 'd 'm add only function words; "let's" keeps its "let"
            if tail in ("s", "re", "ve", "ll", "d", "m", "t"):
                low = head
                tok = tok[: len(head)]
        words.append(low)
        originals.append(tok)
    return words, originals


def _numbers_in_words(words: list[str], caps: list[bool]) -> tuple[list[str], list[bool]]:
    """Number words to digits and ordinal suffixes dropped; capital flags kept aligned."""
    out: list[str] = []
    out_caps: list[bool] = []
    i = 0
    n = len(words)
    while i < n:
        w = words[i]
        if w[0].isdecimal():
            value = _plain_number(w)
            # "100 million", "1.5 billion"
            if i + 1 < n and words[i + 1] in _SCALES and _NUMBER.fullmatch(value):
                value = _format_number(float(value) * _SCALES[words[i + 1]])
                i += 1
            out.append(value)
            out_caps.append(False)
            if i + 1 < n and words[i + 1] in _ORDINAL_SUFFIX:
                i += 1
            i += 1
            continue
        if w in _SMALL or w in ("a", "an") or w in _SCALES:
            spelled = _number_words(words, i)
            if spelled is not None:
                out.append(spelled[0])
                out_caps.append(False)
                i = spelled[1]
                continue
        out.append(w)
        out_caps.append(caps[i])
        i += 1
    return out, out_caps


def words(text: str) -> list[str]:
    """Lower-case words as the guard reads them: contractions split, numbers as digits."""
    lowered, _ = _expand(_TOKEN.findall(text))
    spelled, _ = _numbers_in_words(lowered, [False] * len(lowered))
    return [w for w in spelled if w[:1].isalnum()]


def _is_number(tok: str) -> bool:
    return tok[:1].isdecimal()


def _unit_at(words: list[str], i: int, after_number: bool) -> tuple[str, int] | None:
    """The canonical unit spelled at words[i] (and how many words it takes), if any."""
    w = words[i]
    nxt = words[i + 1] if i + 1 < len(words) else ""
    if w == "°" and nxt in _TEMPERATURE:
        return _TEMPERATURE[nxt], 2
    if w in ("degree", "degrees", "deg") and nxt in ("celsius", "fahrenheit", "kelvin"):
        return _UNITS[nxt], 2
    if w == "square" and nxt:
        inner = _unit_at(words, i + 1, False)
        if inner and inner[0] in _LENGTHS:
            return "sq" + inner[0], 1 + inner[1]
    if w == "sqft":
        return "sqft", 1
    if w == "mps":
        return "mps", 1
    if after_number and w in _UNITS_AFTER_NUMBER:
        return _UNITS_AFTER_NUMBER[w], 1
    unit = _UNITS.get(w)
    if unit is None and len(w) > 3 and w.endswith("s"):
        unit = _UNITS.get(w[:-1]) or (_UNITS.get(w[:-2]) if w.endswith("es") else None)
    if unit is None and len(w) == 3 and w.endswith("s"):
        unit = _UNITS.get(w[:-1]) if w[:-1] in ("kb", "mb", "gb", "tb", "lb") else None
    if unit is None:
        return None
    if w == "second" and not after_number and i > 0 and words[i - 1] == "the":
        return None  # "the second one"
    return unit, 1


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


def _is_prose(op: str) -> bool:
    """Ellipses, dashes and '?!' are punctuation, not operators."""
    return set(op) <= {".", "-", "?", "!"}


def _phrase_token(match: re.Match[str]) -> str:
    phrase = " ".join(match.group(0).lower().split())
    return _PHRASE_TOKENS.get(phrase, f" {phrase} ")


def _strip_quotes(text: str) -> tuple[tuple[str, ...], str]:
    quoted: list[str] = []

    def keep(match: re.Match[str]) -> str:
        inner = next(g for g in match.groups() if g is not None)
        quoted.append(" ".join(inner.split()))
        return " \n "  # a quote ends a sentence for the capital-letter rule

    if not any(q in text for q in "\"\u201c\u2018`'"):
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


def facts(text: str) -> Facts:
    """The facts of one question (its last user message)."""
    quoted, rest = _strip_quotes(text)
    dates: list[str] = []
    rest = _strip_dates(rest, dates)
    entities: set[str] = set()
    identifiers = [ident.lower() for ident in _IDENTIFIER.findall(rest)]
    identifiers += [op for op in _CODE_OPERATOR.findall(rest) if not _is_prose(op)]
    entities.update(identifiers)
    rest = _PHRASES.sub(_phrase_token, rest)
    raw = _TOKEN.findall(rest)
    words, originals = _expand(raw)

    # Capitalization says little in ALL CAPS or Title Case text: most longer words capped.
    longer = [o for o in originals[1:] if len(o) >= 4 and o[:1].isalpha()]
    capitals = sum(1 for o in longer if o[0].isupper())
    case_informative = len(longer) < 3 or capitals * 5 < len(longer) * 4
    caps: list[bool] = []
    start = True
    for word, orig in zip(words, originals, strict=True):
        if word in _BOUNDARY:
            caps.append(False)
            start = True
            continue
        upper = orig[:1].isupper()
        acronym = len(orig) > 1 and (orig.isupper() or any(c.isupper() for c in orig[1:]))
        caps.append(upper and (acronym or (case_informative and not start)))
        if orig[:1].isalnum():
            start = False

    # Number words -> digits, keeping the capital flags aligned with the words.
    words, caps = _numbers_in_words(words, caps)

    numbers: list[str] = []
    quantities: list[str] = []
    units: set[str] = set()
    quantifiers: list[str] = []
    negations = 0
    terms: set[str] = set()
    content: set[str] = set()
    negatable: set[str] = set()
    n = len(words)
    used = [False] * n
    i = 0
    while i < n:
        w = words[i]
        prev = words[i - 1] if i else ""
        nxt = words[i + 1] if i + 1 < n else ""
        if w in _BOUNDARY:
            i += 1
            continue
        if _is_number(w):
            i = _read_number(words, i, numbers, quantities, units, dates, used)
            continue
        if w in _CURRENCY_SIGNS and nxt[:1].isdecimal():
            units.add(_CURRENCY_SIGNS[w])
            quantities.append(f"{_plain_number(nxt)} {_CURRENCY_SIGNS[w]}")
            used[i] = True
            i += 1
            continue
        if w in _OPERATOR_WORDS or w in _OPERATORS:
            op = _OPERATOR_WORDS.get(w, w)
            if numbers and prev[:1].isdecimal() and nxt[:1].isdecimal():
                numbers.append(op)
            used[i] = True
            i += 1
            continue
        month = _MONTHS.get(w)
        if month is not None and (w != "may" or _may_is_month(words, i, caps)):
            i = _read_month(words, i, month, dates, used)
            continue
        day = _WEEKDAYS.get(w) or (_WEEKDAYS.get(w[:-1]) if w.endswith("s") else None)
        if day is not None:
            rel = _RELATIVE.get(prev)
            dates.append(f"{rel}:{day}" if rel else day)
            used[i] = True
            i += 1
            continue
        if w in _RELATIVE_DAYS:
            dates.append(w)
            used[i] = True
            i += 1
            continue
        if w in _RELATIVE and nxt in _PERIODS:
            dates.append(f"{_RELATIVE[w]}:{nxt}")
            used[i] = used[i + 1] = True
            i += 2
            continue
        if w in _SEASONS and (w != "fall" or prev in _RELATIVE or prev in _YEAR_CUES):
            dates.append(_SEASONS[w])
            used[i] = True
            i += 1
            continue
        if w == "q" and nxt in ("1", "2", "3", "4"):
            dates.append("q" + nxt)
            used[i] = used[i + 1] = True
            i += 2
            continue
        if w in _COMPARATORS:
            quantifiers.append(_COMPARATORS[w])
            used[i] = True
            i += 1
            continue
        if w in _RATE_ADVERBS:
            numbers.append("1")
            quantities.append(f"1 {_RATE_ADVERBS[w]}")
            units.add(_RATE_ADVERBS[w])
            used[i] = True
            i += 1
            continue
        if w in _UNIT_ONE and nxt:
            unit = _unit_at(words, i + 1, False)
            if unit is not None:
                numbers.append("1")
                quantities.append(f"1 {unit[0]}")
                units.add(unit[0])
                used[i] = True
                for k in range(unit[1]):
                    used[i + 1 + k] = True
                i += 1 + unit[1]
                continue
        unit = _unit_at(words, i, False)
        if unit is not None and not (w == "second" and prev == "the"):
            units.add(unit[0])
            for k in range(unit[1]):
                used[i + k] = True
            i += unit[1]
            continue
        if w in _NEGATIONS:
            negations += 1
            used[i] = True
            i += 1
            continue
        quantifier = _QUANTIFIERS.get(w)
        if quantifier is not None and _counts_as_quantifier(w, prev, nxt):
            quantifiers.append("some" if w == "few" and prev == "a" else quantifier)
            used[i] = True
            i += 1
            continue
        i += 1

    for k, w in enumerate(words):
        if not w[:1].isalpha():
            continue
        terms.add(w)
        s = stem(w)
        terms.add(s)
        if used[k] or w in STOP or w in _QUANTIFIERS or w in _OPERATOR_WORDS:
            continue
        if caps[k] and w not in _ENTITY_STOP:
            entities.add(s)
        if len(w) < 2:
            continue
        content.add(key(w))
        negatable.add(w)

    rare = frozenset(k for k in content if k not in _PLAIN_KEYS)
    return Facts(
        numbers=tuple(numbers),
        dates=tuple(sorted(dates)),
        units=tuple(sorted(units)),
        quantities=tuple(sorted(quantities)),
        quantifiers=tuple(sorted(quantifiers)),
        negations=negations,
        quoted=quoted,
        entities=tuple(sorted(entities)),
        terms=frozenset(terms) | frozenset(identifiers),
        content=frozenset(content),
        rare=rare,
        negatable=frozenset(negatable),
    )


def _may_is_month(words: list[str], i: int, caps: list[bool]) -> bool:
    """'may' is the month next to a number, after 'in'/'of'/'early'..., or capitalized."""
    prev = words[i - 1] if i else ""
    nxt = words[i + 1] if i + 1 < len(words) else ""
    return nxt[:1].isdecimal() or prev[:1].isdecimal() or prev in _YEAR_CUES or caps[i]


def _read_month(words: list[str], i: int, month: int, dates: list[str], used: list[bool]) -> int:
    """A month, with the day after it ("March 3rd") and the year ("March 3, 2025")."""
    used[i] = True
    j = i + 1
    prev = words[i - 1] if i else ""
    before = words[i - 2] if i > 1 else ""
    day = None
    if prev == "of" and before.isdecimal() and 1 <= int(before) <= 31:
        day = before  # "3rd of March": _read_number left it for us
    elif prev.isdecimal() and 1 <= int(prev) <= 31:
        day = prev
    if day is None and j < len(words) and words[j].isdecimal() and 1 <= int(words[j]) <= 31:
        day = words[j]
        used[j] = True
        j += 1
    if day is not None:
        dates.append(f"m{month}d{int(day)}")
    else:
        rel = _RELATIVE.get(prev)
        dates.append(f"{rel}:m{month}" if rel else f"m{month}")
    if j < len(words) and len(words[j]) == 4 and words[j].isdecimal():
        dates.append(f"y{words[j]}")
        used[j] = True
        j += 1
    return j


def _read_number(
    words: list[str],
    i: int,
    numbers: list[str],
    quantities: list[str],
    units: set[str],
    dates: list[str],
    used: list[bool],
) -> int:
    """One number: a day before a month, a year, a clock time, or a count with its unit."""
    w = words[i]
    prev = words[i - 1] if i else ""
    nxt = words[i + 1] if i + 1 < len(words) else ""
    after = words[i + 2] if i + 2 < len(words) else ""
    used[i] = True
    if (
        w.isdecimal()
        and 1 <= int(w) <= 31
        and (nxt in _MONTHS or (nxt == "of" and after in _MONTHS))
    ):
        return i + 1  # the month reads it
    if (
        w.isdecimal()
        and len(w) == 4
        and 1000 <= int(w) <= 2199
        and (prev in _YEAR_CUES or nxt == "s")
    ):
        dates.append(f"y{w}{'s' if nxt == 's' else ''}")
        return i + (2 if nxt == "s" else 1)
    if nxt in ("am", "pm") or (nxt in ("a", "p") and after == "m"):
        dates.append(f"t{w}{nxt if nxt in ('am', 'pm') else nxt + 'm'}")
        return i + (2 if nxt in ("am", "pm") else 3)
    if prev in _CURRENCY_SIGNS:
        numbers.append(w)
        return i + 1
    numbers.append(w)
    unit = _unit_at(words, i + 1, True) if nxt else None
    if unit is not None:
        quantities.append(f"{w} {unit[0]}")
        units.add(unit[0])
        for k in range(unit[1]):
            used[i + 1 + k] = True
        return i + 1 + unit[1]
    return i + 1


def _counts_as_quantifier(word: str, prev: str, nxt: str) -> bool:
    if prev in _NOT_QUANTITY_AFTER and word in ("many", "most", "few", "much"):
        return prev == "a" and word == "few"  # "a few" is "some"; "how many" is a question
    if word == "some" and prev in _SOME_AFTER:
        return False
    if word == "each" and nxt == "other":
        return False
    if word == "all" and prev == "at":
        return False
    return not (word == "every" and nxt[:1].isdecimal())


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
    return any(_OPPOSITE.get(k) in only_b for k in a.content - b.content)


def _missing_entity(a: Facts, b: Facts) -> bool:
    return any(e not in b.terms for e in a.entities)


def _swapped_rare_word(a: Facts, b: Facts) -> bool:
    """Each side has a rare word the other lacks: 'python' for 'rust', not 'fix' for 'solve'."""
    return bool(a.rare - b.content) and bool(b.rare - a.content)
