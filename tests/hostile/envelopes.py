"""The hostile envelopes of ``attacks.SUBMISSIONS``: what is sent first (if anything), then the attack.

Each builder makes fresh envelopes (their own SenderMessageId), so that the attacks run one after
the other against one hub and each is judged on what it alone leaves behind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from hub.envelope import examples as ex
from hub.envelope import model as m
from hub.envelope.builder import build_envelope, to_bytes
from hub.signing.signer import Signer
from tests.hostile.stack import unique
from tests.kit import example, key_pair, keyring

XXE = b'<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>'


@dataclass(frozen=True)
class Sending:
    first: bytes | None
    """Sent (and accepted) before the attack, e.g. the original of a replay."""
    attack: bytes


def fresh(kind: str = "citizen-letter", **header: object) -> m.Envelope:
    envelope = example(kind)
    return replace(envelope, header=replace(envelope.header, sender_message_id=unique(), **header))


def with_sender(envelope: m.Envelope, **sender: object) -> m.Envelope:
    return replace(envelope, header=replace(envelope.header, sender=replace(envelope.header.sender, **sender)))


def signed(envelope: m.Envelope, organisation: str | None = None) -> bytes:
    return keyring().sign(envelope, organisation)


def _replayed() -> Sending:
    data = signed(fresh("payment"))
    return Sending(data, data)


def _same_id_other_content() -> Sending:
    original = fresh("payment")
    subject = replace(original.content.subjects[0], value="another subject")
    other = replace(original, content=replace(original.content, subjects=(subject, *original.content.subjects[1:])))
    return Sending(signed(original), signed(other))


def _signed_by(organisation: str) -> Callable[[], Sending]:
    # FINANCE's letter (OrganizationId 0308357159) signed with the key of another registered sender
    return lambda: Sending(None, signed(fresh("citizen-letter"), organisation))


def _integrator_without_mandate() -> Sending:
    # the integrator holds a mandate for CITY only
    return Sending(None, signed(with_sender(fresh("integrator"), on_behalf_of=ex.FINANCE)))


def _institution_for_another() -> Sending:
    return Sending(None, signed(with_sender(fresh("citizen-letter"), on_behalf_of=ex.SOCIAL)))


def _unregistered_signer() -> Sending:
    root = build_envelope(fresh("citizen-letter"))
    return Sending(None, to_bytes(Signer(key_pair("hostile-stranger")).sign(root)))


def _tampered() -> Sending:
    data = signed(fresh("payment"))
    assert data.count(b"1234.56") == 1
    return Sending(None, data.replace(b"1234.56", b"9234.56"))


HOW: dict[str, Callable[[], Sending]] = {
    "replayed-envelope": _replayed,
    "same-id-other-content": _same_id_other_content,
    "signed-by-another-sender": _signed_by(ex.SOCIAL),
    "integrator-without-mandate": _integrator_without_mandate,
    "institution-for-another": _institution_for_another,
    "wrong-environment": lambda: Sending(None, signed(fresh("citizen-letter", environment=m.Environment.INT))),
    # PENSION_STATEMENT is SOCIAL's; FINANCE may not send it
    "message-type-not-allowed": lambda: Sending(
        None, signed(fresh("citizen-letter", message_type="PENSION_STATEMENT"))
    ),
    "application-not-registered": lambda: Sending(None, signed(with_sender(fresh(), application_id="other-app"))),
    "unregistered-signer": _unregistered_signer,
    "tampered-after-signing": _tampered,
    "xxe": lambda: Sending(None, XXE),
    "not-xml": lambda: Sending(None, b"this is not XML at all"),
}
