"""Privacy: find secrets, personal data and sensitive words in a request, redact and restore.

Pure Python, no I/O. Build one `PrivacyScanner` at start (it compiles everything once),
then per request: `texts_of(endpoint, body)` → `scanner.scan(texts)` → findings, and if
the policy says so `redact(body, texts, findings)` and a `PlaceholderRestorer` for the
answer. `summarize(findings)` is what logs and headers may carry: never a value.
"""

from gateway.privacy.redact import PlaceholderRestorer, Redaction, label_of, redact
from gateway.privacy.scanner import (
    BUILTIN_DETECTORS,
    DEFAULT_KEYWORDS,
    Finding,
    PrivacyDetectorSpec,
    PrivacyScanner,
    PrivacySummary,
    summarize,
)
from gateway.privacy.texts import ENDPOINTS, TextRef, format_path, texts_of

__all__ = [
    "BUILTIN_DETECTORS",
    "DEFAULT_KEYWORDS",
    "ENDPOINTS",
    "Finding",
    "PlaceholderRestorer",
    "PrivacyDetectorSpec",
    "PrivacyScanner",
    "PrivacySummary",
    "Redaction",
    "TextRef",
    "format_path",
    "label_of",
    "redact",
    "summarize",
    "texts_of",
]
