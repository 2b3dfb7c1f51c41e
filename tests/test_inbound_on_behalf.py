"""``Intake.submit_on_behalf``: a message mapped by a compatibility door, authenticated by a registered
certificate that signed the request (not the envelope), accepted through the same checks and
transaction as any envelope; the hub writes and signs the envelope providers receive.
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from hub.envelope import examples as ex
from hub.envelope.reader import read_envelope
from hub.errors import ErrorCode, Rejected
from hub.safexml import parse
from hub.signing.truststore import TrustedCertificate
from hub.store.models import Message, OutboxEntry, Refusal
from tests.kit import NOW, example
from tests.test_inbound_rest import counts, hub_verifier


def credential(hub, party: str) -> TrustedCertificate:
    (entry,) = hub.intake.verifier.trust.for_parties([party])
    return entry


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def test_a_mapped_message_is_stored_signed_by_the_hub_and_receipted_with_the_requests_digest(hub):
    receipt = hub.intake.submit_on_behalf(
        example("citizen-letter"), credential=credential(hub, ex.FINANCE), door="ebox-soap", request_digest=digest("a")
    )
    assert receipt.created
    with hub.sessions() as session:
        message = session.get(Message, receipt.message_id)
        assert message is not None and message.envelope is not None
        assert message.envelope_sha256 == digest("a").hex()
        assert message.state == "accepted" and message.submitter_id == ex.FINANCE
        stored = parse(message.envelope)
        assert session.scalar(select(OutboxEntry).where(OutboxEntry.message_id == receipt.message_id)) is not None
    # what providers receive: the envelope the hub wrote, signed by the hub, with the mapped content
    verified = hub_verifier(hub).verify(stored, now=datetime.now(UTC), parties=["hub"])  # the hub key: made now
    assert verified.signer.party == "hub"
    assert read_envelope(stored) == example("citizen-letter")
    assert digest("a").hex().encode() in receipt.xml or digest("a").hex().upper().encode() in receipt.xml.upper()


def test_a_repeat_is_answered_from_the_original_and_other_content_under_the_same_id_is_refused(hub):
    finance = credential(hub, ex.FINANCE)
    first = hub.intake.submit_on_behalf(example(), credential=finance, door="ebox-rest", request_digest=digest("a"))
    again = hub.intake.submit_on_behalf(example(), credential=finance, door="ebox-rest", request_digest=digest("a"))
    assert (again.created, again.message_id, again.xml) == (False, first.message_id, first.xml)
    before = counts(hub)
    with pytest.raises(Rejected) as refused:
        hub.intake.submit_on_behalf(example(), credential=finance, door="ebox-rest", request_digest=digest("b"))
    assert refused.value.code == ErrorCode.DUPLICATE_MESSAGE_ID
    assert counts(hub)["messages"] == before["messages"]


@pytest.mark.parametrize(
    ("kind", "party", "code"),
    [
        ("citizen-letter", ex.SOCIAL, ErrorCode.NOT_AUTHORISED),  # signed by one sender, naming another
        ("integrator", ex.FINANCE, ErrorCode.NOT_AUTHORISED),  # the integrator's message, another's certificate
    ],
    ids=["another-sender", "not-the-integrator"],
)
def test_the_credential_must_be_the_submitters(hub, kind, party, code):
    before = counts(hub)
    with pytest.raises(Rejected) as refused:
        hub.intake.submit_on_behalf(
            example(kind), credential=credential(hub, party), door="x", request_digest=b"0" * 32
        )
    assert refused.value.code == code
    after = counts(hub)
    assert (after["messages"], after["events"], after["outbox"]) == (before["messages"], before["events"], 0)
    with hub.sessions() as session:  # counted (refusal and audit entry) for the party that authenticated
        assert [r.sender_id for r in session.scalars(select(Refusal))] == [party]


def test_an_integrator_without_a_mandate_and_a_message_type_not_allowed_are_refused_as_for_envelopes(hub):
    integrator = example("integrator")
    header = dataclasses.replace(
        integrator.header, sender=dataclasses.replace(integrator.header.sender, on_behalf_of=ex.FINANCE)
    )
    with pytest.raises(Rejected) as refused:
        hub.intake.submit_on_behalf(
            dataclasses.replace(integrator, header=header),
            credential=credential(hub, ex.INTEGRATOR),
            door="x",
            request_digest=b"0" * 32,
        )
    assert refused.value.code == ErrorCode.NOT_AUTHORISED
    letter = example("citizen-letter")
    other_type = dataclasses.replace(letter, header=dataclasses.replace(letter.header, message_type="PARKING_PERMIT"))
    with pytest.raises(Rejected) as refused:
        hub.intake.submit_on_behalf(
            other_type, credential=credential(hub, ex.FINANCE), door="x", request_digest=b"0" * 32
        )
    assert refused.value.code == ErrorCode.UNKNOWN_MESSAGE_TYPE


def test_a_credential_outside_its_window_is_refused(hub):
    finance = credential(hub, ex.FINANCE)
    ended = dataclasses.replace(finance, not_after=NOW - timedelta(days=1))
    with pytest.raises(Rejected) as refused:
        hub.intake.submit_on_behalf(example(), credential=ended, door="x", request_digest=b"0" * 32)
    assert refused.value.code == ErrorCode.CERT_EXPIRED


def test_a_business_rule_is_checked_on_the_mapped_message(hub):
    letter = example("citizen-letter")
    recipient = dataclasses.replace(letter.header.recipient, id="85073003399")  # bad check digits
    bad = dataclasses.replace(letter, header=dataclasses.replace(letter.header, recipient=recipient))
    with pytest.raises(Rejected) as refused:
        hub.intake.submit_on_behalf(bad, credential=credential(hub, ex.FINANCE), door="x", request_digest=b"0" * 32)
    assert refused.value.code == ErrorCode.SSIN_INVALID
