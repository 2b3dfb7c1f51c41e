"""The batch path's shortcuts hold to the long way: receipts cut from a template are the bytes a
tree would give, and a batch stored with one COPY (PostgreSQL) leaves the very rows the
row-by-row INSERTs leave, with the same answer to a key already taken."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select

import hub.inbound.acceptance as acceptance
from hub.envelope.model import Sender
from hub.inbound.acceptance import Receipt
from hub.inbound.receipts import ReceiptSigner, signed_receipt
from hub.safexml import parse
from hub.signing.signer import Signer
from hub.signing.truststore import TrustStore, trusted
from hub.signing.verifier import Verifier
from hub.store.models import AuditEntry, Event, Message, OutboxEntry
from tests.kit import NOW, example, key_pair, keyring
from tests.test_inbound_rest import counts

# --- receipts from a template ------------------------------------------------------------------

MESSAGE_ID = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"
SENDERS = [
    Sender(organization_id="0123456749", application_id="tax-on-web"),
    Sender(organization_id="0123456749", application_id="tax-on-web", on_behalf_of="0987654312"),
]
ODD = [
    "a&b",  # markup characters are escaped
    "<x>",
    "caf\u00e9",  # not ASCII
    "line\rbreak",  # c14n writes &#xD;, serialisation &#13;
    "tab\there",
    "",  # an empty text
    " spaced ",
    "{braces} @@message_id@@ $1 %s",  # what a template would mistake for its own syntax
]


def _fields(sender: Sender, sender_message_id: str = "run-17", **changes: object) -> dict[str, object]:
    return {
        "message_id": MESSAGE_ID,
        "sender_message_id": sender_message_id,
        "sender": sender,
        "accepted_at": NOW,
        "digest": bytes(range(32)),
        "environment": "PROD",
        **changes,
    }


@pytest.mark.parametrize("sender", SENDERS, ids=["own", "on-behalf"])
@pytest.mark.parametrize("value", ["run-17", *ODD])
def test_a_receipt_from_the_template_is_byte_for_byte_the_one_a_tree_gives(sender, value):
    # RSA PKCS#1 v1.5 signatures are deterministic: the whole document can be compared.
    signer = Signer(key_pair("hub-rsa", "rsa"))
    receipts = ReceiptSigner(signer)
    for fields in (
        _fields(sender, value),
        _fields(replace(sender, application_id=value or "x")),
        _fields(sender, environment=value),
        _fields(sender, accepted_at=datetime(2026, 3, 1, 9, 30, tzinfo=timezone(timedelta(hours=2)))),
        _fields(sender, accepted_at=datetime(2026, 3, 1, 9, 30, 0, 123, tzinfo=UTC)),
    ):
        assert receipts.sign(**fields) == signed_receipt(signer, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("sender", SENDERS, ids=["own", "on-behalf"])
def test_an_ecdsa_receipt_from_the_template_verifies_and_matches_the_tree_but_for_its_signature_value(sender):
    pair = key_pair("hub-ec", "ec")
    signer = Signer(pair)
    receipts = ReceiptSigner(signer)
    store = TrustStore([trusted("hub", pair.certificate)])
    value = re.compile(rb"<ds:SignatureValue>[^<]*</ds:SignatureValue>")
    for fields in (_fields(sender), _fields(sender, "a&b")):
        ours = receipts.sign(**fields)  # type: ignore[arg-type]
        assert value.sub(b"", ours) == value.sub(b"", signed_receipt(signer, **fields))
        for backend in ("fast", "signxml"):
            verified = Verifier(store, backend=backend).verify(parse(ours), now=datetime.now(UTC))
            assert verified.signer.party == "hub"


def test_a_signxml_signer_signs_receipts_from_a_tree():
    signer = Signer(key_pair("hub-rsa", "rsa"), backend="signxml")
    fields = _fields(SENDERS[0])
    assert ReceiptSigner(signer).sign(**fields) == signed_receipt(signer, **fields)  # type: ignore[arg-type]


# --- a batch stored with COPY --------------------------------------------------------------------


def _envelopes(tag: str, count: int) -> list[bytes]:
    ring = keyring()
    letter = example("citizen-letter")
    return [
        ring.sign(replace(letter, header=replace(letter.header, sender_message_id=f"{tag}-{index}")))
        for index in range(count)
    ]


def _snapshot(hub, outcomes: list[Receipt], envelopes: list[bytes]) -> list[dict[str, object]]:
    """Every row the batch wrote, message by message, with its own identifiers taken out."""
    rows = []
    with hub.sessions() as session:
        for outcome, data in zip(outcomes, envelopes, strict=True):
            message = session.get(Message, outcome.message_id)
            assert message is not None
            assert message.envelope == data and message.receipt == outcome.xml
            row: dict[str, object] = {
                c.key: getattr(message, c.key)
                for c in Message.__table__.columns
                if c.key not in ("id", "sender_message_id", "envelope", "envelope_sha256", "receipt")
            }
            for model in (Event, AuditEntry, OutboxEntry):
                for entry in session.scalars(select(model).where(model.message_id == outcome.message_id)):
                    for column in model.__table__.columns:
                        value = getattr(entry, column.key)
                        if column.key in ("id", "message_id"):
                            continue
                        if column.key in ("detail", "headers", "body") and value is not None:
                            value = json.loads(value)
                            for key in ("digest", "sender_message_id", "message_id", "hub_message_id"):
                                value.pop(key, None)
                        row[f"{model.__tablename__}.{column.key}"] = value
            rows.append(row)
    return rows


def _ids_in_order(hub, model, outcomes: list[Receipt]) -> bool:
    with hub.sessions() as session:
        ids = [session.scalar(select(model.id).where(model.message_id == outcome.message_id)) for outcome in outcomes]
    return ids == sorted(ids)


def test_a_large_batch_leaves_the_rows_one_insert_per_row_leaves(hub, monkeypatch):
    size = acceptance.COPY_FROM + 4
    copied_envelopes = _envelopes("copied", size)
    copied = hub.intake.submit_many(copied_envelopes, door="rest-batch")
    monkeypatch.setattr(acceptance, "COPY_FROM", 10**9)  # the executemany INSERTs
    inserted_envelopes = _envelopes("inserted", size)
    inserted = hub.intake.submit_many(inserted_envelopes, door="rest-batch")
    assert all(isinstance(o, Receipt) and o.created for o in copied + inserted)
    assert _snapshot(hub, copied, copied_envelopes) == _snapshot(hub, inserted, inserted_envelopes)
    for model in (Event, AuditEntry, OutboxEntry):  # ids follow the batch's order, as the sealer expects
        assert _ids_in_order(hub, model, copied)
    assert counts(hub) == {"messages": 2 * size, "events": 2 * size, "audit": 2 * size, "outbox": 2 * size}


def test_a_large_batch_meeting_a_key_already_taken_answers_each_envelope_and_writes_nothing_twice(hub, monkeypatch):
    size = acceptance.COPY_FROM + 2
    envelopes = _envelopes("race", size)
    first = hub.intake.submit(envelopes[3], door="rest")
    # As if another submission stored it between the batch's look-up and its insert.
    looked_up = type(hub.intake)._existing
    calls = []

    def existing(self, session, opened):
        calls.append(len(opened))
        return {} if len(calls) == 1 else looked_up(self, session, opened)

    monkeypatch.setattr(type(hub.intake), "_existing", existing)
    outcomes = hub.intake.submit_many(envelopes, door="rest-batch")
    assert all(isinstance(o, Receipt) for o in outcomes)
    assert [o.created for o in outcomes] == [index != 3 for index in range(size)]
    assert outcomes[3].message_id == first.message_id and outcomes[3].xml == first.xml
    assert calls[0] == size  # the batch looked its ids up (and missed), then answered one by one
    assert counts(hub) == {"messages": size, "events": size, "audit": size, "outbox": size}
