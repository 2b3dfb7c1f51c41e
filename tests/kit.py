"""Shared test kit: a fixed clock, one signing key per example organisation, and helpers
to build, sign and open envelopes exactly as a sender and the hub would."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cache

from lxml import etree

from hub.envelope import examples as ex
from hub.envelope import model as m
from hub.envelope.builder import build_envelope, to_bytes
from hub.inbound.opening import OpenedEnvelope, open_envelope
from hub.safexml import parse
from hub.signing.keys import KeyPair, generate_key, self_signed_certificate
from hub.signing.signer import Signer
from hub.signing.truststore import TrustStore, trusted
from hub.signing.verifier import Verifier

CREATED = ex.EXAMPLES_CREATED
NOW = CREATED + timedelta(hours=1)
"""The tests' clock: one hour after the examples were created."""

ORGANISATIONS = (ex.FINANCE, ex.SOCIAL, ex.CITY, ex.INTEGRATOR)


@cache
def key_pair(name: str, kind: str = "ec", *, start: datetime | None = None, days: int = 730) -> KeyPair:
    """A key pair, cached per arguments so that the suite creates each key once."""
    key = generate_key(kind)
    begin = start or (CREATED - timedelta(days=30))
    return KeyPair(key, self_signed_certificate(key, name, not_before=begin, days=days))


@dataclass(frozen=True)
class Keyring:
    """The example organisations' keys and the trust store that registers them."""

    pairs: dict[str, KeyPair]
    trust: TrustStore

    def verifier(self, backend: str = "fast") -> Verifier:
        return Verifier(self.trust, backend=backend)  # type: ignore[arg-type]

    def sign_root(self, root: etree._Element, organisation: str | None = None) -> bytes:
        org = organisation or root.findtext(
            f"{{{m.ENVELOPE_NS}}}Header/{{{m.ENVELOPE_NS}}}Sender/{{{m.TYPES_NS}}}OrganizationId"
        )
        return to_bytes(Signer(self.pairs[org]).sign(root))

    def sign(self, envelope: m.Envelope, organisation: str | None = None) -> bytes:
        return self.sign_root(build_envelope(envelope), organisation)

    def open(self, data: bytes, *, now: datetime = NOW, backend: str = "fast", **kwargs: object) -> OpenedEnvelope:
        return open_envelope(data, verifier=self.verifier(backend), now=now, **kwargs)  # type: ignore[arg-type]


@cache
def keyring(kind: str = "ec") -> Keyring:
    pairs = {org: key_pair(f"org-{org}", kind) for org in ORGANISATIONS}
    return Keyring(pairs, TrustStore(trusted(org, pair.certificate) for org, pair in pairs.items()))


def example(kind: str = "citizen-letter") -> m.Envelope:
    return ex.example(kind, created=CREATED)


def unsigned(kind: str = "citizen-letter") -> bytes:
    return to_bytes(build_envelope(example(kind)))


def tree(data: bytes) -> etree._Element:
    return parse(data)


__all__ = ["CREATED", "NOW", "UTC", "Keyring", "example", "key_pair", "keyring", "replace", "tree", "unsigned"]


# --- a running hub for door tests ----------------------------------------------------------

TOKENS = {ex.FINANCE: "token-finance", ex.SOCIAL: "token-social", ex.CITY: "token-city", ex.INTEGRATOR: "token-int"}


def directory(ring: Keyring | None = None, *, environment: str = "PROD"):  # type: ignore[no-untyped-def]
    """The example organisations as a sender directory: what config/senders.yaml would say."""
    import hashlib

    from hub.envelope.rules import MessageTypePolicy
    from hub.inbound.senders import Institution, Integrator, SenderDirectory

    ring = ring or keyring()
    certs = {org: (trusted(org, pair.certificate),) for org, pair in ring.pairs.items()}
    tokens = {org: frozenset({hashlib.sha256(t.encode()).hexdigest()}) for org, t in TOKENS.items()}
    types = {
        ex.FINANCE: ("tax-on-web", ["GENERAL_INFORMATION", "TAX_ASSESSMENT"]),
        ex.SOCIAL: ("pension-statements inspection employer-declarations", ["PENSION_STATEMENT", "FORMAL_NOTICE",
                                                                             "EMPLOYER_NOTICE"]),
        ex.CITY: ("population citizen-portal", ["INFORMATION_REQUEST", "PARKING_PERMIT"]),
    }
    institutions = {
        org: Institution(
            id=org,
            name=f"institution {org}",
            environment=environment,
            applications=frozenset(apps.split()),
            message_types={t: MessageTypePolicy() for t in names},
            certificates=certs[org],
            token_hashes=tokens[org],
        )
        for org, (apps, names) in types.items()
    }
    integrators = {
        ex.INTEGRATOR: Integrator(
            id=ex.INTEGRATOR, name="integrator", mandates=frozenset({ex.CITY}), certificates=certs[ex.INTEGRATOR],
            token_hashes=tokens[ex.INTEGRATOR],
        )
    }
    return SenderDirectory(institutions, integrators)
