"""``hub dlq``: dead letters listed, shown, replayed and purged, on kombu's in-process transport and on RabbitMQ.

Given a poisoned message that reached ``hub.dead`` after N attempts, ``list`` and
``show`` describe it without its body, ``replay`` puts it back where it came from with
its attempts reset and a fixed handler processes it; ``purge`` asks first; browsing
never loses a message.
"""

from __future__ import annotations

import stat
import threading
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from hub.broker.connection import RetryPolicy, connect
from hub.broker.consumer import Properties, consume
from hub.broker.deadletters import DeadLetters, dlq_group
from hub.broker.retry import ATTEMPTS, QUEUE, REASON, REPLAYS, Copy, Dead, Failure, Republisher, dead_headers
from hub.cli import cli
from hub.errors import ErrorCode, Rejected, Unavailable
from tests import test_broker
from tests.test_broker import RABBITMQ_ONLY, declared, drain, publish

broker = test_broker.broker  # the shared fixtures
rabbitmq_vhost = test_broker.rabbitmq_vhost
SECRET = b"SSIN 85073003328, Rue de la Loi 16"
"""Stands for personal data in a body: it must never be printed."""
THREE = RetryPolicy(attempts=3, start=0.02, step=0.0, factor=2.0, max=1.0)


def dlq(*args: str, url: str | None = None, stdin: str | None = None) -> Result:
    return CliRunner().invoke(dlq_group, [*args, *(("--url", url) if url else ())], input=stdin)


def consume_until(url: str, handler: Any, done: Any, queue: str = "hub.routing", limit: float = 15.0) -> None:
    stop = threading.Event()
    worker = threading.Thread(
        target=consume,
        args=(url, queue, handler),
        kwargs={"stop": stop, "backoff": THREE, "poll": 0.05},
        daemon=True,
    )
    worker.start()
    deadline = time.monotonic() + limit
    try:
        while not done():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.01)
    finally:
        stop.set()
        worker.join(10)


def bury(url: str, message_id: str, queue: str | None = "hub.routing", body: bytes = b"{}", **headers: Any) -> str:
    """Put a dead letter in hub.dead as the consume loop writes one; its dead id."""
    letter = dead_headers(headers, Dead(2, Failure("SERVICE_UNAVAILABLE", "SERVICE_UNAVAILABLE: down", True)), "")
    if queue is None:
        del letter[QUEUE]
    else:
        letter[QUEUE] = queue
    with Republisher(url) as publisher:
        publisher.dead(Copy.of(body, letter, {"message_id": message_id}, content_type="application/json"))
    return str(letter["x-hub-dead-id"])


def test_a_poisoned_message_reaches_hub_dead_after_n_tries_is_shown_without_its_body_and_replayed(broker, tmp_path):
    declared(broker)
    publish(broker, "hub.route", "route", SECRET, message_id="poison-1", headers={"hub_message_id": "hm-1"})
    tries: list[int] = []

    def broken(body: bytes, headers: dict[str, Any], properties: Properties) -> None:
        tries.append(properties.attempt)
        raise Unavailable("provider myebox cannot be reached; try again shortly")

    consume_until(broker, broken, lambda: DeadLetters(broker).count() == 1)
    assert tries == [1, 2, 3]

    listed = dlq("list", url=broker)
    assert listed.exit_code == 0, listed.output
    [letter] = DeadLetters(broker).list()
    assert letter.id in listed.output and "poison-1" in listed.output and "hub.routing" in listed.output
    assert "SERVICE_UNAVAILABLE: provider myebox cannot be reached" in listed.output
    assert "1 dead letter(s)" in listed.output
    assert b"85073003328" not in listed.output.encode()
    assert (letter.queue, letter.attempts, letter.hub_message_id, letter.body) == ("hub.routing", 3, "hm-1", SECRET)

    body_file = tmp_path / "body.bin"
    shown = dlq("show", letter.id, "--body", str(body_file), url=broker)
    assert shown.exit_code == 0, shown.output
    assert "85073003328" not in shown.output
    for expected in (
        f"id:             {letter.id}",
        "message id:     poison-1",
        "hub message id: hm-1",
        "queue:          hub.routing",
        "attempts:       3",
        f"body:           {len(SECRET)} bytes, sha256 {letter.body_sha256}",
        "  x-hub-attempts: 3",
        "  x-hub-queue: hub.routing",
        f"body written to {body_file}",
    ):
        assert expected in shown.output, expected
    assert body_file.read_bytes() == SECRET
    assert stat.S_IMODE(body_file.stat().st_mode) == 0o600
    assert dlq("show", "poison-1", url=broker).exit_code == 0  # by message id, too
    assert [d.id for d in DeadLetters(broker).list()] == [letter.id]  # looking loses nothing

    replayed = dlq("replay", letter.id, url=broker)
    assert replayed.exit_code == 0, replayed.output
    assert f"replayed {letter.id} (poison-1) to hub.routing" in replayed.output
    assert DeadLetters(broker).count() == 0

    fixed: list[tuple[bytes, dict[str, Any], Properties]] = []
    consume_until(broker, lambda body, headers, properties: fixed.append((body, headers, properties)), lambda: fixed)
    [(body, headers, properties)] = fixed
    assert body == SECRET and properties.message_id == "poison-1" and properties.attempt == 1
    assert headers["hub_message_id"] == "hm-1" and headers[REPLAYS] == 1
    assert not any(name in headers for name in (ATTEMPTS, REASON, QUEUE, "x-death"))
    assert dlq("list", url=broker).stdout.startswith("no dead letters in hub.dead")


def test_a_refusal_is_listed_with_its_code_and_purge_asks_first(broker):
    declared(broker)
    for i in range(3):
        publish(broker, "hub.route", "route", SECRET, message_id=f"bad-{i}")

    def refuse(body: bytes, headers: dict[str, Any], properties: Properties) -> None:
        raise Rejected(ErrorCode.SCHEMA_INVALID, f"unexpected text {body!r}", path="/PublishMessage/Content")

    consume_until(broker, refuse, lambda: DeadLetters(broker).count() == 3)
    listed = dlq("list", "--limit", "2", url=broker)
    assert listed.output.count("SCHEMA_INVALID at /PublishMessage/Content") == 2
    assert "85073003328" not in listed.output

    kept = dlq("purge", url=broker, stdin="n\n")
    assert kept.exit_code == 1 and "Remove all 3 dead letter(s) from hub.dead?" in kept.output
    assert DeadLetters(broker).count() == 3
    purged = dlq("purge", url=broker, stdin="y\n")
    assert purged.exit_code == 0 and "removed 3 dead letter(s)" in purged.output
    assert DeadLetters(broker).count() == 0
    bury(broker, "one-more")
    purged = dlq("purge", "--yes", url=broker)
    assert purged.exit_code == 0 and "removed 1 dead letter(s)" in purged.output
    assert dlq("purge", "--yes", url=broker).stdout.startswith("no dead letters")


def test_replay_all_puts_back_what_it_can_and_keeps_the_rest(broker):
    declared(broker)
    for i in range(2):
        bury(broker, f"r-{i}")
    acks = bury(broker, "a-0", queue="hub.acks")
    nowhere = bury(broker, "lost-origin", queue=None)
    gone = bury(broker, "gone", queue="provider.gone")

    only_routing = dlq("replay", "--all", "--queue", "hub.routing", url=broker)
    assert only_routing.exit_code == 0, only_routing.output
    assert "replayed 2, kept 0" in only_routing.output
    assert sorted(g.message_id for g in drain(broker, "hub.routing", expect=2, limit=5)) == ["r-0", "r-1"]
    assert {d.id for d in DeadLetters(broker).list()} == {acks, nowhere, gone}

    rest = dlq("replay", "--all", url=broker)
    assert rest.exit_code == 1
    assert "replayed 1, kept 2" in rest.output
    assert f"kept {nowhere}: dead letter {nowhere} does not say which queue it came from" in rest.output
    assert f"kept {gone}: " in rest.output and "provider.gone" in rest.output
    single = dlq("replay", gone, url=broker)
    assert single.exit_code == 1 and "provider.gone" in single.output and "hub broker declare" in single.output
    assert gone in {d.id for d in DeadLetters(broker).list()}
    assert [g.message_id for g in drain(broker, "hub.acks", expect=1, limit=5)] == ["a-0"]
    assert {d.id for d in DeadLetters(broker).list()} == {nowhere, gone}
    shown = dlq("list", url=broker)
    assert "unknown: published to hub.dead without a reason" not in shown.output  # these have a reason
    assert "SERVICE_UNAVAILABLE: down" in shown.output


def test_ids_unknown_ambiguous_and_usage_errors(broker):
    declared(broker)
    first = bury(broker, "twice")
    second = bury(broker, "twice")
    missing = dlq("show", "nope", url=broker)
    assert missing.exit_code == 1 and "no dead letter 'nope' in hub.dead" in missing.output
    ambiguous = dlq("replay", "twice", url=broker)
    assert ambiguous.exit_code == 1 and "2 dead letters have message id 'twice'" in ambiguous.output
    assert first in ambiguous.output and second in ambiguous.output
    assert dlq("replay", second, url=broker).exit_code == 0
    assert [d.id for d in DeadLetters(broker).list()] == [first]
    assert dlq("replay", url=broker).exit_code == 2
    assert dlq("replay", first, "--all", url=broker).exit_code == 2
    assert dlq("replay", first, "--queue", "hub.routing", url=broker).exit_code == 2


def test_browsing_side_by_side_loses_nothing(broker):
    declared(broker)
    ids = {bury(broker, f"m-{i}", body=SECRET) for i in range(30)}
    errors: list[BaseException] = []

    def browse() -> None:
        try:
            for _ in range(5):
                seen = {d.id for d in DeadLetters(broker).list()}
                assert seen <= ids  # a list may come out short while another holds some, never wrong
        except BaseException as exc:
            errors.append(exc)

    browsers = [threading.Thread(target=browse) for _ in range(4)]
    for thread in browsers:
        thread.start()
    for thread in browsers:
        thread.join(30)
    assert errors == []
    # Nothing lost: every letter is listed again once the browsers' holds are released (on RabbitMQ a letter
    # another connection just let go of can take a moment to be delivered again).
    deadline = time.monotonic() + 10
    while {d.id for d in DeadLetters(broker).list()} != ids and time.monotonic() < deadline:
        time.sleep(0.2)
    assert {d.id for d in DeadLetters(broker).list()} == ids
    assert DeadLetters(broker).count() == 30


def test_the_broker_url_comes_from_the_settings(broker, monkeypatch, tmp_path):
    declared(broker)
    dead_id = bury(broker, "from-settings")
    monkeypatch.setenv("HUB_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("HUB_BROKER_URL", broker)
    result = CliRunner().invoke(cli, ["dlq", "list"])
    assert result.exit_code == 0, result.output
    assert dead_id in result.output
    if broker.startswith("memory"):
        assert "memory:// is in-process" in result.stderr


@RABBITMQ_ONLY
def test_a_message_the_broker_dead_lettered_is_listed_and_replayed(broker):
    declared(broker)
    publish(broker, "hub.acks", "acks", b"{}", message_id="broker-dead")
    with connect(broker) as connection:
        channel = connection.channel()
        message = channel.basic_get("hub.acks", no_ack=False)
        channel.basic_reject(message.delivery_tag, requeue=False)  # RabbitMQ dead-letters it to hub.dead
    deadline = time.monotonic() + 5
    while DeadLetters(broker).count() == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    [letter] = DeadLetters(broker).list()
    assert letter.id.startswith("x") and len(letter.id) == 12
    assert (letter.queue, letter.reason, letter.attempts) == ("hub.acks", "broker: rejected", None)
    assert letter.dead_at is not None
    assert [d.id for d in DeadLetters(broker).list()] == [letter.id]  # stable across browses
    assert dlq("replay", letter.id, url=broker).exit_code == 0
    [back] = drain(broker, "hub.acks", expect=1, limit=5)
    assert back.message_id == "broker-dead"
    assert not any(name.startswith(("x-death", "x-first-death")) for name in back.headers)


@RABBITMQ_ONLY
def test_a_missing_hub_dead_is_a_usage_error(broker):
    result = dlq("list", url=broker)
    assert result.exit_code == 2
    assert "queue hub.dead does not exist" in result.output


def test_an_unreachable_broker_is_reported(tmp_path: Path):
    result = dlq("list", url="amqp://guest:guest@127.0.0.1:1//")
    assert result.exit_code == 1
    assert "cannot be reached" in result.output
