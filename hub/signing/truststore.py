"""Who may sign what: each sender, integrator and provider mapped to its certificates.

A party may have several certificates with overlapping validity windows, so a key can
be rotated without a gap: register the new certificate, let both be valid for a while,
then end the old one's window (``valid_until``). A window never extends a certificate
beyond its own notBefore / notAfter.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from hub.errors import ErrorCode, Rejected
from hub.signing.keys import PublicKey, check_public_key


def fingerprint(certificate_der: bytes) -> bytes:
    return hashlib.sha256(certificate_der).digest()


@dataclass(frozen=True, kw_only=True)
class TrustedCertificate:
    party: str
    """The party this certificate speaks for: a CBE number for senders and integrators, an id for providers."""
    certificate: x509.Certificate = field(repr=False)
    not_before: datetime
    not_after: datetime
    public_key: PublicKey = field(repr=False)
    fingerprint: bytes

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()

    def check_valid(self, now: datetime) -> None:
        """Raise ``CERT_EXPIRED`` / ``CERT_NOT_YET_VALID`` unless ``now`` lies in the window."""
        if now > self.not_after:
            raise Rejected(
                ErrorCode.CERT_EXPIRED,
                f"the signing certificate of {self.party} ({self.subject}) is valid until "
                f"{self.not_after.isoformat()}; sign with the current key.",
            )
        if now < self.not_before:
            raise Rejected(
                ErrorCode.CERT_NOT_YET_VALID,
                f"the signing certificate of {self.party} ({self.subject}) is valid from "
                f"{self.not_before.isoformat()}; check the clock or wait for the rotation date.",
            )


def trusted(
    party: str,
    certificate: x509.Certificate,
    *,
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
    source: str = "<trust store>",
) -> TrustedCertificate:
    public_key = check_public_key(certificate.public_key(), source=source)
    not_before, not_after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    return TrustedCertificate(
        party=party,
        certificate=certificate,
        not_before=max(not_before, valid_from) if valid_from else not_before,
        not_after=min(not_after, valid_until) if valid_until else not_after,
        public_key=public_key,
        fingerprint=fingerprint(certificate.public_bytes(Encoding.DER)),
    )


class TrustStore:
    """An immutable set of trusted certificates, indexed by party and by fingerprint."""

    def __init__(self, entries: Iterable[TrustedCertificate] = ()) -> None:
        self._entries = tuple(entries)
        self._by_party: dict[str, tuple[TrustedCertificate, ...]] = {}
        for entry in self._entries:
            self._by_party[entry.party] = (*self._by_party.get(entry.party, ()), entry)
        self._by_fingerprint = {entry.fingerprint: entry for entry in self._entries}

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def with_entries(self, *entries: TrustedCertificate) -> TrustStore:
        return TrustStore((*self._entries, *entries))

    def for_parties(self, parties: Iterable[str] | None) -> tuple[TrustedCertificate, ...]:
        if parties is None:
            return self._entries
        return tuple(entry for party in dict.fromkeys(parties) for entry in self._by_party.get(party, ()))

    def by_fingerprint(self, value: bytes) -> TrustedCertificate | None:
        return self._by_fingerprint.get(value)
