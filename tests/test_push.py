"""The HTTP push adapter (webhooks), against a real local HTTP server, on memory:// and on RabbitMQ.

Given a queue pushed to a URL, when the receiver answers, then: a 2xx acks the message and
calls ``on_success`` once; 408 / 425 / 429 / 5xx, a timeout or no server at all retries it
with growing delays and the same ``Idempotency-Key``, then dead-letters it; any other 4xx
dead-letters it at once with ``PUSH_REFUSED``. Only https:// URLs (http:// to this machine
when allowed); no body and no query string is ever logged.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from kombu import Connection, Producer

from hub.broker import topology
from hub.broker.connection import RetryPolicy, connect
from hub.broker.consumer import Properties
from hub.broker.retry import ATTEMPTS, CODE, QUEUE, REASON
from hub.cli import cli
from hub.errors import ConfigError, ErrorCode, Rejected, Unavailable
from hub.outbound.push import (
    MAX_RESPONSE_BYTES,
    Pusher,
    PushTarget,
    PushUnavailable,
    checked_url,
    retry_after,
    run_pushers,
    safe_url,
)
from hub.outbound.push_command import declare_push_queues, push_targets
from hub.settings import load_settings
from tests import test_broker
from tests.test_broker import drain

broker = test_broker.broker  # the shared fixtures
rabbitmq_vhost = test_broker.rabbitmq_vhost

PROVIDER = "webshop"
PROVIDER_QUEUE = f"provider.{PROVIDER}"
SENDER = "0308357159"
SENDER_QUEUE = f"sender.{SENDER}.acks"
SECRET_QUERY = "token=s3cr3t-query"
BODY = b"<Envelope>personal data of the recipient</Envelope>"
FAST_RECONNECT = RetryPolicy(attempts=2, start=0.05, step=0.0, max=0.05)


def policy(attempts: int, start: float, factor: float = 2.0) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, start=start, step=0.0, factor=factor, max=5.0, jitter=0.0)


# -- a real HTTP receiver ------------------------------------------------------------------------


@dataclass
class Answer:
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    client_port: int


class Receiver:
    """An HTTP/1.1 server on 127.0.0.1 (a free port) that records each POST and answers from a script."""

    def __init__(self, *answers: Answer) -> None:
        self.script = list(answers)
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the pusher reuses its connection

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.seen.append(
                        Seen(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            time.monotonic(),
                            self.client_address[1],
                        )
                    )
                    answer = receiver.script.pop(0) if receiver.script else Answer()
                time.sleep(answer.delay)
                with contextlib.suppress(OSError):  # the pusher gave up waiting
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook?{SECRET_QUERY}"

    def requests(self) -> list[Seen]:
        with self.lock:
            return list(self.seen)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def props(
    message_id: str | None = "outbox-7", attempt: int = 1, content_type: str | None = "application/xml"
) -> Properties:
    return Properties(
        message_id=message_id,
        priority=5,
        content_type=content_type,
        redelivered=False,
        exchange="hub.deliver",
        routing_key=PROVIDER,
        attempt=attempt,
    )


DELIVERY = {
    "hub-message-id": "m-1",
    "delivery-id": f"m-1:{PROVIDER}",
    "priority": "high",
    "registered": True,
    "sender": SENDER,
    "content_type": "application/xml",
}


def wait_for(condition: Any, limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# -- the request ---------------------------------------------------------------------------------


def test_a_push_posts_the_body_with_the_hub_headers(receiver):
    got: list[tuple[dict[str, Any], httpx.Response]] = []
    extra = {"Authorization": "Bearer receiver-token", "Idempotency-Key": "not this one"}
    with Pusher(
        receiver.url, allow_insecure_localhost=True, extra_headers=extra, on_success=lambda h, r: got.append((h, r))
    ) as pusher:
        pusher.handle(BODY, dict(DELIVERY), props(attempt=2))
    [seen] = receiver.requests()
    assert seen.path == f"/hook?{SECRET_QUERY}"  # the URL is used whole; only logs leave the query out
    assert seen.body == BODY
    assert seen.headers["content-type"] == "application/xml"
    assert seen.headers["x-hub-message-id"] == "m-1"
    assert seen.headers["x-hub-delivery-id"] == f"m-1:{PROVIDER}"
    assert seen.headers["x-hub-attempt"] == "2"
    assert seen.headers["idempotency-key"] == f"m-1:{PROVIDER}"  # the delivery id; extra headers never replace it
    assert seen.headers["authorization"] == "Bearer receiver-token"
    assert seen.headers["x-hub-priority"] == "high"
    assert seen.headers["x-hub-registered"] == "true"
    assert seen.headers["x-hub-sender"] == SENDER
    assert [(h["delivery-id"], r.status_code, r.content) for h, r in got] == [(f"m-1:{PROVIDER}", 200, b"ok")]


def test_without_a_delivery_id_the_key_is_the_message_id_else_a_digest_of_the_body(receiver):
    with Pusher(receiver.url, allow_insecure_localhost=True) as pusher:
        pusher.handle(BODY, {}, props(message_id="outbox-9", content_type=None))
        pusher.handle(BODY, {}, props(message_id=None, content_type="application/json"))
        pusher.handle(BODY, {}, props(message_id=None, attempt=3))
    first, second, third = receiver.requests()
    assert first.headers["idempotency-key"] == "outbox-9"
    assert first.headers["x-hub-message-id"] == "outbox-9"
    assert first.headers["content-type"] == "application/xml"  # the default
    assert "x-hub-delivery-id" not in first.headers
    assert second.headers["content-type"] == "application/json"
    assert second.headers["idempotency-key"].startswith("sha256:")
    assert third.headers["idempotency-key"] == second.headers["idempotency-key"]  # the same on a retry
    assert "x-hub-message-id" not in second.headers


def test_one_client_per_pusher_reuses_its_connection_and_close_ends_it(receiver):
    pusher = Pusher(receiver.url, allow_insecure_localhost=True)
    for _ in range(3):
        pusher.handle(BODY, dict(DELIVERY), props())
    assert len({seen.client_port for seen in receiver.requests()}) == 1
    pusher.close()
    with pytest.raises(RuntimeError):
        pusher.handle(BODY, dict(DELIVERY), props())
    given = httpx.Client()
    Pusher(receiver.url, allow_insecure_localhost=True, client=given).close()
    assert not given.is_closed  # a given client is the caller's to close
    given.close()


# -- the answer ----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_a_busy_or_failing_receiver_is_unavailable(status):
    server = Receiver(Answer(status, body=b"secret details"))
    try:
        with Pusher(server.url, allow_insecure_localhost=True) as pusher, pytest.raises(PushUnavailable) as caught:
            pusher.handle(BODY, dict(DELIVERY), props())
    finally:
        server.close()
    assert isinstance(caught.value, Unavailable)
    assert caught.value.status == status
    assert f"HTTP {status}" in str(caught.value)
    assert SECRET_QUERY not in str(caught.value)


@pytest.mark.parametrize("status", [301, 400, 401, 403, 404, 409, 410, 413, 422])
def test_any_other_answer_is_refused_for_good_naming_the_status(status):
    server = Receiver(Answer(status, headers={"Location": "https://elsewhere.example/"}))
    try:
        with Pusher(server.url, allow_insecure_localhost=True) as pusher, pytest.raises(Rejected) as caught:
            pusher.handle(BODY, dict(DELIVERY), props())
    finally:
        server.close()
    assert caught.value.code is ErrorCode.PUSH_REFUSED
    assert f"HTTP {status}" in caught.value.message
    assert len(server.seen) == 1  # a redirect is not followed


def test_retry_after_is_read_in_seconds_or_as_a_date(receiver):
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    assert retry_after("120") == 120.0
    assert retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30.0
    assert retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0.0
    assert retry_after("999999999") == 24 * 3600.0
    assert retry_after("soon") is None
    assert retry_after(None) is None
    receiver.script.append(Answer(503, headers={"Retry-After": "7"}))
    with Pusher(receiver.url, allow_insecure_localhost=True) as pusher, pytest.raises(PushUnavailable) as caught:
        pusher.handle(BODY, dict(DELIVERY), props())
    assert caught.value.retry_after == 7.0


def test_no_answer_within_the_timeout_and_no_server_are_unavailable():
    slow = Receiver(Answer(200, delay=1.0))
    try:
        with Pusher(slow.url, allow_insecure_localhost=True, timeout_s=0.2) as pusher:
            started = time.monotonic()
            with pytest.raises(PushUnavailable, match=r"no answer within 0\.2 s"):
                pusher.handle(BODY, dict(DELIVERY), props())
            assert time.monotonic() - started < 0.9
    finally:
        slow.close()
    down = f"http://127.0.0.1:{free_port()}/hook"
    with Pusher(down, allow_insecure_localhost=True) as pusher, pytest.raises(PushUnavailable, match="ConnectError"):
        pusher.handle(BODY, dict(DELIVERY), props())


def test_a_compressed_answer_reaches_on_success_decompressed(receiver):
    got: list[httpx.Response] = []
    receiver.script.append(
        Answer(200, headers={"Content-Encoding": "gzip", "X-Receipt": "r-1"}, body=gzip.compress(b"<Receipt/>"))
    )
    with Pusher(receiver.url, allow_insecure_localhost=True, on_success=lambda h, r: got.append(r)) as pusher:
        pusher.handle(BODY, dict(DELIVERY), props())
    assert got[0].content == b"<Receipt/>"
    assert got[0].headers["X-Receipt"] == "r-1"


def test_a_long_answer_is_read_up_to_a_bound(receiver):
    got: list[httpx.Response] = []
    receiver.script.append(Answer(200, body=b"x" * (MAX_RESPONSE_BYTES + 10)))
    with Pusher(receiver.url, allow_insecure_localhost=True, on_success=lambda h, r: got.append(r)) as pusher:
        pusher.handle(BODY, dict(DELIVERY), props())
    assert len(got[0].content) == MAX_RESPONSE_BYTES


def test_logs_carry_no_body_no_query_string_and_no_response_body(receiver, caplog):
    receiver.script.extend([Answer(200, body=b"RESPONSE-SECRET"), Answer(503, body=b"RESPONSE-SECRET")])
    receiver.script.append(Answer(400, body=b"RESPONSE-SECRET"))
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []
    with Pusher(receiver.url, allow_insecure_localhost=True) as pusher:
        for _ in range(3):
            try:
                pusher.handle(BODY, dict(DELIVERY), props())
            except (Unavailable, Rejected) as exc:
                errors.append(str(exc))
    with Pusher(f"http://u:pw@127.0.0.1:{free_port()}/x?{SECRET_QUERY}", allow_insecure_localhost=True) as pusher:
        with pytest.raises(PushUnavailable) as caught:
            pusher.handle(BODY, dict(DELIVERY), props())
        errors.append(str(caught.value))
    text = caplog.text + "\n".join(errors)
    assert "HTTP 503" in text and "HTTP 400" in text
    for secret in ("personal data", "RESPONSE-SECRET", SECRET_QUERY, "pw@", "u:pw"):
        assert secret not in text


# -- the URL -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://example.org/hook",
        f"http://example.org/hook?{SECRET_QUERY}",
        "http://127.0.0.1:9999/hook",  # this machine, but not allowed
        "ftp://example.org/hook",
        "https:///no-host",
        "not a url",
    ],
)
def test_a_url_other_than_https_is_refused_at_construction(url):
    with pytest.raises(ConfigError) as caught:
        Pusher(url)
    assert SECRET_QUERY not in str(caught.value)


def test_https_anywhere_and_http_to_this_machine_when_allowed():
    Pusher("https://push.webshop.example/deliveries?key=1").close()  # nothing is connected yet
    for local in ("http://127.0.0.1:8080/x", "http://localhost/x", "http://[::1]:8080/x"):
        assert checked_url(local, allow_insecure_localhost=True).scheme == "http"
    with pytest.raises(ConfigError):
        checked_url("http://10.0.0.1/x", allow_insecure_localhost=True)
    assert safe_url(f"https://u:p@h.example:8443/a/b?{SECRET_QUERY}#f") == "https://h.example:8443/a/b"
    with pytest.raises(ConfigError):
        Pusher("https://push.webshop.example/", timeout_s=0)


# -- through the broker (memory:// and RabbitMQ) ---------------------------------------------------


def _delete(url: str, names: list[str]) -> None:
    with Connection(url) as connection:
        for name in names:
            channel = connection.channel()
            try:
                with contextlib.suppress(Exception):  # never declared
                    channel.queue_purge(name)
                    channel.queue_delete(name)
            finally:
                with contextlib.suppress(Exception):
                    channel.close()


@pytest.fixture
def queues(broker: str) -> Iterator[str]:
    """provider.webshop and sender.<id>.acks with their retry queues, and hub.dead; none left over."""
    names = [PROVIDER_QUEUE, PROVIDER_QUEUE + ".retry", SENDER_QUEUE, SENDER_QUEUE + ".retry"]
    _delete(broker, names)
    declare_push_queues(
        broker, [PushTarget(PROVIDER_QUEUE, "https://x.example"), PushTarget(SENDER_QUEUE, "https://x.example")]
    )
    yield broker
    _delete(broker, names)


def publish_delivery(url: str, body: bytes = BODY, **headers: Any) -> None:
    with connect(url) as connection:
        Producer(connection.channel()).publish(
            body,
            exchange="hub.deliver",
            routing_key=topology.deliver_key(PROVIDER),
            headers={**DELIVERY, **headers},
            content_type="application/xml",
            content_encoding="binary",
            delivery_mode=2,
            message_id="outbox-42",
            retry=False,
        )


@contextlib.contextmanager
def pushing(url: str, targets: list[PushTarget], backoff: RetryPolicy, timeout_s: float = 2.0) -> Iterator[None]:
    stop = threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            run_pushers(
                url,
                targets,
                stop,
                backoff,
                timeout_s=timeout_s,
                allow_insecure_localhost=True,
                reconnect=FAST_RECONNECT,
                poll=0.05,
            )
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert not failures, failures


def nothing_left(url: str) -> bool:
    return all(drain(url, q, idle=0.1) == [] for q in (PROVIDER_QUEUE, PROVIDER_QUEUE + ".retry", "hub.dead"))


def test_a_2xx_acks_the_delivery_and_calls_on_success_once(queues, receiver):
    delivered: list[str] = []
    target = PushTarget(PROVIDER_QUEUE, receiver.url, lambda h, r: delivered.append(h["delivery-id"]))
    with pushing(queues, [target], policy(3, 0.05)):
        publish_delivery(queues)
        wait_for(lambda: delivered)
        time.sleep(0.3)  # nothing more comes
    assert delivered == [f"m-1:{PROVIDER}"]
    assert len(receiver.requests()) == 1
    assert nothing_left(queues)


def test_503_twice_then_200_is_delivered_on_the_third_attempt_with_growing_delays(queues, receiver):
    receiver.script.extend([Answer(503), Answer(503), Answer(200)])
    delivered: list[int] = []
    target = PushTarget(PROVIDER_QUEUE, receiver.url, lambda h, r: delivered.append(r.status_code))
    with pushing(queues, [target], policy(4, 0.15, factor=3.0)):  # waits 0.15 s, then 0.45 s
        publish_delivery(queues)
        wait_for(lambda: delivered)
    seen = receiver.requests()
    assert [s.headers["x-hub-attempt"] for s in seen] == ["1", "2", "3"]
    assert {s.headers["idempotency-key"] for s in seen} == {f"m-1:{PROVIDER}"}
    assert {s.body for s in seen} == {BODY}
    first_wait, second_wait = seen[1].at - seen[0].at, seen[2].at - seen[1].at
    assert 0.14 <= first_wait < second_wait
    assert second_wait >= 0.44
    assert delivered == [200]
    assert nothing_left(queues)


def test_a_400_is_dead_lettered_at_once_with_push_refused(queues, receiver):
    receiver.script.append(Answer(400, body=b"your XML is wrong"))
    called: list[object] = []
    with pushing(queues, [PushTarget(PROVIDER_QUEUE, receiver.url, lambda h, r: called.append(r))], policy(5, 0.05)):
        publish_delivery(queues)
        [dead] = drain(queues, "hub.dead", expect=1, limit=10)
    assert dead.headers[CODE] == ErrorCode.PUSH_REFUSED.value
    assert dead.headers[ATTEMPTS] == 1
    assert dead.headers[QUEUE] == PROVIDER_QUEUE
    assert dead.body == BODY
    assert len(receiver.requests()) == 1
    assert called == []
    assert nothing_left(queues)


def test_with_no_server_the_delivery_is_retried_then_dead(queues):
    url = f"http://127.0.0.1:{free_port()}/hook"
    with pushing(queues, [PushTarget(PROVIDER_QUEUE, url)], policy(3, 0.05)):
        publish_delivery(queues)
        [dead] = drain(queues, "hub.dead", expect=1, limit=10)
    assert dead.headers[ATTEMPTS] == 3
    assert dead.headers[CODE] == "SERVICE_UNAVAILABLE"
    assert "ConnectError" in dead.headers[REASON]
    assert nothing_left(queues)


def test_a_server_slower_than_the_timeout_is_retried(queues, receiver):
    receiver.script.extend([Answer(200, delay=1.5), Answer(200)])
    delivered: list[str] = []
    target = PushTarget(PROVIDER_QUEUE, receiver.url, lambda h, r: delivered.append(h["delivery-id"]))
    with pushing(queues, [target], policy(3, 0.05), timeout_s=0.3):
        publish_delivery(queues)
        wait_for(lambda: delivered)
    assert [s.headers["x-hub-attempt"] for s in receiver.requests()] == ["1", "2"]
    assert delivered == [f"m-1:{PROVIDER}"]  # on_success once: the timed-out attempt did not count
    assert nothing_left(queues)


def test_a_sender_webhook_gets_its_acknowledgements_from_its_queue(queues, receiver):
    provider_server = Receiver()
    try:
        targets = [PushTarget(PROVIDER_QUEUE, provider_server.url), PushTarget(SENDER_QUEUE, receiver.url)]
        with pushing(queues, targets, policy(3, 0.05)):
            with connect(queues) as connection:
                Producer(connection.channel()).publish(
                    b"<Acknowledgement/>",
                    exchange="hub.notify",
                    routing_key=topology.notify_key(SENDER),
                    headers={"hub-message-id": "m-2"},
                    content_type="application/xml",
                    content_encoding="binary",
                    retry=False,
                )
            publish_delivery(queues)
            wait_for(lambda: receiver.requests() and provider_server.requests())
    finally:
        provider_server.close()
    [ack] = receiver.requests()
    assert ack.body == b"<Acknowledgement/>"
    assert ack.headers["x-hub-message-id"] == "m-2"
    assert ack.headers["idempotency-key"].startswith("sha256:")  # no delivery id nor message_id: the body's digest
    assert provider_server.requests()[0].headers["idempotency-key"] == f"m-1:{PROVIDER}"


def test_a_bad_url_stops_run_pushers_before_it_consumes(queues):
    with pytest.raises(ConfigError):
        run_pushers(queues, [PushTarget(PROVIDER_QUEUE, "http://example.org/")], threading.Event())


# -- the command ---------------------------------------------------------------------------------


PROVIDERS_YAML = """
providers:
  - id: webshop
    name: A web shop's mailbox
    delivery: {channel: http, url: "https://push.webshop.example/deliveries"}
  - id: paper
    name: Print and post centre
    capabilities: [paper]
    universal: true
    delivery: {channel: amqp}
"""

SENDERS_YAML = """
institutions:
  - id: "0308357159"
    name: Federal tax administration
    applications: [tax-on-web]
    message_types: {TAX_ASSESSMENT: {}}
    acknowledgements: {channel: webhook, url: "https://acks.finances.example/hub"}
  - id: "0206731645"
    name: Social security institution
    applications: [pensions]
    message_types: {PENSION_STATEMENT: {}}
    acknowledgements: {channel: amqp}
"""


def test_the_targets_are_http_providers_and_webhook_senders(tmp_path: Path):
    (tmp_path / "providers.yaml").write_text(PROVIDERS_YAML)
    (tmp_path / "senders.yaml").write_text(SENDERS_YAML)
    settings = load_settings(tmp_path, environ={})
    targets = push_targets(settings)
    assert [(t.queue, t.url, t.on_success) for t in targets] == [
        ("provider.webshop", "https://push.webshop.example/deliveries", None),
        ("sender.0308357159.acks", "https://acks.finances.example/hub", None),
    ]

    def hook(provider: str) -> Any:
        return lambda headers, response: None

    assert push_targets(settings, on_provider_delivered=hook)[0].on_success is not None


def test_the_command_with_nothing_to_push_says_so(tmp_path: Path, monkeypatch):
    (tmp_path / "providers.yaml").write_text(PROVIDERS_YAML.replace("channel: http, url", "channel: amqp, url"))
    monkeypatch.setenv("HUB_CONFIG_DIR", str(tmp_path))
    result = CliRunner().invoke(cli, ["worker", "push"])
    assert result.exit_code == 0, result.output
    assert "nothing to push" in result.output
    (tmp_path / "providers.yaml").write_text(PROVIDERS_YAML.replace("https://push", "http://push"))
    result = CliRunner().invoke(cli, ["worker", "push"])
    assert result.exit_code == 2
    assert "https://" in result.output
