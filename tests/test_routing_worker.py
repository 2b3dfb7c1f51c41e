"""The routing stage end to end: accepted envelopes -> relay -> hub.routing -> worker -> relay -> provider queues.

Runs on kombu's in-process transport with SQLite and on RabbitMQ with PostgreSQL. Given a
directory and the rules, when the worker consumes hub.routing, then each provider chosen gets
one persistent message (the signed envelope as received), tracked as a delivery; held
deliveries wait in the outbox; a redelivered routing message changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import amqp.exceptions
import pytest
from click.testing import CliRunner
from kombu import Connection
from sqlalchemy import func, insert, select, update

from hub.broker import topology
from hub.broker.consumer import Properties, consume
from hub.broker.relay import ClaimCheck, OutboxRelay
from hub.cli import cli
from hub.envelope import examples as ex
from hub.envelope.model import Priority
from hub.errors import ConfigError, ErrorCode, Rejected, Unavailable
from hub.routing.deliveries import delivery_id
from hub.routing.directory import Change, Directory
from hub.routing.recipients import RecipientKind
from hub.routing.rules import MessageFacts
from hub.routing.worker import RoutingSource, RoutingWorker, declare_provider_queues, message_id_of
from hub.store.db import make_engine, session_factory, upgrade
from hub.store.models import AuditEntry, Base, Delivery, Event, Message, OutboxEntry
from tests.kit import NOW, example, keyring
from tests.test_broker import Got, broker, drain, publish, rabbitmq_vhost  # noqa: F401 - shared fixtures
from tests.test_inbound_rest import make_hub

ROOT = Path(__file__).resolve().parent.parent
PAIRS = [("sqlite", "memory"), ("postgresql", "rabbitmq")]
PROVIDER_IDS = ("myebox", "doccle", "irisbox", "enterprise", "paper")
RABBITMQ_ONLY = pytest.mark.parametrize("database_url", [PAIRS[1]], indirect=True, ids=["postgresql+rabbitmq"])

PROVIDERS_YAML = """\
providers:
  - id: myebox
    name: My eBox portal
    kinds: [citizen, enterprise]
    capabilities: [registered, replies, payments, eidas_high]
  - id: doccle
    name: Doccle-like app
    kinds: [citizen]
    capabilities: [payments, replies]
  - id: irisbox
    name: IRISbox-like portal
    kinds: [citizen]
    capabilities: [registered, replies, eidas_high]
    maintenance: {maintenance}
  - id: enterprise
    name: Business inbox
    kinds: [enterprise]
    capabilities: [registered, replies, payments, eidas_high]
    universal: true
  - id: paper
    name: Print and post centre
    capabilities: [paper, registered, payments]
    universal: true
"""

ROUTING_YAML = """\
rules:
  - name: city-information-requests
    match: {{sender: "0207373429", message_type: "INFORMATION_*"}}
    fallback: undeliverable
  - name: default
    match: {{}}
    deliver: {deliver}
    fallback: paper
"""


def providers_yaml(maintenance: tuple[datetime, datetime] | None = None) -> str:
    if maintenance is None:
        return PROVIDERS_YAML.format(maintenance="[]")
    start, end = (moment.isoformat() for moment in maintenance)
    window = f'[{{from: "{start}", until: "{end}"}}]'
    return PROVIDERS_YAML.format(maintenance=window)


def write(path: Path, text: str) -> None:
    """Write a config file so that its change is seen even within one mtime tick."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(params=PAIRS, ids=["sqlite+memory", "postgresql+rabbitmq"])
def database_url(request, tmp_path):
    from tests.backends import postgres_schema

    if request.param[0] == "sqlite":
        yield f"sqlite:///{tmp_path / 'hub.db'}"
    else:
        with postgres_schema() as url:
            yield url


@pytest.fixture
def broker_url(database_url):
    if database_url.startswith("sqlite"):
        yield "memory://"
    else:
        from tests.backends import rabbitmq_url

        yield rabbitmq_url()


def delete_queues(url: str, providers: tuple[str, ...] = PROVIDER_IDS, senders: tuple[str, ...] = ()) -> None:
    """Purge and delete the hub's queues for these providers and senders (a test starts from nothing)."""
    with Connection(url) as connection:
        for spec in topology.queues(providers, senders):
            channel = connection.channel()
            try:
                channel.queue_purge(spec.name)
                channel.queue_delete(spec.name)
            except amqp.exceptions.NotFound:
                pass
            finally:
                with contextlib.suppress(Exception):
                    channel.close()


@pytest.fixture
def config_dir(tmp_path) -> Path:
    folder = tmp_path / "config"
    folder.mkdir()
    write(folder / "providers.yaml", providers_yaml())
    write(folder / "routing.yaml", ROUTING_YAML.format(deliver="all"))
    return folder


class Stage:
    """A hub with its routing stage, on one database and one broker, with a clock the test moves."""

    def __init__(self, tmp_path: Path, database_url: str, url: str, config_dir: Path) -> None:
        self.runtime = make_hub(tmp_path, database_url)
        self.sessions = self.runtime.sessions
        self.url = url
        self.config_dir = config_dir
        self.now = NOW
        self.directory = Directory(self.sessions, clock=lambda: self.now)
        self.source = RoutingSource(config_dir, check_every=0)
        self.worker = RoutingWorker(self.sessions, self.directory, self.source, clock=lambda: self.now)
        self.claim_check: ClaimCheck | None = None
        declare_provider_queues(url, self.source.current()[0])

    def close(self) -> None:
        self.runtime.close()

    # given

    def reads_with(self, ssin: str, *providers: str, consent: bool = True) -> None:
        at = NOW - timedelta(days=10)
        changes = [Change(op="activate", kind=RecipientKind.CITIZEN, id=ssin, at=at, provider=p) for p in providers]
        changes += [Change(op="link", kind=RecipientKind.CITIZEN, id=ssin, at=at, provider=p) for p in providers]
        self.directory.apply(changes if consent else changes[len(providers) :])

    def submit(self, kind: str = "citizen-letter", **header: Any) -> tuple[str, bytes]:
        envelope = example(kind)
        if header:
            envelope = replace(envelope, header=replace(envelope.header, **header))
        data = keyring().sign(envelope)
        return self.runtime.intake.submit(data, door="test").message_id, data

    # when

    def relay(self, at: datetime | None = None) -> int:
        when = at or self.now
        total = 0
        with OutboxRelay(self.sessions, self.url, batch=100, claim_check=self.claim_check, clock=lambda: when) as relay:
            while published := relay.run_once():
                total += published
        return total

    def route(self, expect: int, timeout: float = 20) -> list[BaseException | None]:
        """Run the worker on hub.routing until it has handled ``expect`` messages; each outcome."""
        outcomes: list[BaseException | None] = []
        stop = threading.Event()

        def handler(body: bytes, headers: dict[str, Any], properties: Properties) -> None:
            try:
                self.worker.handle(body, headers, properties)
                outcomes.append(None)
            except BaseException as exc:
                outcomes.append(exc)
                raise
            finally:
                if len(outcomes) >= expect:
                    stop.set()

        thread = threading.Thread(
            target=consume,
            args=(self.url, "hub.routing", handler),
            kwargs={"stop": stop, "prefetch": 50, "poll": 0.05},
            daemon=True,
        )
        thread.start()
        assert stop.wait(timeout), f"the worker handled {len(outcomes)} of {expect} routing messages"
        thread.join(10)
        return outcomes

    def accept_and_route(self, kind: str = "citizen-letter", **header: Any) -> tuple[str, bytes]:
        message_id, data = self.submit(kind, **header)
        assert self.relay() == 1
        assert self.route(1) == [None]
        return message_id, data

    # then

    def queue(self, provider: str, expect: int | None = None) -> list[Got]:
        return drain(self.url, f"provider.{provider}", expect=expect, idle=0.3, limit=10)

    def deliveries(self, message_id: str | None = None) -> list[Delivery]:
        with self.sessions() as session:
            query = select(Delivery).order_by(Delivery.provider)
            if message_id is not None:
                query = query.where(Delivery.message_id == message_id)
            return list(session.scalars(query))

    def events(self, message_id: str) -> list[Event]:
        with self.sessions() as session:
            return list(session.scalars(select(Event).where(Event.message_id == message_id).order_by(Event.id)))

    def message(self, message_id: str) -> Message:
        with self.sessions() as session:
            message = session.get(Message, message_id)
            assert message is not None
            return message

    def unsent_deliveries(self) -> list[OutboxEntry]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(OutboxEntry)
                    .where(OutboxEntry.exchange == "hub.deliver", OutboxEntry.sent_at.is_(None))
                    .order_by(OutboxEntry.id)
                )
            )


@pytest.fixture
def stage(tmp_path, database_url, broker, config_dir) -> Iterator[Stage]:  # noqa: F811
    delete_queues(broker)
    hub_stage = Stage(tmp_path, database_url, broker, config_dir)
    yield hub_stage
    hub_stage.close()
    delete_queues(broker)


def is_rabbitmq(url: str) -> bool:
    return url.startswith("amqp")


# -- fan-out, fallbacks ---------------------------------------------------------------------------


def test_fan_out_to_three_providers(stage):
    stage.reads_with(ex.CITIZEN_A, "myebox", "doccle", "irisbox")
    message_id, data = stage.accept_and_route("citizen-letter")
    assert stage.relay() == 3

    for provider in ("doccle", "irisbox", "myebox"):
        [got] = stage.queue(provider, expect=1)
        assert got.body == data  # the signed envelope exactly as received
        assert got.headers["hub-message-id"] == message_id
        assert got.headers["delivery-id"] == delivery_id(message_id, provider) == f"{message_id}:{provider}"
        assert (got.headers["priority"], got.headers["registered"], got.headers["sender"]) == (
            "normal",
            False,
            ex.FINANCE,
        )
        assert got.headers["expires-at"] == example("citizen-letter").header.expires_at.isoformat()
        assert ex.CITIZEN_A not in json.dumps(got.headers)  # no national number in headers
        assert got.content_type == "application/xml"
        assert got.properties["delivery_mode"] == 2
        if is_rabbitmq(stage.url):
            assert got.properties["priority"] == 4
    assert stage.queue("paper") == [] and stage.queue("enterprise") == []

    deliveries = stage.deliveries(message_id)
    assert [(d.provider, d.state, d.priority, d.not_before) for d in deliveries] == [
        ("doccle", "pending", 4, None),
        ("irisbox", "pending", 4, None),
        ("myebox", "pending", 4, None),
    ]
    assert stage.message(message_id).state == "routed"
    accepted, routed = stage.events(message_id)
    assert (accepted.kind, routed.kind) == ("accepted", "routed")
    detail = json.loads(routed.detail)
    assert detail["outcome"] == "deliver" and detail["rule"] == "default"
    assert detail["providers"] == ["doccle", "irisbox", "myebox"]
    assert "fallback" not in detail and detail["reasons"]
    with stage.sessions() as session:
        audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "routed")).one()
    assert audit.message_id == message_id and ex.CITIZEN_A not in audit.detail
    assert ex.CITIZEN_A not in routed.detail


def test_capabilities_leave_providers_out(stage):
    # Registered mail with replies and eIDAS high: doccle lacks registered and eidas_high.
    stage.reads_with(ex.CITIZEN_A, "myebox", "doccle", "irisbox")
    message_id, _ = stage.accept_and_route("registered")
    assert stage.relay() == 2
    assert [d.provider for d in stage.deliveries(message_id)] == ["irisbox", "myebox"]
    assert stage.queue("doccle") == []
    [got] = stage.queue("myebox", expect=1)
    assert (got.headers["priority"], got.headers["registered"]) == ("high", True)
    if is_rabbitmq(stage.url):
        assert got.properties["priority"] == 9
    detail = json.loads(stage.events(message_id)[-1].detail)
    assert detail["skipped"] == {"doccle": "lacks eidas_high, registered"}


def test_paper_fallback_without_consent(stage):
    stage.reads_with(ex.CITIZEN_B, "myebox", consent=False)  # linked, but digital post never activated
    message_id, data = stage.accept_and_route("citizen-pdf")
    assert stage.relay() == 1
    [got] = stage.queue("paper", expect=1)
    assert got.body == data and got.headers["delivery-id"] == f"{message_id}:paper"
    assert stage.queue("myebox") == []
    assert [d.provider for d in stage.deliveries(message_id)] == ["paper"]
    assert stage.message(message_id).state == "routed"
    routed = stage.events(message_id)[-1]
    detail = json.loads(routed.detail)
    assert (routed.kind, detail["outcome"], detail["fallback"], detail["providers"]) == (
        "routed",
        "paper",
        "paper",
        ["paper"],
    )
    assert any("without digital consent" in reason for reason in detail["reasons"])


def test_undeliverable_when_the_rule_has_no_fallback(stage):
    # The city's information requests fall back to "undeliverable"; the recipient is unknown.
    message_id, _ = stage.accept_and_route("reply-free-text")
    assert stage.relay() == 0
    assert all(stage.queue(p) == [] for p in PROVIDER_IDS)
    assert stage.deliveries(message_id) == []
    assert stage.message(message_id).state == "undeliverable"
    event = stage.events(message_id)[-1]
    detail = json.loads(event.detail)
    assert (event.kind, detail["outcome"]) == ("undeliverable", "undeliverable")
    assert detail["rule"] == "city-information-requests"
    assert "providers" not in detail
    with stage.sessions() as session:
        assert session.scalar(select(func.count()).where(OutboxEntry.exchange == "hub.deliver")) == 0
        assert (
            json.loads(session.scalars(select(AuditEntry.detail).where(AuditEntry.action == "routed")).one())["outcome"]
            == "undeliverable"
        )


# -- held deliveries ------------------------------------------------------------------------------


def test_a_provider_in_maintenance_gets_its_delivery_when_the_window_ends(stage, config_dir):
    end = NOW + timedelta(hours=2)
    write(config_dir / "providers.yaml", providers_yaml((NOW - timedelta(hours=1), end)))
    stage.reads_with(ex.CITIZEN_A, "myebox", "doccle", "irisbox")
    message_id, data = stage.accept_and_route("citizen-letter")

    # The others get it now; irisbox's delivery waits in the outbox.
    assert stage.relay() == 2
    assert len(stage.queue("myebox", expect=1)) == 1 and len(stage.queue("doccle", expect=1)) == 1
    [held] = stage.unsent_deliveries()
    assert (held.routing_key, held.not_before) == ("irisbox", end)
    assert {d.provider: d.not_before for d in stage.deliveries(message_id)} == {
        "doccle": None,
        "irisbox": end,
        "myebox": None,
    }
    detail = json.loads(stage.events(message_id)[-1].detail)
    assert detail["held"] == {"irisbox": {"until": end.isoformat(), "why": "provider in maintenance"}}

    assert stage.relay(at=end - timedelta(seconds=1)) == 0
    assert stage.queue("irisbox") == []
    assert stage.relay(at=end) == 1
    [got] = stage.queue("irisbox", expect=1)
    assert got.body == data and got.headers["delivery-id"] == f"{message_id}:irisbox"
    assert stage.unsent_deliveries() == []


def test_a_future_effective_date_holds_the_delivery(stage):
    # The integrator's message is visible to the recipient from the day after its creation.
    stage.reads_with(ex.CITIZEN_B, "myebox")
    message_id, _ = stage.accept_and_route("integrator")
    effective = example("integrator").header.effective_date
    assert effective is not None and effective > NOW
    assert stage.relay() == 0
    [delivery] = stage.deliveries(message_id)
    assert (delivery.provider, delivery.not_before) == ("myebox", effective)
    assert json.loads(stage.events(message_id)[-1].detail)["held"]["myebox"]["why"] == (
        "until the message's effective date"
    )
    assert stage.queue("myebox") == []
    assert stage.relay(at=effective) == 1
    [got] = stage.queue("myebox", expect=1)
    assert got.headers["sender"] == ex.CITY  # the institution, not the integrator that submitted


def test_held_rows_do_not_hold_up_the_rows_behind_them(stage):
    later = NOW + timedelta(days=1)
    row = {"exchange": "hub.deliver", "routing_key": "myebox", "headers": "{}", "priority": 0, "created_at": NOW}
    with stage.sessions() as session:
        session.execute(insert(OutboxEntry), [{**row, "body": b"held", "not_before": later}] * 5)
        session.execute(insert(OutboxEntry), [{**row, "body": b"ready", "not_before": None}] * 2)
        session.execute(insert(OutboxEntry), [{**row, "body": b"due", "not_before": NOW - timedelta(seconds=1)}])
        session.commit()
    with OutboxRelay(stage.sessions, stage.url, batch=2, clock=lambda: NOW) as relay:
        assert [relay.run_once() for _ in range(3)] == [2, 1, 0]
    assert sorted(g.body for g in stage.queue("myebox", expect=3)) == [b"due", b"ready", b"ready"]
    with OutboxRelay(stage.sessions, stage.url, clock=lambda: later) as relay:
        assert relay.run_once() == 5


# -- at least once in, exactly once out -----------------------------------------------------------


def test_a_redelivered_routing_message_creates_no_second_delivery(stage):
    stage.reads_with(ex.CITIZEN_A, "myebox", "doccle", "irisbox")
    message_id, _ = stage.accept_and_route("citizen-letter")
    # The relay publishes the routing message again (as after a crash before marking it sent).
    with stage.sessions() as session:
        session.execute(update(OutboxEntry).where(OutboxEntry.exchange == "hub.route").values(sent_at=None))
        session.commit()
    assert stage.relay() == 4  # the routing message again, and the three deliveries
    assert stage.route(1) == [None]  # acked, no effect
    assert stage.relay() == 0
    assert len(stage.deliveries(message_id)) == 3
    assert [e.kind for e in stage.events(message_id)] == ["accepted", "routed"]
    for provider in ("myebox", "doccle", "irisbox"):
        assert len(stage.queue(provider, expect=1)) == 1
    # handle() itself, twice more: nothing.
    assert stage.worker.route(message_id) is None
    with stage.sessions() as session:
        assert session.scalar(select(func.count()).select_from(OutboxEntry)) == 4


def test_two_workers_racing_for_one_message_route_it_once(stage):
    stage.reads_with(ex.CITIZEN_A, "myebox", "doccle")
    message_id, _ = stage.submit("citizen-letter")
    other = RoutingWorker(stage.sessions, stage.directory, stage.source, clock=lambda: stage.now)
    results: list[Any] = []
    barrier = threading.Barrier(2)

    def run(worker: RoutingWorker) -> None:
        barrier.wait()
        try:
            results.append(worker.route(message_id))
        except Exception as exc:  # SQLite may answer "database is locked" -> Unavailable (requeued)
            results.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in (stage.worker, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    decided = [r for r in results if r is not None and not isinstance(r, Exception)]
    assert len(decided) == 1, results
    assert all(r is None or isinstance(r, Unavailable) or r is decided[0] for r in results), results
    assert len(stage.deliveries(message_id)) == 2
    assert [e.kind for e in stage.events(message_id)] == ["accepted", "routed"]


def test_a_batch_routes_each_message_on_its_own_merits(stage):
    stage.reads_with(ex.CITIZEN_A, "myebox", "doccle")
    good, _ = stage.submit(sender_message_id="BATCH-1")
    done, _ = stage.submit(sender_message_id="BATCH-2")
    assert stage.worker.route(done) is not None
    short = stage.submit(sender_message_id="BATCH-3", expires_at=NOW + timedelta(days=31))[0]
    stage.now = NOW + timedelta(days=32)  # BATCH-3 has expired by now; the others have not
    outcomes = stage.worker.route_many([good, "no-such-message", done, good, short])
    assert [type(o).__name__ for o in outcomes] == ["Decision", "Rejected", "NoneType", "NoneType", "Rejected"]
    assert [o.code for o in outcomes if isinstance(o, Rejected)] == [
        ErrorCode.MESSAGE_NOT_FOUND,
        ErrorCode.EXPIRY_OUT_OF_RANGE,
    ]
    assert [d.provider for d in stage.deliveries(good)] == ["doccle", "myebox"]
    assert [stage.message(m).state for m in (good, done, short)] == ["routed", "routed", "expired"]
    assert stage.deliveries(short) == []


def test_concurrent_callers_share_batches_and_each_message_is_routed_once(stage):
    stage.reads_with(ex.CITIZEN_A, "myebox", "doccle", "irisbox")
    ids = [stage.submit(sender_message_id=f"GROUP-{i}")[0] for i in range(24)]
    batches: list[int] = []
    route_many = stage.worker.route_many

    def counting(message_ids):
        batches.append(len(message_ids))
        return route_many(message_ids)

    stage.worker.route_many = counting  # type: ignore[method-assign]
    errors: list[BaseException] = []

    def call(message_id: str) -> None:
        try:
            assert stage.worker.route(message_id) is not None
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(m,)) for m in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert sum(batches) == 24 and len(batches) < 24, batches  # some calls were routed together
    assert len(stage.deliveries()) == 72
    with stage.sessions() as session:
        assert session.scalar(select(func.count()).where(Event.kind == "routed")) == 24


def test_several_consumer_threads_route_everything_once(stage):
    stage.reads_with(ex.CITIZEN_A, "myebox", "doccle")
    ids = [stage.submit(sender_message_id=f"CONSUMERS-{i}")[0] for i in range(40)]
    assert stage.relay() == 40
    stop = threading.Event()
    runner = threading.Thread(
        target=stage.worker.run, args=(stage.url, stop), kwargs={"consumers": 4, "batch_size": 1}, daemon=True
    )
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while len(stage.deliveries()) < 80 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        runner.join(20)
    assert not runner.is_alive()
    assert len(stage.deliveries()) == 80 and all(stage.message(m).state == "routed" for m in ids)
    assert stage.relay() == 80
    assert len(stage.queue("myebox", expect=40)) == 40


def test_the_batch_consumer_routes_the_good_messages_and_dead_letters_only_the_bad_ones(stage):
    """``hub worker routing``'s default: batches of what the broker pushed, each message settled on its own."""
    stage.reads_with(ex.CITIZEN_A, "myebox", "doccle")
    ids = [stage.submit(sender_message_id=f"BATCH-{i}")[0] for i in range(30)]
    publish(stage.url, "hub.route", "route", json.dumps({"message_id": "no-such-message"}).encode(), message_id="x-1")
    publish(stage.url, "hub.route", "route", b"not json", message_id="x-2")
    assert stage.relay() == 30
    batches: list[int] = []
    route_many = stage.worker.route_many

    def counting(message_ids):  # type: ignore[no-untyped-def]
        batches.append(len(message_ids))
        return route_many(message_ids)

    stage.worker.route_many = counting  # type: ignore[method-assign]
    stop = threading.Event()
    runner = threading.Thread(target=stage.worker.run, args=(stage.url, stop), kwargs={"batch_size": 50}, daemon=True)
    runner.start()
    try:
        dead = drain(stage.url, "hub.dead", expect=2, limit=20)
        deadline = time.monotonic() + 20
        while len(stage.deliveries()) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        runner.join(20)
    assert all(stage.message(m).state == "routed" for m in ids)
    assert len(stage.deliveries()) == 60
    assert max(batches) > 1, batches  # routed together
    assert sorted((d.message_id, d.headers["x-hub-code"]) for d in dead) == [
        ("x-1", "MESSAGE_NOT_FOUND"),
        ("x-2", "SCHEMA_INVALID"),
    ]
    assert stage.relay() == 60


def test_a_delivery_refers_to_the_stored_envelope_and_is_dropped_if_it_was_removed_first(stage):
    stage.reads_with(ex.CITIZEN_A, "myebox", "doccle")
    kept, data = stage.submit(sender_message_id="KEPT")
    removed, _ = stage.submit(sender_message_id="REMOVED")
    assert stage.relay() == 2 and stage.route(2) == [None, None]
    rows = stage.unsent_deliveries()
    assert len(rows) == 4 and all(row.body is None for row in rows)  # no copy of the envelope per provider
    with stage.sessions() as session:
        session.execute(update(Message).where(Message.id == removed).values(envelope=None))
        session.commit()
    assert stage.relay() == 4  # all four settled: two published, two with nothing left to publish
    got = stage.queue("myebox", expect=1)
    assert [(g.headers["hub-message-id"], g.body) for g in got] == [(kept, data)]
    assert stage.unsent_deliveries() == []


@RABBITMQ_ONLY
def test_high_priority_overtakes_normal_ones_waiting_for_a_provider(stage):
    stage.reads_with(ex.CITIZEN_A, "myebox")
    normal = [stage.submit(sender_message_id=f"LETTER-N-{i}")[0] for i in range(5)]
    assert stage.relay() == 5 and stage.route(5) == [None] * 5
    urgent, _ = stage.submit(sender_message_id="LETTER-URGENT", priority=Priority.HIGH)
    # The five normal deliveries reach the provider's queue (and wait there); the urgent one is routed...
    assert stage.relay() == 6 and stage.route(1) == [None]
    # ...and published after them...
    assert [row.message_id for row in stage.unsent_deliveries()] == [urgent]
    assert stage.relay() == 1
    # ...but the provider reads it first.
    got = stage.queue("myebox", expect=6)
    assert [g.headers["hub-message-id"] for g in got] == [urgent, *normal]
    assert [g.properties["priority"] for g in got] == [9, 4, 4, 4, 4, 4]


# -- refusals and outages -------------------------------------------------------------------------


def test_an_unknown_message_is_dead_lettered(stage):
    publish(stage.url, "hub.route", "route", json.dumps({"message_id": "no-such-message"}).encode(), message_id="x-1")
    [outcome] = stage.route(1)
    assert isinstance(outcome, Rejected) and outcome.code is ErrorCode.MESSAGE_NOT_FOUND
    if is_rabbitmq(stage.url):
        [dead] = drain(stage.url, "hub.dead", expect=1, limit=5)
        assert json.loads(dead.body) == {"message_id": "no-such-message"}


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'{"message_id": 7}', b'{"id": "x"}'])
def test_a_routing_message_that_names_no_message_is_refused(body):
    with pytest.raises(Rejected) as refused:
        message_id_of(body)
    assert refused.value.code is ErrorCode.SCHEMA_INVALID


def test_a_message_that_expired_before_routing_is_marked_expired_and_refused(stage):
    stage.reads_with(ex.CITIZEN_A, "myebox")
    message_id, _ = stage.submit("citizen-letter")
    expires = example("citizen-letter").header.expires_at
    stage.now = expires
    with pytest.raises(Rejected, match=r"expired at .* before it could be routed") as refused:
        stage.worker.route(message_id)
    assert refused.value.code is ErrorCode.EXPIRY_OUT_OF_RANGE
    assert stage.message(message_id).state == "expired"
    assert [e.kind for e in stage.events(message_id)] == ["accepted", "expired"]
    assert stage.deliveries(message_id) == []
    assert stage.worker.route(message_id) is None  # a repeat: nothing more


def test_a_message_whose_content_is_gone_is_refused(stage):
    message_id, _ = stage.submit("citizen-letter")
    with stage.sessions() as session:
        session.execute(update(Message).where(Message.id == message_id).values(envelope=None))
        session.commit()
    with pytest.raises(Rejected, match=r"content of message .* was removed") as refused:
        stage.worker.route(message_id)
    assert refused.value.code is ErrorCode.MESSAGE_NOT_FOUND
    assert stage.message(message_id).state == "accepted" and stage.deliveries(message_id) == []


def test_routing_takes_the_facts_stored_at_acceptance_and_never_parses_the_envelope_again(stage):
    stage.reads_with(ex.CITIZEN_A, "myebox", "doccle")
    message_id, _ = stage.submit("registered")
    stored = stage.message(message_id).routing_facts
    assert stored is not None
    assert MessageFacts.from_json(stored) == MessageFacts.of(example("registered"))  # what parsing would give
    with stage.sessions() as session:  # an envelope routing could not parse: routing must not try
        session.execute(update(Message).where(Message.id == message_id).values(envelope=b"<not-read"))
        session.commit()
    decision = stage.worker.route(message_id)
    assert decision is not None and list(decision.providers) == ["myebox"]
    assert decision.skipped == (("doccle", "lacks eidas_high, registered"),)  # the stored facts said registered
    routed = stage.message(message_id)
    assert routed.state == "routed" and routed.routing_facts is None  # used once, then not kept


def test_a_message_accepted_before_the_facts_were_stored_is_routed_from_its_envelope(stage):
    stage.reads_with(ex.CITIZEN_A, "myebox")
    legacy, _ = stage.submit("citizen-letter")
    damaged, _ = stage.submit("citizen-letter", sender_message_id="DAMAGED-FACTS")
    with stage.sessions() as session:
        session.execute(update(Message).where(Message.id == legacy).values(routing_facts=None))
        session.execute(update(Message).where(Message.id == damaged).values(routing_facts='{"message_type": 1}'))
        session.commit()
    legacy_decision, refused = stage.worker.route_many([legacy, damaged])
    assert legacy_decision is not None and list(legacy_decision.providers) == ["myebox"]  # type: ignore[union-attr]
    assert isinstance(refused, Rejected) and "routing facts" in refused.message
    assert stage.message(damaged).state == "accepted"  # nothing half-written for the damaged one


@pytest.mark.parametrize("kind", sorted(ex.KINDS))
def test_routing_facts_read_back_as_they_were_written(kind):
    facts = MessageFacts.of(example(kind))
    assert MessageFacts.from_json(facts.to_json()) == facts


def test_a_database_outage_is_unavailable(config_dir):
    engine = make_engine("postgresql://postgres@127.0.0.1:1/test?connect_timeout=2")
    sessions = session_factory(engine)
    worker = RoutingWorker(sessions, Directory(sessions), RoutingSource(config_dir), clock=lambda: NOW)
    try:
        with pytest.raises(Unavailable, match="cannot be reached"):
            worker.handle(b'{"message_id": "m-1"}', {}, None)  # type: ignore[arg-type]
    finally:
        engine.dispose()


# -- rules reloaded on change ---------------------------------------------------------------------


def test_changed_rules_apply_to_the_next_message_and_a_bad_file_keeps_the_last_good_ones(stage, config_dir, caplog):
    stage.reads_with(ex.CITIZEN_A, "myebox", "doccle", "irisbox")
    first, _ = stage.submit(sender_message_id="RELOAD-1")
    assert [d.provider for d in stage.worker.route(first).deliveries] == ["doccle", "irisbox", "myebox"]

    routing = config_dir / "routing.yaml"
    write(routing, ROUTING_YAML.format(deliver="[myebox]"))
    second, _ = stage.submit(sender_message_id="RELOAD-2")
    assert stage.worker.route(second).providers == ("myebox",)
    assert stage.source.generation == 2

    # A mistake: an unknown provider on line 7. The worker logs it and keeps the last good rules.
    write(routing, ROUTING_YAML.format(deliver="[myebx]"))
    with caplog.at_level(logging.ERROR, logger="hub.routing"):
        third, _ = stage.submit(sender_message_id="RELOAD-3")
        assert stage.worker.route(third).providers == ("myebox",)
        fourth, _ = stage.submit(sender_message_id="RELOAD-4")
        assert stage.worker.route(fourth).providers == ("myebox",)
    [logged] = [r for r in caplog.records if r.name == "hub.routing" and r.levelno == logging.ERROR]  # once
    assert f"{routing}:7:" in logged.getMessage() and "unknown provider 'myebx'" in logged.getMessage()
    assert "did you mean 'myebox'" in logged.getMessage()
    assert stage.source.generation == 2 and isinstance(stage.source.last_error, ConfigError)

    # Not YAML at all, in the providers file: the same.
    write(config_dir / "providers.yaml", "providers:\n  - id: [unclosed\n")
    fifth, _ = stage.submit(sender_message_id="RELOAD-5")
    assert stage.worker.route(fifth).providers == ("myebox",)
    assert "providers.yaml:" in str(stage.source.last_error)

    # Fixed: the new files are taken.
    write(config_dir / "providers.yaml", providers_yaml())
    write(routing, ROUTING_YAML.format(deliver="[doccle, irisbox]"))
    sixth, _ = stage.submit(sender_message_id="RELOAD-6")
    assert stage.worker.route(sixth).providers == ("doccle", "irisbox")
    assert stage.source.generation == 3 and stage.source.last_error is None


def test_the_files_are_checked_at_most_every_check_every_seconds(config_dir):
    clock = [100.0]
    changes: list[Any] = []
    source = RoutingSource(
        config_dir, check_every=5, monotonic=lambda: clock[0], on_change=lambda p, r: changes.append(r)
    )
    _, rules = source.current()
    write(config_dir / "routing.yaml", ROUTING_YAML.format(deliver="[myebox]"))
    clock[0] += 4.9
    assert source.current()[1] is rules  # not looked at yet
    clock[0] += 0.1
    assert source.current()[1] is not rules
    assert [r.rules[1].deliver for r in changes] == [("myebox",)]
    assert not source.refresh()  # unchanged since


def test_a_bad_file_at_start_is_a_config_error(config_dir):
    write(config_dir / "routing.yaml", "rules:\n  - name: x\n    match: {}\n    fallback: email\n")
    with pytest.raises(ConfigError, match=r"routing\.yaml:4: rules\[0\]\.fallback: must be paper or undeliverable"):
        RoutingSource(config_dir)
    result = CliRunner().invoke(cli, ["worker", "routing"], env={"HUB_CONFIG_DIR": str(config_dir)})
    assert result.exit_code == 2 and "routing.yaml:4:" in result.output


# -- schema -----------------------------------------------------------------------------------------


def test_the_migration_creates_the_tables_the_models_describe(database_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = make_engine(database_url)
    try:
        upgrade(engine)
        with engine.connect() as connection:
            diffs = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata)
    finally:
        engine.dispose()
    assert [d for d in diffs if any(f"'{table}'" in repr(d) for table in ("deliveries", "outbox"))] == []


def test_the_relay_claims_through_the_partial_indexes(database_url):
    from sqlalchemy import event

    engine = make_engine(database_url)
    upgrade(engine)
    claims: list[tuple[str, Any]] = []

    def grab(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if "FROM outbox" in statement:
            claims.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", grab)
    try:
        with OutboxRelay(session_factory(engine), "memory://", clock=lambda: NOW) as relay:
            relay.run_once()
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    plans = []
    with engine.connect() as connection:
        for statement, parameters in claims:
            if engine.dialect.name == "sqlite":
                rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
                plans.append(" ".join(str(row[-1]) for row in rows))
            else:
                connection.exec_driver_sql("SET enable_seqscan = off")  # a tiny table: ask whether it can
                rows = connection.exec_driver_sql("EXPLAIN " + statement, parameters)
                plans.append(" ".join(str(row[0]) for row in rows))
    engine.dispose()
    assert len(plans) == 2, claims
    assert "ix_outbox_held" in plans[0] and "ix_outbox_ready" in plans[1], plans


# -- the command --------------------------------------------------------------------------------------


@RABBITMQ_ONLY
def test_hub_worker_routing_routes_until_sigterm(stage, database_url, config_dir, tmp_path):
    stage.reads_with(ex.CITIZEN_A, "myebox", "doccle")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HUB_CONFIG_DIR": str(config_dir),
        "HUB_DATA_DIR": str(tmp_path / "var"),
        "HUB_DATABASE_URL": database_url,
        "HUB_BROKER_URL": stage.url,
    }
    process = subprocess.Popen(
        [sys.executable, "-c", "from hub.cli import main; main()", "worker", "routing"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        message_id, data = stage.submit()
        assert stage.relay() == 1
        deadline = time.monotonic() + 20
        while len(stage.deliveries(message_id)) < 2:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the worker routed nothing"
            time.sleep(0.05)
        assert stage.relay() == 2
        assert [g.body for g in stage.queue("doccle", expect=1)] == [data]
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert "routing from hub.routing" in out and "providers doccle, enterprise, irisbox, myebox, paper" in out
