# ruff: noqa: F811 - pytest fixtures imported from the door's tests share their names with parameters
"""The EBoxMessage v1 door, issue 9: several recipients in one publishEboxMessage (all or nothing), and the
same Ticket/Sequence with other content replacing the earlier message for senders that may replace.

zeep from the official WSDL, as in ``test_compat_ebox_soap``; SQLite unless a test takes ``hub`` (each back end).
"""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
from lxml import etree
from sqlalchemy import select

from hub.broker.topology import DELIVER, deliver_key
from hub.compat import ebox_soap_mapping as mapping
from hub.envelope import examples as ex
from hub.envelope.reader import read_envelope
from hub.safexml import parse
from hub.store.models import AuditEntry, Delivery, Event, Message, OutboxEntry
from tests.compat_ebox_soap_kit import ERR, SOAP, counts, official_valid
from tests.kit import NOW
from tests.test_compat_ebox_soap import (  # noqa: F401 - shared fixtures
    _client,
    finance,
    publish,
    sent_is_official,
    sqlite_hub,
    status,
)

FIVE = [ex.CITIZEN_A, ex.CITIZEN_B, ex.CITIZEN_C, "90010100123", "75120512328"]


def citizens(*ssins: str) -> list[dict[str, str]]:
    return [{"INSS": ssin, "EboxType": "CITIZEN"} for ssin in ssins]


def may_replace(runtime, institution: str) -> None:
    """``may_replace: true`` for ``institution`` in the running hub's sender directory."""
    directory = runtime.intake.directory
    directory.institutions[institution] = dataclasses.replace(  # type: ignore[index]
        directory.institutions[institution], may_replace=True
    )
    assert runtime.directory.institutions[institution].may_replace


def messages(runtime) -> list[Message]:
    with runtime.sessions() as session:
        return list(session.scalars(select(Message).order_by(Message.sender_message_id)))


def test_five_valid_numbers_for_the_tests():
    from hub.envelope import identifiers

    assert all(identifiers.is_valid_ssin(ssin) for ssin in FIVE) and len(set(FIVE)) == 5


# --- several recipients --------------------------------------------------------------------------------------


def test_several_recipients_are_one_message_each_keyed_by_position_and_answered_with_the_first(hub):
    client = _client(hub)
    first = publish(client, ticket="AER-MULTI", sequence=7, RecipientID=citizens(*FIVE[:3]))
    sent_is_official(client)
    official_valid(etree.fromstring(client.transport.last_response.content).find(f"{SOAP}Body")[0])
    stored = messages(hub)
    assert [m.sender_message_id for m in stored] == [f"ebox:AER-MULTI:7/{n}" for n in (1, 2, 3)]
    assert [m.recipient_id for m in stored] == FIVE[:3]
    assert stored[0].id == first
    assert len({m.envelope_sha256 for m in stored}) == 1  # one request, one digest
    with hub.sessions() as session:
        for message in stored:
            envelope = read_envelope(parse(session.get(Message, message.id).envelope))
            assert envelope.header.recipient.id == message.recipient_id
            assert envelope.content.document is not None
        assert len(session.scalars(select(OutboxEntry)).all()) == 3
        for audit in session.scalars(select(AuditEntry)):
            assert not any(ssin in audit.detail for ssin in FIVE)
    # getMessageStatus names an e-Box with the Ticket/Sequence: each recipient's own message
    answer = status(client, (FIVE[0], "AER-MULTI", 7), (FIVE[2], "AER-MULTI", 7), (FIVE[3], "AER-MULTI", 7))
    assert [m.HasBeenConsulted for m in answer.Message] == [False, False]
    assert [e.ErrorCode for e in answer.ErrorCase] == ["NOT_FOUND"]
    with hub.sessions() as session:
        session.add(
            Event(message_id=stored[2].id, kind="opened", occurred_at=NOW, source="provider", provider="p", detail="{}")
        )
        session.commit()
    answer = status(client, (FIVE[0], "AER-MULTI", 7), (FIVE[2], "AER-MULTI", None))
    assert [m.HasBeenConsulted for m in answer.Message] == [False, True]

    # the whole request again: the original answer, nothing stored; other content: refused, nothing stored
    before = counts(hub)
    assert publish(client, ticket="AER-MULTI", sequence=7, RecipientID=citizens(*FIVE[:3])) == first
    assert counts(hub)["messages"] == before["messages"]
    for change in (
        {"pdf": ex.minimal_pdf("another")},
        {"RecipientID": citizens(*FIVE[:2])},  # fewer recipients
        {"RecipientID": citizens(FIVE[1], FIVE[0], FIVE[2])},  # another order
        {"RecipientID": citizens(*FIVE[:4])},  # one more
    ):
        faultcode, code, _ = client.fault(
            lambda change=change: publish(client, ticket="AER-MULTI", sequence=7, **change)
        )
        assert (faultcode, code) == ("soap:Client", "DUPLICATE_MESSAGE"), change
    after = counts(hub)
    assert after["messages"] == before["messages"] and after["refusals"] == before["refusals"] + 4


def test_one_bad_recipient_among_five_stores_nothing_and_the_fault_names_its_position(finance, caplog):
    caplog.set_level(logging.DEBUG)
    bad = "85073003399"  # check digits wrong
    before = counts(finance.runtime)
    faultcode, code, error = finance.fault(
        lambda: publish(finance, ticket="FIVE", RecipientID=citizens(*FIVE[:3], bad, FIVE[4]))
    )
    sent_is_official(finance)
    assert (faultcode, code) == ("soap:Client", "INVALID_RECIPIENT")
    assert "message 4 of 5" in error.findtext(f"{ERR}Message")
    after = counts(finance.runtime)
    assert {k: after[k] for k in ("messages", "events", "outbox")} == {
        k: before[k] for k in ("messages", "events", "outbox")
    }
    assert after["refusals"] == before["refusals"] + 1
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert bad not in logged and not any(ssin in logged for ssin in FIVE)
    # fixed, the same Ticket/Sequence is free: nothing of the refused request was kept
    publish(finance, ticket="FIVE", RecipientID=citizens(*FIVE))
    assert len(messages(finance.runtime)) == 5


@pytest.mark.parametrize(
    ("recipients", "says"),
    [
        (citizens(ex.CITIZEN_A, ex.CITIZEN_B, ex.CITIZEN_A), "RecipientID 3 is the e-Box of RecipientID 1"),
        ([*citizens(ex.CITIZEN_A), {"INSS": ex.CITIZEN_B, "EboxType": "ENTERPRISE"}], "RecipientID[2]"),
        ([*citizens(ex.CITIZEN_A), {"NIHII": "12345678", "EboxType": "CITIZEN"}], "RecipientID[2]"),
    ],
    ids=["twice", "ebox-type", "nihii"],
)
def test_a_recipient_the_mapping_refuses_refuses_the_request_by_its_position(finance, recipients, says):
    before = counts(finance.runtime)
    _, code, error = finance.fault(lambda: publish(finance, ticket="BAD", RecipientID=recipients))
    assert code == "INVALID_RECIPIENT"
    message = error.findtext(f"{ERR}Message")
    assert says in message and ex.CITIZEN_A not in message and ex.CITIZEN_B not in message
    assert counts(finance.runtime)["messages"] == before["messages"]


def test_keys_stay_hub_identifiers_within_64_characters_and_parse_back():
    long_ticket = "a ticket that is not a token, and long: " + "x" * 200
    for ticket in ("A", "A:1", long_ticket, "t-" + "y" * 23):
        for sequence in (None, 0, 99999):
            for position in (None, 1, 5):
                for generation in (1, 2, mapping.MAX_GENERATION):
                    key = mapping.message_key(ticket, sequence, position, generation)
                    assert mapping.TOKEN.fullmatch(key) and len(key) <= 64, key
                    assert mapping.key_parts(key, ticket) == (sequence, position, generation)
                    assert mapping.sequence_of(key, ticket) == sequence
    assert mapping.message_key("A", 1) == mapping.sender_key("A", 1) == "ebox:A:1"  # one recipient: unchanged
    assert mapping.key_parts("ebox:A:1/6", "A") is None and mapping.key_parts("ebox:A:1-rx", "A") is None


# --- replacement ---------------------------------------------------------------------------------------------


def _deliver(runtime, message_id: str, *providers: str) -> None:
    """What routing and a provider's report leave: the message delivered to ``providers``."""
    with runtime.sessions() as session:
        for provider in providers:
            session.add(
                Delivery(
                    id=f"{message_id}:{provider}",
                    message_id=message_id,
                    provider=provider,
                    state="delivered",
                    priority=4,
                    not_before=None,
                    created_at=NOW,
                    updated_at=NOW,
                )
            )
        session.get(Message, message_id).state = "delivered"
        session.commit()


def test_a_sender_that_may_replace_publishes_other_content_as_a_new_message_and_the_earlier_is_withdrawn(hub):
    may_replace(hub, ex.FINANCE)
    client = _client(hub)
    first = publish(client, ticket="AER-R", sequence=1)
    _deliver(hub, first, "myebox", "irisbox")
    with hub.sessions() as session:
        session.add(
            Event(message_id=first, kind="opened", occurred_at=NOW, source="provider", provider="x", detail="{}")
        )
        session.commit()
    assert [m.HasBeenConsulted for m in status(client, (ex.CITIZEN_A, "AER-R", 1)).Message] == [True]
    before = counts(hub)

    second = publish(client, ticket="AER-R", sequence=1, pdf=ex.minimal_pdf("corrected"))
    assert second != first
    with hub.sessions() as session:
        old, new = session.get(Message, first), session.get(Message, second)
        assert new.sender_message_id == "ebox:AER-R:1-r2" and new.state == "accepted" and new.envelope is not None
        assert read_envelope(parse(new.envelope)).content.document.content == ex.minimal_pdf("corrected")
        # withdrawn by the expiry path: content gone, providers told, the sender's event, the audit entry
        assert old.envelope is None and old.expired_at == NOW and old.sender_message_id == "ebox:AER-R:1"
        [expired] = session.scalars(select(Event).where(Event.message_id == first, Event.kind == "expired")).all()
        assert json.loads(expired.detail)["reason"] == "replaced"
        assert json.loads(expired.detail)["replaced_by"] == [second]
        [audit] = session.scalars(
            select(AuditEntry).where(AuditEntry.message_id == first, AuditEntry.action == "expired")
        )
        assert json.loads(audit.detail)["reason"] == "replaced" and ex.CITIZEN_A not in audit.detail
        notices = session.scalars(
            select(OutboxEntry).where(OutboxEntry.message_id == first, OutboxEntry.exchange == DELIVER.name)
        ).all()
        assert sorted(n.routing_key for n in notices) == sorted([deliver_key("myebox"), deliver_key("irisbox")])
        assert {json.loads(n.headers)["notice"] for n in notices} == {"expired"}
        # the new message goes to routing as any other
        assert (
            session.scalars(select(OutboxEntry).where(OutboxEntry.message_id == second)).one().exchange == "hub.route"
        )
    after = counts(hub)
    assert after["messages"] == before["messages"] + 1 and after["refusals"] == before["refusals"]
    # getMessageStatus by that Ticket/Sequence: the current (newest) message, not yet consulted
    assert [m.HasBeenConsulted for m in status(client, (ex.CITIZEN_A, "AER-R", 1)).Message] == [False]
    assert [m.HasBeenConsulted for m in status(client, (ex.CITIZEN_A, "AER-R", None)).Message] == [False]

    # the replacement again: idempotent; a third content: a third generation, the second withdrawn
    assert publish(client, ticket="AER-R", sequence=1, pdf=ex.minimal_pdf("corrected")) == second
    third = publish(client, ticket="AER-R", sequence=1, pdf=ex.minimal_pdf("corrected twice"))
    with hub.sessions() as session:
        assert session.get(Message, third).sender_message_id == "ebox:AER-R:1-r3"
        assert session.get(Message, second).expired_at == NOW
        assert len(session.scalars(select(Event).where(Event.message_id == first, Event.kind == "expired")).all()) == 1


def test_a_replacement_of_several_recipients_withdraws_them_all(finance):
    runtime = finance.runtime
    may_replace(runtime, ex.FINANCE)
    first = publish(finance, ticket="R-MULTI", RecipientID=citizens(*FIVE[:3]))
    second = publish(finance, ticket="R-MULTI", RecipientID=citizens(*FIVE[:2]))
    by_key = {m.sender_message_id: m for m in messages(runtime)}
    assert by_key["ebox:R-MULTI:1/1-r2"].id == second and "ebox:R-MULTI:1/3-r2" not in by_key
    assert by_key["ebox:R-MULTI:1/1"].id == first
    assert all(by_key[f"ebox:R-MULTI:1/{n}"].expired_at is not None for n in (1, 2, 3))
    assert all(by_key[f"ebox:R-MULTI:1/{n}-r2"].expired_at is None for n in (1, 2))


def test_a_sender_without_the_permission_still_gets_duplicate_message(finance):
    runtime = finance.runtime
    may_replace(runtime, ex.SOCIAL)  # another institution's permission is not FINANCE's
    first = publish(finance, ticket="NO-R")
    before = counts(runtime)
    faultcode, code, _ = finance.fault(lambda: publish(finance, ticket="NO-R", pdf=ex.minimal_pdf("other")))
    assert (faultcode, code) == ("soap:Client", "DUPLICATE_MESSAGE")
    after = counts(runtime)
    assert after["messages"] == before["messages"] and after["events"] == before["events"]
    with runtime.sessions() as session:
        assert session.get(Message, first).expired_at is None and session.get(Message, first).envelope is not None


def test_an_integrator_replaces_only_for_an_institution_it_has_a_mandate_for(sqlite_hub):
    may_replace(sqlite_hub, ex.CITY)
    may_replace(sqlite_hub, ex.FINANCE)
    finance_client, integrator = _client(sqlite_hub), _client(sqlite_hub, ex.INTEGRATOR)
    original = publish(finance_client, ticket="MANDATE")
    before = counts(sqlite_hub)
    # FINANCE may replace, but the integrator has no mandate for it: refused, the original untouched
    faultcode, code, _ = integrator.fault(lambda: publish(integrator, ticket="MANDATE", pdf=ex.minimal_pdf("hijack")))
    assert (faultcode, code) == ("soap:Client", "NOT_AUTHORIZED")
    after = counts(sqlite_hub)
    assert after["messages"] == before["messages"] and after["outbox"] == before["outbox"]
    with sqlite_hub.sessions() as session:
        assert session.get(Message, original).expired_at is None
    # for the city (mandate, and the city may replace): replaced
    city = {
        "SenderID": {"Application": "citizen-portal", "Institution": ex.CITY},
        "RecipientID": citizens(ex.CITIZEN_B),
        "MessageType": "PARKING_PERMIT",
    }
    first = publish(integrator, ticket="CITY-R", **city)
    second = publish(integrator, ticket="CITY-R", pdf=ex.minimal_pdf("renewed"), **city)
    assert second != first
    with sqlite_hub.sessions() as session:
        assert session.get(Message, first).expired_at is not None
        assert session.get(Message, second).institution_id == ex.CITY


def test_a_refused_replacement_withdraws_nothing(finance):
    runtime = finance.runtime
    may_replace(runtime, ex.FINANCE)
    first = publish(finance, ticket="R-BAD")
    before = counts(runtime)
    code = finance.fault(lambda: publish(finance, ticket="R-BAD", MessageType="PARKING_PERMIT"))[1]
    assert code == "UNKNOWN_MESSAGE_TYPE"
    after = counts(runtime)
    assert (after["messages"], after["events"], after["outbox"]) == (
        before["messages"],
        before["events"],
        before["outbox"],
    )
    with runtime.sessions() as session:
        assert session.get(Message, first).expired_at is None


def test_a_withdrawal_that_cannot_be_done_undoes_the_replacement(finance, monkeypatch):
    """The earlier message keeps changing under the withdrawal (routing, say): nothing half done, a system
    error the sender retries; the earlier message stays published, the new one is not stored."""
    from hub.lifecycle.retention import RetentionScheduler

    runtime = finance.runtime
    may_replace(runtime, ex.FINANCE)
    first = publish(finance, ticket="R-RACE")
    before = counts(runtime)
    monkeypatch.setattr(RetentionScheduler, "_expire", lambda *args, **kwargs: None)  # lost the race, each time
    faultcode, code, _ = finance.fault(lambda: publish(finance, ticket="R-RACE", pdf=ex.minimal_pdf("new")))
    assert (faultcode, code) == ("soap:Server", "SERVICE_UNAVAILABLE")
    after = counts(runtime)
    assert (after["messages"], after["events"], after["outbox"], after["audit"]) == (
        before["messages"],
        before["events"],
        before["outbox"],
        before["audit"],
    )
    with runtime.sessions() as session:
        assert session.get(Message, first).expired_at is None and session.get(Message, first).envelope is not None
    monkeypatch.undo()
    second = publish(finance, ticket="R-RACE", pdf=ex.minimal_pdf("new"))  # sent again: done
    assert second != first
