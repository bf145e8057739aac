"""The privacy scanner: detectors (true positives, near misses, exact spans), text extraction
from request bodies, redaction and restore (whole and streamed), and linear behaviour on
large and hostile inputs. Pure functions: no processes, no network."""

from __future__ import annotations

import base64
import copy
import itertools
from typing import Any

import orjson
import pytest

from gateway.privacy import (
    DEFAULT_KEYWORDS,
    ENDPOINTS,
    Finding,
    PlaceholderRestorer,
    PrivacyDetectorSpec,
    PrivacyScanner,
    TextRef,
    format_path,
    redact,
    summarize,
    texts_of,
)
from gateway.privacy.checks import card_ok, iban_ok, jwt_ok, luhn_ok
from gateway.privacy.detect import _table

SCANNER = PrivacyScanner()

# Secret-looking test values are assembled from pieces so that secret scanners that read
# this file do not take them for real credentials.
OPENAI = "sk-" + "proj-Q7w3Xk9LmN2pR5tV8yB1cD4fG6hJ0kZa_x-Y"
OPENAI_LEGACY = "sk-" + "T3BlbkFJ4f9Qx7Lm2Np8Rs5Tv1Wy6Za3Bc0De9Fg7Hi5"
ANTHROPIC = "sk-" + "ant-api03-Zx8Yw7Vu6Ts5Rq4Po3Nm2Lk1Ji0Hg9Fe8Dc7Ba6-_Q1w2E3r4T5y6"
AWS_ID = "AKIA" + "IOSFODNN7EXAMPLE"
AWS_SESSION_ID = "ASIA" + "Y34FZKBOKMUTVV7A"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
GITHUB = "gh" + "p_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
GITHUB_OAUTH = "gh" + "o_" + "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2"
GITHUB_PAT = "github" + "_pat_" + "11ABCDEFG0123456789_abcdefghijKLMNOPqrstuv0123456789wxyzABCDEF"
GITLAB = "gl" + "pat-" + "xY7zW3vU9tS1rQ5pO2nM"
SLACK = "xox" + "b-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
JWT_HEADER = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
JWT = JWT_HEADER + ".eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
PEM_BODY = "MIIEpAIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n" * 3
PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}-----END RSA PRIVATE KEY-----"


def found(text: str, scanner: PrivacyScanner = SCANNER) -> list[tuple[str, str]]:
    """(detector, value) of every finding that is not a keyword."""
    return [(f.detector, f.value) for f in scanner.scan_text(text) if f.category != "keyword"]


def keywords(text: str, scanner: PrivacyScanner = SCANNER) -> list[str]:
    return [f.value for f in scanner.scan_text(text) if f.category == "keyword"]


def assert_finds(detector: str, value: str, before: str = "see ", after: str = " please") -> None:
    """`value` surrounded by prose is found by `detector`, with the exact span."""
    text = before + value + after
    findings = [f for f in SCANNER.scan_text(text) if f.category != "keyword"]
    assert [(f.detector, f.value) for f in findings] == [(detector, value)], text
    assert (findings[0].start, findings[0].end) == (len(before), len(before) + len(value))


def assert_misses(detector: str, text: str) -> None:
    assert detector not in {d for d, _ in found(text)}, (text, found(text))


# --- personal data ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "email",
    [
        "john.doe+tag@example.co.uk",
        "a@b.io",
        "MARIA_G@Northwind-Logistics.COM",
        "x.y%z@mail.example.org",
    ],
)
def test_email(email: str) -> None:
    assert_finds("email", email)
    assert_finds("email", email, before="<", after=">.")
    assert_finds("email", email, before="mailto:", after=", thanks")


@pytest.mark.parametrize(
    "text",
    [
        "@dataclass def f(): pass",
        "ssh user@localhost",
        "a@b.c",
        "x@-bad.example.com",
        ".dot@example.com and dot.@example.com",
        "a..b@example.com",
        "postgres://user:pass@db.example.com/app",
        "price @ 5.99",
        "x@example.c0m",
    ],
)
def test_email_near_misses(text: str) -> None:
    assert_misses("email", text)


def test_email_local_part_longer_than_64_is_not_an_email() -> None:
    assert_misses("email", "a" * 65 + "@example.com")
    assert_finds("email", "a" * 64 + "@example.com")


@pytest.mark.parametrize(
    "phone",
    [
        "(555) 123-4567",
        "(555)123-4567",
        "555-123-4567",
        "555.123.4567",
        "555 123 4567",
        "1-800-555-0199",
        "1 (800) 555-0199",
        "+1 415 555 0132",
        "+1 (415) 555-0132",
        "+1-415-555-0132",
        "+14155550132",
        "+44 20 7946 0958",
        "+44 (0)20 7946 0958",
        "+49 30 901820",
        "+33 1 23 45 67 89",
        "+4915112345678",
        "+290 1234",
    ],
)
def test_phone(phone: str) -> None:
    assert_finds("phone", phone, before="call ", after=" today")


@pytest.mark.parametrize(
    "text",
    [
        "released on 2024-01-15",
        "order 1234567890 shipped",
        "tracking 12345678901234",
        "version 1.2.3 and v10.20.30",
        "ids 123-456-789",
        "555-123-4567-89",
        "555-123-45678",
        "555-123.4567",
        "(055) 123-4567",
        "155-123-4567",
        "+12",
        "+1 555 123",
        "+0 123 456 789",
        "+1234567890123456",
        "it is 10:30:45 now",
        "pi is 3.14159265358",
        "C++11 and a+1234567",
    ],
)
def test_phone_near_misses(text: str) -> None:
    assert_misses("phone", text)


@pytest.mark.parametrize(
    "card",
    [
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "378282246310005",
        "3782 822463 10005",
        "5555555555554444",
        "2223003122003222",
        "6011111111111117",
        "3530111333300000",
        "30569309025904",
        "4222222222222",
        "6200000000000005",
        "4539 1488 0343 6467",
    ],
)
def test_card(card: str) -> None:
    assert_finds("card", card, before="card: ", after=" exp 12/27")


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111112",  # Luhn fails
        "4111 1111 1111 1112",
        "1234567890123452",  # Luhn passes, no issuer starts with 1
        "9111111111111111",
        "4111 1111-1111 1111",  # mixed separators
        "41111 1111 1111 111",  # first group not 4 digits
        "411111111111",  # 12 digits
        "37828224631000",  # Amex is 15 digits
        "x4111111111111111",
        "4111111111111111111111",
        "3.4111111111111111",
    ],
)
def test_card_near_misses(text: str) -> None:
    assert_misses("card", "number " + text + " end")


def test_card_followed_by_more_digit_groups() -> None:
    assert found("pay 4111 1111 1111 1111 2024 now") == [("card", "4111 1111 1111 1111")]
    assert found("pay 4111 1111 1111 1111 12/27") == [("card", "4111 1111 1111 1111")]


@pytest.mark.parametrize("ssn", ["123-45-6789", "078-05-1120", "899-99-9998"])
def test_ssn(ssn: str) -> None:
    assert_finds("ssn", ssn, before="SSN ", after=".")


@pytest.mark.parametrize(
    "text",
    [
        "000-12-3456",
        "666-12-3456",
        "900-12-3456",
        "999-12-3456",
        "123-00-4567",
        "123-45-0000",
        "123456789",
        "123-45-67890",
        "1123-45-6789",
        "123-45-6789-1",
        "123 45 6789",
    ],
)
def test_ssn_near_misses(text: str) -> None:
    assert_misses("ssn", "ssn " + text + " end")


@pytest.mark.parametrize(
    "iban",
    [
        "DE89 3704 0044 0532 0130 00",
        "DE89370400440532013000",
        "GB82WEST12345698765432",
        "GB82 WEST 1234 5698 7654 32",
        "FR14 2004 1010 0505 0001 3M02 606",
        "NL91ABNA0417164300",
        "BE68539007547034",
        "NO9386011117947",
    ],
)
def test_iban(iban: str) -> None:
    assert_finds("iban", iban, before="IBAN: ", after=" (main account)")
    assert_finds("iban", iban, before="to ", after=" IBAN")


@pytest.mark.parametrize(
    "text",
    [
        "DE88370400440532013000",  # check digits wrong
        "DE88 3704 0044 0532 0130 00",
        "DE8937040044053201300",  # one character short
        "DE893704004405320130001",  # one too many
        "ZZ89370400440532013000",  # not a country
        "DE89 37040 0440 5320 1300 0",  # not in groups of four
        "de89370400440532013000",  # lower case is not the IBAN form
        "XDE89370400440532013000",
    ],
)
def test_iban_near_misses(text: str) -> None:
    assert_misses("iban", "iban " + text + " end")


@pytest.mark.parametrize(
    ("address", "detector"),
    [
        ("10.0.0.1", "ipv4"),
        ("192.168.1.20", "ipv4"),
        ("8.8.8.8", "ipv4"),
        ("2001:db8::8a2e:370:7334", "ipv6"),
        ("2001:0db8:85a3:0000:0000:8a2e:0370:7334", "ipv6"),
        ("fe80::1", "ipv6"),
        ("::ffff:192.0.2.1", "ipv6"),
        ("2001:db8::", "ipv6"),
    ],
)
def test_ip_addresses(address: str, detector: str) -> None:
    assert_finds(detector, address, before="host ", after=" is down")
    assert_finds(detector, address, before="[", after="]:8080")


def test_ipv4_in_url() -> None:
    assert found("GET http://10.1.2.3:8080/health") == [("ipv4", "10.1.2.3")]


@pytest.mark.parametrize(
    "text",
    [
        "version 1.2.3.4",
        "Version: 1.2.3.4",
        "v1.2.3.4",
        "release 10.0.0.1",
        "256.1.1.1",
        "1.2.3",
        "1.2.3.4.5",
        "127.0.0.1",
        "0.0.0.0",
        "255.255.255.0",
        "01.2.3.4",
    ],
)
def test_ipv4_near_misses(text: str) -> None:
    assert_misses("ipv4", "see " + text + " now")


def test_server_is_not_a_version_word() -> None:
    assert found("server 10.0.0.1") == [("ipv4", "10.0.0.1")]


@pytest.mark.parametrize(
    "text",
    [
        "::1",
        "::",
        "std::vector<int>",
        "Db::Add and Foo::Bar",
        "at 12:30:45",
        "mac 00:1A:2B:3C:4D:5E",
        "x[1:2]",
        "2001:db8::1::2",
        "gfe80::1",
    ],
)
def test_ipv6_near_misses(text: str) -> None:
    assert_misses("ipv6", text)


# --- secrets ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("detector", "secret"),
    [
        ("openai_key", OPENAI),
        ("openai_key", OPENAI_LEGACY),
        ("anthropic_key", ANTHROPIC),
        ("aws_access_key", AWS_ID),
        ("aws_access_key", AWS_SESSION_ID),
        ("github_token", GITHUB),
        ("github_token", GITHUB_OAUTH),
        ("github_token", GITHUB_PAT),
        ("gitlab_token", GITLAB),
        ("slack_token", SLACK),
        ("jwt", JWT),
        ("private_key", PEM),
    ],
)
def test_secret_tokens(detector: str, secret: str) -> None:
    assert_finds(detector, secret, before="use ", after=" here")
    assert_finds(detector, secret, before='{"auth": "', after='"}')
    assert_finds(detector, secret, before="Bearer ", after="\n")


@pytest.mark.parametrize(
    "text",
    [
        "sk-learn-compatible-estimators-are-great",  # no digits: scikit-learn, not a key
        "task-1234567890abcdefghijklmnop",
        "sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "sk-" + "abc123",
        "AKIA" + "IOSFODNN7EXAMPLEX",
        "AKIA" + "iosfodnn7example",
        "gh" + "p_" + "short123",
        "gh" + "p_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8-",
        "xox" + "b-" + "abcdefghijklmnop",
        "eyJub3QiOiJhIGhlYWRlciJ9.eyJzdWIiOiIxIn0.c2ln",  # header has no "alg"
        "eyJ" + "hbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",  # one segment
        "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n",
        "-----BEGIN CERTIFICATE-----",
    ],
)
def test_secret_token_near_misses(text: str) -> None:
    assert found("value " + text + " end") == []


def test_pem_without_end_marker_covers_the_base64_body() -> None:
    head = "-----BEGIN PRIVATE KEY-----"
    text = f"{head}\n{PEM_BODY}and then some prose follows"
    assert found(text) == [("private_key", f"{head}\n{PEM_BODY.rstrip()}")]


def test_pem_words_are_not_reported_as_keywords_inside_the_key() -> None:
    findings = SCANNER.scan_text("my key: " + PEM)
    assert [(f.detector, f.value) for f in findings] == [("keyword", "key"), ("private_key", PEM)]


def test_jwt_header_must_decode_to_json_with_alg() -> None:
    no_alg = base64.urlsafe_b64encode(b'{"typ":"JWT","kid":"1234"}').decode().rstrip("=")
    assert found(f"{no_alg}.eyJzdWIiOiIxIn0.c2lnbmF0dXJl") == []
    assert found(f"{JWT_HEADER}.eyJzdWIiOiIxIn0.") == [("jwt", f"{JWT_HEADER}.eyJzdWIiOiIxIn0.")]


@pytest.mark.parametrize(
    "text",
    [
        f"aws_secret_access_key = {AWS_SECRET}",
        f'"AWS_SECRET_ACCESS_KEY": "{AWS_SECRET}"',
        f"my aws access key is {AWS_ID} and the secret is {AWS_SECRET}.",
    ],
)
def test_aws_secret_key_with_context(text: str) -> None:
    assert ("aws_secret_key", AWS_SECRET) in found(text)


@pytest.mark.parametrize(
    "text",
    [
        f"checksum {AWS_SECRET} of the file",  # no aws / secret nearby
        "secret sha1 da39a3ee5e6b4b0d3255bfef95601890afd80709",  # hex digest: no upper case
        f"aws blob {AWS_SECRET}AAAA",  # 44 characters, not 40
        f"aws blob {AWS_SECRET}=",
    ],
)
def test_aws_secret_key_near_misses(text: str) -> None:
    assert_misses("aws_secret_key", text)


@pytest.mark.parametrize(
    ("text", "password"),
    [
        ("postgres://admin:s3cr3tP4ss@db.example.com:5432/app", "s3cr3tP4ss"),
        ("mongodb+srv://svc:Tr0ub4dor&3x@cluster0.example.net/?retryWrites=true", "Tr0ub4dor&3x"),
        ("redis://:hunter22@cache.internal:6379/0", "hunter22"),
        ("amqp://guest:p:a:ss@[::1]:5672", "p:a:ss"),
    ],
)
def test_connection_string_password(text: str, password: str) -> None:
    assert found(f"DSN is {text} ok") == [("connection_string", password)]
    start = SCANNER.scan_text(text)[0].start
    assert text[start : start + len(password)] == password


@pytest.mark.parametrize(
    "text",
    [
        "postgres://user:password@localhost/db",
        "postgres://user:***@localhost/db",
        "postgres://user:${DB_PASSWORD}@localhost/db",
        "postgres://user:<password>@localhost/db",
        "https://example.com:8443/path@v2",
        "https://user@example.com/",
        "://user:hunter22@host",
    ],
)
def test_connection_string_near_misses(text: str) -> None:
    assert_misses("connection_string", text)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("password=hunter2", "hunter2"),
        ("password: hunter2.", "hunter2"),
        ("PASSWORD='p@ss w0rd'", "p@ss w0rd"),
        ('"password": "s3cret!"', "s3cret!"),
        ("db_password = Tr0ub4dor&3x", "Tr0ub4dor&3x"),
        ('api_key = "abc123xyz"', "abc123xyz"),
        ("apiKey: 'k-998877'", "k-998877"),
        ("x-api-key: abc123def", "abc123def"),
        ("client_secret => 'cs_live_42'", "cs_live_42"),
        ("SECRET_KEY = 'django-insecure-9x'", "django-insecure-9x"),
        ("access_token := tok_123456", "tok_123456"),
        ("if password == 'letmein':", "letmein"),
        ("?token=abc123&user=1", "abc123"),
        ('{"credentials": "user1:pa55"}', "user1:pa55"),
        ("my password: letmein", "letmein"),
        ("passphrase = 'correct horse battery staple'", "correct horse battery staple"),
    ],
)
def test_secret_assignment(text: str, value: str) -> None:
    assert found(text) == [("secret_assignment", value)]
    finding = next(f for f in SCANNER.scan_text(text) if f.category == "secret")
    assert text[finding.start : finding.end] == value


@pytest.mark.parametrize(
    "text",
    [
        "password=***",
        "password = '********'",
        'password = "<your-password>"',
        "password=<password>",
        'api_key = "${API_KEY}"',
        "api_key = $API_KEY",
        "token: <token>",
        "api_key = 'your_api_key_here'",
        "api_key = 'sk-...'",
        "password=",
        'password = ""',
        "password = None",
        "password: str",
        "password: Optional[str] = None",
        "password=password",
        "secret=client_secret",
        "password = os.environ['DB_PASSWORD']",
        "password = get_password()",
        "secret = settings.SECRET",
        "password = DB_PASSWORD",
        "max_tokens: 100",
        "token_count = 5",
        "keyword: hello world",
        "monkey: banana123",
        "key: value123",
        "Secret: the ingredient is love",
        "passwordless: true",
        "password != 'x'",
        '"password": {"type": "string"}',
    ],
)
def test_secret_assignment_near_misses(text: str) -> None:
    assert_misses("secret_assignment", text)


def test_the_most_specific_detector_wins_an_overlap() -> None:
    assert found(f'api_key = "{OPENAI}"') == [("openai_key", OPENAI)]
    assert found(f"password={GITHUB}") == [("github_token", GITHUB)]


# --- keywords --------------------------------------------------------------------------


@pytest.mark.parametrize("word", DEFAULT_KEYWORDS)
def test_default_keywords_match_whole_words(word: str) -> None:
    text = f"About the {word.upper()}: what now?"
    assert keywords(text) == [word.upper()]
    finding = SCANNER.scan_text(text)[0]
    assert (finding.start, finding.end, finding.category) == (10, 10 + len(word), "keyword")


@pytest.mark.parametrize(
    "text",
    [
        "keyboard",
        "tokenizer",
        "monkey",
        "secretary",
        "passwordless",
        "keystone",
        "privately",
        "confidentiality",
        "api_key",
        "secretário",
        "sociale securities",
        "ssns",
    ],
)
def test_keyword_near_misses(text: str) -> None:
    assert keywords(f"the {text} here") == []


def test_keyword_phrases_allow_any_whitespace_and_case() -> None:
    assert keywords("my Social \n Security number") == ["Social \n Security"]
    assert keywords("What is my password?") == ["password"]
    assert keywords("a key, two keys; KEY.") == ["key", "keys", "KEY"]
    assert keywords("clé: secret!") == ["secret"]


def test_custom_keywords_replace_the_defaults() -> None:
    scanner = PrivacyScanner(keywords=["Project Falcon", "zeta", "contraseña", "zeta"])
    text = "project  falcon uses the key from ZETA; CONTRASEÑA dada; zetas"
    assert keywords(text, scanner) == ["project  falcon", "ZETA", "CONTRASEÑA"]
    assert keywords("password", PrivacyScanner(keywords=[])) == []


@pytest.mark.parametrize("bad", ["", "   ", None, 5])
def test_empty_keyword_is_an_error(bad: Any) -> None:
    with pytest.raises(ValueError, match="privacy keyword"):
        PrivacyScanner(keywords=["ok", bad])


# --- custom detectors ------------------------------------------------------------------


def test_custom_detector() -> None:
    scanner = PrivacyScanner(
        custom=[
            PrivacyDetectorSpec("employee_id", r"\bEMP-\d{6}\b", "pii"),
            PrivacyDetectorSpec("project_code", r"(?i)\bproject-[a-z]+\b", "internal"),
        ]
    )
    text = "EMP-123456 works on Project-Falcon; mail a@b.io"
    got = [(f.detector, f.category, f.value) for f in scanner.scan_text(text)]
    assert got == [
        ("employee_id", "pii", "EMP-123456"),
        ("project_code", "internal", "Project-Falcon"),
        ("email", "pii", "a@b.io"),
    ]


def test_custom_detector_wins_an_overlap_and_ignores_empty_matches() -> None:
    scanner = PrivacyScanner(
        custom=[
            PrivacyDetectorSpec("ticket_phone", r"TKT 555-123-4567", "internal"),
            PrivacyDetectorSpec("anything", r"x*", "internal"),
        ]
    )
    assert found("see TKT 555-123-4567 now", scanner) == [("ticket_phone", "TKT 555-123-4567")]
    # an empty match inside a built-in finding would outrank it
    assert found("mail a@b.io", scanner) == [("email", "a@b.io")]


def test_invalid_custom_regex_names_the_detector() -> None:
    with pytest.raises(ValueError, match=r"privacy detector 'broken_one': invalid regex"):
        PrivacyScanner(custom=[PrivacyDetectorSpec("broken_one", r"(unclosed[", "pii")])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (PrivacyDetectorSpec("email", r"x", "pii"), "already taken"),
        (PrivacyDetectorSpec("has space", r"x", "pii"), "name must be"),
        (PrivacyDetectorSpec("", r"x", "pii"), "name must be"),
        (PrivacyDetectorSpec("ok_name", r"x", ""), "category must not be empty"),
    ],
)
def test_invalid_custom_detector_settings(spec: PrivacyDetectorSpec, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PrivacyScanner(custom=[spec])


def test_duplicate_custom_names_are_an_error() -> None:
    spec = PrivacyDetectorSpec("dup", r"x", "pii")
    with pytest.raises(ValueError, match="'dup': the name is already taken"):
        PrivacyScanner(custom=[spec, spec])


# --- findings, texts, summaries --------------------------------------------------------


def test_findings_point_into_their_own_text() -> None:
    texts = [
        TextRef(("messages", 0, "content"), "mail a@b.io"),
        TextRef(("messages", 1, "content"), ""),
        TextRef(("messages", 2, "content"), "call 555-123-4567 or a@b.io"),
    ]
    findings = SCANNER.scan(texts)
    got = [(f.path, f.detector, f.start, f.end, f.value) for f in findings]
    assert got == [
        ("messages[0].content", "email", 5, 11, "a@b.io"),
        ("messages[2].content", "phone", 5, 17, "555-123-4567"),
        ("messages[2].content", "email", 21, 27, "a@b.io"),
    ]
    assert findings[2].ref is texts[2]


def test_matches_never_span_two_texts() -> None:
    # `\W` matches the separator between the joined texts (`\s` would not)
    scanner = PrivacyScanner(custom=[PrivacyDetectorSpec("greedy", r"END\W+START", "x")])
    texts = [TextRef(("a",), "555-123"), TextRef(("b",), "-4567 END"), TextRef(("c",), "START")]
    assert scanner.scan(texts) == []
    assert SCANNER.scan([TextRef(("a",), "password:"), TextRef(("b",), "hunter2")]) == [
        Finding("keyword", "keyword", 0, 8, TextRef(("a",), "password:"))
    ]


def test_non_ascii_text_keeps_exact_spans() -> None:
    text = "😀 Grüße — écrivez à maría@example.com ou 555-123-4567 🙂 secret"
    got = [(f.detector, f.value) for f in SCANNER.scan_text(text)]
    assert got == [("email", "maría@example.com"), ("phone", "555-123-4567"), ("keyword", "secret")]


def test_json_escapes_in_tool_arguments_do_not_glue_to_values() -> None:
    arguments = orjson.dumps({"note": f"line one\n{OPENAI}\tand\nmail a@b.io\n"}).decode()
    assert "\\n" in arguments
    assert found(arguments) == [("openai_key", OPENAI), ("email", "a@b.io")]


def test_reprs_never_show_values() -> None:
    text = f"mail maria@example.com key {OPENAI}"
    findings = SCANNER.scan_text(text)
    shown = repr(findings) + str(findings) + repr(TextRef(("x",), text)) + repr(summarize(findings))
    assert "maria" not in shown and OPENAI not in shown
    assert "Finding(detector='email', category='pii', path='', span=(5, 22))" in shown


def test_summary_counts_without_values() -> None:
    findings = SCANNER.scan_text(f"a@b.io c@d.io password {OPENAI} key")
    summary = summarize(findings)
    assert summary.categories == ("keyword", "pii", "secret")
    assert summary.by_category == {"keyword": 2, "pii": 2, "secret": 1}
    assert summary.by_detector == {"email": 2, "keyword": 2, "openai_key": 1}
    assert summary.total == 5
    assert summarize([]).categories == ()


# --- texts_of --------------------------------------------------------------------------


def paths(endpoint: str, body: Any) -> list[tuple[str, str]]:
    return [(t.path, t.text) for t in texts_of(endpoint, body)]


def test_chat_texts() -> None:
    body = {
        "model": "auto",
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "name": "maria", "content": "hello"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "part one"},
                    {"type": "text", "text": "part two"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                    {"type": "file", "file": {"file_data": "AAAA"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"q": "x"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "result"},
            {"role": "assistant", "content": "", "refusal": "no"},
            {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "lookup",
                    "description": "Look things up",
                    "parameters": {
                        "type": "object",
                        "description": "args",
                        "properties": {
                            "q": {"type": "string", "description": "the query"},
                            "filters": {
                                "type": "array",
                                "items": {"type": "string", "description": "one filter"},
                            },
                            "mode": {"anyOf": [{"type": "string", "description": "a mode"}]},
                        },
                    },
                },
            }
        ],
        "functions": [{"name": "f", "description": "legacy function"}],
    }
    assert paths("chat", body) == [
        ("messages[0].content", "sys"),
        ("messages[1].content", "hello"),
        ("messages[1].name", "maria"),
        ("messages[2].content[0].text", "part one"),
        ("messages[2].content[1].text", "part two"),
        ("messages[3].tool_calls[0].function.arguments", '{"q": "x"}'),
        ("messages[4].content", "result"),
        ("messages[5].refusal", "no"),
        ("messages[6].function_call.arguments", "{}"),
        ("tools[0].function.description", "Look things up"),
        ("tools[0].function.parameters.description", "args"),
        ("tools[0].function.parameters.properties.q.description", "the query"),
        ("tools[0].function.parameters.properties.filters.items.description", "one filter"),
        ("tools[0].function.parameters.properties.mode.anyOf[0].description", "a mode"),
        ("functions[0].description", "legacy function"),
    ]


def test_completions_texts() -> None:
    assert paths("completions", {"prompt": "once"}) == [("prompt", "once")]
    body = {"prompt": ["a", [1, 2, 3], "b", 7, None], "suffix": "end"}
    assert paths("completions", body) == [("prompt[0]", "a"), ("prompt[2]", "b"), ("suffix", "end")]
    assert paths("completions", {"prompt": [1, 2, 3]}) == []
    assert paths("completions", {"prompt": [[1, 2], [3]]}) == []


def test_embeddings_texts() -> None:
    assert paths("embeddings", {"input": "text"}) == [("input", "text")]
    assert paths("embeddings", {"input": ["a", "b"]}) == [("input[0]", "a"), ("input[1]", "b")]
    assert paths("embeddings", {"input": [1, 2, 3]}) == []
    assert paths("embeddings", {"input": [[1, 2], [3]]}) == []


def test_responses_texts() -> None:
    assert paths("responses", {"input": "hi", "instructions": "be brief"}) == [
        ("instructions", "be brief"),
        ("input", "hi"),
    ]
    body = {
        "input": [
            {"role": "user", "content": "plain"},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "typed"},
                    {"type": "input_image", "image_url": "https://example.com/a.png"},
                ],
            },
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "said"}],
            },
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"a": 1}'},
            {"type": "function_call_output", "call_id": "c1", "output": "42"},
            {
                "type": "function_call_output",
                "call_id": "c2",
                "output": [{"type": "input_text", "text": "43"}],
            },
            {"type": "reasoning", "summary": []},
        ],
        "tools": [
            {
                "type": "function",
                "name": "f",
                "description": "does f",
                "parameters": {"properties": {"a": {"description": "the a"}}},
            },
            {"type": "web_search"},
        ],
    }
    assert paths("responses", body) == [
        ("input[0].content", "plain"),
        ("input[1].content[0].text", "typed"),
        ("input[2].content[0].text", "said"),
        ("input[3].arguments", '{"a": 1}'),
        ("input[4].output", "42"),
        ("input[5].output[0].text", "43"),
        ("tools[0].description", "does f"),
        ("tools[0].parameters.properties.a.description", "the a"),
    ]


def deep(levels: int) -> Any:
    node: Any = {"description": "bottom"}
    for _ in range(levels):
        node = {"properties": {"x": node}}
    return node


GARBAGE: list[Any] = [
    None,
    5,
    "string",
    [],
    [{"messages": []}],
    {},
    {"messages": None, "tools": "x", "functions": 5},
    {"messages": [None, 5, "x", [], {"content": {"a": 1}}, {"content": 3.5}]},
    {"messages": [{"content": [None, 5, [], {"text": 5}, {"text": None}, {"type": "text"}]}]},
    {"messages": [{"role": "user", "content": "x", "name": 5, "refusal": [], "tool_calls": "x"}]},
    {"messages": [{"tool_calls": [None, 5, {"function": "x"}, {"function": {"arguments": {}}}]}]},
    {"messages": [{"function_call": "x"}, {"function_call": {"arguments": 5}}]},
    {"tools": [None, 5, {"function": None}, {"function": {"parameters": [1, {"description": 5}]}}]},
    {"tools": [{"function": {"description": "ok", "parameters": deep(200)}}]},
    {"prompt": {"a": "b"}, "input": {"a": "b"}, "suffix": 5, "instructions": ["x"]},
    {
        "input": [
            None,
            5,
            {"type": 5},
            {"type": "message", "content": None},
            {"type": "function_call"},
        ]
    },
    {"input": [{"type": "function_call_output", "output": {"x": 1}}], "tools": [{"parameters": 5}]},
]


@pytest.mark.parametrize("body", GARBAGE)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_garbage_shapes_never_crash(endpoint: str, body: Any) -> None:
    texts = texts_of(endpoint, body)
    assert all(isinstance(t.text, str) and t.text for t in texts)
    SCANNER.scan(texts)


def test_deep_schemas_are_walked_to_a_limit() -> None:
    body = {
        "tools": [{"function": {"parameters": deep(10)}}, {"function": {"parameters": deep(200)}}]
    }
    assert [t.text for t in texts_of("chat", body)] == ["bottom"]


def test_unknown_endpoint_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown endpoint 'audio'"):
        texts_of("audio", {})


def test_format_path() -> None:
    assert format_path(("messages", 2, "content", 1, "text")) == "messages[2].content[1].text"
    assert (
        format_path(("properties", "my field", "description"))
        == 'properties["my field"].description'
    )
    assert format_path((0, "a")) == "[0].a"
    assert format_path(()) == ""


# --- redaction and restore -------------------------------------------------------------


def chat(*contents: str) -> dict[str, Any]:
    return {
        "model": "auto",
        "messages": [{"role": "user", "content": c} for c in contents],
        "tools": [{"type": "function", "function": {"name": "f", "description": "plain"}}],
    }


def test_redact_round_trip() -> None:
    body = chat(
        "I am maria@example.com, call 555-123-4567.",
        f"Again maria@example.com; key {OPENAI}; other bob@example.com; password is secret",
    )
    original = copy.deepcopy(body)
    texts = texts_of("chat", body)
    redaction = redact(body, texts, SCANNER.scan(texts))
    assert body == original  # the request body itself is untouched
    assert redaction.body["messages"][0]["content"] == "I am [EMAIL_1], call [PHONE_1]."
    assert redaction.body["messages"][1]["content"] == (
        "Again [EMAIL_1]; key [SECRET_1]; other [EMAIL_2]; password is secret"
    )
    assert redaction.placeholders == {
        "[EMAIL_1]": "maria@example.com",
        "[PHONE_1]": "555-123-4567",
        "[SECRET_1]": OPENAI,
        "[EMAIL_2]": "bob@example.com",
    }
    assert redaction.body["tools"] is body["tools"]  # untouched branches are shared
    assert [t.text for t in redaction.texts] == [
        m["content"] for m in redaction.body["messages"]
    ] + ["plain"]
    restorer = redaction.restorer()
    for before, after in zip(texts, redaction.texts, strict=True):
        assert restorer.restore(after.text) == before.text
    # Placeholders are not findings themselves.
    assert [f for f in SCANNER.scan(redaction.texts) if f.category != "keyword"] == []
    assert "maria" not in repr(redaction)


def test_redact_labels() -> None:
    scanner = PrivacyScanner(custom=[PrivacyDetectorSpec("employee_id", r"EMP-\d+", "internal")])
    text = "EMP-42 at 10.0.0.1 and fe80::1, card 4111 1111 1111 1111, ssn 123-45-6789, DE89370400440532013000"
    body = chat(text)
    texts = texts_of("chat", body)
    redacted = redact(body, texts, scanner.scan(texts)).body["messages"][0]["content"]
    assert redacted == "[EMPLOYEE_ID_1] at [IP_1] and [IP_2], card [CARD_1], ssn [SSN_1], [IBAN_1]"


def test_redact_skips_placeholders_the_client_already_wrote() -> None:
    body = chat("literal [EMAIL_1] and real a@b.io")
    texts = texts_of("chat", body)
    redaction = redact(body, texts, SCANNER.scan(texts))
    assert redaction.body["messages"][0]["content"] == "literal [EMAIL_1] and real [EMAIL_2]"
    assert redaction.restorer().restore("[EMAIL_1] [EMAIL_2]") == "[EMAIL_1] a@b.io"


def test_redact_inside_json_arguments_keeps_valid_json() -> None:
    arguments = orjson.dumps({"to": "a@b.io", "note": f"line\n{OPENAI}", "pw": 'x"y'}).decode()
    body: dict[str, Any] = {
        "messages": [
            {
                "role": "assistant",
                "tool_calls": [{"function": {"name": "send", "arguments": arguments}}],
            },
            {"role": "user", "content": 'config: password = "p\\"q" ok'},
        ]
    }
    texts = texts_of("chat", body)
    redaction = redact(body, texts, SCANNER.scan(texts))
    redacted = redaction.body["messages"][0]["tool_calls"][0]["function"]["arguments"]
    assert orjson.loads(redacted) == {"to": "[EMAIL_1]", "note": "line\n[SECRET_1]", "pw": 'x"y'}
    assert redaction.body["messages"][1]["content"] == 'config: password = "[SECRET_2]" ok'
    assert body["messages"][0]["tool_calls"][0]["function"]["arguments"] == arguments


def test_redact_without_findings_or_with_only_keywords() -> None:
    body = chat("my password is long")
    texts = texts_of("chat", body)
    redaction = redact(body, texts, SCANNER.scan(texts))
    assert redaction.body == body and redaction.placeholders == {}
    assert redaction.restorer().feed("[EMAIL_1] as is") == "[EMAIL_1] as is"


def test_redact_a_text_scanned_on_its_own() -> None:
    findings = SCANNER.scan_text("mail a@b.io")
    redaction = redact({"x": 1}, [findings[0].ref], findings)
    assert redaction.texts[0].text == "mail [EMAIL_1]" and redaction.body == {"x": 1}


PLACEHOLDERS = {"[EMAIL_1]": "maria@example.com", "[EMAIL_12]": "x@y.io", "[SECRET_1]": 'p"w\\d'}
ANSWER = "Hi [EMAIL_1], your key [SECRET_1] and [EMAIL_12]; [EMAIL_9] [x] [[EMAIL_1]] [EMAIL_1"
RESTORED = (
    'Hi maria@example.com, your key p"w\\d and x@y.io; [EMAIL_9] [x] [maria@example.com] [EMAIL_1'
)


def stream(chunks: list[str]) -> str:
    restorer = PlaceholderRestorer(PLACEHOLDERS)
    return "".join(restorer.feed(c) for c in chunks) + restorer.flush()


def test_restore_whole_text() -> None:
    restorer = PlaceholderRestorer(PLACEHOLDERS)
    assert restorer.restore(ANSWER) == RESTORED
    assert restorer.restore("no placeholders") == "no placeholders"
    assert restorer.restore_json('{"c": "[SECRET_1]"}') == '{"c": "p\\"w\\\\d"}'
    assert orjson.loads(restorer.restore_json('{"c": "[SECRET_1]"}')) == {"c": 'p"w\\d'}


def test_restore_stream_split_at_every_position() -> None:
    for i in range(len(ANSWER) + 1):
        assert stream([ANSWER[:i], ANSWER[i:]]) == RESTORED, i


def test_restore_stream_split_at_every_pair_of_positions() -> None:
    text = ANSWER[:40]
    expected = PlaceholderRestorer(PLACEHOLDERS).restore(text)
    for i, j in itertools.combinations(range(len(text) + 1), 2):
        assert stream([text[:i], text[i:j], text[j:]]) == expected, (i, j)


def test_restore_stream_one_character_at_a_time() -> None:
    assert stream(list(ANSWER)) == RESTORED
    assert stream(["", ANSWER, ""]) == RESTORED


def test_restore_stream_holds_back_only_a_possible_placeholder_start() -> None:
    restorer = PlaceholderRestorer(PLACEHOLDERS)
    assert restorer.feed("Hello [EM") == "Hello "
    assert restorer.feed("AIL_1") == ""  # still a prefix of [EMAIL_1] and [EMAIL_12]
    assert restorer.feed("] done [") == "maria@example.com done "
    assert restorer.feed("x] [EMAIL_9") == "[x] [EMAIL_9"  # cannot be a placeholder: sent
    assert restorer.feed(" [SECRET_") == " "
    assert restorer.flush() == "[SECRET_"
    assert restorer.flush() == ""
    long = "[" + "E" * 40
    assert restorer.feed(long) == long


def test_restore_stream_without_placeholders_is_a_pass_through() -> None:
    restorer = PlaceholderRestorer({})
    assert restorer.feed("[EMAIL_") == "[EMAIL_" and restorer.flush() == ""


# --- size and hostile inputs -----------------------------------------------------------


def test_one_megabyte_conversation() -> None:
    unit = (
        "Here is some ordinary prose about keyboards, tokenizers and version 1.2.3 of a "
        "library, with numbers like 2024-05-14, 1,200 and 3.5 percent. Contact me at "
        "maria@example.com or 555-123-4567; card 4111 1111 1111 1111; "
        f"api_key = '{OPENAI}'.\n"
    )
    count = 1_000_000 // len(unit) + 1
    text = unit * count
    summary = summarize(SCANNER.scan_text(text))
    assert summary.by_detector == {
        "card": count,
        "email": count,
        "openai_key": count,
        "phone": count,
    }


def plain_id(text: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in "@+-=.()") else "_" for c in text[:12])


@pytest.mark.parametrize(
    "text",
    [
        "1" * 1_000_000,
        "1 " * 500_000,
        "1-" * 500_000,
        "1." * 500_000,
        "+1 " * 330_000,
        "(555) " * 160_000,
        "a" * 1_000_000,
        "x" * 1_000_000,
        "@" * 1_000_000,
        "a@" * 500_000,
        "a.b" * 330_000 + "@",
        ":" * 1_000_000,
        "a:" * 500_000,
        "f:" * 500_000,
        "://" * 330_000,
        "a://b:c" * 140_000,
        "-----BEGIN " * 90_000,
        "-----BEGIN PRIVATE KEY-----\n" + "A" * 1_000_000,
        "-----BEGIN PRIVATE KEY-----\n" * 35_000,
        "sk-" * 330_000,
        "sk-" + "a1" * 500_000,
        "eyJ" + "a" * 1_000_000,
        "AA00 " * 200_000,
        "DE89" * 250_000,
        "password=" * 110_000,
        "password" * 125_000,
        "api_key=" + "a1" * 500_000,
        "a" * 1_000_000 + "@example.com",
        'password: "' * 90_000,
        "key " * 250_000,
        "aws " * 250_000 + AWS_SECRET,
        "\\n" * 500_000,
        "é" * 1_000_000,
    ],
    # Plain ids: with "::", quotes or backslashes `pytest FILE::TEST[ID]` (and mutmut, which
    # selects tests that way) cannot name the test.
    ids=plain_id,
)
def test_hostile_megabyte_inputs_finish(text: str) -> None:
    findings = SCANNER.scan_text(text)
    assert all(0 <= f.start < f.end <= len(text) for f in findings)


def test_restore_of_a_megabyte_of_brackets() -> None:
    restorer = PlaceholderRestorer(PLACEHOLDERS)
    text = "[EMAIL_" * 150_000
    out = "".join(restorer.feed(text[i : i + 1000]) for i in range(0, len(text), 1000))
    assert out + restorer.flush() == text


# --- edges the mutation run (mutmut) showed untested ----------------------------------


def test_a_detector_name_becomes_a_tidy_placeholder_label() -> None:
    scanner = PrivacyScanner(custom=[PrivacyDetectorSpec("x_ray__scan_", r"XR-\d+", "internal")])
    body = chat("scan XR-7 now")
    texts = texts_of("chat", body)
    redacted = redact(body, texts, scanner.scan(texts)).body["messages"][0]["content"]
    assert redacted == "scan [X_RAY_SCAN_1] now"


def test_redact_keeps_every_text_in_order_with_its_place() -> None:
    body = chat("nothing here", "mail a@b.io", "plain again", "and c@d.io")
    texts = texts_of("chat", body)
    redaction = redact(body, texts, SCANNER.scan(texts))
    assert [(t.at, t.text) for t in redaction.texts] == [
        (("messages", 0, "content"), "nothing here"),
        (("messages", 1, "content"), "mail [EMAIL_1]"),
        (("messages", 2, "content"), "plain again"),
        (("messages", 3, "content"), "and [EMAIL_2]"),
        (("tools", 0, "function", "description"), "plain"),
    ]
    assert [m["content"] for m in redaction.body["messages"]] == [
        "nothing here", "mail [EMAIL_1]", "plain again", "and [EMAIL_2]",
    ]  # fmt: skip
    unchanged = redact(body, texts, [])
    assert unchanged.texts == texts and unchanged.body == body


def test_redact_takes_the_first_and_longest_of_overlapping_findings() -> None:
    """Findings from two scans may overlap: the earliest, then longest, value is replaced and
    whatever overlaps it is skipped; the findings after it still are replaced."""
    text = "ids EMP-123456 and EMP-99, mail a@b.io"
    ref = TextRef(("messages", 0, "content"), text)
    body = {"messages": [{"role": "user", "content": text}]}

    def finding(detector: str, value: str) -> Finding:
        start = text.index(value)
        return Finding(detector, "pii", start, start + len(value), ref)

    findings = [
        finding("short_id", "EMP-12"),
        finding("employee_id", "EMP-123456"),
        finding("tail", "3456"),
        finding("employee_id", "EMP-99"),
        finding("email", "a@b.io"),
        Finding("email", "pii", 0, 0, ref),  # an empty span is no value
        Finding("email", "pii", 30, len(text) + 5, ref),  # a span past the text: not this one
    ]
    redaction = redact(body, [ref], findings)
    assert redaction.texts[0].text == "ids [EMPLOYEE_ID_1] and [EMPLOYEE_ID_2], mail [EMAIL_1]"
    assert redaction.placeholders == {
        "[EMPLOYEE_ID_1]": "EMP-123456", "[EMPLOYEE_ID_2]": "EMP-99", "[EMAIL_1]": "a@b.io",
    }  # fmt: skip


def test_restore_json_leaves_unknown_placeholders() -> None:
    restorer = PlaceholderRestorer(PLACEHOLDERS)
    assert restorer.restore_json('["[EMAIL_9]", "[SECRET_1]"]') == '["[EMAIL_9]", "p\\"w\\\\d"]'
    assert PlaceholderRestorer({}).restore_json('["[EMAIL_1]"]') == '["[EMAIL_1]"]'


def test_an_invalid_custom_name_says_what_a_name_is() -> None:
    with pytest.raises(ValueError) as raised:
        PrivacyScanner(custom=[PrivacyDetectorSpec("9lives", r"x", "pii")])
    assert str(raised.value) == (
        "privacy detector '9lives': the name must be letters, digits and underscores, "
        "starting with a letter"
    )


@pytest.mark.parametrize(
    "email",
    ["maría@example.com", "éa@example.com", "josé.maría@example.com", "zoë_a@ex.io"],
    ids=["maria", "ea", "jose.maria", "zoe_a"],  # ascii ids: mutmut selects tests by id
)
def test_non_ascii_local_parts_at_the_start_of_a_text(email: str) -> None:
    assert found(email) == [("email", email)]
    assert found(f"write to {email} today") == [("email", email)]


def test_an_assignment_value_followed_by_a_non_letter_is_not_prose() -> None:
    assert found("The password: letmein (changed monthly)") == [("secret_assignment", "letmein")]
    assert found("Secret: sauce A, then more") == []  # a word, a space, a letter: prose


def test_an_ipv4_address_may_end_in_255() -> None:
    assert found("host 10.1.2.255 down") == [("ipv4", "10.1.2.255")]
    assert found("host 10.255.2.1 down") == [("ipv4", "10.255.2.1")]
    assert found("host 10.256.2.1 down") == []


@pytest.mark.parametrize(
    "header", ['{"alg":"none"}', '{"alg":"HS2"}', '{"alg":"RS256"}', '{"alg":"HS256","k":12}']
)
def test_jwt_headers_of_every_padding(header: str) -> None:
    segment = base64.urlsafe_b64encode(header.encode()).decode().rstrip("=")
    token = f"{segment}.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
    assert jwt_ok(token) and jwt_ok(segment)
    assert_finds("jwt", token)


def test_a_jwt_header_that_is_not_base64_is_no_jwt() -> None:
    assert not jwt_ok(JWT_HEADER + "a.eyJzdWIiOiIxIn0.c2ln")  # 37 characters: no base64
    assert found(f"see {JWT_HEADER}a.eyJzdWIiOiIxIn0.c2ln now") == []


def test_iban_ok_checks_the_country_length_itself() -> None:
    assert iban_ok("DE89370400440532013000")
    assert not iban_ok("DE8937040044053201300")  # one short
    assert not iban_ok("DE893704004405320130000")  # one long
    assert not iban_ok("ZZ89370400440532013000")  # no such country


def test_translation_tables() -> None:
    """`_table` builds the detectors' translation tables (at import, so tested directly)."""
    identity = _table(None, (b"ab", ord("x")), (b"9", ord("0")))
    assert b"abc9!".translate(identity) == b"xxc0!"
    assert len(identity) == 256
    flat = _table(ord(" "), (b"ab", ord("x")))
    assert b"abc9!".translate(flat) == b"xx   "
    assert bytes(range(256)).translate(_table(None)) == bytes(range(256))


def test_string_parts_refusal_parts_and_string_items_are_texts() -> None:
    body = {
        "messages": [
            {"role": "user", "content": ["first", {"type": "text", "text": "second"}]},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "I cannot"}]},
        ]
    }
    assert paths("chat", body) == [
        ("messages[0].content[0]", "first"),
        ("messages[0].content[1].text", "second"),
        ("messages[1].content[0].refusal", "I cannot"),
    ]
    items = {"input": ["plain string", {"role": "user", "content": "x"}]}
    assert paths("responses", items) == [("input[0]", "plain string"), ("input[1].content", "x")]


def chain_of(levels: int, key: str) -> Any:
    """A description `levels` schema levels down: `properties` objects or `anyOf` lists."""
    node: Any = {"description": "bottom"}
    for _ in range(levels):
        node = {"properties": {"x": node}} if key == "properties" else {"anyOf": [node]}
    return node


@pytest.mark.parametrize("key", ["properties", "anyOf"])
def test_schemas_are_walked_32_steps_deep(key: str) -> None:
    """Each level is two steps (an object and its member, or a list and its item)."""
    for levels, seen in ((16, ["bottom"]), (17, [])):
        body = {"tools": [{"function": {"parameters": chain_of(levels, key)}}]}
        assert [t.text for t in texts_of("chat", body)] == seen, levels


def test_strange_messages_and_tools_are_skipped_not_the_rest() -> None:
    body = {
        "messages": [None, {"content": "hi", "name": "maria"}],
        "tools": [None, {"type": "function", "function": {"description": "does f"}}],
    }
    assert paths("chat", body) == [
        ("messages[1].content", "hi"),
        ("messages[1].name", "maria"),  # two fields, but not role and content
        ("tools[1].function.description", "does f"),
    ]


def test_embeddings_read_only_their_input() -> None:
    body = {"input": "x", "instructions": "y", "tools": [{"description": "z"}], "prompt": "p"}
    assert paths("embeddings", body) == [("input", "x")]


@pytest.mark.parametrize(
    "text",
    [
        "mail a@b.io or visit https://example.com",
        "https://x.example/" + "a" * 300 + "?u=a@b.io",  # the scheme is too far back
    ],
)
def test_an_address_outside_a_url_is_an_email(text: str) -> None:
    assert found(text) == [("email", "a@b.io")]


@pytest.mark.parametrize(
    "text",
    [
        "postgres://user:password@db.example.com/app is down",
        "://user:password@host.io",
        "see https://a.io then ftp://user:password@host.io",  # the nearest scheme
        "https://user@example.com/ and more",
    ],
)
def test_user_info_in_a_url_is_no_email(text: str) -> None:
    assert "email" not in {d for d, _ in found(text)}, found(text)


@pytest.mark.parametrize(
    "text", ["ZZ89370400440532013000", "DE88370400440532013000", "DE89 3704 0044 0532 0130 0"]
)
def test_invalid_ibans_at_the_start_of_a_text(text: str) -> None:
    assert found(text + " rest") == []


def test_card_lengths_are_the_issuers() -> None:
    assert luhn_ok("41111111111114")
    assert found("number 41111111111114 end") == []  # Visa has 13, 16 or 19 digits
    assert not card_ok("41111111111114")


def test_phone_lengths() -> None:
    assert_finds("phone", "+491511234567890", before="call ", after=" today")  # 15 digits
    assert found("call +4915112345678901 today") == []  # 16
    assert found("call 2-800-555-0199 today") == []  # 11 digits need a leading 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"secret key: {AWS_SECRET}", True),  # `secret` alone is context enough
        (f"aws blob {AWS_SECRET}", True),  # `aws` alone too
        (f"aws {AWS_SECRET}", True),  # context at the very start of the text
        (f"{AWS_SECRET} is our aws key", False),  # context must come before
        ("aws " + "x " * 60 + AWS_SECRET, False),  # more than 120 characters before
        ("secret " + "x " * 60 + AWS_SECRET, False),
        (f"{AWS_SECRET} is a secret", False),
        (f"aws blob {AWS_SECRET}= more", False),  # base64 padding: a longer value
    ],
)
def test_aws_secret_key_context(text: str, expected: bool) -> None:
    assert (("aws_secret_key", AWS_SECRET) in found(text)) is expected, found(text)


def test_keyword_lists_with_duplicates_phrases_and_non_ascii_words() -> None:
    scanner = PrivacyScanner(
        keywords=["zeta", "zeta", "contraseña", "omega", "número secreto", "top secret plan"]
    )
    text = "zeta; CONTRASEÑA; omega; número \n secreto; Top  secret\tPlan"
    assert keywords(text, scanner) == [
        "zeta", "CONTRASEÑA", "omega", "número \n secreto", "Top  secret\tPlan",
    ]  # fmt: skip


def test_flush_after_a_chunk_with_nothing_held_back_is_empty() -> None:
    restorer = PlaceholderRestorer(PLACEHOLDERS)
    assert restorer.feed("no brackets here") == "no brackets here"
    assert restorer.flush() == ""


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("2001:db8::1 is the host", "2001:db8::1"),  # at the very start
        ("fe80::1 and cafe", "fe80::1"),  # the text ends in hex letters
        ("x" * 50 + " 2001:db8::1 is down", "2001:db8::1"),  # far into a text
        ("host 123:4::1 down", "123:4::1"),  # a group of three
        ("the host is 2001:db8::1.", "2001:db8::1"),  # the sentence's full stop
        ("host 2001:db8::8a2e:370:7334: down", "2001:db8::8a2e:370:7334"),  # a colon after
    ],
)
def test_ipv6_anywhere_in_a_text(text: str, address: str) -> None:
    assert found(text) == [("ipv6", address)]


GITHUB_PAT_50 = "github" + "_pat_" + ("a1b2c3d4e5" * 4)[:39]
GH_BODY = "A1b2C3d4E5" * 26


@pytest.mark.parametrize(
    ("text", "detector"),
    [
        ("sk-" + "a1b2c3d4e5f6g7h8i9j0", "openai_key"),  # a 20-character body
        ("sk-" + "a1b2c3d4e5f6g7h8i9j", None),  # 19
        ("sk-" + "ant-" + "a1b2c3d4e5f6g7h8i9j0", "anthropic_key"),
        ("sk-" + "ant-" + "a1b2c3d4e5f6g7h8i9j", None),
        (GITHUB_PAT_50, "github_token"),  # 50 characters
        (GITHUB_PAT_50[:-1], None),
        ("github" + "_pat_" + "a1" * 10, None),
        ("github" + "_pat_" + "x" * 45, None),  # long, but not random
        ("github" + "_pat_" + "Z" + "a1b2c3d" * 6, "github_token"),  # 8 distinct with the Z
        ("gh" + "p_" + GH_BODY[:251], "github_token"),  # a 251-character body
        ("gh" + "p_" + GH_BODY[:252], None),
        ("gl" + "pat-" + "abcdefghijkl", None),
        ("gl" + "pat-" + "abcdefghij" * 3, None),
        ("gl" + "pat-" + "Z" + "a1b2c3d" * 3, "gitlab_token"),
        ("xox" + "b-" + "1abcdefghij", "slack_token"),  # the digit right after the prefix
    ],
)
def test_token_lengths_and_bodies(text: str, detector: str | None) -> None:
    assert found(f"use {text} here") == ([(detector, text)] if detector else [])


@pytest.mark.parametrize("text", ["4111 1111-1111 1111", "41111 1111 1111 111", "4111111111111112"])
def test_card_near_misses_at_the_start_of_a_text(text: str) -> None:
    assert found(text + " rest") == []


def custom(*patterns: str) -> PrivacyScanner:
    """Custom detectors d0, d1, ... ranked in that order (each above the built-in ones)."""
    return PrivacyScanner(
        custom=[PrivacyDetectorSpec(f"d{i}", p, "x") for i, p in enumerate(patterns)]
    )


def test_overlaps_go_to_the_better_rank_then_whatever_fits_beside() -> None:
    assert found("abcd", custom("bcd", "abc")) == [("d0", "bcd")]
    # d2 overlaps both kept hits; d3 fits exactly between them, touching each
    got = found("abcdefghi", custom("abc", "ghi", "cdefg", "def"))
    assert got == [("d0", "abc"), ("d3", "def"), ("d1", "ghi")]


def test_a_pem_without_footer_in_the_last_of_several_texts() -> None:
    head = "-----BEGIN PRIVATE KEY-----"
    texts = [TextRef(("a",), "first text"), TextRef(("b",), f"{head}\n{PEM_BODY}and prose")]
    [finding] = [f for f in SCANNER.scan(texts) if f.category != "keyword"]
    assert (finding.detector, finding.value) == ("private_key", f"{head}\n{PEM_BODY.rstrip()}")


def test_a_keyword_right_after_a_finding_is_still_a_keyword() -> None:
    assert keywords(PEM + "secret") == ["secret"]


@pytest.mark.parametrize(
    "text",
    [
        "api_key = 'your-api-key'",
        'password = "yourpassword1"',
        'password = "YourPassword"',
        'password = "<not set"',
        'password = "{unset"',
        'api_key = "${API_KEY"',
        'api_key = "sk-…"',
        "password: Bytes",  # a type
    ],
)
def test_more_placeholders_and_types(text: str) -> None:
    assert_misses("secret_assignment", text)


@pytest.mark.parametrize(
    "text",
    [
        "password=*** then password=hunter22",  # a placeholder first
        'password = "" then password=hunter22',
        "password policy, password=hunter22",  # no assignment first
        "Password: the best is long. password=hunter22",  # prose first
        "password=" + "a1" * 300 + " then password=hunter22",  # a value too long first
    ],
)
def test_a_skipped_assignment_does_not_hide_the_next(text: str) -> None:
    assert found(text) == [("secret_assignment", "hunter22")]


def test_assignments_sharing_a_name_end_and_short_values() -> None:
    got = found("secret_key=abc123xyz and api_key=def456xyz")
    assert got == [("secret_assignment", "abc123xyz"), ("secret_assignment", "def456xyz")]
    assert found("password=x9z") == [("secret_assignment", "x9z")]  # three characters


def test_an_overlap_reaching_past_a_later_hit_is_decided_together() -> None:
    scanner = custom("cdefghijkl", "ijk", "abc")
    assert found("x" * 30 + "abcdefghijklmnop", scanner) == [("d0", "cdefghijkl")]


def test_overlaps_between_other_findings_are_resolved() -> None:
    """An overlap (a key assigned to a name) between two findings still keeps only the key."""
    text = f"mail a@b.io, api_key={OPENAI} and c@d.io"
    assert found(text) == [("email", "a@b.io"), ("openai_key", OPENAI), ("email", "c@d.io")]


def test_json_tab_and_return_escapes_do_not_glue_to_an_address() -> None:
    arguments = orjson.dumps({"to": "\ta@b.io\rc@d.io"}).decode()
    assert "\\ta@b.io\\rc@d.io" in arguments
    assert found(arguments) == [("email", "a@b.io"), ("email", "c@d.io")]


@pytest.mark.parametrize("tail", ["/v1/models", "+extra"])
def test_a_key_ends_at_a_slash_or_plus(tail: str) -> None:
    """`/` and `+` are token characters only for AWS secret keys; other keys stop there."""
    assert_finds("openai_key", OPENAI, after=tail + " please")
    assert_finds("github_token", GITHUB, after=tail + " please")


def test_a_key_name_of_more_than_64_characters_is_not_one() -> None:
    name = "password_" + "a" * 50 + "_pwd"  # 63 characters from the stem `pass`
    assert found(name + "=hunter22") == [("secret_assignment", "hunter22")]
    assert found(name.replace("_pwd", "aa_pwd") + "=hunter22") == []


RSA_HEAD, RSA_FOOT = "-----BEGIN RSA PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----"
PKCS8 = f"-----BEGIN PRIVATE KEY-----\n{PEM_BODY}-----END PRIVATE KEY-----"


def test_every_private_key_of_a_text_is_found() -> None:
    assert found(f"first {PEM}\nsecond {PKCS8}\nthird {PEM} end") == [
        ("private_key", PEM), ("private_key", PKCS8), ("private_key", PEM),
    ]  # fmt: skip


def test_a_key_after_other_pem_blocks_is_found() -> None:
    certificate = f"-----BEGIN CERTIFICATE-----\n{PEM_BODY}-----END CERTIFICATE-----"
    assert found(f"the cert: {certificate}\nthe key: {PEM}") == [("private_key", PEM)]
    assert found(f"-----BEGIN {PEM}") == [("private_key", PEM)]  # a stray header just before


def test_a_key_without_footer_stops_at_the_next_header() -> None:
    """The footer of a later key of the same type is not taken for this key's footer."""
    cut = f"{RSA_HEAD}\n{PEM_BODY}"
    assert found(f"{cut}and\n{PEM}\n{PKCS8}") == [
        ("private_key", cut.rstrip()), ("private_key", PEM), ("private_key", PKCS8),
    ]  # fmt: skip
    assert found(f"{PEM}\n{cut}and prose") == [("private_key", PEM), ("private_key", cut.rstrip())]


def test_a_key_ends_at_its_first_footer() -> None:
    assert found(f"{PEM}\nagain {RSA_FOOT} end") == [("private_key", PEM)]


def test_a_connection_string_then_an_ipv6_address() -> None:
    text = "db postgres://admin:hunter22@db.local then host fe80::1 and 2001:db8::1"
    assert found(text) == [
        ("connection_string", "hunter22"), ("ipv6", "fe80::1"), ("ipv6", "2001:db8::1"),
    ]  # fmt: skip


def test_a_key_without_footer_stops_at_the_end_of_its_text() -> None:
    cut = f"{RSA_HEAD}\n{PEM_BODY}"
    texts = [
        TextRef(("a",), cut),
        TextRef(("b",), f"{RSA_FOOT} is a footer"),
        TextRef(("c",), PKCS8),
    ]
    got = [(f.path, f.detector, f.value) for f in SCANNER.scan(texts) if f.category != "keyword"]
    assert got == [("a", "private_key", cut.rstrip()), ("c", "private_key", PKCS8)]


def test_a_local_part_of_more_than_64_non_ascii_letters_is_not_an_email() -> None:
    """Non-ASCII letters extend a local part past the ASCII match: still at most 64."""
    assert found(" " + "é" * 63 + "a@b.io") == [("email", "é" * 63 + "a@b.io")]
    assert found(" " + "é" * 64 + "a@b.io") == []
    assert found(" " + "é" * 70 + "a@b.io") == []


def test_an_at_sign_with_no_local_part_does_not_end_the_search() -> None:
    assert found("reply to @example.com or a@b.io") == [("email", "a@b.io")]


def test_a_version_word_at_the_start_of_a_text() -> None:
    assert found("ver 1.2.3.4 is out") == []
    assert found("v 1.2.3.4") == []


def test_a_phrase_keyword_after_a_partial_match() -> None:
    assert keywords("social media and social security") == ["social security"]


def test_a_keyword_after_a_non_ascii_letter_is_inside_a_word() -> None:
    assert keywords("mot ésecret and secret") == ["secret"]
    assert keywords("éx y x", PrivacyScanner(keywords=["x"])) == ["x"]


def test_a_keyword_starting_inside_a_finding_says_nothing_more() -> None:
    """Only a keyword that starts inside a finding is dropped, not one that ends there."""
    scanner = PrivacyScanner(custom=[PrivacyDetectorSpec("ref", r"ey-\d+|XR-\d+ \w", "x")])
    got = [(f.detector, f.value) for f in scanner.scan_text("key-123 and XR-7 secret")]
    assert got == [("keyword", "key"), ("ref", "ey-123"), ("ref", "XR-7 s")]
