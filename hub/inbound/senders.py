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
from datetime import datetime
from pathlib import Path

from hub.configfile import Section, load_yaml
from hub.envelope.identifiers import is_valid_cbe
from hub.envelope.rules import MessageTypePolicy
from hub.errors import ConfigError
from hub.signing.keys import load_certificates
from hub.signing.truststore import TrustedCertificate, TrustStore, trusted

ACK_CHANNELS = ("amqp", "webhook", "polling")


@dataclass(frozen=True, kw_only=True)
class AckChannel:
    kind: str = "polling"
    url: str | None = None
    """The webhook URL when ``kind`` is ``webhook``."""


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
    value = section.get(key, (str, datetime))
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise section.error("must be an ISO 8601 date-time", key) from None


def _certificates(section: Section, party: str, base: Path) -> tuple[TrustedCertificate, ...]:
    result = []
    for entry in section.sections("certificates"):
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


def _cbe(section: Section, key: str = "id") -> str:
    value = str(section.get(key, (str, int), required=True))
    if not is_valid_cbe(value):
        raise section.error(f"{value!r} is not a valid enterprise (CBE) number: 10 digits, check digits mod 97", key)
    return value


def _acks(section: Section) -> AckChannel:
    acks = section.section("acknowledgements")
    kind = acks.get("channel", str, "polling")
    if kind not in ACK_CHANNELS:
        raise acks.error(f"must be one of {', '.join(ACK_CHANNELS)}", "channel")
    url = acks.get("url", str)
    if kind == "webhook" and not (url and url.startswith("https://")):
        raise acks.error("a webhook needs an https:// url", "url")
    acks.finish()
    return AckChannel(kind=kind, url=url)


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
    )
    section.finish()
    if not 0 <= policy.min_retention_months <= policy.default_retention_months <= policy.max_retention_months:
        raise section.error("retention must satisfy min <= default <= max (months)")
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
    base = path.parent
    institutions: dict[str, Institution] = {}
    for entry in top.sections("institutions"):
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
        institutions[ident] = Institution(
            id=ident,
            name=entry.get("name", str, required=True),
            environment=environment,
            applications=frozenset(applications),
            message_types=types,
            certificates=_certificates(entry, ident, base),
            acknowledgements=_acks(entry),
            logo_url=entry.get("logo_url", str),
            contact={k: str(v) for k, v in entry.get("contact", dict, {}).items()},
            token_hashes=_tokens(entry),
        )
        entry.finish()
    integrators: dict[str, Integrator] = {}
    for entry in top.sections("integrators"):
        ident = _cbe(entry)
        if ident in integrators or ident in institutions:
            raise entry.error(f"{ident} is listed twice", "id")
        mandates = entry.get("mandates", list, [])
        for mandate in mandates:
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
