# ruff: noqa: F811 - pytest fixtures imported from the routing and acknowledgement tests share their names
"""An e-Box REST v2.1 publication, followed to the provider's queue and back to searchMessageStatus.

On SQLite + the in-process transport and on PostgreSQL + RabbitMQ: a sender publishes over the
e-Box contract (token from a signed client assertion, multipart publishMessage); the hub routes it
like any message, the provider receives the envelope the hub wrote, acknowledges delivery and
opening, and searchMessageStatus then reports the message read; the sender's own acknowledgement
channel carries the same events. A recipient without digital post gets NO_DIGITAL_USER and the
message goes where the routing rules send such messages (paper).
"""

from __future__ import annotations

from starlette.testclient import TestClient

from hub.envelope import examples as ex
from hub.envelope.reader import read_envelope
from hub.inbound.http import build_app
from hub.lifecycle.stats import Month, message_figures
from hub.outbound.acks import Event
from hub.safexml import parse
from tests.compat_ebox_rest_kit import access_token, couple, message, publish, search, validate
from tests.kit import NOW
from tests.test_acknowledgements import Loop, loop  # noqa: F401 - the fixture
from tests.test_routing_worker import broker_url, config_dir, database_url  # noqa: F401 - shared fixtures


def read_status(client, token: str, message_id: str, ssin: str = ex.CITIZEN_A) -> bool:  # type: ignore[no-untyped-def]
    response = search(client, token, [couple(message_id, ssin)])
    assert response.status_code == 201, response.text
    validate("MessagesStatusList", response.json())
    [status] = response.json()
    return status["readStatus"]


def test_a_publication_reaches_the_provider_and_its_reading_comes_back(loop: Loop):
    loop.reads_with(ex.CITIZEN_A, "myebox")
    with TestClient(build_app(loop.runtime)) as client:
        token = access_token(client, ex.SOCIAL)
        response = publish(client, token, message(), headers={"Idempotency-Key": "PENSION-2026-REST-1"})
        assert response.status_code == 201, response.text
        validate("PublicationStatusMessage", response.json())
        assert "code" not in response.json()
        message_id = response.json()["messageId"]
        assert loop.relay() == 1 and loop.route(1) == [None]
        assert loop.relay() == 1
        [got] = loop.queue("myebox", expect=1)
        assert got.headers["hub-message-id"] == message_id
        envelope = read_envelope(parse(got.body))  # what the provider reads: the hub's envelope, mapped content
        assert envelope.header.sender_message_id == "PENSION-2026-REST-1"
        assert envelope.content.document is not None and envelope.content.document.file_name == "overzicht.pdf"
        assert read_status(client, token, message_id) is False
        loop.report("myebox", message_id, Event.DELIVERED, minutes=1)
        assert read_status(client, token, message_id) is False
        loop.report("myebox", message_id, Event.OPENED, minutes=2)
        assert read_status(client, token, message_id) is True
    # and through the hub's own channel, as for any sender
    assert loop.forward() == 4 and loop.relay() == 4
    acks = loop.sender_queue(expect=4)
    assert [a.event.value for a in acks] == ["accepted", "routed", "delivered", "opened"]
    assert {a.sender_message_id for a in acks} == {"PENSION-2026-REST-1"}
    # and in the monthly statistics, as any message
    with loop.sessions() as session:
        totals, by_type = message_figures(session.connection(), Month(NOW.year, NOW.month))[ex.SOCIAL]
    assert (totals.sent, totals.delivered, totals.opened) == (1, 1, 1)
    assert set(by_type) == {"PENSION_STATEMENT"}


def test_a_recipient_without_digital_post_gets_no_digital_user_and_goes_to_paper(loop: Loop):
    with TestClient(build_app(loop.runtime)) as client:
        token = access_token(client, ex.SOCIAL)
        request = message(recipient={"eboxType": "citizen", "eboxIdValue": ex.CITIZEN_B})
        response = publish(client, token, request)
        assert response.status_code == 201, response.text
        validate("PublicationStatusMessage", response.json())
        assert response.json()["code"] == "NO_DIGITAL_USER"
        message_id = response.json()["messageId"]
        assert loop.relay() == 1 and loop.route(1) == [None]
        assert loop.relay() == 1
        assert [d.provider for d in loop.deliveries(message_id)] == ["paper"]
        [got] = loop.queue("paper", expect=1)
        assert got.headers["hub-message-id"] == message_id
        loop.report("paper", message_id, Event.PRINTED, minutes=1)
        assert read_status(client, token, message_id, ex.CITIZEN_B) is False  # printed is not read in an e-Box
