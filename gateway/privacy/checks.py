"""Validation of detector candidates: checksums, number plans, placeholders.

The scanner finds candidates by shape; these functions decide whether a candidate is the
real thing. Each is pure and cheap, and only ever sees candidates, never the whole text.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re

import orjson

# (first, last, prefix digits, lengths): issuer ranges of the major card networks.
_CARD_RANGES: tuple[tuple[int, int, int, tuple[int, ...]], ...] = (
    (4, 4, 1, (13, 16, 19)),  # Visa
    (51, 55, 2, (16,)),  # Mastercard
    (2221, 2720, 4, (16,)),  # Mastercard 2-series
    (34, 34, 2, (15,)),  # American Express
    (37, 37, 2, (15,)),
    (6011, 6011, 4, (16, 17, 18, 19)),  # Discover
    (644, 649, 3, (16, 17, 18, 19)),
    (65, 65, 2, (16, 17, 18, 19)),
    (3528, 3589, 4, (16, 17, 18, 19)),  # JCB
    (300, 305, 3, (14, 15, 16, 17, 18, 19)),  # Diners Club
    (36, 36, 2, (14, 15, 16, 17, 18, 19)),
    (38, 39, 2, (16, 17, 18, 19)),
    (62, 62, 2, (16, 17, 18, 19)),  # UnionPay
    (2200, 2204, 4, (16, 17, 18, 19)),  # Mir
    (50, 50, 2, (13, 14, 15, 16, 17, 18, 19)),  # Maestro
    (56, 58, 2, (13, 14, 15, 16, 17, 18, 19)),
    (6304, 6304, 4, (13, 14, 15, 16, 17, 18, 19)),
    (6759, 6759, 4, (13, 14, 15, 16, 17, 18, 19)),
    (6761, 6763, 4, (13, 14, 15, 16, 17, 18, 19)),
)

# IBAN length per country (ISO 13616 registry), for the countries that use IBANs most.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BR": 29, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18,
    "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22,
    "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LI": 21,
    "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27,
    "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25,
    "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27,
    "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}  # fmt: skip

_PLACEHOLDER_WORDS = frozenset(
    (
        "password", "passwd", "secret", "token", "key", "apikey", "api_key", "changeme",
        "change_me", "example", "redacted", "hidden", "masked", "none", "null", "nil", "true",
        "false", "undefined", "placeholder", "dummy", "sample", "value", "todo", "tbd", "n/a",
        "xxx", "string", "str",
    )
)  # fmt: skip
_TYPE_NAMES = frozenset(["str", "string", "int", "bytes", "any", "optional", "secretstr", "text"])
_FILLER = "*xX.•·-_#?"
_ENV_OR_TEMPLATE = re.compile(r"\$\{.*\}|\$\(.*\)|\$[A-Za-z_]\w*|%\(.*\)s|<.*>|\{.*\}|\[.*\]", re.S)
_CODE = re.compile(
    r"[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)+|[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|.*[(\[].*", re.S
)
_MARKER_WORD = re.compile(r"pass|pwd|secret|token|key|credential", re.I)


_CARD_BY_FIRST_DIGIT = {
    d: tuple(r for r in _CARD_RANGES if str(r[0])[0] == d) for d in "0123456789"
}
# Luhn: every second digit from the right is doubled (and 10-18 reduced to 1-9).
_LUHN_PLAIN = bytes.maketrans(b"0123456789", bytes(range(10)))
_LUHN_DOUBLED = bytes.maketrans(b"0123456789", bytes((0, 2, 4, 6, 8, 1, 3, 5, 7, 9)))
_HAS_DIGIT = re.compile(r"[0-9]")
_HAS_LETTER = re.compile(r"[A-Za-z]")
_HAS_UPPER = re.compile(r"[A-Z]")
_HAS_LOWER = re.compile(r"[a-z]")


def luhn_ok(digits: str) -> bool:
    values = digits.encode()
    plain = values[-1::-2].translate(_LUHN_PLAIN)
    doubled = values[-2::-2].translate(_LUHN_DOUBLED)
    return (sum(plain) + sum(doubled)) % 10 == 0


def card_ok(digits: str) -> bool:
    """A known issuer prefix with that issuer's length, and the Luhn check digit."""
    n = len(digits)
    for first, last, width, lengths in _CARD_BY_FIRST_DIGIT.get(digits[:1], ()):
        if n in lengths and first <= int(digits[:width]) <= last:
            return luhn_ok(digits)
    return False


def ssn_ok(digits: str) -> bool:
    """US SSN rules: area not 000, 666 or 900-999; group not 00; serial not 0000."""
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def phone_ok(digits: str, plus: bool) -> bool:
    """E.164 length (7-15 digits); North American numbers have 10 digits after the 1."""
    if plus:
        if digits[0] == "1":
            return len(digits) == 11 and digits[1] not in "01"
        return 7 <= len(digits) <= 15 and digits[0] != "0"
    if len(digits) == 11:
        return digits[0] == "1" and digits[1] not in "01"
    return len(digits) == 10 and digits[0] not in "01"


def iban_ok(compact: str) -> bool:
    """Country length from the registry and the ISO 7064 mod-97 check."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def ipv4_ok(text: str) -> bool:
    """Four octets 0-255 without leading zeros; not 0.x, loopback or 255.x (masks)."""
    octets = text.split(".")
    for octet in octets:
        if (len(octet) > 1 and octet[0] == "0") or int(octet) > 255:
            return False
    return octets[0] not in ("0", "127", "255")


def ipv6_ok(text: str) -> bool:
    """A valid IPv6 address with a digit in it (so `Db::Add` is not one), not :: or ::1."""
    if text.count(":") < 2 or _HAS_DIGIT.search(text) is None:
        return False
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return not (address.is_unspecified or address.is_loopback)


def jwt_ok(token: str) -> bool:
    """The first segment decodes (base64url) to a JSON object with an `alg`."""
    header = token.partition(".")[0]
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError):
        return False
    return isinstance(decoded, dict) and "alg" in decoded


def random_ok(body: str) -> bool:
    """Looks machine-made: letters and digits, and not one character over and over."""
    return (
        _HAS_DIGIT.search(body) is not None
        and _HAS_LETTER.search(body) is not None
        and len(set(body)) >= 8
    )


def aws_secret_ok(candidate: str) -> bool:
    """40 base64 characters with upper, lower and digits (a hex digest has no upper case)."""
    return (
        _HAS_UPPER.search(candidate) is not None
        and _HAS_LOWER.search(candidate) is not None
        and _HAS_DIGIT.search(candidate) is not None
    )


def is_placeholder(value: str) -> bool:
    """`***`, `<password>`, `${DB_PASS}`, `your_api_key_here`, `sk-...`: not a real value."""
    value = value.strip()
    if not value.strip(_FILLER):
        return True
    lower = value.lower()
    return (
        lower in _PLACEHOLDER_WORDS
        or lower.startswith(("your_", "your-", "yourpass", "<", "{", "${"))
        or value.endswith(("...", "…"))
        or _ENV_OR_TEMPLATE.fullmatch(value) is not None
    )


def is_code(value: str) -> bool:
    """An unquoted value that is an expression: `os.environ[...]`, `args.password`, `DB_PASS`."""
    if value.lower() in _TYPE_NAMES or _CODE.fullmatch(value) is not None:
        return True
    # `password=password`, `secret=client_secret`: a variable named for what it holds.
    return value.isidentifier() and _MARKER_WORD.search(value) is not None
