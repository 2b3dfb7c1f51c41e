"""The provider SDK and the simulated providers, on kombu's in-process transport and on RabbitMQ.

Given deliveries published to ``provider.<id>`` the way the relay publishes them (exchange
``hub.deliver``, routing key the provider id, the delivery headers, the signed envelope as
body), when a simulated provider runs, then ``hub.acks`` receives acknowledgements signed by
that provider's key only, in the order of a delivery's life, with proofs for registered mail,
replies only where the envelope asks for one, and the same ids when a delivery comes twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from kombu import Producer

from hub.broker import topology
from hub.broker.connection import connect
from hub.broker.retry import QUEUE, REASON
from hub.envelope import examples as ex
from hub.envelope.model import AssuranceLevel, Envelope
from hub.errors import ErrorCode, Rejected, Unavailable
from hub.outbound.acks import Acknowledgement, Event, Reply, open_acknowledgement, open_acknowledgements
from hub.outbound.claims import EnvelopeFetcher
from hub.outbound.sdk import Delivery, ProviderClient, ack_id
from hub.outbound.simulated import Behaviour, SimulatedProvider
from hub.outbound.states import reply_fits
from hub.signing.keys import KeyPair, load_certificates
from hub.signing.truststore import TrustStore, trusted
from hub.signing.verifier import Verifier
from tests.kit import key_pair, keyring
from tests.test_broker import QUICK_RETRIES, Got, broker, drain, rabbitmq_vhost  # noqa: F401 - shared fixtures
from tests.test_routing_worker import delete_queues

PROVIDER_IDS = ("myebox", "doccle", "irisbox", "enterprise", "paper")
FAST_OPEN = Behaviour(open_probability=1.0, open_delay_s=0.05, reply_probability=0.0, seed=7)


# -- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture
def hub_broker(broker: str) -> Iterator[str]:  # noqa: F811 - the shared fixture
    """The broker with the hub's topology declared for the five providers, and nothing queued."""
    delete_queues(broker)
    with connect(broker) as connection:
        topology.declare(connection, PROVIDER_IDS)
    yield broker
    delete_queues(broker)


@cache
def provider_keys(provider: str) -> KeyPair:
    return key_pair(f"provider-{provider}")


def verifier_of(provider: str) -> Verifier:
    """A verifier that trusts this provider's certificate, and nothing else."""
    return Verifier(TrustStore([trusted(provider, provider_keys(provider).certificate)]))


def signed(kind: str) -> bytes:
    """An example envelope created now (its reply deadline ahead), signed by its sender."""
    return keyring().sign(ex.example(kind))


def headers_of(message_id: str, provider: str, *, registered: bool, expires_at: datetime | None = None) -> dict:
    """What the routing stage writes for a delivery (``hub.routing.deliveries.plan``)."""
    headers: dict[str, Any] = {
        "hub-message-id": message_id,
        "delivery-id": f"{message_id}:{provider}",
        "priority": "normal",
        "registered": registered,
        "sender": ex.SOCIAL,
        "content_type": "application/xml",
    }
    if expires_at is not None:
        headers["expires-at"] = expires_at.isoformat()
    return headers


def deliver(url: str, provider: str, body: bytes, headers: dict[str, Any], *, message_id: str | None = None) -> None:
    """Publish a delivery as the relay does: exchange hub.deliver, routing key the provider id."""
    with connect(url) as connection:
        Producer(connection.channel()).publish(
            body,
            exchange="hub.deliver",
            routing_key=topology.deliver_key(provider),
            headers=headers,
            content_type="application/xml",
            content_encoding="binary",
            delivery_mode=2,
            priority=4,
            message_id=message_id or f"outbox-{uuid.uuid4().int % 10**9}",
            retry=False,
        )


def new_delivery(url: str, provider: str, kind: str, *, registered: bool | None = None) -> tuple[str, bytes]:
    """Deliver an example of ``kind`` to ``provider``; its delivery id and envelope."""
    body = signed(kind)
    message_id = str(uuid.uuid4())
    is_registered = kind == "registered" if registered is None else registered
    deliver(url, provider, body, headers_of(message_id, provider, registered=is_registered))
    return f"{message_id}:{provider}", body


def opened(provider: str, got: list[Got]) -> list[Acknowledgement]:
    """Each message of ``hub.acks`` opened: verified against ``provider``'s certificate only."""
    now = datetime.now(UTC)
    acks = []
    for message in got:
        assert message.content_type == "application/xml"
        ack, verified = open_acknowledgement(message.body, verifier_of(provider), now)
        assert verified.signer.party == provider
        assert message.message_id == ack.ack_id
        acks.append(ack)
    return acks


def simulate(url: str, provider: str, behaviour: Behaviour = FAST_OPEN) -> SimulatedProvider:
    simulated = SimulatedProvider(
        provider, url, provider_keys(provider), behaviour=behaviour, backoff=QUICK_RETRIES, poll=0.05
    )
    simulated.start()
    return simulated


@contextlib.contextmanager
def running(url: str, provider: str, behaviour: Behaviour = FAST_OPEN) -> Iterator[SimulatedProvider]:
    simulated = simulate(url, provider, behaviour)
    try:
        yield simulated
    finally:
        simulated.stop()
        simulated.close()


def by_delivery(acks: list[Acknowledgement]) -> dict[str, list[Acknowledgement]]:
    grouped: dict[str, list[Acknowledgement]] = {}
    for ack in acks:
        assert ack.delivery_id is not None
        grouped.setdefault(ack.delivery_id, []).append(ack)
    return grouped


# -- the delivery and the acknowledgement, without a broker -------------------------------------


def test_a_delivery_is_read_from_the_relays_headers():
    body = signed("registered")
    message_id = str(uuid.uuid4())
    expires = datetime(2029, 1, 1, 12, tzinfo=UTC)
    headers = headers_of(message_id, "myebox", registered=True, expires_at=expires)
    headers["registered"] = "true"  # a header that went through JSON and text is still read
    delivery = Delivery.from_message(body, headers)
    assert (delivery.delivery_id, delivery.hub_message_id) == (f"{message_id}:myebox", message_id)
    assert (delivery.priority, delivery.registered, delivery.sender, delivery.expires_at) == (
        "normal",
        True,
        ex.SOCIAL,
        expires,
    )
    assert delivery.envelope == body
    assert delivery.envelope_digest == hashlib.sha256(body).digest()
    model = delivery.envelope_model()
    assert isinstance(model, Envelope) and model.header.registered
    assert delivery.envelope_model() is model  # read once
    assert "envelope=" not in repr(delivery)


@pytest.mark.parametrize(
    ("change", "header"),
    [
        ({"delivery-id": None}, "delivery-id"),
        ({"hub-message-id": None}, "hub-message-id"),
        ({"hub-message-id": "not-a-uuid"}, "hub-message-id"),
        ({"delivery-id": "x" * 65}, "delivery-id"),
        ({"priority": "urgent"}, "priority"),
        ({"registered": None}, "registered"),
        ({"registered": "maybe"}, "registered"),
        ({"sender": None}, "sender"),
        ({"expires-at": "tomorrow"}, "expires-at"),
        ({"expires-at": "2029-01-01T12:00:00"}, "expires-at"),
    ],
)
def test_a_delivery_with_missing_or_unreadable_headers_is_rejected(change, header):
    headers = {**headers_of(str(uuid.uuid4()), "myebox", registered=False), **change}
    headers = {name: value for name, value in headers.items() if value is not None}
    with pytest.raises(Rejected) as refused:
        Delivery.from_message(b"<x/>", headers)
    assert refused.value.code is ErrorCode.SCHEMA_INVALID
    assert refused.value.violations[0].path == f"headers/{header}"


def test_ack_ids_are_deterministic_and_fit_token64():
    message_id = "3f0c6a52-6a43-4c1e-9d55-0b8f3f1d2a71"
    assert ack_id(f"{message_id}:myebox", Event.DELIVERED) == f"{message_id}:myebox:delivered"
    assert ack_id(f"{message_id}:myebox", "opened") == ack_id(f"{message_id}:myebox", Event.OPENED)
    long = ack_id(f"{message_id}:enterprise", Event.DOCUMENT_EXPIRATION_ALERT)  # 36 + 1 + 10 + 1 + 23 > 64
    assert len(long) == 64 and all(c in "0123456789abcdef" for c in long)
    assert long == ack_id(f"{message_id}:enterprise", Event.DOCUMENT_EXPIRATION_ALERT)
    assert long != ack_id(f"{message_id}:enterprise", Event.NEW_DOCUMENT_REMINDER)


def test_the_client_builds_what_a_provider_may_report_only():
    client = ProviderClient("myebox", "memory://", provider_keys("myebox"))
    delivery = Delivery.from_message(signed("registered"), headers_of(str(uuid.uuid4()), "myebox", registered=True))
    for hubs_own in (Event.ACCEPTED, Event.ROUTED, Event.REJECTED, Event.UNDELIVERABLE):
        with pytest.raises(ValueError, match="cannot report"):
            client.acknowledgement(delivery, hubs_own)
    with pytest.raises(ValueError, match="reply"):
        client.acknowledgement(delivery, Event.REPLIED)
    with pytest.raises(ValueError, match="reply"):
        client.acknowledgement(delivery, Event.OPENED, reply=Reply(choice_id="accept"))
    at = datetime(2026, 11, 3, 8, tzinfo=UTC)
    ack = client.acknowledgement(
        delivery,
        Event.OPENED,
        occurred_at=at,
        delivered_at=at - timedelta(hours=1),
        assurance_level=AssuranceLevel.HIGH,
    )
    assert (ack.issuer, ack.provider, ack.hub_message_id, ack.delivery_id) == (
        "myebox",
        "myebox",
        delivery.hub_message_id,
        delivery.delivery_id,
    )
    assert ack.proof is not None and ack.proof.envelope_digest == delivery.envelope_digest
    assert (ack.proof.delivered_at, ack.proof.opened_at, ack.proof.assurance_level) == (
        at - timedelta(hours=1),
        at,
        AssuranceLevel.HIGH,
    )
    assert client.acknowledgement(delivery, Event.FAILED).proof is None


# -- the simulated providers on a broker -------------------------------------------------------


def test_a_portal_acknowledges_delivered_at_once_then_opened(hub_broker):
    deliveries = dict(new_delivery(hub_broker, "myebox", "citizen-letter") for _ in range(3))
    with running(hub_broker, "myebox") as simulated:
        acks = opened("myebox", drain(hub_broker, "hub.acks", expect=6, limit=15))
    assert drain(hub_broker, "hub.acks") == []
    grouped = by_delivery(acks)
    assert set(grouped) == set(deliveries)
    for delivery_id, events in grouped.items():
        assert [a.event for a in events] == [Event.DELIVERED, Event.OPENED]
        assert [a.ack_id for a in events] == [f"{delivery_id}:delivered", f"{delivery_id}:opened"]
        assert all(a.envelope_digest == hashlib.sha256(deliveries[delivery_id]).digest() for a in events)
        assert all(a.proof is None and a.reply is None for a in events)  # not registered, no reply options
        assert events[0].occurred_at <= events[1].occurred_at
    assert (simulated.stats["delivered"], simulated.stats["opened"]) == (3, 3)


def test_an_acknowledgement_does_not_verify_against_another_providers_certificate(hub_broker):
    new_delivery(hub_broker, "doccle", "citizen-letter")
    with running(hub_broker, "doccle", Behaviour(open_probability=0.0)):
        got = drain(hub_broker, "hub.acks", expect=1, limit=15)
    assert [a.event for a in opened("doccle", got)] == [Event.DELIVERED]
    impostor = Verifier(TrustStore([trusted("doccle", provider_keys("myebox").certificate)]))
    with pytest.raises(Rejected) as refused:
        open_acknowledgement(got[0].body, impostor, datetime.now(UTC))
    assert refused.value.code in (ErrorCode.UNKNOWN_SIGNER, ErrorCode.SIGNATURE_INVALID)


def test_a_registered_delivery_is_acknowledged_with_proofs(hub_broker):
    delivery_id, body = new_delivery(hub_broker, "irisbox", "registered")
    with running(hub_broker, "irisbox"):
        delivered, opening = opened("irisbox", drain(hub_broker, "hub.acks", expect=2, limit=15))
    digest = hashlib.sha256(body).digest()
    assert (delivered.event, opening.event) == (Event.DELIVERED, Event.OPENED)
    assert delivered.proof is not None and opening.proof is not None
    assert (delivered.proof.envelope_digest, delivered.proof.provider) == (digest, "irisbox")
    assert delivered.proof.delivered_at == delivered.occurred_at and delivered.proof.opened_at is None
    assert (opening.proof.envelope_digest, opening.proof.provider) == (digest, "irisbox")
    assert opening.proof.delivered_at == delivered.occurred_at
    assert opening.proof.opened_at == opening.occurred_at
    assert opening.proof.assurance_level is AssuranceLevel.HIGH  # what the envelope asked for
    assert delivered.delivery_id == opening.delivery_id == delivery_id


def test_paper_acknowledges_printed_only(hub_broker):
    new_delivery(hub_broker, "paper", "registered")
    new_delivery(hub_broker, "paper", "citizen-letter")
    behaviour = Behaviour(open_probability=1.0, open_delay_s=0.05, reply_probability=1.0, seed=3)
    with running(hub_broker, "paper", behaviour) as simulated:
        acks = opened("paper", drain(hub_broker, "hub.acks", expect=2, limit=15))
        time.sleep(0.3)  # well past the open delay: nothing more comes
        assert simulated.pending == 0
    acks += opened("paper", drain(hub_broker, "hub.acks"))
    assert [a.event for a in acks] == [Event.PRINTED, Event.PRINTED]
    assert all(a.proof is None and a.reply is None for a in acks)
    assert simulated.stats["printed"] == 2 and simulated.stats["opened"] == 0


def test_replies_only_where_the_envelope_allows_one(hub_broker):
    choice_id, choice_body = new_delivery(hub_broker, "myebox", "registered")
    text_id, text_body = new_delivery(hub_broker, "myebox", "reply-free-text")
    letter_id, _ = new_delivery(hub_broker, "myebox", "citizen-letter")
    behaviour = Behaviour(open_probability=1.0, open_delay_s=0.05, reply_probability=1.0, seed=11)
    with running(hub_broker, "myebox", behaviour) as simulated:
        acks = opened("myebox", drain(hub_broker, "hub.acks", expect=8, limit=15))
        time.sleep(0.3)
    acks += opened("myebox", drain(hub_broker, "hub.acks"))
    grouped = by_delivery(acks)
    assert [a.event for a in grouped[choice_id]] == [Event.DELIVERED, Event.OPENED, Event.REPLIED]
    assert [a.event for a in grouped[text_id]] == [Event.DELIVERED, Event.OPENED, Event.REPLIED]
    assert [a.event for a in grouped[letter_id]] == [Event.DELIVERED, Event.OPENED]
    now = datetime.now(UTC)
    for delivery_id, body in ((choice_id, choice_body), (text_id, text_body)):
        reply = grouped[delivery_id][-1]
        options = Delivery.from_message(body, headers_of(str(uuid.uuid4()), "myebox", registered=False))
        assert reply.reply is not None
        assert reply_fits(options.envelope_model().content.reply_options, reply.reply, now) is None
    assert grouped[choice_id][-1].reply.choice_id in ("accept", "contest")
    assert grouped[text_id][-1].reply.text  # free text, within the 500 characters allowed
    assert simulated.stats["replied"] == 2


def test_a_delivery_without_its_headers_is_dead_lettered_and_the_loop_goes_on(hub_broker):
    headers = headers_of(str(uuid.uuid4()), "enterprise", registered=False)
    del headers["delivery-id"]
    deliver(hub_broker, "enterprise", signed("enterprise"), headers, message_id="outbox-broken")
    good_id, _ = new_delivery(hub_broker, "enterprise", "enterprise")
    with running(hub_broker, "enterprise", Behaviour(open_probability=0.0)):
        acks = opened("enterprise", drain(hub_broker, "hub.acks", expect=1, limit=15))
        dead = drain(hub_broker, "hub.dead", expect=1, limit=10)
    assert [(a.event, a.delivery_id) for a in acks] == [(Event.DELIVERED, good_id)]
    assert [d.message_id for d in dead] == ["outbox-broken"]
    assert dead[0].headers[REASON] == "SCHEMA_INVALID at headers/delivery-id"
    assert dead[0].headers[QUEUE] == "provider.enterprise"
    assert drain(hub_broker, "provider.enterprise") == []


def test_an_envelope_the_provider_cannot_read_is_acknowledged_failed(hub_broker):
    message_id = str(uuid.uuid4())
    deliver(hub_broker, "doccle", b"<not-an-envelope/>", headers_of(message_id, "doccle", registered=False))
    with running(hub_broker, "doccle") as simulated:
        (ack,) = opened("doccle", drain(hub_broker, "hub.acks", expect=1, limit=15))
        time.sleep(0.2)
    assert (ack.event, ack.ack_id) == (Event.FAILED, f"{message_id}:doccle:failed")
    assert ack.error is not None and ack.error.code == "SCHEMA_INVALID"
    assert drain(hub_broker, "hub.acks") == []
    assert simulated.stats["failed"] == 1


def test_the_same_delivery_handled_twice_gives_the_same_acknowledgements(hub_broker):
    body = signed("reply-free-text")
    message_id = str(uuid.uuid4())
    for _ in range(2):  # the broker redelivers, or the relay published twice
        deliver(hub_broker, "myebox", body, headers_of(message_id, "myebox", registered=False))
    behaviour = Behaviour(open_probability=1.0, open_delay_s=0.05, reply_probability=1.0, seed=5)
    with running(hub_broker, "myebox", behaviour):
        acks = opened("myebox", drain(hub_broker, "hub.acks", expect=6, limit=15))
    first: dict[Event, Acknowledgement] = {}
    second: dict[Event, Acknowledgement] = {}
    for ack in acks:
        (second if ack.event in first else first)[ack.event] = ack
    assert set(first) == set(second) == {Event.DELIVERED, Event.OPENED, Event.REPLIED}
    for event in first:
        assert first[event].ack_id == second[event].ack_id == ack_id(f"{message_id}:myebox", event)
    assert first[Event.REPLIED].reply == second[Event.REPLIED].reply  # the same choices, seeded per delivery


def test_a_batching_provider_acknowledges_what_arrived_together_under_one_signature(hub_broker):
    deliveries = dict(new_delivery(hub_broker, "myebox", "citizen-letter") for _ in range(6))
    unreadable_id = f"{uuid.uuid4()}:myebox"
    deliver(hub_broker, "myebox", b"<not-xml", headers_of(unreadable_id.split(":")[0], "myebox", registered=False))
    deliver(hub_broker, "myebox", signed("citizen-letter"), {"priority": "normal"}, message_id="headless")
    simulated = SimulatedProvider(
        "myebox",
        hub_broker,
        provider_keys("myebox"),
        behaviour=Behaviour(open_probability=0.0, seed=1),
        backoff=QUICK_RETRIES,
        poll=0.05,
        batch_size=50,
    )
    simulated.start()
    try:
        got = drain(hub_broker, "hub.acks", expect=2, idle=0.5, limit=15)
        dead = drain(hub_broker, "hub.dead", expect=1, limit=10)
    finally:
        simulated.stop()
        simulated.close()
    batches = [m for m in got if "items" in m.headers]
    singles = [m for m in got if "items" not in m.headers]
    now = datetime.now(UTC)
    acks = []
    for message in batches:
        items, verified = open_acknowledgements(message.body, verifier_of("myebox"), now)
        assert verified.signer.party == "myebox" and int(message.headers["items"]) == len(items)
        acks += items
    assert len(batches) < len(deliveries)  # what was waiting went under one signature, not six
    assert sorted(a.ack_id for a in acks) == sorted(ack_id(d, Event.DELIVERED) for d in deliveries)
    assert all(a.envelope_digest == hashlib.sha256(deliveries[a.delivery_id]).digest() for a in acks)
    assert [a.event for a in opened("myebox", singles)] == [Event.FAILED]  # the unreadable one, on its own
    assert [d.message_id for d in dead] == ["headless"]
    assert simulated.stats["delivered"] == 6 and simulated.stats["failed"] == 1


def test_publish_all_refuses_another_providers_acknowledgements_and_sends_nothing(hub_broker):
    with ProviderClient("doccle", hub_broker, provider_keys("doccle")) as client:
        delivery = Delivery.from_message(
            signed("citizen-letter"), headers_of(str(uuid.uuid4()), "doccle", registered=False)
        )
        mine = client.acknowledgement(delivery, Event.DELIVERED)
        theirs = dataclasses.replace(mine, issuer="myebox", provider="myebox")
        with pytest.raises(ValueError, match="myebox"):
            client.publish_all([mine, theirs])
    assert drain(hub_broker, "hub.acks") == []


# -- envelopes that travel by reference (claim check) --------------------------------------------

CLAIM_BODY = signed("citizen-letter")


def claim_headers(url: str = "https://hub.example/v1/deliveries/m:myebox/envelope", **change: Any) -> dict[str, Any]:
    headers = {
        "envelope-url": url,
        "envelope-bytes": len(CLAIM_BODY),
        "envelope-sha256": hashlib.sha256(CLAIM_BODY).hexdigest(),
    }
    return headers | change


def fetcher(
    answer: Callable[[httpx.Request], httpx.Response], seen: list[httpx.Request] | None = None
) -> EnvelopeFetcher:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return answer(request)

    return EnvelopeFetcher("https://hub.example", "tok-myebox", transport=httpx.MockTransport(handler))


def test_a_claim_checked_envelope_is_fetched_from_the_hub_with_the_token_and_checked():
    seen: list[httpx.Request] = []
    got = fetcher(lambda r: httpx.Response(200, content=CLAIM_BODY), seen).resolve(b"", claim_headers())
    assert got == CLAIM_BODY
    assert [(r.method, str(r.url), r.headers["Authorization"]) for r in seen] == [
        ("GET", "https://hub.example/v1/deliveries/m:myebox/envelope", "Bearer tok-myebox")
    ]
    assert fetcher(lambda r: httpx.Response(500)).resolve(b"<x/>", claim_headers()) == b"<x/>"  # a body: no fetch


@pytest.mark.parametrize(
    ("answer", "headers", "error", "code"),
    [
        (httpx.Response(404), claim_headers(), Rejected, ErrorCode.MESSAGE_NOT_FOUND),
        (httpx.Response(410), claim_headers(), Rejected, ErrorCode.CONTENT_EXPIRED),
        (httpx.Response(503), claim_headers(), Unavailable, None),
        (httpx.Response(401), claim_headers(), Unavailable, None),  # a token not yet registered: retried
        (httpx.Response(302, headers={"Location": "https://evil.example/"}), claim_headers(), Unavailable, None),
        (httpx.Response(200, content=CLAIM_BODY[:-1]), claim_headers(), Unavailable, None),  # cut short
        (httpx.Response(200, content=CLAIM_BODY.replace(b"e", b"E", 1)), claim_headers(), Unavailable, None),
        (None, claim_headers("https://evil.example/v1/deliveries/m:myebox/envelope"), Rejected, None),
        (None, claim_headers("http://hub.example/v1/deliveries/m:myebox/envelope"), Rejected, None),
        (None, claim_headers("https://hub.example:8443/v1/deliveries/m:myebox/envelope"), Rejected, None),
        (None, claim_headers("https://hub.example.evil.example/v1/x"), Rejected, None),
        (None, claim_headers(**{"envelope-bytes": "many"}), Rejected, None),
        (None, claim_headers(**{"envelope-sha256": "zz"}), Rejected, None),
    ],
    ids=[
        "not-yours",
        "expired",
        "hub-down",
        "token-unknown",
        "redirect",
        "cut-short",
        "other-bytes",
        "other-host",
        "other-scheme",
        "other-port",
        "lookalike-host",
        "bad-size",
        "bad-digest",
    ],
)
def test_a_claim_that_cannot_be_honoured_is_refused_or_retried_and_the_token_stays_home(answer, headers, error, code):
    seen: list[httpx.Request] = []

    def reply(request: httpx.Request) -> httpx.Response:
        assert answer is not None, "the token must not be sent there"
        return answer

    with pytest.raises(error) as caught:
        fetcher(reply, seen).resolve(b"", headers)
    if code is not None:
        assert caught.value.code is code
    assert all(r.url.host == "hub.example" for r in seen)


def test_a_client_without_a_token_retries_a_claim_checked_delivery_rather_than_losing_it(hub_broker):
    message_id = str(uuid.uuid4())
    deliver(hub_broker, "myebox", b"", headers_of(message_id, "myebox", registered=False) | claim_headers())
    handled: list[Delivery] = []
    stop = threading.Event()
    with ProviderClient("myebox", hub_broker, provider_keys("myebox"), backoff=QUICK_RETRIES, poll=0.05) as client:
        thread = threading.Thread(target=client.run, args=(handled.append, stop), daemon=True)
        thread.start()
        try:
            dead = drain(hub_broker, "hub.dead", expect=1, limit=15)
        finally:
            stop.set()
            thread.join(10)
    assert handled == []
    assert len(dead) == 1 and "api_token" in str(dead[0].headers.get(REASON, ""))


def test_stop_with_openings_pending_returns_promptly_and_sends_none_of_them(hub_broker):
    for _ in range(5):
        new_delivery(hub_broker, "irisbox", "citizen-letter")
    behaviour = Behaviour(open_probability=1.0, open_delay_s=30.0, reply_probability=0.0, seed=1)
    simulated = simulate(hub_broker, "irisbox", behaviour)
    try:
        delivered = opened("irisbox", drain(hub_broker, "hub.acks", expect=5, limit=15))
        deadline = time.monotonic() + 5
        while simulated.pending < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert simulated.pending == 5
        started = time.monotonic()
        simulated.stop()
        assert time.monotonic() - started < 2.0
    finally:
        simulated.close()
    assert [a.event for a in delivered] == [Event.DELIVERED] * 5
    assert simulated.pending == 0
    assert not any(t.name.startswith("simulated-irisbox") and t.is_alive() for t in threading.enumerate())
    assert drain(hub_broker, "hub.acks") == []


def test_the_simulate_command_creates_a_key_once_and_acknowledges(hub_broker, tmp_path, monkeypatch):
    monkeypatch.setenv("HUB_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("HUB_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("HUB_BROKER_URL", hub_broker)
    (tmp_path / "config").mkdir()
    delivery_id, _ = new_delivery(hub_broker, "doccle", "citizen-letter")
    from hub.cli import cli

    args = ["provider", "simulate", "doccle", "--open-probability", "0", "--seed", "2", "--duration", "1"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    cert_path = tmp_path / "var/providers/doccle.cert.pem"
    assert f"certificate: {cert_path.resolve()} (created)" in result.output
    assert "seed 2" in result.output and "doccle: delivered 1" in result.output
    certificate = load_certificates(cert_path)[0]
    got = drain(hub_broker, "hub.acks", expect=1, limit=10)
    ack, _ = open_acknowledgement(
        got[0].body, Verifier(TrustStore([trusted("doccle", certificate)])), datetime.now(UTC)
    )
    assert (ack.event, ack.delivery_id) == (Event.DELIVERED, delivery_id)
    again = CliRunner().invoke(cli, [*args[:3], "--duration", "0.2"], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert "(created)" not in again.output and str(cert_path.resolve()) in again.output
    assert load_certificates(cert_path)[0] == certificate
    refused = CliRunner().invoke(cli, ["provider", "simulate", "postbox", "--duration", "0"])
    assert refused.exit_code == 2 and "postbox" in refused.output


def test_the_key_and_certificate_options_go_together(tmp_path):
    from hub.cli import cli

    key = tmp_path / "k.pem"
    key.write_text("x")
    result = CliRunner().invoke(cli, ["provider", "simulate", "myebox", "--key", str(key)])
    assert result.exit_code == 2 and "go together" in result.output


def test_the_examples_used_here_are_what_the_tests_think():
    # Guards the assumptions above: which examples ask for a reply, and how.
    assert ex.example("registered").content.reply_options.choices
    assert ex.example("reply-free-text").content.reply_options.free_text_max_length == 500
    assert ex.example("citizen-letter").content.reply_options is None
