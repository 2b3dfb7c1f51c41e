# ruff: noqa: F811 - pytest fixtures imported from the acknowledgement tests share their names with parameters
"""A message published through the EBoxMessage v1 door goes where any message goes, and comes back.

On SQLite + the in-process broker and on PostgreSQL + RabbitMQ: publishEboxMessage (zeep, WS-Security,
swaRef) -> routing -> the providers' queues (the envelope the hub wrote and signed) -> a provider reports
it delivered, then opened -> getMessageStatus says HasBeenConsulted, and the sender's own acknowledgement
channel carries the same events under the Ticket/Sequence's sender message id.
"""

from __future__ import annotations

from datetime import UTC, datetime

from lxml import etree
from starlette.testclient import TestClient

from hub.envelope import examples as ex
from hub.envelope import model as m
from hub.envelope.reader import read_envelope
from hub.inbound.http import build_app
from hub.outbound.acks import Event
from hub.safexml import parse
from hub.signing.truststore import TrustStore, trusted
from hub.signing.verifier import Verifier
from tests.compat_ebox_soap_kit import SOAP, Attachment, document, ebox_client, official_valid
from tests.kit import keyring
from tests.test_acknowledgements import (  # noqa: F401 - shared fixtures
    Loop,
    broker_url,
    config_dir,
    database_url,
    loop,
)

PDF = ex.minimal_pdf("Mise en demeure")


def consulted(client, ticket: str, sequence: int) -> list[bool]:
    answer = client.service.getMessageStatus(
        EboxType="CITIZEN",
        Message=[{"EboxID": {"INSS": ex.CITIZEN_A}, "MessageID": {"Ticket": ticket, "Sequence": sequence}}],
    )
    official_valid(etree.fromstring(client.transport.last_response.content).find(f"{SOAP}Body")[0])
    return [item.HasBeenConsulted for item in answer.Message]


def test_published_by_soap_routed_to_providers_acknowledged_and_reported_read(loop: Loop):
    loop.reads_with(ex.CITIZEN_A, "myebox", "irisbox")
    client = ebox_client(loop.runtime, TestClient(build_app(loop.runtime)), keyring().pairs[ex.SOCIAL])
    main = Attachment(PDF)
    client.attach(main)
    message_id = client.service.publishEboxMessage(
        MessageID={"Ticket": "INSP-2026", "Sequence": 42},
        SenderID={"Application": "inspection", "Institution": ex.SOCIAL},
        RecipientID=[{"INSS": ex.CITIZEN_A, "EboxType": "CITIZEN"}],
        MessageType="FORMAL_NOTICE",
        Document=document(PDF, title="Mise en demeure", name="mise-en-demeure.pdf", attachment=main),
        IsRegistered=True,
    )
    official_valid(client.sent_body_entry())
    assert loop.relay() == 1 and loop.route(1) == [None]
    assert loop.relay() == 2  # one delivery each to myebox and irisbox

    hub_verifier = Verifier(TrustStore([trusted("hub", loop.runtime.hub_keys.certificate)]))
    for provider in ("myebox", "irisbox"):
        [got] = loop.queue(provider, expect=1)
        assert got.headers["hub-message-id"] == message_id and got.headers["registered"] is True
        root = parse(got.body)
        hub_verifier.verify(root, now=datetime.now(UTC), parties=["hub"])  # the hub vouches for the mapping
        envelope = read_envelope(root)
        assert envelope.header.sender_message_id == "ebox:INSP-2026:42"
        assert envelope.header.recipient.id == ex.CITIZEN_A and envelope.header.registered
        assert envelope.content.document is not None and envelope.content.document.content == PDF
        assert envelope.content.subjects == (m.Text(lang=m.Language.FR, value="Mise en demeure"),)

    assert consulted(client, "INSP-2026", 42) == [False]
    loop.report("myebox", message_id, Event.DELIVERED, minutes=1)
    assert consulted(client, "INSP-2026", 42) == [False]
    loop.report("myebox", message_id, Event.OPENED, minutes=2)
    assert consulted(client, "INSP-2026", 42) == [True]
    assert loop.message(message_id).state == "opened"

    # the hub's own channel: the sender's acknowledgements, keyed by the Ticket/Sequence
    assert loop.forward() == 4 and loop.relay() == 4
    acks = loop.sender_queue(expect=4)
    assert [a.event.value for a in acks] == ["accepted", "routed", "delivered", "opened"]
    assert {a.sender_message_id for a in acks} == {"ebox:INSP-2026:42"}


def test_a_replacement_reaches_the_providers_and_they_are_told_to_remove_the_earlier(loop: Loop):
    """A sender that may replace (``may_replace``) publishes other content under the same Ticket/Sequence:
    the new message is routed as any other, and each provider holding the earlier one gets its ``expired``
    notice (remove it) through its queue; the sender's channel carries the earlier one's ``expired`` event."""
    import dataclasses

    for directory in (loop.runtime.directory, loop.runtime.intake.directory):  # the door's, the intake's
        social = dataclasses.replace(directory.institutions[ex.SOCIAL], may_replace=True)
        directory.institutions[ex.SOCIAL] = social  # type: ignore[index]
    loop.reads_with(ex.CITIZEN_A, "myebox", "irisbox")
    client = ebox_client(loop.runtime, TestClient(build_app(loop.runtime)), keyring().pairs[ex.SOCIAL])

    def publish(pdf: bytes) -> str:
        main = Attachment(pdf)
        client.attach(main)
        return client.service.publishEboxMessage(
            MessageID={"Ticket": "INSP-R", "Sequence": 1},
            SenderID={"Application": "inspection", "Institution": ex.SOCIAL},
            RecipientID=[{"INSS": ex.CITIZEN_A, "EboxType": "CITIZEN"}],
            MessageType="FORMAL_NOTICE",
            Document=document(pdf, title="Mise en demeure", name="mise-en-demeure.pdf", attachment=main),
        )

    first = publish(PDF)
    assert loop.relay() == 1 and loop.route(1) == [None] and loop.relay() == 2
    for provider in ("myebox", "irisbox"):
        assert [got.headers["hub-message-id"] for got in loop.queue(provider, expect=1)] == [first]
    loop.report("myebox", first, Event.DELIVERED, minutes=1)

    second = publish(ex.minimal_pdf("Mise en demeure, corrigée"))
    assert second != first
    assert loop.relay() == 3  # the new message's routing, an expired notice to each provider of the first
    for provider in ("myebox", "irisbox"):
        [notice] = loop.queue(provider, expect=1)
        assert notice.headers["notice"] == "expired" and notice.headers["hub-message-id"] == first
    assert loop.route(1) == [None] and loop.relay() == 2
    for provider in ("myebox", "irisbox"):
        [got] = loop.queue(provider, expect=1)
        assert got.headers["hub-message-id"] == second
        envelope = read_envelope(parse(got.body))
        assert envelope.header.sender_message_id == "ebox:INSP-R:1-r2"
        assert envelope.content.document is not None
        assert envelope.content.document.content == ex.minimal_pdf("Mise en demeure, corrigée")
    assert loop.message(first).envelope is None and loop.message(first).expired_at is not None
    assert consulted(client, "INSP-R", 1) == [False]  # the current message
    loop.report("myebox", second, Event.OPENED, minutes=2)
    assert consulted(client, "INSP-R", 1) == [True]
