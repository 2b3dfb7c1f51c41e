# ruff: noqa: F811 - pytest fixtures imported from the routing tests share their names with parameters
"""Acknowledgements end to end: providers report, the hub verifies and applies, the sender gets each event signed.

On SQLite + the in-process transport and on PostgreSQL + RabbitMQ: a registered letter is
accepted, routed to two providers, delivered by both, opened and replied to on one; the
sender's queue then holds accepted, routed, delivered x2, opened, replied, in that order,
each signed by the hub; the polling feed says the same, never skipping nor repeating. Forged,
foreign, duplicate and out-of-turn acknowledgements are refused or absorbed as the contract says.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from sqlalchemy import func, select
from starlette.testclient import TestClient

from hub.broker import topology
from hub.broker.consumer import consume, consume_batches
from hub.broker.relay import ClaimCheck
from hub.envelope import examples as ex
from hub.errors import ErrorCode, Rejected
from hub.inbound.http import build_app
from hub.inbound.senders import AckChannel
from hub.outbound.acks import Acknowledgement, Event, Reply, open_acknowledgements, read_acknowledgement
from hub.outbound.acks import signed_acknowledgement as sign_ack
from hub.outbound.feed import read, sequence
from hub.outbound.forwarding import Forwarder
from hub.outbound.intake import AckIntake, Applied
from hub.outbound.states import Outcome
from hub.routing.providers import ProviderCatalog, load_providers
from hub.safexml import parse
from hub.signing.signer import Signer
from hub.signing.truststore import TrustStore, trusted
from hub.signing.verifier import Verifier
from hub.store.models import AuditEntry, Delivery, Message, ProviderAcknowledgement
from hub.store.models import Event as EventRow
from tests.kit import NOW, TOKENS, directory, key_pair
from tests.test_broker import drain, publish
from tests.test_routing_worker import (  # noqa: F401 - shared fixtures
    PROVIDER_IDS,
    Stage,
    broker_url,
    config_dir,
    database_url,
    delete_queues,
)

SENDER = ex.SOCIAL
SENDER_QUEUE = f"sender.{SENDER}.acks"
PROVIDER_KEYS = {provider: key_pair(f"provider-{provider}") for provider in PROVIDER_IDS}
PROVIDER_TOKENS = {provider: f"token-{provider}" for provider in PROVIDER_IDS}


def catalog_with_keys(config_dir: Path) -> ProviderCatalog:
    """providers.yaml of the routing tests, each provider with its certificate and API token."""
    catalog = load_providers(config_dir / "providers.yaml")
    return ProviderCatalog(
        {
            pid: dataclasses.replace(
                provider,
                certificates=(trusted(pid, PROVIDER_KEYS[pid].certificate),),
                token_hashes=frozenset({hashlib.sha256(PROVIDER_TOKENS[pid].encode()).hexdigest()}),
            )
            for pid, provider in catalog.providers.items()
        }
    )


def _delete_queues(url: str) -> None:
    delete_queues(url, PROVIDER_IDS, (SENDER,))


class Loop(Stage):
    """The routing stage plus acknowledgements: intake, forwarder, and a sender that wants them by AMQP."""

    def __init__(self, tmp_path: Path, database_url: str, url: str, config_dir: Path) -> None:
        super().__init__(tmp_path, database_url, url, config_dir)
        senders = directory()
        social = dataclasses.replace(senders.institutions[SENDER], acknowledgements=AckChannel(kind="amqp"))
        self.senders = dataclasses.replace(senders, institutions={**senders.institutions, SENDER: social})
        self.runtime.directory = self.senders
        self.catalog = catalog_with_keys(config_dir)
        self.acks = AckIntake(self.sessions, self.catalog, clock=lambda: self.now)
        self.forwarder = Forwarder(self.sessions, Signer(self.runtime.hub_keys), self.senders, clock=lambda: self.now)
        with Connection(url) as connection:
            topology.declare(connection, PROVIDER_IDS, self.forwarder.pushed_senders())

    def ack(self, provider: str, message_id: str, event: Event, *, minutes: int = 1, **more: Any) -> bytes:
        key = more.pop("key", PROVIDER_KEYS[provider])
        document = Acknowledgement(
            ack_id=more.pop("ack_id", f"{provider}-{message_id[:8]}-{event.value}"),
            event=event,
            occurred_at=NOW + timedelta(minutes=minutes),
            issuer=more.pop("issuer", provider),
            hub_message_id=message_id,
            provider=more.pop("provider", provider),
            **more,
        )
        return sign_ack(Signer(key), document)

    def report(self, provider: str, message_id: str, event: Event, **more: Any) -> Applied:
        [result] = self.acks.receive(self.ack(provider, message_id, event, **more), issuers=[provider])
        if isinstance(result, Rejected):
            raise result
        return result

    def forward(self) -> int:
        total = 0
        while passed := self.forwarder.run_once():
            total += passed
        return total

    def sender_queue(self, expect: int) -> list[Acknowledgement]:
        got = drain(self.url, SENDER_QUEUE, expect=expect, idle=0.3, limit=10)
        verifier = Verifier(TrustStore([trusted("hub", self.runtime.hub_keys.certificate)]))
        acks = []
        for message in got:
            root = parse(message.body)
            verifier.verify(root, now=datetime.now(UTC), parties=["hub"])  # each signed by the hub (key made today)
            acks.append(read_acknowledgement(root))
        return acks


@pytest.fixture
def loop(tmp_path, database_url, broker_url, config_dir) -> Iterator[Loop]:
    _delete_queues(broker_url)
    hub_loop = Loop(tmp_path, database_url, broker_url, config_dir)
    yield hub_loop
    hub_loop.close()
    _delete_queues(broker_url)


def registered_letter(loop: Loop) -> str:
    loop.reads_with(ex.CITIZEN_A, "myebox", "irisbox")
    message_id, _ = loop.submit("registered")
    assert loop.relay() == 1 and loop.route(1) == [None]
    assert loop.relay() == 2  # one delivery each to myebox and irisbox
    return message_id


# -- the whole loop ---------------------------------------------------------------------------------


LIVED = [
    ("accepted", None),
    ("routed", None),
    ("delivered", "myebox"),
    ("delivered", "irisbox"),
    ("opened", "myebox"),
    ("replied", "myebox"),
]
"""The events of ``lived``, in feed order: (event, provider)."""


def lived(loop: Loop) -> str:
    """A registered letter delivered by both providers, opened and answered on myebox: six events."""
    message_id = registered_letter(loop)
    loop.report("myebox", message_id, Event.DELIVERED, minutes=1)
    loop.report("irisbox", message_id, Event.DELIVERED, minutes=2)
    loop.report("myebox", message_id, Event.OPENED, minutes=3)
    loop.report("myebox", message_id, Event.REPLIED, minutes=4, reply=Reply(choice_id="accept"))
    return message_id


def test_the_sender_receives_every_event_in_order_each_signed_by_the_hub(loop):
    message_id = lived(loop)
    assert loop.forward() == 6
    assert loop.relay() == 6

    acks = loop.sender_queue(expect=6)
    assert [(a.event.value, a.provider) for a in acks] == LIVED
    assert all(a.issuer == "hub" and a.hub_message_id == message_id for a in acks)
    assert all(a.sender_message_id == "INSP-2026-0042" for a in acks)
    assert len({a.ack_id for a in acks}) == 6
    assert acks[1].routes is not None and sorted(acks[1].routes.providers) == ["irisbox", "myebox"]
    assert acks[5].reply == Reply(choice_id="accept")
    # registered mail: delivered and opened carry a proof with the digest of what the sender sent
    digest = bytes.fromhex(loop.message(message_id).envelope_sha256)
    for proof_ack in (acks[2], acks[3], acks[4]):
        assert proof_ack.proof is not None and proof_ack.proof.envelope_digest == digest
        assert proof_ack.proof.provider == proof_ack.provider
    assert acks[2].proof is not None and acks[2].proof.delivered_at == NOW + timedelta(minutes=1)
    assert acks[4].proof is not None and acks[4].proof.opened_at == NOW + timedelta(minutes=3)
    assert loop.message(message_id).state == "replied"
    assert {d.provider: d.state for d in loop.deliveries(message_id)} == {"myebox": "replied", "irisbox": "delivered"}
    # nothing more to forward: each event became one acknowledgement
    assert loop.forward() == 0 and loop.relay() == 0


def test_the_polling_feed_never_skips_nor_repeats_and_shows_a_sender_only_its_own(loop):
    message_id = registered_letter(loop)
    other, _ = loop.submit("citizen-letter")  # another institution's message
    with TestClient(build_app(loop.runtime)) as client:
        client.app.state.ack_intake = loop.acks  # type: ignore[attr-defined]
        headers = {"Authorization": f"Bearer {TOKENS[SENDER]}"}
        first = client.get("/v1/acks?limit=1", headers=headers)
        assert first.status_code == 200, first.text
        cursor = first.headers["X-Hub-Cursor"]
        loop.report("myebox", message_id, Event.OPENED)  # implies delivered: two events
        seen = [read_acknowledgement_items(first.content)]
        while True:
            page = client.get(f"/v1/acks?after={cursor}&limit=2", headers=headers)
            if page.status_code == 204:
                assert page.headers["X-Hub-Cursor"] == cursor
                break
            assert page.status_code == 200, page.text
            seen.append(read_acknowledgement_items(page.content, verify_with=loop.runtime.hub_keys.certificate))
            cursor = page.headers["X-Hub-Cursor"]
        events = [(a.event.value, a.hub_message_id) for batch in seen for a in batch]
        assert events == [
            ("accepted", message_id),
            ("routed", message_id),
            ("delivered", message_id),
            ("opened", message_id),
        ]
        assert other not in {m for _, m in events}
        assert client.get("/v1/acks").status_code == 401
        assert client.get("/v1/acks?after=-1", headers=headers).status_code == 400
        assert client.get("/v1/acks?limit=5000", headers=headers).status_code == 400


@pytest.mark.parametrize(("batch", "sizes"), [(50, [6]), (4, [4, 2])], ids=["one-batch", "batches-of-4"])
def test_a_sender_that_asks_for_batches_gets_its_events_in_order_under_one_signature_per_batch(loop, batch, sizes):
    social = dataclasses.replace(
        loop.senders.institutions[SENDER], acknowledgements=AckChannel(kind="amqp", batch=batch)
    )
    senders = dataclasses.replace(loop.senders, institutions={**loop.senders.institutions, SENDER: social})
    loop.forwarder = Forwarder(loop.sessions, Signer(loop.runtime.hub_keys), senders, clock=lambda: loop.now)
    message_id = lived(loop)
    assert loop.forward() == 6
    assert loop.relay() == len(sizes)
    got = drain(loop.url, SENDER_QUEUE, expect=len(sizes), idle=0.3, limit=10)
    assert [int(m.headers["items"]) for m in got] == sizes
    items = [a for m in got for a in read_acknowledgement_items(m.body, verify_with=loop.runtime.hub_keys.certificate)]
    assert [(a.event.value, a.provider) for a in items] == LIVED
    assert {a.hub_message_id for a in items} == {message_id}
    assert len({a.ack_id for a in items}) == 6  # each event keeps its own id inside the batch
    loop.report("irisbox", message_id, Event.OPENED, minutes=5)
    assert loop.forward() == 1 and loop.relay() == 1  # with one event waiting, the batch is that one
    [late] = drain(loop.url, SENDER_QUEUE, expect=1, idle=0.3, limit=10)
    assert int(late.headers["items"]) == 1
    tampered = late.body.replace(b"opened", b"closed", 1)
    with pytest.raises(Rejected):
        read_acknowledgement_items(tampered, verify_with=loop.runtime.hub_keys.certificate)


def test_a_providers_batch_is_applied_item_by_item_and_a_refused_item_leaves_the_others(loop):
    from hub.outbound.acks import signed_acknowledgements

    message_id = registered_letter(loop)
    other, _ = loop.submit("citizen-letter")  # not routed to irisbox: irisbox cannot report on it
    items = [
        Acknowledgement(
            ack_id=f"irisbox-{mid[:8]}-{event.value}",
            event=event,
            occurred_at=NOW + timedelta(minutes=minute),
            issuer="irisbox",
            hub_message_id=mid,
            provider="irisbox",
        )
        for minute, (mid, event) in enumerate(
            [(message_id, Event.DELIVERED), (other, Event.DELIVERED), (message_id, Event.OPENED)], start=1
        )
    ]
    results = loop.acks.receive(signed_acknowledgements(Signer(PROVIDER_KEYS["irisbox"]), items))
    assert [type(r).__name__ for r in results] == ["Applied", "Rejected", "Applied"]
    assert {d.provider: d.state for d in loop.deliveries(message_id)} == {"myebox": "pending", "irisbox": "opened"}
    again = loop.acks.receive(signed_acknowledgements(Signer(PROVIDER_KEYS["irisbox"]), items[:1]))
    assert [type(r).__name__ for r in again] == ["Applied"]  # a repeat, absorbed
    assert [e.kind for e in loop.events(message_id)] == ["accepted", "routed", "delivered", "opened"]


def test_a_large_envelope_travels_by_reference_and_only_its_provider_can_fetch_it(loop):
    loop.claim_check = ClaimCheck(above=1000, base_url="http://testserver")  # every example is "large" here
    loop.reads_with(ex.CITIZEN_A, "myebox", "irisbox")
    message_id, data = loop.submit("registered")
    assert loop.relay() == 1 and loop.route(1) == [None]
    assert loop.relay() == 2
    [claim] = drain(loop.url, "provider.myebox", expect=1, limit=10)
    assert claim.body == b""  # the broker carries the reference, not the envelope
    url = f"http://testserver/v1/deliveries/{message_id}:myebox/envelope"
    assert claim.headers["envelope-url"] == url
    assert int(claim.headers["envelope-bytes"]) == len(data)
    assert claim.headers["envelope-sha256"] == hashlib.sha256(data).hexdigest()
    with TestClient(build_app(loop.runtime)) as client:
        client.app.state.ack_intake = loop.acks  # type: ignore[attr-defined]

        def get(path: str, provider: str | None) -> Any:
            headers = {"Authorization": f"Bearer {PROVIDER_TOKENS[provider]}"} if provider else {}
            return client.get(path, headers=headers)

        mine = get(url, "myebox")
        assert mine.status_code == 200 and mine.content == data
        assert mine.headers["X-Hub-Envelope-Sha256"] == hashlib.sha256(data).hexdigest()
        # another provider, no token, a forged token, an unknown or absurd id: nothing is disclosed
        for path, provider in [
            (url, "irisbox"),
            (f"/v1/deliveries/{message_id}:irisbox/envelope", "myebox"),
            (f"/v1/deliveries/{'0' * 36}:myebox/envelope", "myebox"),
            (f"/v1/deliveries/{'x' * 5000}/envelope", "myebox"),
        ]:
            refused = get(path, provider)
            assert (refused.status_code, b"MESSAGE_NOT_FOUND" in refused.content) == (404, True), path
        assert get(url, None).status_code == 401
        assert client.get(url, headers={"Authorization": "Bearer not-a-token"}).status_code == 401
        with loop.sessions() as session:  # retention removes the content
            session.get(Message, message_id).envelope = None  # type: ignore[union-attr]
            session.commit()
        expired = get(url, "myebox")
        assert (expired.status_code, b"CONTENT_EXPIRED" in expired.content) == (410, True)


def test_a_provider_fetches_claim_checked_envelopes_and_acknowledges_them_like_any_other(loop):
    import httpx

    from hub.outbound.claims import EnvelopeFetcher
    from hub.outbound.simulated import Behaviour, SimulatedProvider

    loop.claim_check = ClaimCheck(above=1000, base_url="http://testserver")
    loop.reads_with(ex.CITIZEN_A, "myebox")
    submitted = dict(loop.submit("citizen-letter", sender_message_id=f"CLAIM-{i}") for i in range(3))
    assert loop.relay() == 3 and loop.route(3) == [None] * 3
    assert loop.relay() == 3
    with TestClient(build_app(loop.runtime)) as web:
        web.app.state.ack_intake = loop.acks  # type: ignore[attr-defined]

        def through_the_app(request: httpx.Request) -> httpx.Response:
            answer = web.get(request.url.path, headers={"Authorization": request.headers["Authorization"]})
            return httpx.Response(answer.status_code, content=answer.content, headers=answer.headers)

        provider = SimulatedProvider(
            "myebox", loop.url, PROVIDER_KEYS["myebox"], behaviour=Behaviour(open_probability=0.0), poll=0.05
        )
        provider.client.fetcher = EnvelopeFetcher(
            "http://testserver", PROVIDER_TOKENS["myebox"], transport=httpx.MockTransport(through_the_app)
        )
        provider.start()
        try:
            got = drain(loop.url, "hub.acks", expect=3, limit=15)
        finally:
            provider.stop()
            provider.close()
    acks = [a for m in got for a in loop.acks.open(m.body)]
    assert sorted(a.hub_message_id for a in acks) == sorted(submitted)  # type: ignore[type-var]
    for ack in acks:  # the digest the provider signs is of the envelope it fetched: the sender's bytes
        assert ack.envelope_digest == hashlib.sha256(submitted[ack.hub_message_id]).digest()  # type: ignore[index]
    loop.now = datetime.now(UTC)  # the simulated provider reports on the real clock, the hub's must agree
    assert all(isinstance(r, Applied) for r in loop.acks.apply(acks))
    assert {loop.message(m).state for m in submitted} == {"delivered"}


def read_acknowledgement_items(data: bytes, verify_with: Any = None) -> list[Acknowledgement]:
    if verify_with is not None:
        verifier = Verifier(TrustStore([trusted("hub", verify_with)]))
        acks, _ = open_acknowledgements(data, verifier, datetime.now(UTC), issuers=["hub"])
        return acks
    from hub.outbound.acks import read_acknowledgements

    return read_acknowledgements(parse(data))


def test_events_committed_out_of_id_order_are_fed_in_commit_order_without_a_gap(loop):
    message_id = registered_letter(loop)
    with loop.sessions() as session:
        assert sequence(session) == 2  # accepted, routed
        session.commit()
        first = read(session, after=0, limit=10)
    assert [i.kind for i in first] == ["accepted", "routed"]
    # Two transactions insert events; the one with the lower id commits last.
    early, late = loop.sessions(), loop.sessions()
    try:
        for session, kind in ((early, "delivered"), (late, "opened")):
            session.add(EventRow(message_id=message_id, kind=kind, occurred_at=NOW, source="t", detail="{}"))
            session.flush()
            if loop.url.startswith("memory"):  # SQLite has one writer at a time: commit in order instead
                session.commit()
        if not loop.url.startswith("memory"):
            late.commit()
            with loop.sessions() as reader:
                sequence(reader)
                reader.commit()
                middle = read(reader, after=first[-1].seq, limit=10)
            assert [i.kind for i in middle] == ["opened"]
            early.commit()
        with loop.sessions() as reader:
            sequence(reader)
            reader.commit()
            rest = read(reader, after=first[-1].seq, limit=10)
    finally:
        early.close()
        late.close()
    assert sorted(i.kind for i in rest) == ["delivered", "opened"]
    assert [i.seq for i in rest] == sorted(i.seq for i in rest) == list(range(3, 5))


# -- the state machine, applied -----------------------------------------------------------------------


def test_opened_before_delivered_records_both_and_a_late_delivered_moves_nothing(loop):
    message_id = registered_letter(loop)
    opened = loop.report("myebox", message_id, Event.OPENED, minutes=5)
    assert (opened.outcome, opened.delivery_state, opened.message_state) == (Outcome.MOVED, "opened", "opened")
    late = loop.report("myebox", message_id, Event.DELIVERED, minutes=1)
    assert (late.outcome, late.delivery_state) == (Outcome.LATE, "opened")
    assert [e.kind for e in loop.events(message_id)] == ["accepted", "routed", "delivered", "opened"]
    failed = loop.report("irisbox", message_id, Event.FAILED)
    assert failed.delivery_state == "failed" and failed.message_state == "opened"  # never moves back


def test_a_repeated_acknowledgement_is_absorbed_and_a_reused_id_is_refused(loop):
    message_id = registered_letter(loop)
    first = loop.report("myebox", message_id, Event.DELIVERED)
    again = loop.report("myebox", message_id, Event.DELIVERED)  # signed anew: other bytes, same content
    assert (first.outcome, again.outcome) == (Outcome.MOVED, Outcome.REPEAT)
    with pytest.raises(Rejected) as refused:
        loop.report("myebox", message_id, Event.OPENED, ack_id=f"myebox-{message_id[:8]}-delivered")
    assert refused.value.code is ErrorCode.DUPLICATE_MESSAGE_ID
    assert [e.kind for e in loop.events(message_id)].count("delivered") == 1


def test_one_reply_per_message_a_second_is_refused_to_the_provider(loop):
    message_id = registered_letter(loop)
    loop.report("myebox", message_id, Event.REPLIED, reply=Reply(choice_id="contest"))
    with pytest.raises(Rejected) as refused:
        loop.report("irisbox", message_id, Event.REPLIED, reply=Reply(choice_id="accept"))
    assert refused.value.code is ErrorCode.REPLY_ALREADY_GIVEN
    with pytest.raises(Rejected) as unknown_choice:
        loop.report("irisbox", message_id, Event.REPLIED, reply=Reply(choice_id="maybe"), ack_id="other")
    assert unknown_choice.value.code in (ErrorCode.REPLY_ALREADY_GIVEN, ErrorCode.REPLY_NOT_ALLOWED)
    assert {d.provider: d.state for d in loop.deliveries(message_id)}["irisbox"] == "pending"


def test_a_reply_outside_the_envelopes_reply_options_is_refused(loop):
    message_id = registered_letter(loop)
    with pytest.raises(Rejected) as refused:
        loop.report("myebox", message_id, Event.REPLIED, reply=Reply(choice_id="maybe"))
    assert refused.value.code is ErrorCode.REPLY_NOT_ALLOWED
    assert loop.message(message_id).state == "routed"


# -- hostile acknowledgements -----------------------------------------------------------------------


def counts(loop: Loop) -> dict[str, int]:
    with loop.sessions() as session:
        return {
            model.__tablename__: int(session.scalar(select(func.count()).select_from(model)) or 0)
            for model in (EventRow, ProviderAcknowledgement, AuditEntry, Delivery, Message)
        }


def test_forged_foreign_and_unknown_acknowledgements_are_refused_and_leave_nothing(loop):
    message_id = registered_letter(loop)
    before = counts(loop)
    cases = {
        # signed with doccle's key, claiming to be myebox
        "forged": (loop.ack("myebox", message_id, Event.DELIVERED, key=PROVIDER_KEYS["doccle"]), "myebox"),
        # doccle, properly signed, acknowledging myebox's delivery
        "foreign": (loop.ack("doccle", message_id, Event.DELIVERED, delivery_id=f"{message_id}:myebox"), "doccle"),
        # a delivery that was never routed to doccle
        "not routed": (loop.ack("doccle", message_id, Event.DELIVERED), "doccle"),
        "unknown message": (loop.ack("myebox", "00000000-0000-4000-8000-000000000000", Event.DELIVERED), "myebox"),
        "printed by a non-printer": (loop.ack("myebox", message_id, Event.PRINTED), "myebox"),
        "tampered": (loop.ack("myebox", message_id, Event.DELIVERED).replace(b">delivered<", b">opened<"), "myebox"),
        "hub event": (loop.ack("myebox", message_id, Event.ROUTED), "myebox"),
        "not xml": (b"<Acknowledgement", "myebox"),
    }
    expected = {
        "forged": ErrorCode.UNKNOWN_SIGNER,
        "foreign": ErrorCode.ACK_NOT_YOURS,
        "not routed": ErrorCode.ACK_UNKNOWN_DELIVERY,
        "unknown message": ErrorCode.ACK_UNKNOWN_DELIVERY,
        "printed by a non-printer": ErrorCode.ACK_EVENT_NOT_ALLOWED,
        "tampered": ErrorCode.SIGNATURE_INVALID,
        "hub event": ErrorCode.ACK_EVENT_NOT_ALLOWED,
    }
    for name, (data, issuer) in cases.items():
        try:
            [result] = loop.acks.receive(data, issuers=[issuer])
        except Rejected as refused:
            result = refused
        assert isinstance(result, Rejected), name
        if name in expected:
            assert result.code is expected[name], (name, result)
    assert counts(loop) == before  # nothing written by any of them


def test_post_acks_takes_a_providers_acknowledgement_with_its_token_and_refuses_anothers(loop):
    message_id = registered_letter(loop)
    with TestClient(build_app(loop.runtime)) as client:
        client.app.state.ack_intake = loop.acks  # type: ignore[attr-defined]

        def post(data: bytes, provider: str) -> Any:
            return client.post(
                "/v1/acks",
                content=data,
                headers={"Content-Type": "application/xml", "Authorization": f"Bearer {PROVIDER_TOKENS[provider]}"},
            )

        ok = post(loop.ack("myebox", message_id, Event.DELIVERED), "myebox")
        assert ok.status_code == 200, ok.text
        assert ok.json()["outcome"] == "moved" and ok.json()["message_state"] == "delivered"
        assert post(loop.ack("myebox", message_id, Event.DELIVERED), "myebox").json()["outcome"] == "repeat"
        # myebox's acknowledgement posted with irisbox's token: not irisbox's to send
        wrong = post(loop.ack("myebox", message_id, Event.OPENED), "irisbox")
        assert wrong.status_code in (401, 403) and b"NOT_AUTHORISED" in wrong.content
        foreign = post(loop.ack("irisbox", message_id, Event.DELIVERED, delivery_id=f"{message_id}:myebox"), "irisbox")
        assert foreign.status_code == 403 and b"ACK_NOT_YOURS" in foreign.content
        assert client.post("/v1/acks", content=b"<x/>", headers={"Content-Type": "application/xml"}).status_code == 401
        text = client.post(
            "/v1/acks",
            content=b"{}",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {PROVIDER_TOKENS['myebox']}"},
        )
        assert text.status_code == 415


@pytest.mark.parametrize("batched", [False, True], ids=["one-by-one", "batches"])
def test_acknowledgements_published_to_hub_acks_are_applied_and_a_forged_one_is_dead_lettered(loop, batched):
    message_id = registered_letter(loop)
    publish(loop.url, "hub.acks", "acks", loop.ack("myebox", message_id, Event.DELIVERED), message_id="a-1")
    forged = loop.ack("irisbox", message_id, Event.DELIVERED, key=PROVIDER_KEYS["myebox"])
    publish(loop.url, "hub.acks", "acks", forged, message_id="a-2")
    publish(loop.url, "hub.acks", "acks", loop.ack("myebox", message_id, Event.OPENED), message_id="a-3")
    stop = threading.Event()
    if batched:
        target, handler = consume_batches, loop.acks.handle_batch
    else:
        target, handler = consume, loop.acks.handle  # type: ignore[assignment]
    thread = threading.Thread(
        target=target,
        args=(loop.url, "hub.acks", handler),
        kwargs={"stop": stop, "poll": 0.05},
        daemon=True,
    )
    thread.start()
    try:
        dead = drain(loop.url, "hub.dead", expect=1, limit=10)
    finally:
        stop.set()
        thread.join(10)
    assert [(d.message_id, d.headers["x-hub-code"]) for d in dead] == [("a-2", "UNKNOWN_SIGNER")]
    deadline = time.monotonic() + 10
    while loop.message(message_id).state != "opened" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert {d.provider: d.state for d in loop.deliveries(message_id)} == {"myebox": "opened", "irisbox": "pending"}
    assert [e.kind for e in loop.events(message_id)] == ["accepted", "routed", "delivered", "opened"]


def test_an_acknowledgement_keeps_when_it_happened_and_when_the_hub_received_it(loop):
    message_id = registered_letter(loop)
    loop.now = NOW + timedelta(days=1)
    applied = loop.report("myebox", message_id, Event.DELIVERED, minutes=90)
    assert applied.outcome is Outcome.MOVED
    with loop.sessions() as session:
        row = session.get(ProviderAcknowledgement, ("myebox", f"myebox-{message_id[:8]}-delivered"))
        assert row is not None
        assert (row.occurred_at, row.received_at) == (NOW + timedelta(minutes=90), NOW + timedelta(days=1))
    [delivered] = [e for e in loop.events(message_id) if e.kind == "delivered"]
    assert delivered.occurred_at == NOW + timedelta(minutes=90) and delivered.provider == "myebox"


def test_an_acknowledgement_dated_in_the_future_or_before_its_delivery_is_refused(loop):
    """OccurredAt goes into registered-mail proofs and decides whether a reply came in time: a provider cannot
    date an event ahead of the hub's clock, nor before the delivery was routed to it (5 minutes of skew)."""
    message_id = registered_letter(loop)
    before = counts(loop)
    for minutes in (60, -24 * 60):  # an hour ahead of the hub's time; a day before the routing
        with pytest.raises(Rejected) as refused:
            loop.report("myebox", message_id, Event.DELIVERED, minutes=minutes)
        assert refused.value.code is ErrorCode.DATE_INCONSISTENT
    assert counts(loop) == before
    assert loop.report("myebox", message_id, Event.DELIVERED, minutes=4).outcome is Outcome.MOVED  # within the skew


def test_a_2xx_from_a_pushed_provider_records_the_delivery_once(loop):
    message_id = registered_letter(loop)
    headers = {"hub-message-id": message_id, "delivery-id": f"{message_id}:irisbox"}
    pushed = loop.acks.delivered_by_push("irisbox")
    pushed(headers, None)
    pushed(headers, None)  # the push was retried after the 2xx: a repeat
    assert {d.provider: d.state for d in loop.deliveries(message_id)} == {"myebox": "pending", "irisbox": "delivered"}
    assert [e.kind for e in loop.events(message_id)].count("delivered") == 1
    # the provider's own signed acknowledgement of the same delivery is the same event
    assert loop.report("irisbox", message_id, Event.DELIVERED, ack_id=f"{message_id}:irisbox:delivered").outcome is (
        Outcome.REPEAT
    )
    with pytest.raises(Rejected) as refused:  # a push to doccle cannot deliver irisbox's delivery
        loop.acks.delivered_by_push("doccle")(headers, None)
    assert refused.value.code is ErrorCode.ACK_NOT_YOURS


def test_post_acks_refuses_oversized_malformed_and_replayed_documents_and_a_provider_cannot_read_the_feed(loop):
    from hub.outbound.intake import MAX_ACK_BYTES

    message_id = registered_letter(loop)
    with TestClient(build_app(loop.runtime)) as client:
        client.app.state.ack_intake = loop.acks  # type: ignore[attr-defined]
        provider = {"Content-Type": "application/xml", "Authorization": f"Bearer {PROVIDER_TOKENS['myebox']}"}
        before = counts(loop)
        oversized = client.post("/v1/acks", content=b"<a>" + b"x" * MAX_ACK_BYTES + b"</a>", headers=provider)
        assert oversized.status_code == 413 and b"TOO_LARGE" in oversized.content
        for garbage, code in (
            (b"", b"XML_"),
            (b"not xml at all", b"XML_MALFORMED"),
            (b'<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>', b"XML_FORBIDDEN"),
            (b"<Acknowledgement xmlns='urn:ebox-hub:acknowledgement:1'/>", b"SCHEMA_INVALID"),
        ):
            answer = client.post("/v1/acks", content=garbage, headers=provider)
            assert 400 <= answer.status_code < 500 and code in answer.content, (garbage[:30], answer.text)
        assert counts(loop) == before  # none of them left a row
        # replayed: the same signed acknowledgement twice is one event; the second answers `repeat`
        signed = loop.ack("myebox", message_id, Event.DELIVERED)
        assert client.post("/v1/acks", content=signed, headers=provider).json()["outcome"] == "moved"
        assert client.post("/v1/acks", content=signed, headers=provider).json()["outcome"] == "repeat"
        assert [e.kind for e in loop.events(message_id)].count("delivered") == 1
        # a provider's token opens no sender's feed
        feed = client.get("/v1/acks", headers={"Authorization": f"Bearer {PROVIDER_TOKENS['myebox']}"})
        assert feed.status_code == 401
