"""The hub's one exception tree.

    HubError
     ├── Rejected      bad input: the sender (or provider) must change what it sends.
     │                 Carries a stable machine ``code`` and a human ``message`` saying where
     │                 (line, element path) and what to do. The same on every door.
     ├── Unavailable   a dependency is down; the same request may succeed later.
     └── ConfigError   a configuration or key file is wrong; the hub refuses to start.

Foreign exceptions (lxml, signxml, cryptography, ...) are translated into these at the
edge of the module that calls the library (``raise Rejected(...) from exc``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorCode(StrEnum):
    """Stable refusal codes. Their values are a contract: never rename one."""

    # XML intake
    XML_MALFORMED = "XML_MALFORMED"
    XML_FORBIDDEN = "XML_FORBIDDEN"
    TOO_LARGE = "TOO_LARGE"
    # Schema
    SCHEMA_INVALID = "SCHEMA_INVALID"
    # Signature
    SIGNATURE_MISSING = "SIGNATURE_MISSING"
    SIGNATURE_INVALID = "SIGNATURE_INVALID"
    SIGNATURE_SCOPE = "SIGNATURE_SCOPE"
    SIGNATURE_ALGORITHM = "SIGNATURE_ALGORITHM"
    CERT_EXPIRED = "CERT_EXPIRED"
    CERT_NOT_YET_VALID = "CERT_NOT_YET_VALID"
    UNKNOWN_SIGNER = "UNKNOWN_SIGNER"
    # Business rules
    SSIN_INVALID = "SSIN_INVALID"
    CBE_INVALID = "CBE_INVALID"
    IBAN_INVALID = "IBAN_INVALID"
    BIC_INVALID = "BIC_INVALID"
    REFERENCE_INVALID = "REFERENCE_INVALID"
    EXPIRY_OUT_OF_RANGE = "EXPIRY_OUT_OF_RANGE"
    DATE_INCONSISTENT = "DATE_INCONSISTENT"
    DIGEST_MISMATCH = "DIGEST_MISMATCH"
    SIZE_MISMATCH = "SIZE_MISMATCH"
    MEDIA_TYPE_MISMATCH = "MEDIA_TYPE_MISMATCH"
    LANGUAGE_DUPLICATE = "LANGUAGE_DUPLICATE"
    LANGUAGE_MISSING = "LANGUAGE_MISSING"
    MAIN_CONTENT_MISSING = "MAIN_CONTENT_MISSING"
    REPLY_OPTIONS_INVALID = "REPLY_OPTIONS_INVALID"
    UNKNOWN_MESSAGE_TYPE = "UNKNOWN_MESSAGE_TYPE"
    # Authorisation and intake
    INVALID_SENDER = "INVALID_SENDER"
    NOT_AUTHORISED = "NOT_AUTHORISED"
    ENVIRONMENT_MISMATCH = "ENVIRONMENT_MISMATCH"
    DUPLICATE_MESSAGE_ID = "DUPLICATE_MESSAGE_ID"
    CONTENT_TYPE_INVALID = "CONTENT_TYPE_INVALID"
    MESSAGE_NOT_FOUND = "MESSAGE_NOT_FOUND"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
    CSRF_INVALID = "CSRF_INVALID"
    # Acknowledgements and replies (from providers)
    ACK_EVENT_NOT_ALLOWED = "ACK_EVENT_NOT_ALLOWED"
    ACK_UNKNOWN_DELIVERY = "ACK_UNKNOWN_DELIVERY"
    ACK_NOT_YOURS = "ACK_NOT_YOURS"
    REPLY_ALREADY_GIVEN = "REPLY_ALREADY_GIVEN"
    REPLY_NOT_ALLOWED = "REPLY_NOT_ALLOWED"
    # A claim-checked envelope asked for after retention removed it (HTTP 410)
    CONTENT_EXPIRED = "CONTENT_EXPIRED"
    # Outbound pushes (webhooks): the receiver refused a push for good (a 4xx other than 408, 425, 429)
    PUSH_REFUSED = "PUSH_REFUSED"
    # Not a refusal of the input: the hub cannot serve now (HTTP 503); retry later.
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"


class HubError(Exception):
    """Base of every error the hub raises on purpose."""


@dataclass(frozen=True)
class Violation:
    """One broken rule: the code, what is wrong and what to do, and where."""

    code: ErrorCode
    message: str
    path: str | None = None
    """Element path inside the document, e.g. ``/PublishMessage/Header/Recipient/Citizen/SSIN``."""
    line: int | None = None
    """1-based line in the document as received, when known."""

    def located(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.path:
            where.append(self.path)
        return f"{', '.join(where)}: {self.message}" if where else self.message

    def __str__(self) -> str:
        return f"{self.code}: {self.located()}"


class Rejected(HubError):
    """The input is refused. ``violations[0]`` is the reason; others may follow."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        more: tuple[Violation, ...] = (),
    ) -> None:
        self.violations: tuple[Violation, ...] = (Violation(code, message, path, line), *more)
        super().__init__(str(self.violations[0]))

    @classmethod
    def of(cls, violations: list[Violation] | tuple[Violation, ...]) -> Rejected:
        first, *rest = violations
        return cls(first.code, first.message, path=first.path, line=first.line, more=tuple(rest))

    @property
    def code(self) -> ErrorCode:
        return self.violations[0].code

    @property
    def message(self) -> str:
        return self.violations[0].located()


class Unavailable(HubError):
    """A dependency (database, broker, key store) cannot be reached; retry later."""


class ConfigError(HubError):
    """A configuration or key file is unusable; names the file and, when known, the line."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None) -> None:
        self.file, self.line = file, line
        where = file if line is None else f"{file}:{line}"
        super().__init__(f"{where}: {message}" if where else message)
