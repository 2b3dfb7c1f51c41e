"""Providers' recipient directory changes over AMQP (``hub.subscriptions``), answered as over HTTP.

Runs on kombu's in-process transport and on RabbitMQ, each with SQLite and PostgreSQL. Given a
worker consuming ``hub.subscriptions``, when a provider publishes ``{"changes": [...]}`` with its
id and token, then the valid changes are applied in one transaction and the per-change results go
to ``reply_to`` exactly as the HTTP route answers them; a message from nobody, or not a list of
changes, is dead-lettered with its code and leaves nothing in the directory, nor a token in hub.dead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from kombu import Connection
from starlette.testclient import TestClient

from hub.broker.connection import RetryPolicy, connect
from hub.broker.deadletters import DeadLetter, DeadLetters
from hub.broker.retry import ATTEMPTS, CODE, QUEUE
from hub.broker.topology import declare
from hub.cli import cli
from hub.envelope import examples as ex
from hub.errors import Unavailable
from hub.inbound.http import build_app
from hub.routing.directory import Directory
from hub.routing.directory_http import MAX_CHANGES, MAX_SUBSCRIPTION_BYTES
from hub.routing.recipients import RecipientKind
from hub.routing.subscriptions_amqp import REMOVED, SubscriptionsConsumer
from hub.safexml import parse
from hub.store.db import make_engine, session_factory, upgrade
from tests.kit import NOW, TOKENS
from tests.test_broker import broker, rabbitmq_vhost  # noqa: F401 - shared fixtures
from tests.test_inbound_rest import T
from tests.test_recipients import PROVIDER_TOKENS, at, ssin, wrong

ROOT = Path(__file__).resolve().parent.parent
CITIZEN = RecipientKind.CITIZEN
SUBSCRIPTIONS = "hub.subscriptions"
HASHES = {provider: {hashlib.sha256(token.encode()).hexdigest()} for provider, token in PROVIDER_TOKENS.items()}
QUICK = RetryPolicy(attempts=3, start=0.05, step=0.0, max=0.05)
RABBITMQ_ONLY = pytest.mark.parametrize("broker_url", ["rabbitmq"], indirect=True)


# -- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture
def directory(database_url: str) -> Iterator[Directory]:
    engine = make_engine(database_url)
    upgrade(engine)
    yield Directory(session_factory(engine), clock=lambda: NOW)
    engine.dispose()


@pytest.fixture
def declared(broker: str) -> str:  # noqa: F811
    with connect(broker) as connection:
        declare(connection)
    return broker


@pytest.fixture
def worker(declared: str, directory: Directory) -> Iterator[SubscriptionsConsumer]:
    """``hub worker subscriptions`` in a thread: the providers of ``PROVIDER_TOKENS``, quick retries."""
    consumer = SubscriptionsConsumer(directory, HASHES, declared, backoff=QUICK)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), kwargs={"poll": 0.05}, daemon=True)
    thread.start()
    yield consumer
    stop.set()
    thread.join(10)
    consumer.close()


@pytest.fixture
def reply_to(declared: str) -> Iterator[str]:
    """A reply queue of the provider's own (deleted afterwards)."""
    name = f"test-replies-{uuid.uuid4().hex[:8]}"
    with Connection(declared) as connection:
        connection.channel().queue_declare(queue=name, durable=False, auto_delete=False)
    yield name
    with Connection(declared) as connection:
        connection.channel().queue_delete(name)


def send(
    url: str,
    changes: list[Any] | None = None,
    *,
    body: bytes | None = None,
    provider: str | None = "ebox",
    token: str | None = None,
    reply_to: str | None = None,
    content_type: str = "application/json",
) -> str:
    """Publish as a provider does; the correlation id."""
    headers: dict[str, Any] = {}
    if provider is not None:
        headers["x-hub-provider"] = provider
    token = PROVIDER_TOKENS.get(provider or "", "") if token is None else token
    if token:
        headers["authorization"] = f"Bearer {token}"
    correlation = uuid.uuid4().hex
    with Connection(url) as connection:
        connection.Producer().publish(
            json.dumps({"changes": changes}).encode() if body is None else body,
            exchange=SUBSCRIPTIONS,
            routing_key="subscriptions",
            headers=headers,
            reply_to=reply_to,
            correlation_id=correlation,
            message_id=f"sub-{correlation}",
            content_type=content_type,
            content_encoding="utf-8",
            delivery_mode=2,
        )
    return correlation


@dataclass(frozen=True)
class Answer:
    body: bytes
    headers: dict[str, Any]
    properties: dict[str, Any]
    content_type: str | None

    def json(self) -> Any:
        assert self.content_type == "application/json"
        return json.loads(self.body)


def take(url: str, queue: str) -> Answer | None:
    """The next message of ``queue`` (removed), or None when there is none now."""
    with Connection(url) as connection:
        raw = connection.channel().basic_get(queue, no_ack=True)
    if raw is None:
        return None
    body = raw.body.encode() if isinstance(raw.body, str) else bytes(raw.body)  # py-amqp decodes utf-8 bodies
    properties = dict(raw.properties or {})
    content_type = getattr(raw, "content_type", None) or properties.get("content_type")
    return Answer(body, dict(raw.headers or {}), properties, content_type)


def wait_for(what: str, found: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout} s")


def answer(url: str, queue: str) -> Answer:
    return wait_for(f"answer on {queue}", lambda: take(url, queue))  # type: ignore[no-any-return]


def dead_letters(url: str, expect: int = 1) -> list[DeadLetter]:
    """The dead letters from hub.subscriptions once ``expect`` of them are there (``hub dlq``'s reading)."""
    letters: list[DeadLetter] = wait_for(
        "dead letter", lambda: (found := DeadLetters(url).list(queue=SUBSCRIPTIONS)) and len(found) >= expect and found
    )
    return letters


def change(op: str, ident: str, hours: float = 5, **more: Any) -> dict[str, Any]:
    return {"op": op, "kind": "citizen", "id": ident, "at": at(hours).isoformat(), **more}


# -- changes applied, answered ---------------------------------------------------------------------


def test_activate_and_link_are_applied_and_the_results_go_to_reply_to(worker, directory, reply_to):
    person = ssin(70)
    changes = [change("activate", person, exclusive=True, language="nl"), change("link", person)]
    correlation = send(worker.broker_url, changes, reply_to=reply_to)

    got = answer(worker.broker_url, reply_to)
    assert got.properties["correlation_id"] == correlation
    assert (got.headers["hub-status"], got.headers["hub-code"]) == (200, "")
    assert got.json() == {
        "applied": 2,
        "refused": 0,
        "results": [{"index": 0, "status": 200, "changed": True}, {"index": 1, "status": 200, "changed": True}],
    }
    recipient = directory.get(CITIZEN, person)
    assert recipient is not None and recipient.providers == {"ebox"}
    assert recipient.consent_at == at(5) and recipient.exclusive and recipient.language == "nl"

    # The same message again (a redelivery, a provider's resend): applied, and changes nothing.
    send(worker.broker_url, changes, reply_to=reply_to)
    assert [r["changed"] for r in answer(worker.broker_url, reply_to).json()["results"]] == [False, False]

    # Without reply_to: applied all the same, answered to nobody.
    send(worker.broker_url, [change("unlink", person, 4)])
    wait_for("unlink", lambda: directory.get(CITIZEN, person).providers == frozenset())  # type: ignore[union-attr]
    assert take(worker.broker_url, reply_to) is None
    assert DeadLetters(worker.broker_url).count() == 0


def test_refused_changes_are_refused_one_by_one_while_the_others_apply(worker, directory, reply_to, caplog):
    caplog.set_level(logging.INFO)
    person, bad = ssin(71), wrong(ssin(72))
    changes = [
        change("activate", person),
        change("link", bad),  # SSIN check digits wrong
        change("link", person, provider="doccle"),  # ebox links another provider
        change("link", person),
        change("subscribe", person),
    ]
    send(worker.broker_url, changes, reply_to=reply_to)
    got = answer(worker.broker_url, reply_to)
    body = got.json()
    assert (body["applied"], body["refused"]) == (2, 3)
    assert [(r["index"], r["status"], r.get("code"), r.get("changed")) for r in body["results"]] == [
        (0, 200, None, True),
        (1, 400, "SSIN_INVALID", None),
        (2, 403, "NOT_AUTHORISED", None),
        (3, 200, None, True),
        (4, 400, "SCHEMA_INVALID", None),
    ]
    assert all(r["message"] for r in body["results"] if r["status"] != 200)
    assert bad.encode() not in got.body  # masked in the refusal's message
    recipient = directory.get(CITIZEN, person)
    assert recipient is not None and recipient.providers == {"ebox"} and recipient.consent_at == at(5)
    assert directory.show(CITIZEN, bad) is None
    assert DeadLetters(worker.broker_url).count() == 0
    logged = [str(record.__dict__) for record in caplog.records if record.name.startswith("hub")]
    assert any("subscriptions" in line for line in logged)
    assert not any(person in line or bad in line for line in logged)


def test_the_answer_is_the_http_routes_byte_for_byte(worker, hub, reply_to):
    """The same changes (of other recipients, the same refused one) over HTTP and over AMQP."""
    bad = wrong(ssin(73))

    def changes(person: str) -> list[dict[str, Any]]:
        return [
            change("activate", person, exclusive=False, language="fr"),
            change("link", bad),
            change("link", person),
            change("link", person, provider="doccle"),
            change("withdraw", person, 4),
        ]

    send(worker.broker_url, changes(ssin(74)), reply_to=reply_to)
    over_amqp = answer(worker.broker_url, reply_to).body
    app = build_app(hub)
    app.state.provider_tokens = HASHES
    with TestClient(app) as client:
        response = client.post(
            "/v1/providers/ebox/subscriptions",
            json={"changes": changes(ssin(75))},
            headers={"Authorization": f"Bearer {PROVIDER_TOKENS['ebox']}"},
        )
    assert response.status_code == 200
    assert over_amqp == response.content


def test_a_reply_queue_that_does_not_exist_loses_the_answer_not_the_changes(worker, directory):
    send(worker.broker_url, [change("link", ssin(82))], reply_to=f"no-such-queue-{uuid.uuid4().hex[:8]}")
    wait_for("link", lambda: directory.get(CITIZEN, ssin(82)))
    assert directory.get(CITIZEN, ssin(82)).providers == {"ebox"}  # type: ignore[union-attr]
    time.sleep(0.3)  # the message is settled: acked, neither retried nor dead-lettered
    assert DeadLetters(worker.broker_url).count() == 0


def test_an_answer_never_goes_to_one_of_the_hubs_own_queues(worker, directory, declared):
    """A reply_to naming a provider's delivery queue (or any hub.*, sender.* queue) is not followed:
    the changes apply, and the provider's queue gets no JSON answer posing as a delivery."""
    with connect(declared) as connection:
        declare(connection, ["doccle"])
        connection.channel().queue_purge("provider.doccle")
    send(worker.broker_url, [change("link", ssin(83))], reply_to="provider.doccle")
    wait_for("link", lambda: directory.get(CITIZEN, ssin(83)))
    time.sleep(0.3)  # an answer, had there been one, was published before the change was acked
    assert take(declared, "provider.doccle") is None
    assert DeadLetters(worker.broker_url).count() == 0


# -- refused whole: dead-lettered, nothing applied ---------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "token", "code"),
    [
        ("ebox", "", "UNAUTHENTICATED"),  # no token
        ("ebox", "wrong", "UNAUTHENTICATED"),
        ("ebox", TOKENS[ex.FINANCE], "UNAUTHENTICATED"),  # a sender's token: a sender is not a provider
        ("ebox", PROVIDER_TOKENS["doccle"], "NOT_AUTHORISED"),  # another provider's token
        ("unknown", PROVIDER_TOKENS["doccle"], "NOT_AUTHORISED"),
        (None, PROVIDER_TOKENS["ebox"], "UNAUTHENTICATED"),  # no x-hub-provider
    ],
    ids=["no-token", "wrong-token", "sender-token", "other-providers-token", "unknown-provider", "no-provider"],
)
def test_a_message_from_nobody_is_dead_lettered_unanswered_and_applies_nothing(
    worker, directory, reply_to, provider, token, code
):
    person = ssin(76)
    send(
        worker.broker_url,
        [change("activate", person), change("link", person)],
        provider=provider,
        token=token,
        reply_to=reply_to,
    )
    [letter] = dead_letters(worker.broker_url)
    assert (letter.headers[CODE], letter.headers[QUEUE], letter.headers[ATTEMPTS]) == (code, SUBSCRIPTIONS, 1)
    assert letter.reason == code  # the code only: never the claimed provider, never a number
    if token:
        assert letter.headers["authorization"] == REMOVED  # no token kept in hub.dead
        assert token not in json.dumps(letter.headers, default=str)
    assert take(worker.broker_url, reply_to) is None  # nobody is told anything
    assert directory.show(CITIZEN, person) is None


def _padded(size: int) -> bytes:
    body = json.dumps({"changes": [change("link", ssin(77))]}).encode()
    return body[:-1] + b" " * (size - len(body)) + b"}"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"not json", "application/json", 400, "SCHEMA_INVALID"),
        (b'{"changes": {}}', "application/json", 400, "SCHEMA_INVALID"),
        (b'{"change": []}', "application/json", 400, "SCHEMA_INVALID"),
        (b'{"changes": []}', "application/json", 413, "TOO_LARGE"),
        (
            json.dumps({"changes": [change("link", ssin(77))] * (MAX_CHANGES + 1)}).encode(),
            "application/json",
            413,
            "TOO_LARGE",
        ),
        (_padded(MAX_SUBSCRIPTION_BYTES + 1), "application/json", 413, "TOO_LARGE"),
        (json.dumps({"changes": [change("link", ssin(77))]}).encode(), "text/plain", 415, "CONTENT_TYPE_INVALID"),
    ],
    ids=["not-json", "not-a-list", "no-changes-member", "empty", "1001-changes", "over-1-MiB", "not-json-type"],
)
def test_a_message_that_is_not_a_list_of_changes_is_dead_lettered_with_its_code(
    worker, directory, reply_to, body, content_type, status, code
):
    send(worker.broker_url, body=body, content_type=content_type, reply_to=reply_to)
    [letter] = dead_letters(worker.broker_url)
    assert (letter.headers[CODE], letter.queue, letter.reason) == (code, SUBSCRIPTIONS, code)
    assert letter.body == body and letter.headers["authorization"] == REMOVED
    # The provider is known: it gets the refusal, as the HTTP route would answer it.
    got = answer(worker.broker_url, reply_to)
    assert (got.headers["hub-status"], got.headers["hub-code"]) == (status, code)
    assert got.content_type == "application/xml" and parse(got.body).findtext(T + "Code") == code
    assert directory.show(CITIZEN, ssin(77)) is None


def test_at_most_a_thousand_changes_a_message(worker, directory, reply_to):
    send(worker.broker_url, [change("link", ssin(78))] * MAX_CHANGES, reply_to=reply_to)
    body = answer(worker.broker_url, reply_to).json()
    assert (body["applied"], body["refused"], len(body["results"])) == (MAX_CHANGES, 0, MAX_CHANGES)
    assert directory.get(CITIZEN, ssin(78)).providers == {"ebox"}  # type: ignore[union-attr]


# -- outages --------------------------------------------------------------------------------------


def test_a_database_outage_is_retried_then_applied_and_answered(worker, directory, reply_to, monkeypatch):
    calls: list[int] = []
    apply = directory.apply

    def flaky(changes, **options):  # type: ignore[no-untyped-def]
        calls.append(len(changes))
        if len(calls) < QUICK.attempts:
            raise Unavailable("the recipient directory cannot be reached")
        return apply(changes, **options)

    monkeypatch.setattr(directory, "apply", flaky)
    send(worker.broker_url, [change("link", ssin(79))], reply_to=reply_to)
    assert answer(worker.broker_url, reply_to).json()["results"] == [{"index": 0, "status": 200, "changed": True}]
    assert calls == [1, 1, 1]
    assert directory.get(CITIZEN, ssin(79)).providers == {"ebox"}  # type: ignore[union-attr]
    assert DeadLetters(worker.broker_url).count() == 0


def test_a_lasting_outage_is_dead_lettered_without_the_token(worker, directory, reply_to, monkeypatch):
    def down(changes, **options):  # type: ignore[no-untyped-def]
        raise Unavailable("the recipient directory cannot be reached")

    monkeypatch.setattr(directory, "apply", down)
    send(worker.broker_url, [change("link", ssin(80))], reply_to=reply_to)
    [letter] = dead_letters(worker.broker_url)
    assert (letter.headers[CODE], letter.attempts) == ("SERVICE_UNAVAILABLE", QUICK.attempts)
    assert letter.headers["authorization"] == REMOVED and letter.headers["x-hub-provider"] == "ebox"
    assert take(worker.broker_url, reply_to) is None


# -- the command -----------------------------------------------------------------------------------


PROVIDERS_YAML = """\
providers:
  - id: ebox
    name: e-Box
    api_token_sha256: [{ebox}]
  - id: doccle
    name: Doccle-like app
    api_token_sha256: [{doccle}]
"""


def config_dir(tmp_path: Path, text: str | None = None) -> Path:
    folder = tmp_path / "config"
    folder.mkdir(exist_ok=True)
    hashes = {provider: next(iter(digests)) for provider, digests in HASHES.items()}
    (folder / "providers.yaml").write_text(PROVIDERS_YAML.format(**hashes) if text is None else text)
    return folder


def test_a_bad_providers_yaml_stops_the_worker_naming_the_file_and_line(tmp_path):
    folder = config_dir(tmp_path, "providers:\n  - id: ebox\n    name: e-Box\n    api_token_sha256: [nope]\n")
    result = CliRunner().invoke(
        cli, ["worker", "subscriptions"], env={"HUB_CONFIG_DIR": str(folder), "HUB_DATA_DIR": str(tmp_path / "var")}
    )
    assert result.exit_code == 2, result.output
    assert "providers.yaml:4" in result.output


@RABBITMQ_ONLY
def test_hub_worker_subscriptions_applies_and_answers_until_sigterm(
    declared, directory, reply_to, database_url, tmp_path
):
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HUB_CONFIG_DIR": str(config_dir(tmp_path)),
        "HUB_DATA_DIR": str(tmp_path / "var"),
        "HUB_DATABASE_URL": database_url,
        "HUB_BROKER_URL": declared,
    }
    process = subprocess.Popen(
        [sys.executable, "-c", "from hub.cli import main; main()", "worker", "subscriptions"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        person = ssin(81)
        correlation = send(declared, [change("activate", person), change("link", person)], reply_to=reply_to)
        deadline = time.monotonic() + 20
        while (got := take(declared, reply_to)) is None:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the worker answered nothing"
            time.sleep(0.05)
        assert got.properties["correlation_id"] == correlation and got.json()["applied"] == 2
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert "applying directory changes from hub.subscriptions" in out and "doccle, ebox" in out
    assert directory.get(CITIZEN, person).providers == {"ebox"}  # type: ignore[union-attr]
