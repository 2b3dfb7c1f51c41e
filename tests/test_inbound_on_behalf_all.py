"""``Intake.submit_on_behalf_all``: the messages one request maps to (one per recipient), checked each as
``submit_on_behalf`` checks one, stored all in one transaction or none; a repeat must be a repeat of all.
On each database back end (the ``hub`` fixture).
"""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import select

from hub.envelope import examples as ex
from hub.envelope import model as m
from hub.errors import ErrorCode, Rejected
from hub.store.models import AuditEntry, Message, Refusal
from tests.kit import example
from tests.test_inbound_on_behalf import credential, digest
from tests.test_inbound_rest import counts

RECIPIENTS = [ex.CITIZEN_A, ex.CITIZEN_B, ex.CITIZEN_C]


def letters(key: str = "REQ-1", recipients: list[str] = RECIPIENTS) -> list[m.Envelope]:
    """The example letter, one per recipient, keyed ``<key>/<position>``."""
    letter = example("citizen-letter")
    return [
        dataclasses.replace(
            letter,
            header=dataclasses.replace(
                letter.header,
                sender_message_id=f"{key}/{position}",
                recipient=m.Recipient(ebox_type=m.EboxType.CITIZEN, id=ssin),
            ),
        )
        for position, ssin in enumerate(recipients, start=1)
    ]


def submit(hub, envelopes, request_digest=None, **options):
    return hub.intake.submit_on_behalf_all(
        envelopes,
        credential=credential(hub, ex.FINANCE),
        door="ebox-soap",
        request_digest=request_digest or digest("a"),
        **options,
    )


def test_all_are_stored_in_one_transaction_each_with_its_receipt(hub):
    receipts = submit(hub, letters())
    assert [r.created for r in receipts] == [True, True, True] and len({r.message_id for r in receipts}) == 3
    with hub.sessions() as session:
        stored = {s.sender_message_id: s for s in session.scalars(select(Message))}
        assert sorted(stored) == ["REQ-1/1", "REQ-1/2", "REQ-1/3"]
        assert [stored[f"REQ-1/{n}"].recipient_id for n in (1, 2, 3)] == RECIPIENTS
        assert {s.envelope_sha256 for s in stored.values()} == {digest("a").hex()}
        assert [r.message_id for r in receipts] == [stored[f"REQ-1/{n}"].id for n in (1, 2, 3)]
    assert counts(hub) == {"messages": 3, "events": 3, "audit": 3, "outbox": 3}


def test_one_refused_refuses_all_names_its_position_and_stores_nothing(hub):
    envelopes = letters()
    bad = dataclasses.replace(
        envelopes[1].header, recipient=m.Recipient(ebox_type=m.EboxType.CITIZEN, id="85073003399")
    )
    envelopes[1] = dataclasses.replace(envelopes[1], header=bad)
    with pytest.raises(Rejected) as refused:
        submit(hub, envelopes)
    assert refused.value.code == ErrorCode.SSIN_INVALID
    assert "message 2 of 3" in refused.value.violations[0].message
    assert "85073003399" not in refused.value.violations[0].message
    assert counts(hub) == {"messages": 0, "events": 0, "audit": 1, "outbox": 0}  # the refusal's audit entry
    with hub.sessions() as session:
        assert [r.code for r in session.scalars(select(Refusal))] == ["SSIN_INVALID"]
        assert "85073003399" not in session.scalars(select(AuditEntry)).one().detail


def test_a_repeat_of_all_is_answered_from_the_originals_anything_else_is_a_duplicate(hub):
    first = submit(hub, letters())
    again = submit(hub, letters())
    assert [(r.created, r.message_id, r.xml) for r in again] == [(False, r.message_id, r.xml) for r in first]
    before = counts(hub)
    cases = [
        (letters(), digest("b")),  # other content
        (letters(recipients=RECIPIENTS[:2]), digest("b")),  # part of it (the door's digest covers every recipient)
        (letters(recipients=[*RECIPIENTS, "90010100123"]), digest("a")),  # one more: the new one is not stored
    ]
    for envelopes, request_digest in cases:
        with pytest.raises(Rejected) as refused:
            submit(hub, envelopes, request_digest)
        assert refused.value.code == ErrorCode.DUPLICATE_MESSAGE_ID
    assert counts(hub)["messages"] == before["messages"]


def test_then_runs_in_the_transaction_of_new_messages_only(hub):
    seen = []

    def then(session, receipts, now):
        # the new rows are visible in this transaction
        found = session.scalars(select(Message.id).where(Message.id.in_([r.message_id for r in receipts]))).all()
        seen.append((len(found), now))

    receipts = submit(hub, letters(), then=then)
    assert seen == [(3, hub.intake.clock())]
    submit(hub, letters(), then=then)  # a repeat: nothing new, nothing run
    assert len(seen) == 1 and len(receipts) == 3

    def failing(session, receipts, now):
        raise RuntimeError("the withdrawal failed")

    with pytest.raises(RuntimeError):
        submit(hub, letters("REQ-2"), then=failing)
    assert counts(hub)["messages"] == 3  # undone with it


def test_the_doors_mistakes_are_errors_not_refusals(hub):
    with pytest.raises(ValueError):
        submit(hub, [])
    with pytest.raises(ValueError):
        submit(hub, [letters()[0], letters()[0]])  # one sender message id twice


def test_a_single_envelope_behaves_as_submit_on_behalf(hub):
    [only] = letters(recipients=RECIPIENTS[:1])
    [receipt] = submit(hub, [only])
    assert receipt.created
    repeat = hub.intake.submit_on_behalf(
        only, credential=credential(hub, ex.FINANCE), door="ebox-soap", request_digest=digest("a")
    )
    assert (repeat.created, repeat.message_id) == (False, receipt.message_id)
    integrator = dataclasses.replace(only.header, sender=dataclasses.replace(only.header.sender, on_behalf_of=None))
    with pytest.raises(Rejected) as refused:  # signed by another organisation than the sender named
        hub.intake.submit_on_behalf_all(
            [dataclasses.replace(only, header=integrator)],
            credential=credential(hub, ex.SOCIAL),
            door="x",
            request_digest=digest("a"),
        )
    assert refused.value.code == ErrorCode.NOT_AUTHORISED
