"""Retries with back-off and dead letters in the consume loop, on kombu's in-process transport and on RabbitMQ.

Given a handler that fails, when the loop settles the message, then: a transient failure
is retried after a growing delay without holding up the other messages; after the last
attempt, or at once for a refusal, the message is in ``hub.dead`` with its reason, queue
and attempts; and every message published is either processed or dead, never lost.
"""

from __future__ import annotations

import itertools
import random
import re
import threading
import time
from collections import Counter
from datetime import datetime
from typing import Any

import pytest

from hub.broker import retry
from hub.broker.connection import RetryPolicy, connect
from hub.broker.consumer import Incoming, Properties, consume, consume_batches
from hub.broker.retry import (
    ATTEMPTS,
    CODE,
    DEAD_AT,
    DEAD_ID,
    QUEUE,
    REASON,
    REPLAYS,
    Copy,
    Dead,
    Republisher,
    Retry,
    attempt_of,
    decide,
    replay_headers,
)
from hub.errors import ConfigError, ErrorCode, Rejected, Unavailable
from tests import test_broker
from tests.test_broker import RABBITMQ_ONLY, declared, drain, is_rabbitmq, publish

broker = test_broker.broker  # the shared fixtures
rabbitmq_vhost = test_broker.rabbitmq_vhost
RECONNECT_FAST = RetryPolicy(attempts=2, start=0.05, step=0.0, max=0.05)


def policy(attempts: int, start: float, *, maximum: float = 5.0, jitter: float = 0.0) -> RetryPolicy:
    """Doubling delays from ``start``."""
    return RetryPolicy(attempts=attempts, start=start, step=0.0, factor=2.0, max=maximum, jitter=jitter)


def run(
    url: str, handler: Any, stop: threading.Event, backoff: RetryPolicy, queue: str = "hub.routing"
) -> threading.Thread:
    worker = threading.Thread(
        target=consume,
        args=(url, queue, handler),
        kwargs={"stop": stop, "prefetch": 10, "backoff": backoff, "reconnect": RECONNECT_FAST, "poll": 0.05},
        daemon=True,
    )
    worker.start()
    return worker


def wait_for(condition: Any, limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def empty(url: str, *queues: str) -> bool:
    return all(drain(url, queue, idle=0.1) == [] for queue in queues)


# -- the decision (pure) -----------------------------------------------------------------------


def test_the_decision_retries_transient_failures_and_gives_up_after_the_last_attempt():
    three = policy(3, 0.1)
    outage = Unavailable("the database cannot be reached; try again shortly")
    assert decide(outage, 1, three) == Retry(2, 0.1)
    assert decide(outage, 2, three) == Retry(3, 0.2)
    last = decide(outage, 3, three)
    assert isinstance(last, Dead) and last.attempts == 3
    assert last.failure.code == "SERVICE_UNAVAILABLE"
    assert last.failure.reason == "SERVICE_UNAVAILABLE: the database cannot be reached; try again shortly"

    refused = decide(Rejected(ErrorCode.SSIN_INVALID, "85073003328 fails its checksum", path="/A/SSIN"), 1, three)
    assert isinstance(refused, Dead) and refused.attempts == 1  # bad data: never retried
    assert refused.failure.reason == "SSIN_INVALID at /A/SSIN"  # the code and where, never the value

    bug = decide(KeyError("85073003328"), 1, three)
    assert bug == Retry(2, 0.1)
    dead_bug = decide(KeyError("85073003328"), 3, three)
    assert isinstance(dead_bug, Dead) and dead_bug.failure.reason == "HANDLER_ERROR: KeyError"

    long = decide(Unavailable("x" * 1000), 3, three)
    assert isinstance(long, Dead) and len(long.failure.reason) <= retry.MAX_REASON


def test_an_outage_that_says_when_to_come_back_is_retried_no_sooner_and_within_the_policy():
    class Busy(Unavailable):
        def __init__(self, retry_after: float | None) -> None:
            super().__init__("the receiver is busy")
            self.retry_after = retry_after

    three = policy(3, 0.1, maximum=5.0)
    assert decide(Busy(None), 1, three) == Retry(2, 0.1)  # nothing asked: the policy's delay
    assert decide(Busy(2.0), 1, three) == Retry(2, 2.0)  # asked for longer: granted
    assert decide(Busy(0.01), 1, three) == Retry(2, 0.1)  # asked for less: the policy's delay
    assert decide(Busy(3600), 1, three) == Retry(2, 5.0)  # never beyond the policy's maximum
    assert isinstance(decide(Busy(2.0), 3, three), Dead)  # the last attempt is the last


def test_attempts_are_read_defensively_and_a_replay_resets_them():
    assert [attempt_of(h) for h in ({}, {ATTEMPTS: 3}, {ATTEMPTS: "4"}, {ATTEMPTS: "x"}, {ATTEMPTS: -5})] == [
        1,
        3,
        4,
        1,
        1,
    ]
    assert attempt_of({ATTEMPTS: True}) == 1
    dead = {
        "hub_message_id": "m-1",
        ATTEMPTS: 5,
        REASON: "SERVICE_UNAVAILABLE: down",
        CODE: "SERVICE_UNAVAILABLE",
        QUEUE: "hub.routing",
        DEAD_AT: "2026-01-01T00:00:00.000+00:00",
        DEAD_ID: "0123456789ab",
        "x-death": [{"reason": "expired"}],
        "x-first-death-queue": "hub.routing.retry",
        "x-delivery-count": 2,
    }
    assert replay_headers(dead) == {"hub_message_id": "m-1", REPLAYS: 1}
    assert replay_headers({**dead, REPLAYS: 1})[REPLAYS] == 2


# -- the consume loop --------------------------------------------------------------------------


def test_a_transient_failure_is_retried_later_without_blocking_the_other_messages(broker):
    declared(broker)
    publish(broker, "hub.route", "route", b'{"n": 1}', message_id="flaky", priority=5)
    publish(broker, "hub.route", "route", b'{"n": 2}', message_id="steady")
    calls: list[tuple[str | None, int, float, dict[str, Any]]] = []
    processed: list[str | None] = []
    stop = threading.Event()

    def handler(body: bytes, headers: dict[str, Any], properties: Properties) -> None:
        calls.append((properties.message_id, properties.attempt, time.monotonic(), headers))
        if properties.message_id == "flaky" and properties.attempt < 3:
            raise Unavailable("the directory cannot be reached; try again shortly")
        processed.append(properties.message_id)

    worker = run(broker, handler, stop, policy(5, 0.3))
    try:
        wait_for(lambda: len(processed) == 2)
    finally:
        stop.set()
        worker.join(10)
    assert sorted(processed) == ["flaky", "steady"]  # each processed once
    flaky = [(attempt, at, headers) for message_id, attempt, at, headers in calls if message_id == "flaky"]
    steady_at = next(at for message_id, _, at, _ in calls if message_id == "steady")
    assert [attempt for attempt, _, _ in flaky] == [1, 2, 3]
    assert flaky[-1][2][ATTEMPTS] == 3
    assert steady_at < flaky[1][1]  # the second message was handled while the first waited
    assert flaky[1][1] - flaky[0][1] >= 0.3
    if is_rabbitmq(broker):  # the wait was the broker's: the retry queue's TTL sent it back
        death = flaky[-1][2]["x-death"][0]
        assert (death["queue"], death["reason"], death["count"]) == ("hub.routing.retry", "expired", 2)
    assert empty(broker, "hub.routing", "hub.routing.retry", "hub.dead")


def test_a_poisoned_message_is_dead_lettered_after_n_attempts_with_growing_delays(broker):
    declared(broker)
    body = b'{"recipient": "85073003328"}'
    publish(broker, "hub.route", "route", body, message_id="poison", priority=4, headers={"hub_message_id": "m-9"})
    times: list[float] = []
    stop = threading.Event()

    def handler(body: bytes, headers: dict[str, Any], properties: Properties) -> None:
        times.append(time.monotonic())
        if properties.attempt == 4:
            stop.set()
        raise Unavailable("provider myebox cannot be reached; try again shortly")

    run(broker, handler, stop, policy(4, 0.05)).join(15)  # delays 0.05, 0.1, 0.2
    assert len(times) == 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    for gap, nominal in zip(gaps, (0.05, 0.1, 0.2), strict=True):
        assert nominal <= gap < nominal + 1.0, gaps
    assert gaps[0] < gaps[1] < gaps[2], gaps

    dead = drain(broker, "hub.dead", expect=1, limit=5)
    assert [d.message_id for d in dead] == ["poison"]
    letter = dead[0]
    assert letter.body == body
    assert letter.headers["hub_message_id"] == "m-9"
    assert letter.headers[ATTEMPTS] == 4
    assert letter.headers[QUEUE] == "hub.routing"
    assert letter.headers[CODE] == "SERVICE_UNAVAILABLE"
    assert letter.headers[REASON] == "SERVICE_UNAVAILABLE: provider myebox cannot be reached; try again shortly"
    assert re.fullmatch(r"[0-9a-f]{12}", letter.headers[DEAD_ID])
    assert datetime.fromisoformat(letter.headers[DEAD_AT]).tzinfo is not None
    if is_rabbitmq(broker):
        assert letter.properties["priority"] == 4
        assert letter.properties["delivery_mode"] == 2
    assert empty(broker, "hub.routing", "hub.routing.retry")


def test_a_refusal_goes_to_hub_dead_at_once_with_its_code(broker):
    declared(broker)
    publish(broker, "hub.route", "route", b"<bad/>", message_id="refused")
    calls: list[int] = []
    stop = threading.Event()

    def handler(body: bytes, headers: dict[str, Any], properties: Properties) -> None:
        calls.append(properties.attempt)
        stop.set()
        raise Rejected(ErrorCode.SSIN_INVALID, "85073003328 fails its checksum", path="/PublishMessage/Header/SSIN")

    run(broker, handler, stop, policy(5, 0.05)).join(10)
    assert calls == [1]
    dead = drain(broker, "hub.dead", expect=1, limit=5)
    assert [d.message_id for d in dead] == ["refused"]
    headers = dead[0].headers
    assert (headers[CODE], headers[ATTEMPTS], headers[QUEUE]) == ("SSIN_INVALID", 1, "hub.routing")
    assert headers[REASON] == "SSIN_INVALID at /PublishMessage/Header/SSIN"
    assert "85073003328" not in str(headers)


def test_nothing_is_lost_every_message_is_processed_or_dead(broker):
    declared(broker)
    rng = random.Random(20260101)
    kinds = {f"m-{i}": rng.choice(["ok", "flaky", "flaky", "poison", "refused", "bug"]) for i in range(40)}
    for message_id in kinds:
        publish(broker, "hub.route", "route", message_id.encode(), message_id=message_id, priority=rng.randint(0, 9))
    processed: Counter[str] = Counter()
    attempts: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def handler(body: bytes, headers: dict[str, Any], properties: Properties) -> None:
        message_id = str(properties.message_id)
        with lock:
            attempts[message_id] += 1
        kind = kinds[message_id]
        if kind == "flaky" and properties.attempt < 3:
            raise Unavailable("down for a moment")
        if kind == "poison":
            raise Unavailable("down for good")
        if kind == "refused":
            raise Rejected(ErrorCode.SCHEMA_INVALID, "no")
        if kind == "bug":
            raise ZeroDivisionError("a bug")
        with lock:
            processed[message_id] += 1

    expect_ok = {m for m, k in kinds.items() if k in ("ok", "flaky")}
    expect_dead = {m for m, k in kinds.items() if k in ("poison", "refused", "bug")}
    worker = run(broker, handler, stop, policy(3, 0.02, jitter=0.5))
    try:
        wait_for(lambda: set(processed) == expect_ok)
        dead = drain(broker, "hub.dead", expect=len(expect_dead), limit=15)
    finally:
        stop.set()
        worker.join(10)
    assert all(count == 1 for count in processed.values())
    assert sorted(d.message_id for d in dead) == sorted(expect_dead)
    assert len(kinds) == sum(processed.values()) + len(dead)  # count in == processed + dead
    for letter in dead:
        kind = kinds[letter.message_id]
        assert letter.headers[ATTEMPTS] == attempts[letter.message_id] == (1 if kind == "refused" else 3)
        assert letter.headers[CODE] == {"poison": "SERVICE_UNAVAILABLE", "refused": "SCHEMA_INVALID"}.get(
            kind, "HANDLER_ERROR"
        )
    assert all(attempts[m] == (3 if kinds[m] == "flaky" else 1) for m in expect_ok)
    assert empty(broker, "hub.routing", "hub.routing.retry", "hub.dead")


def run_batches(url: str, handler: Any, stop: threading.Event, backoff: RetryPolicy, size: int) -> threading.Thread:
    worker = threading.Thread(
        target=consume_batches,
        args=(url, "hub.routing", handler),
        kwargs={"stop": stop, "batch_size": size, "backoff": backoff, "reconnect": RECONNECT_FAST, "poll": 0.05},
        daemon=True,
    )
    worker.start()
    return worker


def test_a_batch_consumer_settles_each_message_on_its_own_and_loses_none(broker):
    """Batches: per-message outcomes, and a whole batch failing at once; every message processed once or dead."""
    declared(broker)
    rng = random.Random(20261126)
    kinds = {f"m-{i}": rng.choice(["ok", "ok", "flaky", "refused", "bug"]) for i in range(60)}
    for message_id in kinds:
        publish(broker, "hub.route", "route", message_id.encode(), message_id=message_id)
    processed: Counter[str] = Counter()
    sizes: list[int] = []
    outage = {"left": 1}
    stop = threading.Event()

    def handler(batch: list[Incoming]) -> list[BaseException | None]:
        sizes.append(len(batch))
        if outage["left"] and len(batch) > 1:  # the database is down for one whole batch: all retried
            outage["left"] -= 1
            raise Unavailable("the database cannot be reached")
        outcomes: list[BaseException | None] = []
        for item in batch:
            kind = kinds[str(item.properties.message_id)]
            if kind == "flaky" and item.properties.attempt < 2:
                outcomes.append(Unavailable("down for a moment"))
            elif kind == "refused":
                outcomes.append(Rejected(ErrorCode.SCHEMA_INVALID, "no"))
            elif kind == "bug":
                outcomes.append(ZeroDivisionError("a bug"))
            else:
                processed[str(item.properties.message_id)] += 1
                outcomes.append(None)
        return outcomes

    expect_ok = {m for m, k in kinds.items() if k in ("ok", "flaky")}
    expect_dead = {m for m, k in kinds.items() if k in ("refused", "bug")}
    worker = run_batches(broker, handler, stop, policy(3, 0.02), size=25)
    try:
        wait_for(lambda: set(processed) == expect_ok)
        dead = drain(broker, "hub.dead", expect=len(expect_dead), limit=15)
    finally:
        stop.set()
        worker.join(10)
    assert max(sizes) > 1, sizes  # messages were handled together
    assert max(sizes) <= 25, sizes
    assert outage["left"] == 0
    assert all(count == 1 for count in processed.values())
    assert sorted(d.message_id for d in dead) == sorted(expect_dead)
    for letter in dead:
        assert letter.headers[CODE] == ("SCHEMA_INVALID" if kinds[letter.message_id] == "refused" else "HANDLER_ERROR")
    assert empty(broker, "hub.routing", "hub.routing.retry", "hub.dead")


def test_a_batch_handler_answering_the_wrong_number_of_outcomes_retries_them_all(broker):
    declared(broker)
    for n in range(3):
        publish(broker, "hub.route", "route", b"x", message_id=f"m-{n}")
    calls: list[int] = []
    stop = threading.Event()

    def handler(batch: list[Incoming]) -> list[BaseException | None]:
        calls.append(len(batch))
        if sum(calls) >= 6:
            stop.set()
        return []  # a bug: no outcome at all

    run_batches(broker, handler, stop, policy(2, 0.02), size=10).join(10)
    dead = drain(broker, "hub.dead", expect=3, limit=10)
    assert sorted(d.message_id for d in dead) == ["m-0", "m-1", "m-2"]
    assert {d.headers[CODE] for d in dead} == {"HANDLER_ERROR"}


def test_when_the_retry_cannot_be_published_the_original_is_requeued_not_lost(broker, monkeypatch):
    declared(broker)
    publish(broker, "hub.route", "route", b"{}", message_id="survivor")
    real_publish = Republisher.publish
    failures = [Unavailable("the broker (publishing a retry or dead letter) cannot be reached")]

    def flaky_publish(self: Republisher, *args: Any, **kwargs: Any) -> None:
        if failures:
            raise failures.pop()
        real_publish(self, *args, **kwargs)

    monkeypatch.setattr(Republisher, "publish", flaky_publish)
    calls: list[int] = []
    stop = threading.Event()

    def handler(body: bytes, headers: dict[str, Any], properties: Properties) -> None:
        calls.append(properties.attempt)
        if len(calls) < 3:
            raise Unavailable("the database cannot be reached")
        stop.set()

    run(broker, handler, stop, policy(5, 0.05)).join(10)
    if is_rabbitmq(broker):
        # attempt 1 failed and its retry could not be published: the original came again (still attempt 1)
        assert calls == [1, 1, 2]
    else:
        # memory:// holds the retry in-process; putting it back failed once, and it stayed held until it could
        assert calls == [1, 2, 3]
    assert not failures
    assert empty(broker, "hub.routing", "hub.routing.retry", "hub.dead")


def test_a_retry_still_waiting_when_the_loop_stops_is_kept(broker):
    declared(broker)
    publish(broker, "hub.route", "route", b"{}", message_id="patient")
    stop = threading.Event()

    def handler(body: bytes, headers: dict[str, Any], properties: Properties) -> None:
        stop.set()
        raise Unavailable("down")

    run(broker, handler, stop, policy(3, 30.0, maximum=60.0)).join(10)
    if is_rabbitmq(broker):  # waiting in the retry queue, for its TTL
        waiting = drain(broker, "hub.routing.retry", expect=1, limit=5)
        assert waiting[0].properties["expiration"] == "30000"
    else:  # memory://: the loop held it; on stopping it put it back at once
        waiting = drain(broker, "hub.routing", expect=1, limit=5)
    assert [w.message_id for w in waiting] == ["patient"]
    assert waiting[0].headers[ATTEMPTS] == 2


@RABBITMQ_ONLY
def test_consuming_without_the_retry_queue_is_a_config_error(broker):
    declared(broker)
    with connect(broker) as connection:
        connection.channel().queue_delete("hub.routing.retry")
    with pytest.raises(ConfigError, match=r"queue hub\.routing\.retry does not exist .*hub broker declare"):
        consume(broker, "hub.routing", lambda *a: None, stop=threading.Event(), poll=0.05)


@RABBITMQ_ONLY
def test_a_dead_letter_that_no_queue_takes_leaves_the_original_queued(broker):
    declared(broker)
    publish(broker, "hub.route", "route", b"{}", message_id="first")
    seen: list[str | None] = []
    errors: list[BaseException] = []

    def handler(body: bytes, headers: dict[str, Any], properties: Properties) -> None:
        seen.append(properties.message_id)
        if properties.message_id == "kept":
            raise Rejected(ErrorCode.SCHEMA_INVALID, "no")

    def consuming() -> None:
        try:
            consume(broker, "hub.routing", handler, stop=threading.Event(), poll=0.05, reconnect=RECONNECT_FAST)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=consuming, daemon=True)
    worker.start()
    wait_for(lambda: seen == ["first"])
    with connect(broker) as connection:  # hub.dead disappears while the loop runs
        connection.channel().queue_delete("hub.dead")
    publish(broker, "hub.route", "route", b"{}", message_id="kept")
    worker.join(10)
    assert not worker.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], ConfigError), errors
    assert "hub broker declare" in str(errors[0])
    assert [g.message_id for g in drain(broker, "hub.routing", expect=1, limit=5)] == ["kept"]


@RABBITMQ_ONLY
def test_a_republisher_whose_idle_connection_was_dropped_publishes_on_a_new_one(broker):
    import socket

    declared(broker)
    with Republisher(broker) as publisher:
        publisher.publish(Copy.of(b"1", {}, {"message_id": "one"}), exchange="", routing_key="hub.acks")
        connection = publisher._connection
        assert connection is not None
        connection.connection.transport.sock.shutdown(socket.SHUT_RDWR)  # as a firewall dropping it would
        publisher.publish(Copy.of(b"2", {}, {"message_id": "two"}), exchange="", routing_key="hub.acks")
        assert publisher._connection is not connection
    assert [g.message_id for g in drain(broker, "hub.acks", expect=2, limit=5)] == ["one", "two"]
