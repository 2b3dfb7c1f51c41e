"""The broker layer on kombu's in-process transport and on RabbitMQ (with SQLite and PostgreSQL).

Given / When / Then: the topology routes what the architecture note says; the outbox
relay publishes each committed row with a stable message id and marks it sent only after
the broker's confirm (at-least-once, across crashes and kill -9); the consume loop acks,
dead-letters and requeues by the handler's outcome.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import amqp.exceptions
import pytest
from click.testing import CliRunner
from kombu import Connection, Consumer, Producer, Queue
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from hub.broker import topology
from hub.broker.commands import broker_group, relay_command
from hub.broker.connection import RetryPolicy, connect
from hub.broker.consumer import Properties, consume
from hub.broker.relay import OutboxRelay
from hub.broker.retry import ATTEMPTS, QUEUE, REASON
from hub.errors import ConfigError, ErrorCode, Rejected, Unavailable
from hub.store.db import make_engine, session_factory, upgrade
from hub.store.models import OutboxEntry
from tests.backends import own_vhost, rabbitmq_url

ROOT = Path(__file__).resolve().parent.parent
PROVIDERS = ("myebox", "doccle")
SENDERS = ("0123456789",)
RABBITMQ_ONLY = pytest.mark.parametrize("broker_url", ["rabbitmq"], indirect=True)
FAST = RetryPolicy(attempts=2, start=0.05, step=0.0, max=0.05)
QUICK_RETRIES = RetryPolicy(attempts=3, start=0.05, step=0.0, max=0.05)


# -- fixtures and helpers ----------------------------------------------------------------------


def _delete_hub_queues(url: str) -> None:
    with Connection(url) as connection:
        for spec in topology.queues(PROVIDERS, SENDERS):
            channel = connection.channel()
            try:
                channel.queue_purge(spec.name)
                channel.queue_delete(spec.name)
            except amqp.exceptions.NotFound:
                pass  # never declared (the broker closed this channel)
            finally:
                with contextlib.suppress(Exception):
                    channel.close()


@pytest.fixture(scope="module")
def rabbitmq_vhost() -> Iterator[str | None]:
    """A RabbitMQ virtual host of this module's own, so that runs side by side on one broker keep apart.

    Made with ``rabbitmqctl`` where the broker is the local one and the tool works
    (``tests.backends.own_vhost``); else None (the default virtual host, whose hub queues each test empties).
    """
    with own_vhost(rabbitmq_url()) as url:
        vhost = Connection(url).virtual_host
        yield None if vhost in ("/", "") else vhost


@pytest.fixture
def broker(broker_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """The broker URL, with none of the hub's queues left over (memory:// queues are process-wide)."""
    if is_rabbitmq(broker_url):
        vhost = request.getfixturevalue("rabbitmq_vhost")
        if vhost is not None:
            c = Connection(broker_url)
            broker_url = f"amqp://{c.userid}:{c.password}@{c.hostname}:{c.port or 5672}/{vhost}"
    _delete_hub_queues(broker_url)
    yield broker_url
    _delete_hub_queues(broker_url)


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    upgrade(engine)
    yield session_factory(engine)
    engine.dispose()


def is_rabbitmq(url: str) -> bool:
    return url.startswith("amqp")


def add_rows(sessions: sessionmaker[Session], count: int, **overrides: Any) -> list[int]:
    """Commit ``count`` outbox rows as acceptance writes them; their ids in order."""
    now = datetime.now(UTC)
    with sessions() as session:
        first = session.scalar(select(func.coalesce(func.max(OutboxEntry.id), 0)))
        rows = [
            {
                "message_id": f"m-{i}",
                "exchange": "hub.route",
                "routing_key": "route",
                "body": json.dumps({"message_id": f"m-{i}", "pad": "x" * 64}).encode(),
                "headers": json.dumps({"hub_message_id": f"m-{i}", "priority": "normal", "n": i}),
                "priority": i % 10,
                "created_at": now,
                **overrides,
            }
            for i in range(count)
        ]
        session.execute(insert(OutboxEntry), rows)
        session.commit()
        return list(session.scalars(select(OutboxEntry.id).where(OutboxEntry.id > first).order_by(OutboxEntry.id)))


def unsent(sessions: sessionmaker[Session]) -> list[int]:
    with sessions() as session:
        return list(
            session.scalars(select(OutboxEntry.id).where(OutboxEntry.sent_at.is_(None)).order_by(OutboxEntry.id))
        )


def count_unsent(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).where(OutboxEntry.sent_at.is_(None))) or 0


@dataclass(frozen=True)
class Got:
    body: bytes
    headers: dict[str, Any]
    properties: dict[str, Any]
    content_type: str | None

    @property
    def message_id(self) -> str:
        return str(self.properties.get("message_id"))


def drain(url: str, queue: str, *, expect: int | None = None, idle: float = 0.3, limit: float = 20.0) -> list[Got]:
    """Every message in ``queue`` (removed), waiting ``idle`` s for stragglers (or until ``expect`` came)."""
    got: list[Got] = []

    def keep(message: Any) -> None:
        got.append(
            Got(
                message.body.encode() if isinstance(message.body, str) else bytes(message.body),  # py-amqp: b"" -> ""
                dict(message.headers or {}),
                dict(message.properties or {}),
                message.content_type,
            )
        )

    deadline = time.monotonic() + limit
    with Connection(url) as connection:
        consumer = Consumer(
            connection.channel(), [Queue(queue, no_declare=True)], on_message=keep, no_ack=True, prefetch_count=2000
        )
        with consumer:
            while time.monotonic() < deadline and (expect is None or len(got) < expect):
                try:
                    connection.drain_events(timeout=idle)
                except TimeoutError:
                    if expect is None:
                        break
    return got


def publish(url: str, exchange: str, routing_key: str, body: bytes = b"{}", **properties: Any) -> None:
    with connect(url) as connection:
        Producer(connection.channel()).publish(
            body,
            exchange=exchange,
            routing_key=routing_key,
            content_type="application/json",
            content_encoding="binary",
            delivery_mode=2,
            retry=False,
            **properties,
        )


def declared(url: str) -> None:
    with connect(url) as connection:
        topology.declare(connection, PROVIDERS, SENDERS)


# -- retry policy ------------------------------------------------------------------------------


def test_retry_policy_grows_by_factor_and_rejects_nonsense():
    doubling = RetryPolicy(attempts=6, start=0.05, step=0.0, factor=2.0, max=1.0)
    assert list(doubling.delays()) == [0.05, 0.1, 0.2, 0.4, 0.8]
    assert RetryPolicy(start=1.0, factor=2.0, max=30.0).delay(10_000) == 30.0  # no overflow
    jittery = RetryPolicy(start=0.1, step=0.0, factor=2.0, max=1.0, jitter=0.2)
    assert all(0.4 <= jittery.delay(3) <= 0.48 for _ in range(50))
    with pytest.raises(ValueError, match="linear"):
        doubling.kombu_options()
    for bad in ({"attempts": 0}, {"start": -1.0}, {"factor": 0.5}, {"jitter": -0.1}):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)


def test_retry_policy_is_start_plus_step_capped_at_max():
    policy = RetryPolicy(attempts=5, start=1.0, step=2.0, max=4.0)
    assert list(policy.delays()) == [1.0, 3.0, 4.0, 4.0]
    assert policy.kombu_options() == {
        "max_retries": 4,
        "interval_start": 1.0,
        "interval_step": 2.0,
        "interval_max": 4.0,
    }
    assert list(RetryPolicy(attempts=1).delays()) == []
    jittery = RetryPolicy(start=1.0, jitter=0.1)
    assert all(1.0 <= jittery.delay(1) <= 1.1 for _ in range(50))


# -- topology ----------------------------------------------------------------------------------


def test_each_exchange_routes_to_its_queue(broker):
    declared(broker)
    declared(broker)  # idempotent
    sends = {
        "hub.inbound": ("hub.submit", "submit"),
        "hub.routing": ("hub.route", "route"),
        "provider.myebox": ("hub.deliver", "myebox"),
        "provider.doccle": ("hub.deliver", "doccle"),
        "hub.acks": ("hub.acks", "acks"),
        "hub.subscriptions": ("hub.subscriptions", "subscriptions"),
        "sender.0123456789.acks": ("hub.notify", "0123456789"),
        "hub.dead": ("hub.dead", "anything.at.all"),
    }
    for queue, (exchange, key) in sends.items():
        publish(broker, exchange, key, json.dumps({"for": queue}).encode(), message_id=queue)

    for queue in sends:
        got = drain(broker, queue, expect=1, limit=5)
        assert [g.message_id for g in got] == [queue], queue
        assert json.loads(got[0].body) == {"for": queue}


def test_provider_and_sender_ids_are_checked():
    with pytest.raises(ConfigError, match=r"provider id 'my\.ebox'"):
        topology.provider_queue("my.ebox")
    with pytest.raises(ConfigError, match=r"sender id '\#'"):
        topology.sender_queue("#")
    names = [q.name for q in topology.queues(["a", "a"], ["s"])]
    assert names[-4:] == ["provider.a", "provider.a.retry", "sender.s.acks", "sender.s.acks.retry"]


def test_every_queue_a_stage_consumes_has_a_retry_queue_back_to_it():
    specs = {spec.name: spec for spec in topology.queues(PROVIDERS, SENDERS)}
    consumed = ["hub.inbound", "hub.routing", "hub.acks", "hub.subscriptions", "provider.myebox", "provider.doccle"]
    consumed += [f"sender.{sender}.acks" for sender in SENDERS]  # pushed to webhook senders by the hub
    assert sorted(name for name in specs if name.endswith(".retry")) == sorted(f"{q}.retry" for q in consumed)
    for queue in consumed:
        retry = specs[f"{queue}.retry"]
        assert retry.exchange is None and retry.retry_of == queue
        assert retry.arguments == {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": queue,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
    assert "hub.dead.retry" not in specs


@RABBITMQ_ONLY
def test_a_message_expiring_in_a_retry_queue_goes_back_to_its_queue_with_its_priority(broker):
    declared(broker)
    declared(broker)  # idempotent, retry queues included
    started = time.monotonic()
    for queue in ("hub.inbound", "hub.routing", "hub.acks", "hub.subscriptions", "provider.myebox"):
        publish(broker, "", f"{queue}.retry", message_id=f"back-to-{queue}", expiration=0.2, priority=7)
    for queue in ("hub.inbound", "hub.routing", "hub.acks", "hub.subscriptions", "provider.myebox"):
        got = drain(broker, queue, expect=1, limit=5)
        assert [g.message_id for g in got] == [f"back-to-{queue}"], queue
        assert got[0].headers["x-death"][0]["reason"] == "expired"
        if queue in ("hub.routing", "provider.myebox"):
            assert got[0].properties["priority"] == 7
    assert time.monotonic() - started >= 0.2


@RABBITMQ_ONLY
def test_queue_kinds_on_rabbitmq(broker):
    declared(broker)
    with connect(broker) as connection:

        def refused(name: str, arguments: dict[str, Any]) -> bool:
            channel = connection.channel()
            try:
                channel.queue_declare(name, durable=True, auto_delete=False, arguments=arguments)
            except amqp.exceptions.PreconditionFailed:
                return True
            channel.close()
            return False

        for spec in topology.queues(PROVIDERS, SENDERS):
            # The same arguments are accepted again: this is what the queue was declared with.
            assert not refused(spec.name, spec.arguments), spec.name
            if spec.kind is topology.QueueKind.QUORUM:
                assert refused(spec.name, {**spec.arguments, "x-queue-type": "classic"}), spec.name
            else:
                assert refused(spec.name, {**spec.arguments, "x-queue-type": "quorum"}), spec.name
                assert refused(spec.name, {**spec.arguments, "x-max-priority": 5}), spec.name
            without_dead_letters = {k: v for k, v in spec.arguments.items() if k != "x-dead-letter-exchange"}
            assert refused(spec.name, without_dead_letters) == spec.dead_letter, spec.name

    # A high-priority message overtakes the normal ones already waiting.
    for i in range(5):
        publish(broker, "hub.route", "route", priority=0, message_id=f"normal-{i}")
    publish(broker, "hub.route", "route", priority=9, message_id="urgent")
    got = drain(broker, "hub.routing", expect=6, limit=5)
    assert [g.message_id for g in got] == ["urgent", *(f"normal-{i}" for i in range(5))]


@RABBITMQ_ONLY
def test_a_queue_declared_otherwise_is_a_config_error(broker):
    with connect(broker) as connection:
        connection.channel().queue_declare("hub.acks", durable=True, auto_delete=False)  # classic, no arguments
        with pytest.raises(ConfigError, match="other arguments than the hub's topology"):
            topology.declare(connection)


# -- relay -------------------------------------------------------------------------------------


def test_relay_publishes_each_row_once_with_a_stable_message_id(sessions, broker):
    ids = add_rows(sessions, 25)
    ids += add_rows(sessions, 1, headers=json.dumps({"content_type": "application/xml"}), body=b"<x/>")

    with OutboxRelay(sessions, broker, batch=10) as relay:
        assert [relay.run_once() for _ in range(4)] == [10, 10, 6, 0]
        assert relay.run_once() == 0

    assert unsent(sessions) == []
    got = {g.message_id: g for g in drain(broker, "hub.routing", expect=26)}
    assert sorted(got) == sorted(f"outbox-{i}" for i in ids)
    with sessions() as session:
        for row in session.scalars(select(OutboxEntry)):
            message = got[f"outbox-{row.id}"]
            assert message.body == row.body
            assert message.headers == json.loads(row.headers)
            assert message.properties["delivery_mode"] == 2
            if is_rabbitmq(broker):
                assert message.properties["priority"] == row.priority
            assert message.content_type == json.loads(row.headers).get("content_type", "application/json")
            assert row.sent_at is not None and row.sent_at.tzinfo is not None


def test_rows_of_an_open_transaction_are_not_published(sessions, broker):
    open_session = sessions()
    try:
        open_session.add(
            OutboxEntry(
                exchange="hub.route", routing_key="route", body=b"{}", headers="{}", created_at=datetime.now(UTC)
            )
        )
        open_session.flush()
        with OutboxRelay(sessions, broker) as relay:
            assert relay.run_once() == 0
            open_session.commit()
            assert relay.run_once() == 1
    finally:
        open_session.close()
    assert len(drain(broker, "hub.routing", expect=1)) == 1


def test_a_crash_before_marking_publishes_again_with_the_same_message_id(sessions, broker, monkeypatch):
    ids = add_rows(sessions, 5)

    def crash(self, session, row_ids, at):
        raise RuntimeError("killed between publish and mark")

    with monkeypatch.context() as patch:
        patch.setattr(OutboxRelay, "_mark_sent", crash)
        with OutboxRelay(sessions, broker) as relay, pytest.raises(RuntimeError, match="killed"):
            relay.run_once()
    assert unsent(sessions) == ids

    with OutboxRelay(sessions, broker) as relay:
        assert relay.run_once() == 5
    assert unsent(sessions) == []

    got = drain(broker, "hub.routing", expect=10)
    seen: dict[str, list[Got]] = {}
    for message in got:
        seen.setdefault(message.message_id, []).append(message)
    assert sorted(seen) == sorted(f"outbox-{i}" for i in ids)
    for copies in seen.values():
        assert len(copies) == 2  # at-least-once: the duplicate is identical, so a consumer can drop it
        first, again = ((c.body, c.headers, c.message_id, c.content_type) for c in copies)
        assert first == again


def test_an_unroutable_row_stays_unsent(sessions, broker):
    declared(broker)
    good = add_rows(sessions, 2)
    lost = add_rows(sessions, 1, exchange="hub.deliver", routing_key="nobody")
    with OutboxRelay(sessions, broker) as relay:
        assert relay.run_once() == 2
    assert unsent(sessions) == lost
    assert sorted(g.message_id for g in drain(broker, "hub.routing", expect=2)) == sorted(f"outbox-{i}" for i in good)


def test_an_unreachable_broker_is_unavailable_and_nothing_is_marked(sessions):
    ids = add_rows(sessions, 3)
    started = time.monotonic()
    with pytest.raises(Unavailable, match="cannot be reached"):
        OutboxRelay(sessions, "amqp://guest:guest@127.0.0.1:1//", retry=FAST).run_once()
    assert time.monotonic() - started < 5
    assert unsent(sessions) == ids


def test_run_forever_relays_until_stopped(sessions, broker):
    stop = threading.Event()
    relay = OutboxRelay(sessions, broker, batch=7)
    worker = threading.Thread(target=relay.run_forever, args=(stop,), kwargs={"idle_sleep": 0.01})
    worker.start()
    try:
        ids = add_rows(sessions, 20)
        deadline = time.monotonic() + 10
        while unsent(sessions) and time.monotonic() < deadline:
            time.sleep(0.02)
        more = add_rows(sessions, 3)  # rows arriving while the relay idles
        while unsent(sessions) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        worker.join(5)
    assert not worker.is_alive()
    assert unsent(sessions) == []
    got = drain(broker, "hub.routing", expect=23)
    assert sorted(g.message_id for g in got) == sorted(f"outbox-{i}" for i in ids + more)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_relays_on_postgresql_skip_the_rows_another_relay_holds(sessions, broker):
    ids = add_rows(sessions, 60)
    with sessions() as other_relay:
        # Given another relay's transaction holding the first 20 rows (as run_once does while publishing)
        held = other_relay.scalars(
            select(OutboxEntry.id).order_by(OutboxEntry.id).limit(20).with_for_update(skip_locked=True)
        ).all()
        # When this relay runs, it publishes the rest and leaves those alone
        with OutboxRelay(sessions, broker) as relay:
            assert relay.run_once() == 40
        assert unsent(sessions) == held == ids[:20]
    with OutboxRelay(sessions, broker) as relay:
        assert relay.run_once() == 20
    got = drain(broker, "hub.routing", expect=60)
    assert sorted(g.message_id for g in got) == sorted(f"outbox-{i}" for i in ids)  # each exactly once

    # And two relays side by side publish every row exactly once.
    ids = add_rows(sessions, 600)
    counts: list[int] = []
    errors: list[BaseException] = []

    def relay_all() -> None:
        try:
            with OutboxRelay(sessions, broker, batch=25) as relay:
                total = 0
                while published := relay.run_once():
                    total += published
                counts.append(total)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=relay_all) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert errors == []
    assert sum(counts) == 600, counts
    assert unsent(sessions) == []
    got = drain(broker, "hub.routing", expect=600)
    assert sorted(g.message_id for g in got) == sorted(f"outbox-{i}" for i in ids)


RELAY_PROCESS = """
import sys, threading
from hub.broker.relay import OutboxRelay
from hub.store.db import make_engine, session_factory
OutboxRelay(session_factory(make_engine(sys.argv[1])), sys.argv[2], batch=100).run_forever(threading.Event(), 0.01)
"""


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@RABBITMQ_ONLY
def test_kill_9_mid_way_loses_nothing(database_url, sessions, broker):
    total = 10_000
    ids = add_rows(sessions, total)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", RELAY_PROCESS, database_url, broker],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while count_unsent(sessions) > total - 1000:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            assert time.monotonic() < deadline, "the relay process published too little"
            time.sleep(0.005)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        if process.stderr:
            process.stderr.close()
    left = count_unsent(sessions)
    assert 0 < left < total, "killed mid-way"

    with OutboxRelay(sessions, broker) as relay:
        while relay.run_once():
            pass
    assert unsent(sessions) == []
    got = drain(broker, "hub.routing", expect=total, limit=30)
    seen = {g.message_id for g in got}
    assert seen == {f"outbox-{i}" for i in ids}  # every row at least once; duplicates are allowed


# -- consumer ----------------------------------------------------------------------------------


def run_consumer(url: str, handler, *, stop: threading.Event, queue: str = "hub.routing") -> threading.Thread:
    worker = threading.Thread(
        target=consume,
        args=(url, queue, handler),
        kwargs={"stop": stop, "prefetch": 10, "backoff": QUICK_RETRIES, "poll": 0.05},
        daemon=True,
    )
    worker.start()
    return worker


def test_consumer_acks_what_the_handler_accepted(broker):
    declared(broker)
    for i in range(3):
        publish(broker, "hub.route", "route", json.dumps({"n": i}).encode(), message_id=f"m{i}", headers={"h": i})
    seen: list[tuple[bytes, dict[str, Any], Properties]] = []
    stop = threading.Event()

    def handler(body: bytes, headers: dict[str, Any], properties: Properties) -> None:
        seen.append((body, headers, properties))
        if len(seen) == 3:
            stop.set()

    run_consumer(broker, handler, stop=stop).join(10)
    assert stop.is_set()
    assert [(json.loads(b)["n"], h["h"], p.message_id) for b, h, p in seen] == [(i, i, f"m{i}") for i in range(3)]
    assert all(p.exchange == "hub.route" and p.routing_key == "route" and not p.redelivered for _, _, p in seen)
    assert all(p.attempt == 1 for _, _, p in seen)
    assert drain(broker, "hub.routing") == []


def test_consumer_dead_letters_what_the_handler_rejected(broker):
    declared(broker)
    publish(broker, "hub.route", "route", b'{"bad": true}', message_id="poison", headers={"h": 1})
    stop = threading.Event()

    def handler(body: bytes, headers: dict[str, Any], properties: Properties) -> None:
        stop.set()
        raise Rejected(ErrorCode.XML_MALFORMED, "not an envelope", line=1)

    run_consumer(broker, handler, stop=stop).join(10)
    assert drain(broker, "hub.routing") == []
    dead = drain(broker, "hub.dead", expect=1, limit=5)
    assert [d.message_id for d in dead] == ["poison"]
    assert dead[0].body == b'{"bad": true}'
    assert dead[0].headers["h"] == 1
    assert (dead[0].headers[REASON], dead[0].headers[QUEUE], dead[0].headers[ATTEMPTS]) == (
        "XML_MALFORMED at line 1",
        "hub.routing",
        1,
    )


def test_consumer_retries_while_a_dependency_is_unavailable(broker):
    declared(broker)
    publish(broker, "hub.route", "route", b"{}", message_id="later")
    calls: list[Properties] = []
    stop = threading.Event()

    def handler(body: bytes, headers: dict[str, Any], properties: Properties) -> None:
        calls.append(properties)
        if len(calls) < 3:
            raise Unavailable("the database is down")
        stop.set()

    run_consumer(broker, handler, stop=stop).join(10)
    assert [c.message_id for c in calls] == ["later"] * 3
    assert [c.attempt for c in calls] == [1, 2, 3]
    assert not any(c.redelivered for c in calls)  # each retry is a new copy, not a redelivery
    assert drain(broker, "hub.routing") == []
    assert drain(broker, "hub.routing.retry") == []
    assert drain(broker, "hub.dead") == []


@RABBITMQ_ONLY
def test_consuming_a_queue_that_does_not_exist_is_a_config_error(broker):
    with pytest.raises(ConfigError, match=r"queue hub\.nothing does not exist"):
        consume(broker, "hub.nothing", lambda *a: None, stop=threading.Event())


# -- command line ------------------------------------------------------------------------------


def test_broker_declare_and_relay_once_commands(database_url, sessions, broker):
    runner = CliRunner()
    result = runner.invoke(broker_group, ["declare", "--url", broker, "--provider", "myebox", "--sender", "0123456789"])
    assert result.exit_code == 0, result.output
    assert "exchange hub.deliver (topic)" in result.output
    assert "queue provider.myebox <- hub.deliver [myebox] (x-queue-type=classic, x-max-priority=9" in result.output
    assert "queue sender.0123456789.acks <- hub.notify [0123456789] (x-queue-type=quorum" in result.output

    add_rows(sessions, 12)
    result = runner.invoke(
        relay_command, ["--database-url", database_url, "--broker-url", broker, "--batch", "5", "--once"]
    )
    assert result.exit_code == 0, result.output
    assert "published 12 outbox rows" in result.output
    assert unsent(sessions) == []
    assert len(drain(broker, "hub.routing", expect=12)) == 12

    result = runner.invoke(broker_group, ["declare", "--url", broker, "--provider", "bad.id"])
    assert result.exit_code == 2
    assert "provider id 'bad.id'" in result.output


def test_a_handler_bug_is_retried_then_dead_lettered_and_the_loop_goes_on(broker):
    declared(broker)
    publish(broker, "hub.route", "route", b"{}", message_id="bug")
    publish(broker, "hub.route", "route", b"{}", message_id="fine")
    calls: list[tuple[str | None, int]] = []
    stop = threading.Event()

    def handler(body: bytes, headers: dict[str, Any], properties: Properties) -> None:
        calls.append((properties.message_id, properties.attempt))
        if properties.message_id == "bug":
            if properties.attempt == QUICK_RETRIES.attempts:
                stop.set()
            raise FileNotFoundError("a bug, not a broker outage")

    run_consumer(broker, handler, stop=stop).join(10)
    assert sorted(calls) == [("bug", 1), ("bug", 2), ("bug", 3), ("fine", 1)]
    dead = drain(broker, "hub.dead", expect=1, limit=5)
    assert [d.message_id for d in dead] == ["bug"]
    assert dead[0].headers[REASON] == "HANDLER_ERROR: FileNotFoundError"  # the class, never the message
    assert drain(broker, "hub.routing") == []


def test_published_rows_are_removed_once_kept_long_enough_and_unsent_ones_never(sessions, broker):
    sent = add_rows(sessions, 5)
    at = datetime.now(UTC)
    with OutboxRelay(sessions, broker, clock=lambda: at) as relay:
        assert relay.run_once() == 5
    waiting = add_rows(sessions, 2)
    with sessions() as session:  # the two wait for a provider's window: the relay must not publish them yet
        session.execute(
            update(OutboxEntry).where(OutboxEntry.id.in_(waiting)).values(not_before=at + timedelta(days=9))
        )
        session.commit()

    def remaining() -> list[int]:
        with sessions() as session:
            return sorted(session.scalars(select(OutboxEntry.id)))

    an_hour_later = OutboxRelay(sessions, broker, keep_sent=timedelta(hours=24), clock=lambda: at + timedelta(hours=1))
    assert an_hour_later.prune() == 0 and remaining() == sent + waiting  # kept for operators to look at
    next_day = OutboxRelay(sessions, broker, keep_sent=timedelta(hours=24), clock=lambda: at + timedelta(hours=25))
    assert next_day.prune(limit=2) == 2 and remaining() == sent[2:] + waiting  # the oldest first, a round at a time
    assert next_day.prune() == 3 and remaining() == waiting  # never a row still to publish
    assert OutboxRelay(sessions, broker, keep_sent=None, clock=lambda: at + timedelta(days=99)).prune() == 0
    drain(broker, "hub.routing", expect=5)
