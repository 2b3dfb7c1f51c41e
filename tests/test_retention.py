# ruff: noqa: F811 - pytest fixtures imported from the acknowledgement tests share their names with parameters
"""Retention and expiry, with a clock the tests move: warnings, reminders and expiry happen at the
right times, once each; after expiry the content is gone and the metadata and proofs remain.

The planner (``due``) is checked on its own; the scheduler end to end on SQLite + the in-process
transport and on PostgreSQL + RabbitMQ: a registered letter routed to two providers, the notices
on the providers' queues (signed by the hub), the sender's feed, the relay, the provider SDK and
the simulated providers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import amqp.exceptions
import pytest
from click.testing import CliRunner
from kombu import Connection
from sqlalchemy import select

from hub.cli import cli
from hub.envelope import examples as ex
from hub.envelope.rules import MessageTypePolicy, add_months
from hub.errors import ConfigError
from hub.inbound.senders import SenderDirectory, load_senders
from hub.lifecycle.retention import (
    Action,
    Facts,
    Report,
    RetentionScheduler,
    Timing,
    due,
    expiry_for,
    notice_id,
    reminder_ranges,
)
from hub.outbound.acks import Acknowledgement, Event, open_acknowledgement
from hub.outbound.sdk import Delivery, Notice, ProviderClient
from hub.outbound.simulated import Behaviour, SimulatedProvider
from hub.routing.deliveries import delivery_id
from hub.signing.signer import Signer
from hub.signing.truststore import TrustStore, trusted
from hub.signing.verifier import Verifier
from hub.store.db import make_engine, upgrade
from hub.store.models import AuditEntry, OutboxEntry
from tests.kit import NOW, example
from tests.test_acknowledgements import (  # noqa: F401 - shared fixtures
    PROVIDER_KEYS,
    SENDER,
    Loop,
    broker_url,
    config_dir,
    database_url,
    loop,
    registered_letter,
)
from tests.test_broker import Got
from tests.test_routing_worker import providers_yaml, write

EXPIRES = add_months(ex.EXAMPLES_CREATED, 36)
"""When the registered letter of the examples expires (its ExpiresAt)."""
DAY = timedelta(days=1)
TYPE = example("registered").header.message_type


# -- the planner --------------------------------------------------------------------------------------


def facts(**given: Any) -> Facts:
    values: dict[str, Any] = {"id": "m", "state": "delivered", "accepted_at": NOW, "expires_at": NOW + 365 * DAY}
    return Facts(**(values | given))


def test_nothing_happens_to_a_message_kept_indefinitely():
    kept = facts(expires_at=None)
    for moment in (NOW, NOW + 15 * DAY, NOW + 100 * 365 * DAY):
        assert due(kept, Timing(), moment) == []


def test_expiry_comes_at_expires_at_once_and_whatever_the_state():
    expiring = facts(expires_at=NOW + 30 * DAY, warned_at=NOW + 23 * DAY)
    assert due(expiring, Timing(), NOW + 30 * DAY - timedelta(seconds=1)) == []
    assert due(expiring, Timing(), NOW + 30 * DAY) == [Action.EXPIRE]
    for state in ("accepted", "opened", "replied", "undeliverable", "expired"):
        assert due(dataclasses.replace(expiring, state=state), Timing(), NOW + 31 * DAY) == [Action.EXPIRE]
    assert due(dataclasses.replace(expiring, expired_at=NOW + 30 * DAY), Timing(), NOW + 40 * DAY) == []


def test_the_warning_comes_warn_days_before_expiry_once_and_only_while_unread():
    expiring = facts(expires_at=NOW + 100 * DAY)
    assert due(expiring, Timing(reminder_days=0), NOW + 93 * DAY - timedelta(seconds=1)) == []
    assert due(expiring, Timing(reminder_days=0), NOW + 93 * DAY) == [Action.WARN]
    assert due(dataclasses.replace(expiring, state="routed"), Timing(), NOW + 95 * DAY) == [Action.WARN]
    assert due(dataclasses.replace(expiring, warned_at=NOW + 93 * DAY), Timing(), NOW + 95 * DAY) == []
    for read_or_over in ("opened", "replied", "printed", "failed", "undeliverable", "accepted"):
        assert due(dataclasses.replace(expiring, state=read_or_over), Timing(), NOW + 95 * DAY) == []
    assert due(expiring, Timing(warn_days=0, reminder_days=0), NOW + 99 * DAY) == []
    assert due(expiring, Timing(warn_days=30, reminder_days=0), NOW + 70 * DAY) == [Action.WARN]


def test_reminders_come_every_period_after_acceptance_once_per_period_and_stop_once_warned():
    unread = facts()
    assert due(unread, Timing(), NOW + 15 * DAY - timedelta(seconds=1)) == []
    assert due(unread, Timing(), NOW + 15 * DAY) == [Action.REMIND]
    reminded = dataclasses.replace(unread, reminded_at=NOW + 15 * DAY + timedelta(hours=3))
    assert due(reminded, Timing(), NOW + 29 * DAY) == []
    assert due(reminded, Timing(), NOW + 30 * DAY) == [Action.REMIND]
    # a scheduler stopped for weeks sends one reminder, not one per period missed
    assert due(reminded, Timing(), NOW + 80 * DAY) == [Action.REMIND]
    assert due(dataclasses.replace(reminded, reminded_at=NOW + 80 * DAY), Timing(), NOW + 89 * DAY) == []
    assert due(dataclasses.replace(unread, state="opened"), Timing(), NOW + 15 * DAY) == []
    assert due(dataclasses.replace(unread, warned_at=NOW), Timing(), NOW + 15 * DAY) == []
    assert due(unread, Timing(reminder_days=0), NOW + 45 * DAY) == []


def test_a_message_types_timing_overrides_the_hubs_and_zero_means_never():
    hub = Timing(warn_days=7, reminder_days=15)
    assert hub.of(None) == hub
    assert hub.of(MessageTypePolicy()) == hub
    assert hub.of(MessageTypePolicy(expiry_warning_days=30)) == Timing(warn_days=30, reminder_days=15)
    assert hub.of(MessageTypePolicy(expiry_warning_days=0, reminder_days=0)) == Timing(0, 0)


def test_reminder_ranges_cover_each_period_boundary_crossed_since_the_previous_round():
    # every 15 days, a round a minute after the previous one: one narrow range per period
    ranges = reminder_ranges(NOW, NOW + timedelta(minutes=1), [15], timedelta(days=60))
    assert len(ranges) == 5
    assert all(high - low == timedelta(minutes=11) for low, high in ranges if low is not None)
    assert ranges[-1][1] == NOW + timedelta(minutes=1) - 15 * DAY
    # rounds a period or more apart: the ranges merge into one
    [merged] = reminder_ranges(NOW, NOW + 20 * DAY, [15], timedelta(days=60))
    assert merged[1] == NOW + 5 * DAY
    # the first round ever: everything accepted a period ago or earlier; no periods: nothing
    assert reminder_ranges(None, NOW, [30, 15, 0], timedelta(days=60)) == [(None, NOW - 15 * DAY)]
    assert reminder_ranges(NOW, NOW + DAY, [0], timedelta(days=60)) == []


def test_expiry_comes_from_the_envelope_or_the_types_default_retention():
    header = example("registered").header
    assert expiry_for(header, MessageTypePolicy()) == EXPIRES
    open_ended = dataclasses.replace(header, expires_at=None)
    assert expiry_for(open_ended, MessageTypePolicy(default_retention_months=6)) == add_months(header.created, 6)
    kept = dataclasses.replace(open_ended, retain_indefinitely=True)
    assert expiry_for(kept, MessageTypePolicy(unlimited_allowed=True)) is None


def test_notice_ids_are_stable_tokens():
    short = notice_id("11111111-2222-4333-8444-555555555555:myebox", Action.REMIND, 2)
    assert short == "11111111-2222-4333-8444-555555555555:myebox:reminder-2"
    long_name = "11111111-2222-4333-8444-555555555555:a-provider-with-a-long-name"
    long = notice_id(long_name, Action.WARN)
    assert len(long) == 64 and long == notice_id(long_name, Action.WARN) != notice_id(long_name, Action.EXPIRE)


# -- the message types' timing in senders.yaml ----------------------------------------------------------


SENDERS = """\
institutions:
  - id: "0206731645"
    name: Social security
    applications: [inspection]
    message_types:
      FORMAL_NOTICE: {{max_retention_months: 36, {timing}}}
"""


def test_senders_yaml_gives_a_message_type_its_own_warning_and_reminders(tmp_path):
    path = tmp_path / "senders.yaml"
    path.write_text(SENDERS.format(timing="expiry_warning_days: 30, reminder_days: 0"))
    policy = load_senders(path).institutions[ex.SOCIAL].message_types["FORMAL_NOTICE"]
    assert (policy.expiry_warning_days, policy.reminder_days) == (30, 0)
    for bad, fragment in (
        ("expiry_warning_days: -1", "expiry_warning_days: must be a number of days between 0 (never) and 3650"),
        ("reminder_days: 2.5", "reminder_days: must be int, not float"),
        ("reminder_day: 15", "did you mean 'reminder_days'?"),
    ):
        path.write_text(SENDERS.format(timing=bad))
        with pytest.raises(ConfigError) as refused:
            load_senders(path)
        assert fragment in str(refused.value), str(refused.value)
        assert refused.value.file == str(path) and refused.value.line == 6


# -- end to end ----------------------------------------------------------------------------------------


def scheduler(loop: Loop, *, senders: SenderDirectory | None = None, **timing: int) -> RetentionScheduler:
    return RetentionScheduler(
        loop.sessions,
        senders or loop.senders,
        signer=Signer(loop.runtime.hub_keys),
        clock=lambda: loop.now,
        batch=2,  # pages of two: the tests also cross page boundaries
        **timing,
    )


def hub_verifier(loop: Loop) -> Verifier:
    return Verifier(TrustStore([trusted("hub", loop.runtime.hub_keys.certificate)]))


def notices(loop: Loop, provider: str, expect: int | None = None) -> list[tuple[Got, Acknowledgement]]:
    """The notices on ``provider.<id>``, each verified as signed by the hub."""
    found = []
    for got in loop.queue(provider, expect=expect):
        assert "notice" in got.headers, f"not a notice: {got.headers}"
        ack, _ = open_acknowledgement(got.body, hub_verifier(loop), datetime.now(UTC), issuers=["hub"])
        found.append((got, ack))
    return found


def routed_letter(loop: Loop) -> str:
    """The registered letter, routed to myebox and irisbox, both deliveries taken off their queues."""
    message_id = registered_letter(loop)
    for provider in ("myebox", "irisbox"):
        [got] = loop.queue(provider, expect=1)
        assert "notice" not in got.headers
    return message_id


def audit(loop: Loop, action: str) -> list[AuditEntry]:
    with loop.sessions() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))


def test_providers_are_warned_seven_days_before_an_unread_message_expires_once(loop):
    message_id = routed_letter(loop)
    retention = scheduler(loop, reminder_days=0)

    loop.now = EXPIRES - 8 * DAY
    assert retention.run_once() == Report()
    assert loop.relay() == 0

    loop.now = EXPIRES - 7 * DAY
    assert retention.run_once() == Report(warned=1, notices=2)
    assert loop.relay() == 2
    for provider in ("myebox", "irisbox"):
        [(got, notice)] = notices(loop, provider, expect=1)
        assert got.headers["notice"] == "documentExpirationAlert"
        assert got.headers["hub-message-id"] == message_id
        assert got.headers["delivery-id"] == delivery_id(message_id, provider)
        assert datetime.fromisoformat(got.headers["expires-at"]) == EXPIRES
        assert got.content_type == "application/xml"
        assert (notice.event, notice.issuer, notice.provider) == (Event.DOCUMENT_EXPIRATION_ALERT, "hub", provider)
        assert (notice.hub_message_id, notice.delivery_id) == (message_id, delivery_id(message_id, provider))
        assert notice.envelope_digest == bytes.fromhex(loop.message(message_id).envelope_sha256)
    assert loop.message(message_id).warned_at == EXPIRES - 7 * DAY

    # once: the next rounds send nothing, nor do a day's rounds later
    assert retention.run_once() == Report()
    loop.now = EXPIRES - 6 * DAY
    assert retention.run_once() == Report()
    assert loop.relay() == 0
    # providers only: the sender's feed does not change; the audit trail says what was done
    assert [e.kind for e in loop.events(message_id)] == ["accepted", "routed"]
    [entry] = audit(loop, "warned")
    assert (entry.actor, entry.message_id) == ("hub.lifecycle", message_id)
    assert json.loads(entry.detail)["providers"] == ["irisbox", "myebox"]


def test_unread_reminders_come_at_15_and_30_days_and_stop_once_the_message_is_opened(loop):
    message_id = routed_letter(loop)
    retention = scheduler(loop)  # the hub's defaults: warn 7 days ahead, remind every 15 days

    loop.now = NOW + 14 * DAY
    assert retention.run_once() == Report()
    loop.now = NOW + 15 * DAY
    assert retention.run_once() == Report(reminded=1, notices=2)
    assert retention.run_once() == Report()
    loop.now = NOW + 29 * DAY
    assert retention.run_once() == Report()
    loop.now = NOW + 30 * DAY
    assert retention.run_once() == Report(reminded=1, notices=2)
    assert loop.relay() == 4
    for provider in ("myebox", "irisbox"):
        got = notices(loop, provider, expect=2)
        assert [g.headers["notice"] for g, _ in got] == ["newDocumentReminder"] * 2
        assert [n.ack_id for _, n in got] == [f"{delivery_id(message_id, provider)}:reminder-{k}" for k in (1, 2)]
    assert loop.message(message_id).reminded_at == NOW + 30 * DAY

    loop.report("myebox", message_id, Event.OPENED)
    loop.now = NOW + 45 * DAY
    assert retention.run_once() == Report()
    loop.now = EXPIRES - 7 * DAY  # read: no warning either
    assert retention.run_once() == Report()
    assert loop.relay() == 0
    assert [json.loads(e.detail)["reminder"] for e in audit(loop, "reminded")] == [1, 2]


def test_at_expiry_the_content_goes_the_metadata_and_proofs_stay_and_everyone_is_told(loop, config_dir):
    delivered = routed_letter(loop)
    loop.report("myebox", delivered, Event.DELIVERED)
    # a second letter, still in the outbox: irisbox is in maintenance until after the expiry
    write(config_dir / "providers.yaml", providers_yaml((NOW - timedelta(hours=1), EXPIRES + DAY)))
    waiting, _ = loop.submit("registered", sender_message_id="INSP-2026-0043")
    assert loop.relay() == 1 and loop.route(1) == [None]
    before = {m: loop.message(m) for m in (delivered, waiting)}
    retention = scheduler(loop, warn_days=0, reminder_days=0)

    loop.now = EXPIRES - timedelta(seconds=1)
    assert retention.run_once() == Report()
    loop.now = EXPIRES
    # the delivered letter: both providers (irisbox may hold it unacknowledged); the waiting one:
    # myebox's delivery is due for the relay (presumed out), irisbox's is held (never went out)
    assert retention.run_once() == Report(expired=2, notices=3)
    assert retention.run_once() == Report()

    for message_id, state in ((delivered, "delivered"), (waiting, "expired")):
        message = loop.message(message_id)
        assert message.envelope is None and message.expired_at == EXPIRES
        assert message.state == state  # the best outcome reached stays; what reached nobody expired
        kept = before[message_id]
        assert (message.envelope_sha256, message.receipt, message.expires_at) == (
            kept.envelope_sha256,
            kept.receipt,
            kept.expires_at,
        )
        assert (message.sender_message_id, message.message_type, message.accepted_at) == (
            kept.sender_message_id,
            kept.message_type,
            kept.accepted_at,
        )
    assert {d.provider: d.state for d in loop.deliveries(delivered)} == {"myebox": "delivered", "irisbox": "expired"}
    assert {d.provider: d.state for d in loop.deliveries(waiting)} == {"myebox": "expired", "irisbox": "expired"}
    assert [e.kind for e in loop.events(delivered)] == ["accepted", "routed", "delivered", "expired"]
    assert [e.kind for e in loop.events(waiting)] == ["accepted", "routed", "expired"]

    # the relay publishes the notices; the waiting letter's deliveries have nothing left to publish
    assert loop.relay() == 4  # three notices, and myebox's delivery of the waiting letter marked gone
    myebox = notices(loop, "myebox", expect=2)
    assert sorted((g.headers["hub-message-id"], n.event) for g, n in myebox) == sorted(
        [(delivered, Event.EXPIRED), (waiting, Event.EXPIRED)]
    )
    [(got, notice)] = notices(loop, "irisbox", expect=1)
    assert (got.headers["notice"], notice.hub_message_id) == ("expired", delivered)
    assert loop.relay(at=EXPIRES + 2 * DAY) == 1  # irisbox's held delivery: gone too, never published
    assert loop.queue("irisbox") == [] and loop.queue("myebox") == []
    assert loop.unsent_deliveries() == []

    # the sender is told by the forwarder, signed by the hub
    assert loop.forward() == 7
    assert loop.relay() == 7
    acks = loop.sender_queue(expect=7)
    assert sorted(a.hub_message_id for a in acks if a.event is Event.EXPIRED) == sorted([delivered, waiting])
    # the audit trail keeps what was done, and everything before it
    expired = {e.message_id: json.loads(e.detail) for e in audit(loop, "expired")}
    assert {m: (d["state"], d["content_removed"]) for m, d in expired.items()} == {
        delivered: ("delivered", True),
        waiting: ("expired", True),
    }
    assert expired[waiting]["providers"] == ["myebox"]
    assert {e.message_id for e in audit(loop, "accepted")} == {delivered, waiting}


def test_a_message_kept_indefinitely_never_expires(loop):
    social = loop.senders.institutions[SENDER]
    unlimited = dataclasses.replace(
        social, message_types={**social.message_types, TYPE: MessageTypePolicy(unlimited_allowed=True)}
    )
    loop.runtime.intake.directory = dataclasses.replace(
        loop.senders, institutions={**loop.senders.institutions, SENDER: unlimited}
    )
    loop.reads_with(ex.CITIZEN_A, "myebox")
    message_id, data = loop.submit("registered", expires_at=None, retain_indefinitely=True)
    assert loop.relay() == 1 and loop.route(1) == [None]
    assert loop.message(message_id).expires_at is None
    retention = scheduler(loop)
    for later in (15 * DAY, 3 * 365 * DAY, 100 * 365 * DAY):
        loop.now = NOW + later
        assert retention.run_once() == Report()
    assert loop.message(message_id).envelope == data


def test_a_message_types_own_timing_is_honoured(loop):
    message_id = routed_letter(loop)
    social = loop.senders.institutions[SENDER]
    own = MessageTypePolicy(expiry_warning_days=30, reminder_days=0)
    senders = dataclasses.replace(
        loop.senders,
        institutions={
            **loop.senders.institutions,
            SENDER: dataclasses.replace(social, message_types={**social.message_types, TYPE: own}),
        },
    )
    retention = scheduler(loop, senders=senders)  # the hub's defaults: 7 and 15 days

    for moment in (NOW + 15 * DAY, NOW + 30 * DAY, EXPIRES - 31 * DAY):
        loop.now = moment
        assert retention.run_once() == Report()  # no reminders for this type
    loop.now = EXPIRES - 30 * DAY
    assert retention.run_once() == Report(warned=1, notices=2)
    loop.now = EXPIRES - 7 * DAY
    assert retention.run_once() == Report()
    assert loop.message(message_id).warned_at == EXPIRES - 30 * DAY


# -- the providers' side ------------------------------------------------------------------------------


def consume_until(client: ProviderClient, done: Callable[[], bool], **handlers: Any) -> None:
    """Run the client's consume loop until ``done()`` says so (20 s at most)."""
    stop = threading.Event()
    thread = threading.Thread(target=client.run, args=(handlers.pop("handler"), stop), kwargs=handlers, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    try:
        while not done() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert done()
    finally:
        stop.set()
        thread.join(10)


def test_the_sdk_hands_notices_to_on_notice_and_deliveries_to_the_handler(loop, caplog):
    message_id = registered_letter(loop)  # the delivery still on myebox's queue
    loop.now = EXPIRES - 7 * DAY
    assert scheduler(loop, reminder_days=0).run_once() == Report(warned=1, notices=2)
    assert loop.relay() == 2
    deliveries: list[Delivery] = []
    got: list[Notice] = []
    with ProviderClient("myebox", loop.url, PROVIDER_KEYS["myebox"], poll=0.05) as client:
        consume_until(client, lambda: bool(deliveries and got), handler=deliveries.append, on_notice=got.append)
    assert [d.delivery_id for d in deliveries] == [delivery_id(message_id, "myebox")]
    [notice] = got
    assert (notice.event, notice.hub_message_id, notice.delivery_id) == (
        Event.DOCUMENT_EXPIRATION_ALERT,
        message_id,
        delivery_id(message_id, "myebox"),
    )
    assert notice.expires_at == EXPIRES
    ack, _ = open_acknowledgement(notice.document, hub_verifier(loop), datetime.now(UTC), issuers=["hub"])
    assert ack.event is Event.DOCUMENT_EXPIRATION_ALERT
    assert loop.queue("myebox") == []  # both acked on the broker

    # without on_notice, a notice is logged and acked, and the handler never sees it
    irisbox_seen: list[Delivery] = []
    caplog.set_level(logging.INFO, logger="hub.outbound")

    def logged() -> bool:
        return any("notice documentExpirationAlert" in r.getMessage() for r in caplog.records)

    with ProviderClient("irisbox", loop.url, PROVIDER_KEYS["irisbox"], poll=0.05) as client:
        consume_until(client, lambda: bool(irisbox_seen) and logged(), handler=irisbox_seen.append)
    assert [d.delivery_id for d in irisbox_seen] == [delivery_id(message_id, "irisbox")]
    assert loop.queue("irisbox") == []


@pytest.fixture
def purged_acks(loop) -> Iterator[None]:
    """hub.acks emptied afterwards: a simulated provider's acknowledgements must not reach other tests."""
    yield
    with Connection(loop.url) as connection, contextlib.suppress(amqp.exceptions.NotFound):
        connection.channel().queue_purge("hub.acks")


def test_a_simulated_provider_counts_notices_and_drops_an_expired_document(loop, purged_acks):
    message_id = registered_letter(loop)
    behaviour = Behaviour(open_probability=1.0, open_delay_s=60.0, jitter=0.0, reply_probability=0.0, seed=3)
    simulated = SimulatedProvider("myebox", loop.url, PROVIDER_KEYS["myebox"], behaviour=behaviour, poll=0.05)
    with simulated:
        simulated.start()
        deadline = time.monotonic() + 20
        while simulated.pending == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert simulated.stats["delivered"] == 1 and simulated.pending == 1  # its opening is scheduled
        loop.now = EXPIRES
        assert scheduler(loop).run_once() == Report(expired=1, notices=2)
        assert loop.relay() == 2
        while simulated.stats["notice:expired"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert simulated.stats["notice:expired"] == 1
        assert simulated.pending == 0  # the opening was cancelled with the document
    assert loop.message(message_id).envelope is None


# -- the command ---------------------------------------------------------------------------------------


def test_hub_lifecycle_run_once_does_one_round(tmp_path, monkeypatch):
    config = tmp_path / "config"
    config.mkdir()
    (config / "senders.yaml").write_text(SENDERS.format(timing="reminder_days: 0"))
    database = f"sqlite:///{tmp_path / 'hub.db'}"
    upgrade(make_engine(database))
    for name in ("HUB_BROKER_URL", "HUB_LIFECYCLE_WARN_DAYS"):
        monkeypatch.delenv(name, raising=False)
    env = {"HUB_CONFIG_DIR": str(config), "HUB_DATA_DIR": str(tmp_path / "var"), "HUB_DATABASE_URL": database}
    result = CliRunner().invoke(cli, ["lifecycle", "run", "--once"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "retention: 0 warned, 0 reminded, 0 expired; 0 notices to providers"
    bad = CliRunner().invoke(cli, ["lifecycle", "run", "--once"], env={**env, "HUB_LIFECYCLE_WARN_DAYS": "-1"})
    assert bad.exit_code == 2 and "warn_days must be at least 0" in bad.output


def test_no_outbox_row_of_a_notice_lacks_its_body(loop):
    routed_letter(loop)
    loop.now = EXPIRES
    scheduler(loop).run_once()
    with loop.sessions() as session:
        rows = list(session.scalars(select(OutboxEntry).where(OutboxEntry.headers.like('%"notice"%'))))
    assert len(rows) == 2 and all(row.body for row in rows)


def test_the_example_expiry_is_what_the_tests_think():
    assert example("registered").header.expires_at == EXPIRES
    assert example("registered").header.sender.institution_id == SENDER
