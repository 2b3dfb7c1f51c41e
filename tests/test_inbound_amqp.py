"""The AMQP door: envelopes published to hub.submit get the same answers as over REST.

Runs on kombu's in-process transport with SQLite and on RabbitMQ with PostgreSQL.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from kombu import Connection, Exchange, Queue
from lxml import etree

from hub.broker.connection import connect
from hub.broker.topology import declare
from hub.envelope.model import ACK_NS, TYPES_NS
from hub.inbound.amqp import AmqpDoor
from hub.store.models import Message
from tests.kit import example, keyring
from tests.test_broker import broker, rabbitmq_vhost  # noqa: F401 - shared fixtures
from tests.test_inbound_rest import make_hub

A = "{" + ACK_NS + "}"
T = "{" + TYPES_NS + "}"
PAIRS = [("sqlite", "memory"), ("postgresql", "rabbitmq")]


@pytest.fixture(params=PAIRS, ids=["sqlite+memory", "postgresql+rabbitmq"])
def database_url(request, tmp_path):
    from tests.backends import postgres_schema

    if request.param[0] == "sqlite":
        yield f"sqlite:///{tmp_path / 'hub.db'}"
    else:
        with postgres_schema() as url:
            yield url


@pytest.fixture
def broker_url(request, database_url):
    if database_url.startswith("sqlite"):
        yield "memory://"
    else:
        from tests.backends import rabbitmq_url

        yield rabbitmq_url()


@pytest.fixture
def door(tmp_path, database_url, broker) -> Iterator[tuple[AmqpDoor, str]]:  # noqa: F811
    runtime = make_hub(tmp_path, database_url)
    with connect(broker) as connection:
        declare(connection, senders=["0308357159"])
    amqp_door = AmqpDoor(runtime.intake, broker)
    stop = threading.Event()
    thread = threading.Thread(target=amqp_door.run, args=(stop,), daemon=True)
    thread.start()
    yield amqp_door, broker
    stop.set()
    thread.join(timeout=10)
    amqp_door.close()
    runtime.close()


def publish(url: str, body: bytes, *, reply_to: str | None) -> str:
    correlation = str(uuid.uuid4())
    with Connection(url) as connection:
        connection.Producer().publish(
            body,
            exchange=Exchange("hub.submit", type="direct", durable=True),
            routing_key="submit",
            reply_to=reply_to,
            correlation_id=correlation,
            content_type="application/xml",
            content_encoding="binary",
        )
    return correlation


def answer(url: str, queue_name: str, timeout: float = 15):
    """The next message on an existing queue (not re-declared: its arguments belong to the hub)."""
    with Connection(url) as connection:
        channel = connection.channel()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            raw = channel.basic_get(queue_name, no_ack=True)
            if raw is not None:
                return channel.message_to_python(raw) if not hasattr(raw, "body") else raw
            time.sleep(0.05)
    raise AssertionError(f"no answer on {queue_name} within {timeout} s")


def reply_queue(url: str) -> str:
    name = f"test-replies-{uuid.uuid4().hex[:8]}"
    with Connection(url) as connection:
        Queue(name, exchange=Exchange("", type="direct"), routing_key=name)(connection.channel()).declare()
    return name


def test_an_envelope_published_to_hub_submit_is_receipted_to_reply_to(door):
    amqp_door, url = door
    replies = reply_queue(url)
    data = keyring().sign(example("payment"))
    correlation = publish(url, data, reply_to=replies)
    message = answer(url, replies)
    assert message.headers["hub-status"] == 201
    assert message.properties["correlation_id"] == correlation
    receipt = etree.fromstring(message.body)
    assert receipt.tag == A + "SubmissionReceipt"
    assert message.headers["hub-message-id"] == receipt.findtext(A + "HubMessageId")
    # The repeat gets the same receipt, marked 200.
    publish(url, data, reply_to=replies)
    again = answer(url, replies)
    assert (again.headers["hub-status"], again.body) == (200, message.body)
    with amqp_door.intake.sessions() as session:
        assert session.query(Message).count() == 1


def test_a_forged_envelope_gets_its_refusal_and_leaves_nothing(door):
    amqp_door, url = door
    replies = reply_queue(url)
    forged = keyring().sign(example("payment")).replace(b"1234.56", b"9234.56")
    publish(url, forged, reply_to=replies)
    message = answer(url, replies)
    assert message.headers["hub-status"] == 401
    assert message.headers["hub-code"] == "SIGNATURE_INVALID"
    assert etree.fromstring(message.body).findtext(T + "Code") == "SIGNATURE_INVALID"
    with amqp_door.intake.sessions() as session:
        assert session.query(Message).count() == 0


def test_without_reply_to_the_receipt_goes_to_the_senders_queue(door):
    amqp_door, url = door
    publish(url, keyring().sign(example("citizen-letter")), reply_to=None)
    message = answer(url, "sender.0308357159.acks")
    assert message.headers["hub-status"] == 201
    assert etree.fromstring(message.body).tag == A + "SubmissionReceipt"
    assert counts_of(amqp_door) == 1


def counts_of(amqp_door: AmqpDoor) -> int:
    with amqp_door.intake.sessions() as session:
        return session.query(Message).count()


def test_a_refusal_without_reply_to_is_dead_lettered_not_sent_to_the_claimed_sender(door):
    amqp_door, url = door
    dead = reply_queue(url)
    with Connection(url) as connection:
        Queue(dead, exchange=Exchange("hub.dead", type="fanout", durable=True))(connection.channel()).declare()
    forged = keyring().sign(example("citizen-letter")).replace(b"2026</", b"2027</")
    publish(url, forged, reply_to=None)
    message = answer(url, dead)
    assert message.body == forged
    assert (message.headers["x-hub-code"], message.headers["x-hub-queue"]) == ("SIGNATURE_INVALID", "hub.inbound")
    with Connection(url) as connection:
        assert connection.channel().basic_get("sender.0308357159.acks", no_ack=True) is None
    assert counts_of(amqp_door) == 0
