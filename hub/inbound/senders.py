"""Who may send: institutions and integrators from ``config/senders.yaml``.

An institution (CBE number) has applications, certificates, the message types it may
send with their retention bounds, its environment (INT or PROD) and the channel on which
it wants acknowledgements. An integrator has certificates and mandates: the institutions
it may send for. See ``config/senders.yaml`` for an annotated example.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from hub.configfile import Section, load_yaml
from hub.envelope.identifiers import is_valid_cbe
from hub.envelope.rules import MessageTypePolicy
from hub.errors import ConfigError
from hub.signing.keys import KeyPair, load_certificates, load_key_pair
from hub.signing.truststore import TrustedCertificate, TrustStore, trusted

ACK_CHANNELS = ("amqp", "webhook", "polling")
MAX_BATCH = 10000
"""At most this many acknowledgements under one signature (``hub.outbound.acks.MAX_ITEMS``)."""
# Every key an entry may hold, refused otherwise before any is read (so a typo gets a "did you mean").
INSTITUTION_KEYS = (
    *("id", "name", "environment", "applications", "message_types", "certificates", "acknowledgements"),
    *("logo_url", "contact", "api_token_sha256", "may_replace", "self_service"),
)
INTEGRATOR_KEYS = ("id", "name", "mandates", "certificates", "acknowledgements", "api_token_sha256")
# Unquoted, YAML reads 0206731645 as the octal number 35369893: the digits written are lost.
_UNQUOTED = (
    'write enterprise (CBE) numbers in quotes ("0206731645"): unquoted, YAML reads a number '
    "that starts with 0 as octal (here {})"
)


@dataclass(frozen=True, kw_only=True)
class AckChannel:
    kind: str = "polling"
    url: str | None = None
    """The webhook URL when ``kind`` is ``webhook``."""
    batch: int = 1
    """Acknowledgements per signed document on ``amqp`` and ``webhook``: 1, one ``Acknowledgement``
    each; more, an ``Acknowledgements`` document of up to that many events under one signature
    (what was waiting: under load the sender gets fewer, larger messages, at less cost per event)."""


@dataclass(frozen=True, kw_only=True)
class SelfService:
    """How the web console's self-service page sends for an institution (``hub.web``): the hub signs the
    envelopes its users write with this key, whose certificate is one the institution has registered,
    under this application id; the envelopes then go through the same intake as any other."""

    application: str
    keys: KeyPair = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class Institution:
    id: str
    name: str
    environment: str = "PROD"
    applications: frozenset[str] = frozenset()
    message_types: Mapping[str, MessageTypePolicy] = field(default_factory=dict)
    certificates: tuple[TrustedCertificate, ...] = ()
    acknowledgements: AckChannel = AckChannel()
    logo_url: str | None = None
    contact: Mapping[str, str] = field(default_factory=dict)
    token_hashes: frozenset[str] = frozenset()
    """SHA-256 (hex) of the API tokens that read this institution's status and feeds."""
    may_replace: bool = False
    """Whether a message may be replaced: the e-Box SOAP door's publishEboxMessage with a Ticket/Sequence
    already used and other content publishes the new content and withdraws the earlier message
    (``hub.compat.ebox_soap``); without it, that is refused as a duplicate."""
    self_service: SelfService | None = None
    """Set: the institution's users may send from the web console (``hub.web``)."""


@dataclass(frozen=True, kw_only=True)
class Integrator:
    id: str
    name: str
    mandates: frozenset[str] = frozenset()
    certificates: tuple[TrustedCertificate, ...] = ()
    acknowledgements: AckChannel = AckChannel()
    token_hashes: frozenset[str] = frozenset()


@dataclass(frozen=True)
class SenderDirectory:
    institutions: Mapping[str, Institution]
    integrators: Mapping[str, Integrator]

    def acknowledgement_channels(self) -> dict[str, AckChannel]:
        """How each institution and integrator wants its acknowledgements, by id."""
        channels = {i.id: i.acknowledgements for i in self.institutions.values()}
        channels.update({i.id: i.acknowledgements for i in self.integrators.values()})
        return channels

    def party_for_token(self, token: str) -> str | None:
        """The institution or integrator an API token belongs to (tokens are stored hashed)."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        parties: list[Institution | Integrator] = [*self.institutions.values(), *self.integrators.values()]
        for party in parties:
            if any(hmac.compare_digest(digest, known) for known in party.token_hashes):
                return party.id
        return None

    def may_read(self, party: str, institution_id: str, submitter_id: str) -> bool:
        """A sender reads its own messages; an integrator those it submitted or holds a mandate for."""
        if party in (institution_id, submitter_id):
            return True
        integrator = self.integrators.get(party)
        return integrator is not None and institution_id in integrator.mandates

    def trust_store(self) -> TrustStore:
        return TrustStore(
            [c for i in self.institutions.values() for c in i.certificates]
            + [c for i in self.integrators.values() for c in i.certificates]
        )


def _when(section: Section, key: str) -> datetime | None:
    """A date or date-time, quoted or not (YAML reads ``2027-01-01`` as a date); UTC unless it says otherwise."""
    value = section.get(key, (str, date))
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise section.error(f"{value!r} is not an ISO 8601 date or date-time (e.g. 2027-01-31)", key) from None
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    # Certificates' windows are aware: a naive moment cannot be compared with them.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _certificates(section: Section, party: str, base: Path) -> tuple[TrustedCertificate, ...]:
    result = []
    for entry in section.sections("certificates"):
        entry.expect("file", "valid_from", "valid_until")
        name = entry.get("file", str, required=True)
        path = Path(name) if Path(name).is_absolute() else base / name
        valid_from, valid_until = _when(entry, "valid_from"), _when(entry, "valid_until")
        entry.finish()
        try:
            certificates = load_certificates(path)
        except ConfigError as exc:
            raise entry.error(f"certificate {name}: {exc}", "file") from exc
        for certificate in certificates:
            result.append(trusted(party, certificate, valid_from=valid_from, valid_until=valid_until, source=str(path)))
    return tuple(result)


def _self_service(
    section: Section, base: Path, applications: list[str], certificates: tuple[TrustedCertificate, ...]
) -> SelfService | None:
    """``self_service: {key, certificate, application}``: the key the hub signs web users' envelopes with."""
    if "self_service" not in section.data:
        return None
    entry = section.section("self_service")
    entry.expect("key", "certificate", "application")
    paths = {}
    for key in ("key", "certificate"):
        name = entry.get(key, str, required=True)
        paths[key] = Path(name) if Path(name).is_absolute() else base / name
    application = entry.get("application", str, applications[0] if applications else None)
    if application not in applications:
        raise entry.error(f"{application!r} is not one of this institution's applications", "application")
    entry.finish()
    try:
        keys = load_key_pair(paths["key"], paths["certificate"])
    except ConfigError as exc:
        raise entry.error(f"the self-service key: {exc}", "key") from exc
    if not any(c.certificate == keys.certificate for c in certificates):
        raise entry.error(
            "the self-service certificate must be one of this institution's certificates: "
            "the hub verifies the envelopes it signs for the institution like any other",
            "certificate",
        )
    return SelfService(application=application, keys=keys)


def _cbe(section: Section, key: str = "id") -> str:
    given = section.get(key, (str, int), required=True)
    value = str(given)
    if not is_valid_cbe(value):
        if isinstance(given, int) and len(value) != 10:
            problem = _UNQUOTED.format(given)
        elif len(value) == 10 and value.isascii() and value.isdigit() and value[0] in "01":
            problem = f"{value!r} is not a valid enterprise (CBE) number: its check digits (the last two) are wrong"
        else:
            problem = f"{value!r} is not an enterprise (CBE) number: 10 digits, starting with 0 or 1"
        raise section.error(problem, key)
    return value


def _acks(section: Section) -> AckChannel:
    acks = section.section("acknowledgements")
    acks.expect("channel", "url", "batch")
    kind = acks.get("channel", str, "polling")
    if kind not in ACK_CHANNELS:
        raise acks.error(f"must be one of {', '.join(ACK_CHANNELS)}", "channel")
    url = acks.get("url", str)
    if kind == "webhook" and not (url and url.startswith("https://")):
        raise acks.error("a webhook needs an https:// url", "url")
    batch = acks.get("batch", int, 1)
    if not 1 <= batch <= MAX_BATCH:
        raise acks.error(f"must be between 1 (one signed document per event) and {MAX_BATCH}, not {batch}", "batch")
    if batch > 1 and kind == "polling":
        raise acks.error("applies to amqp and webhook; polling reads GET /v1/acks, already in batches", "batch")
    acks.finish()
    return AckChannel(kind=kind, url=url, batch=batch)


def _days(section: Section, key: str) -> int | None:
    """A number of days the retention scheduler waits (0: never); None when not given (the hub's default)."""
    value = section.get(key, int)
    if value is not None and not 0 <= value <= 3650:
        raise section.error(f"must be a number of days between 0 (never) and 3650, not {value}", key)
    return value


def _policy(section: Section) -> MessageTypePolicy:
    defaults = MessageTypePolicy()
    minimum = section.get("min_retention_months", int, defaults.min_retention_months)
    maximum = section.get("max_retention_months", int, defaults.max_retention_months)
    policy = MessageTypePolicy(
        min_retention_months=minimum,
        max_retention_months=maximum,
        # Unless given, the default retention is the hub's default, within this type's bounds.
        default_retention_months=section.get(
            "default_retention_months", int, max(minimum, min(defaults.default_retention_months, maximum))
        ),
        unlimited_allowed=section.get("unlimited_allowed", bool, False),
        expiry_warning_days=_days(section, "expiry_warning_days"),
        reminder_days=_days(section, "reminder_days"),
    )
    section.finish()
    low, default, high = policy.min_retention_months, policy.default_retention_months, policy.max_retention_months
    if not 0 <= low <= default <= high:
        raise section.error(
            f"retention must satisfy 0 <= min <= default <= max (months), not min {low}, default {default}, max {high}"
        )
    return policy


def _tokens(section: Section) -> frozenset[str]:
    hashes = section.get("api_token_sha256", list, [])
    for value in hashes:
        if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
            raise section.error(
                "each entry must be the SHA-256 of a token, 64 lower-case hex digits (`hub keys token` makes one)",
                "api_token_sha256",
            )
    return frozenset(hashes)


def load_senders(path: Path) -> SenderDirectory:
    """Read ``senders.yaml``; raise ``ConfigError`` naming the file and line of any mistake."""
    top = load_yaml(path)
    top.expect("institutions", "integrators")
    base = path.parent
    institutions: dict[str, Institution] = {}
    for entry in top.sections("institutions"):
        entry.expect(*INSTITUTION_KEYS)
        ident = _cbe(entry)
        if ident in institutions:
            raise entry.error(f"institution {ident} is listed twice", "id")
        environment = entry.get("environment", str, "PROD")
        if environment not in ("INT", "PROD"):
            raise entry.error("must be INT or PROD", "environment")
        applications = entry.get("applications", list, [])
        if not applications or not all(isinstance(a, str) for a in applications):
            raise entry.error("list at least one application id", "applications")
        types = {name: _policy(section) for name, section in entry.section("message_types", required=True).items()}
        if not types:
            raise entry.error("list at least one message type", "message_types")
        certificates = _certificates(entry, ident, base)
        institutions[ident] = Institution(
            id=ident,
            name=entry.get("name", str, required=True),
            environment=environment,
            applications=frozenset(applications),
            message_types=types,
            certificates=certificates,
            acknowledgements=_acks(entry),
            logo_url=entry.get("logo_url", str),
            contact={k: str(v) for k, v in entry.get("contact", dict, {}).items()},
            token_hashes=_tokens(entry),
            may_replace=entry.get("may_replace", bool, False),
            self_service=_self_service(entry, base, applications, certificates),
        )
        entry.finish()
    integrators: dict[str, Integrator] = {}
    for entry in top.sections("integrators"):
        entry.expect(*INTEGRATOR_KEYS)
        ident = _cbe(entry)
        if ident in integrators or ident in institutions:
            raise entry.error(f"{ident} is listed twice", "id")
        mandates = entry.get("mandates", list, [])
        for mandate in mandates:
            if isinstance(mandate, int) and len(str(mandate)) != 10:
                raise entry.error(_UNQUOTED.format(mandate), "mandates")
            if str(mandate) not in institutions:
                raise entry.error(f"mandate for {mandate}, which is not a listed institution", "mandates")
        integrators[ident] = Integrator(
            id=ident,
            name=entry.get("name", str, required=True),
            mandates=frozenset(str(m) for m in mandates),
            certificates=_certificates(entry, ident, base),
            acknowledgements=_acks(entry),
            token_hashes=_tokens(entry),
        )
        entry.finish()
    top.finish()
    return SenderDirectory(institutions, integrators)
