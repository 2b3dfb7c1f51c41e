"""Hostile messages on the AMQP doors (``hub.submit`` for envelopes, ``hub.acks`` for acknowledgements),
on kombu's in-process transport with SQLite and on RabbitMQ with PostgreSQL.

A refusal goes to the message's ``reply_to`` (``hub-status``, ``hub-code``) or, without a usable
one, to ``hub.dead`` with its code; nothing else is published: every queue of the hub's topology is
empty afterwards, and the store holds what the attack's ``leaves`` says and nothing more.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import amqp.exceptions
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kombu import Connection, Exchange, Producer, Queue

from hub.broker import topology
from hub.broker.consumer import consume
from hub.broker.topology import DEAD_QUEUE
from hub.inbound.amqp import AmqpDoor
from hub.outbound.acks import Event
from hub.outbound.intake import AckIntake
from hub.safexml import parse
from tests.hostile import envelopes
from tests.hostile.answers import KNOWN_CODES, Answer, T
from tests.hostile.attacks import Attack, Door, Leaves, attacks, param, params
from tests.hostile.fuzzing import BODIES, BUDGET, examples
from tests.hostile.stack import COUNTED_ROWS, PROVIDERS, SENDERS, World, catalog, grown, unique
from tests.hostile.test_providers import UNKNOWN_ID, ack
from tests.kit import NOW
from tests.test_broker import drain

SUBMIT = Exchange("hub.submit", type="direct", durable=True)
ACKS = Exchange("hub.acks", type="direct", durable=True)
GARBAGE = b"this is not an envelope <"


@dataclass
class Doors:
    world: World
    url: str
    replies: str
    """A queue of this module's, where the answers go (``reply_to``)."""
    tap: str
    """A queue of this module's, bound to ``hub.dead``: a copy of every dead letter."""
    threads: list[threading.Thread]
    """The consumers of ``hub.submit`` (the AMQP door) and ``hub.acks``."""
    baseline: dict[str, int] = field(default_factory=dict)
    """What the hub's queues held before (nothing, but on a shared virtual host: what others left there)."""

    def alive(self) -> bool:
        return all(thread.is_alive() for thread in self.threads)

    def publish(self, body: bytes, *, exchange: Exchange = SUBMIT, key: str = "submit", **properties: Any) -> None:
        with Connection(self.url) as connection:
            Producer(connection.channel()).publish(
                body,
                exchange=exchange,
                routing_key=key,
                content_type="application/xml",
                content_encoding="binary",
                correlation_id=unique("corr"),
                **properties,
            )

    def submit(self, body: bytes) -> Answer:
        """Publish to hub.submit with reply_to; the answer."""
        self.publish(body, reply_to=self.replies)
        [message] = drain(self.url, self.replies, expect=1, limit=15)
        code = message.headers["hub-code"] or None
        if code is not None:
            assert parse(message.body).findtext(T + "Code") == code
        return Answer(int(message.headers["hub-status"]), code, message.body)

    def dead_letter(self) -> Any:
        [dead] = drain(self.url, self.tap, expect=1, limit=15)
        return dead

    def depths(self) -> dict[str, int]:
        """Messages waiting in each queue of the hub (but ``hub.dead``, where refusals go by design)."""
        found = {}
        with Connection(self.url) as connection:
            for spec in topology.queues(PROVIDERS, SENDERS):
                if spec.name == DEAD_QUEUE.name:
                    continue
                channel = connection.channel()
                try:
                    found[spec.name] = channel.queue_declare(queue=spec.name, passive=True).message_count
                finally:
                    with contextlib.suppress(Exception):
                        channel.close()
        return {
            name: count - self.baseline.get(name, 0)
            for name, count in found.items()
            if count != self.baseline.get(name, 0)
        }

    def tapped(self) -> int:
        with Connection(self.url) as connection:
            return connection.channel().queue_declare(queue=self.tap, passive=True).message_count


def _delete(url: str, names: list[str]) -> None:
    with Connection(url) as connection:
        for name in names:
            channel = connection.channel()
            try:
                channel.queue_delete(name)
            except amqp.exceptions.NotFound:
                pass
            finally:
                with contextlib.suppress(Exception):
                    channel.close()


@pytest.fixture(scope="module")
def doors(world: World) -> Iterator[Doors]:
    url = world.backend.broker_url
    own = [spec.name for spec in topology.queues(PROVIDERS, SENDERS)]
    if world.backend.private:
        _delete(url, own)  # in-process queues outlive a test module; a virtual host of ours starts empty anyway
    replies, tap = unique("hostile-replies"), unique("hostile-dead-tap")
    with Connection(url) as connection:
        topology.declare(connection, PROVIDERS, SENDERS)
        channel = connection.channel()
        Queue(replies, exchange=Exchange("", type="direct"), routing_key=replies)(channel).declare()
        Queue(tap, exchange=Exchange(DEAD_QUEUE.name, type="fanout", durable=True))(channel).declare()
    door = AmqpDoor(world.runtime.intake, url)
    intake = AckIntake(world.runtime.sessions, catalog(), clock=lambda: NOW)
    stop = threading.Event()
    threads = [
        threading.Thread(target=door.run, args=(stop,), daemon=True),
        threading.Thread(
            target=consume, args=(url, "hub.acks", intake.handle), kwargs={"stop": stop, "poll": 0.05}, daemon=True
        ),
    ]
    for thread in threads:
        thread.start()
    doors = Doors(world, url, replies, tap, threads)
    doors.baseline = doors.depths()
    yield doors
    stop.set()
    for thread in threads:
        thread.join(10)
    door.close()
    _delete(url, [replies, tap, *(own if world.backend.private else [])])


def expected_rows(attack: Attack) -> dict[str, int]:
    return COUNTED_ROWS if attack.leaves is Leaves.COUNTED else {}


# --- envelopes on hub.submit ------------------------------------------------------------------------------

SUBMISSION_ATTACKS = [a for a in attacks(Door.AMQP) if a.name in envelopes.HOW]


@pytest.mark.parametrize("attack", [param(a) for a in SUBMISSION_ATTACKS])
def test_each_hostile_envelope_is_answered_to_reply_to_and_nothing_else_is_published(doors: Doors, attack: Attack):
    sending = envelopes.HOW[attack.name]()
    first = None
    if sending.first is not None:
        first = doors.submit(sending.first)
        assert (first.status, first.code) == (201, None), first.body[:300]
    before = doors.world.footprint()
    answer = doors.submit(sending.attack)
    answer.expect(attack.code, attack.status)
    if first is not None and attack.code is None:
        assert answer.body == first.body  # the original receipt
    assert grown(before, doors.world.footprint()) == expected_rows(attack)
    assert doors.depths() == {}
    assert doors.tapped() == 0


def _without_reply_to(doors: Doors) -> Any:
    doors.publish(GARBAGE)
    return doors.dead_letter()


def _reply_to(queue: str):  # type: ignore[no-untyped-def]
    def attack(doors: Doors) -> Any:
        doors.publish(GARBAGE, reply_to=queue)
        return doors.dead_letter()

    return attack


DEAD: dict[str, Any] = {
    "amqp/garbage-without-reply-to": _without_reply_to,
    "amqp/reply-to-a-providers-queue": _reply_to("provider.myebox"),
    "amqp/reply-to-the-inbound-queue": _reply_to("hub.inbound"),
}


@pytest.mark.parametrize("attack", [param(a) for a in attacks(Door.AMQP) if a.id in DEAD])
def test_a_refusal_nobody_may_be_told_is_dead_lettered_and_lands_in_no_hub_queue(doors: Doors, attack: Attack):
    before = doors.world.footprint()
    dead = DEAD[attack.id](doors)
    assert attack.status is None and attack.code is not None
    assert dead.body == GARBAGE  # the message as published, not an answer to it
    assert (dead.headers["x-hub-code"], dead.headers["x-hub-queue"]) == (attack.code.value, "hub.inbound")
    assert doors.depths() == {}
    assert grown(before, doors.world.footprint()) == {}


# --- acknowledgements on hub.acks -------------------------------------------------------------------------

ACK_ATTACKS = {
    "amqp_acks/another-providers-delivery": lambda w: ack("doccle", w.message_id, delivery_id=w.delivery_id),
    "amqp_acks/unknown-delivery": lambda w: ack("myebox", UNKNOWN_ID),
    "amqp_acks/signed-by-another-provider": lambda w: ack("myebox", w.message_id, key="doccle", event=Event.OPENED),
}


@pytest.mark.parametrize("attack", params(Door.AMQP_ACKS))
def test_a_providers_hostile_acknowledgement_is_dead_lettered_with_its_code(doors: Doors, attack: Attack):
    before = doors.world.footprint()
    data = ACK_ATTACKS[attack.id](doors.world)
    doors.publish(data, exchange=ACKS, key="acks")
    dead = doors.dead_letter()
    assert dead.body == data
    assert attack.code is not None
    assert (dead.headers["x-hub-code"], dead.headers["x-hub-queue"]) == (attack.code.value, "hub.acks")
    assert doors.depths() == {}
    assert grown(before, doors.world.footprint()) == {}


def test_the_table_and_these_ways_are_the_same_list():
    ways = {f"amqp/{name}" for name in envelopes.HOW} | set(DEAD) | set(ACK_ATTACKS)
    assert ways == {a.id for a in attacks(Door.AMQP, Door.AMQP_ACKS)}


def test_a_good_envelope_is_receipted_to_reply_to(doors: Doors):
    # The control group: the door answers, and a receipt is the only thing it publishes
    answer = doors.submit(envelopes.signed(envelopes.fresh("payment")))
    assert (answer.status, answer.code) == (201, None)
    assert doors.depths() == {}


# --- fuzzing: arbitrary bodies and properties -----------------------------------------------------------------

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
HEADER_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-(2**31), 2**31 - 1), TEXT, st.lists(TEXT, max_size=3))


@st.composite
def messages(draw: st.DrawFn, replies: str) -> list[tuple[bytes, dict[str, Any]]]:
    batch = []
    for _ in range(draw(st.integers(1, 5))):
        properties: dict[str, Any] = {
            "reply_to": draw(
                st.sampled_from(
                    [None, "", replies, replies, "hub.inbound", "provider.myebox", "sender.0308357159.acks", "hub.dead"]
                )
            ),
            "content_type": draw(st.sampled_from(["application/xml", "text/plain", "application/json", ""]) | TEXT),
            "content_encoding": draw(st.sampled_from(["binary", "utf-8", "x-unknown-codec", "gzip"])),
            "correlation_id": draw(st.none() | TEXT),
            "message_id": draw(st.none() | TEXT),
            "priority": draw(st.none() | st.integers(0, 9)),
            "headers": draw(
                st.dictionaries(st.text(alphabet="abcdefghij-_", min_size=1, max_size=12), HEADER_VALUES, max_size=3)
            ),
        }
        batch.append((draw(BODIES), {k: v for k, v in properties.items() if v is not None}))
    return batch


def _receipts_in_sender_queues(doors: Doors) -> int:
    return sum(len(drain(doors.url, f"sender.{s}.acks", idle=0.01, limit=1)) for s in SENDERS)


@pytest.mark.usefixtures("fuzz_clock")
def test_any_message_on_hub_submit_is_answered_or_dead_lettered_and_the_door_keeps_consuming(doors: Doors):
    replies = doors.replies

    @examples(12)
    @given(messages(replies))
    def fuzz(batch: list[tuple[bytes, dict[str, Any]]]) -> None:
        if BUDGET.spent():
            return
        before = doors.world.footprint()
        for body, properties in batch:
            with Connection(doors.url) as connection:
                Producer(connection.channel()).publish(body, exchange=SUBMIT, routing_key="submit", **properties)
        answered = sum(1 for _, p in batch if p.get("reply_to") == replies)
        answers = drain(doors.url, replies, expect=answered, limit=15) if answered else []
        dead: list[Any] = []
        receipts = 0  # accepted (unchanged) envelopes without a reply_to: receipted to the sender's queue
        deadline = time.monotonic() + 15
        while len(dead) + receipts < len(batch) - answered and time.monotonic() < deadline:
            dead += drain(doors.url, doors.tap, idle=0.05, limit=1)
            receipts += _receipts_in_sender_queues(doors)
        assert len(answers) == answered, "a message with a reply_to got no answer"
        for answer in answers:
            code = answer.headers["hub-code"]
            assert (answer.headers["hub-status"], code) in ((201, ""), (200, "")) or code in KNOWN_CODES, answer.headers
            if code:
                assert 400 <= answer.headers["hub-status"] < 500 and parse(answer.body).findtext(T + "Code") == code
        assert len(dead) + receipts == len(batch) - answered, "a message was neither answered nor dead-lettered"
        for letter in dead:
            assert letter.headers["x-hub-code"] in KNOWN_CODES and letter.headers["x-hub-queue"] == "hub.inbound"
        assert doors.depths() == {}  # nothing retried (no exception but refusals), nothing published elsewhere
        assert doors.alive()
        accepted = receipts + sum(1 for a in answers if a.headers["hub-status"] == 201)
        change = grown(before, doors.world.footprint())
        refused = change.pop("refusals", 0)
        assert change.pop("audit", 0) == accepted + refused
        assert change == {name: accepted for name in ("messages", "events", "outbox") if accepted}, change

    fuzz()
