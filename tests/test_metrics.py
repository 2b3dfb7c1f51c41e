"""Observability: Prometheus metrics, structured JSON logs without national numbers, readiness.

Given the hub at work (a submission over REST, a consume loop retrying and dead-lettering,
messages waiting in RabbitMQ), when /metrics is scraped, then the counters moved by exactly
what happened, with low-cardinality labels only; the JSON log lines parse and carry the hub's
message id; anything that looks like a national number is masked.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from hub import logs, metrics
from hub.broker.consumer import Properties
from hub.cli import cli
from hub.errors import ConfigError, ErrorCode, Rejected, Unavailable
from hub.inbound.http import build_app
from hub.settings import load_settings
from tests import test_broker, test_inbound_rest
from tests.kit import example, keyring
from tests.test_broker import PROVIDERS, RABBITMQ_ONLY, SENDERS, declared, drain, publish
from tests.test_inbound_rest import make_hub, post
from tests.test_retries import policy, run, wait_for

broker = test_broker.broker  # the shared fixtures
rabbitmq_vhost = test_broker.rabbitmq_vhost
sessions = test_broker.sessions
client = test_inbound_rest.client
ROOT = Path(__file__).resolve().parent.parent
SSIN = re.compile(r"(?<!\d)\d{11}(?!\d)")


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    """One sample's value (0 when the series is not there yet)."""
    return samples(text).get((name, frozenset(labels.items())), 0.0)


def moved(before: str, after: str, name: str, **labels: str) -> float:
    """How much a sample moved between two scrapes."""
    return value(after, name, **labels) - value(before, name, **labels)


def scrape(client: TestClient) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def process_metrics() -> str:
    return metrics.exposition(metrics.scrape_registry()).decode()


@contextlib.contextmanager
def root_logger_kept() -> Iterator[None]:
    """The root logger's level and handlers as they were, afterwards (``logs.configure`` changes them)."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


@pytest.fixture()
def json_log() -> Iterator[io.StringIO]:
    """The hub's JSON log lines of this test."""
    stream = io.StringIO()
    with root_logger_kept():
        logs.configure("json", "INFO", stream=stream)
        yield stream


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


# -- the stages' counters ------------------------------------------------------------------------


def test_an_envelope_accepted_over_rest_and_one_refused_move_their_counters(hub, client, json_log):
    before = scrape(client)
    data = keyring().sign(example("payment"))
    accepted = post(client, data)
    assert accepted.status_code == 201
    assert post(client, data).status_code == 200  # the same again: a repeat
    assert post(client, data.replace(b"1234.56", b"9234.56")).status_code == 401
    after = scrape(client)

    assert moved(before, after, "hub_messages_total", stage="accept", outcome="accepted") == 1
    assert moved(before, after, "hub_messages_total", stage="accept", outcome="repeat") == 1
    assert moved(before, after, "hub_messages_total", stage="accept", outcome="refused") == 1
    assert moved(before, after, "hub_refusals_total", stage="accept", code="SIGNATURE_INVALID") == 1
    assert moved(before, after, "hub_stage_seconds_count", stage="accept") == 3
    # the series are there from the start, for every stage (rate() needs no first event)
    assert ("hub_messages_total", frozenset({("stage", "acknowledge"), ("outcome", "late")})) in samples(after)
    # no label carries a message id or a number
    message_id = accepted.headers["x-hub-message-id"]
    label_values = {v for _, labels in samples(after) for _, v in labels}
    assert message_id not in label_values and not any(SSIN.search(v) for v in label_values)
    # and the accepted log line names the hub's message id
    events = [line for line in lines(json_log) if line.get("event") == "accepted"]
    assert [e["message_id"] for e in events] == [message_id]
    assert events[0]["logger"] == "hub.inbound" and events[0]["level"] == "INFO" and events[0]["door"] == "rest"


def test_a_batch_counts_each_envelope(hub, client):
    import base64

    ring = keyring()
    good = [ring.sign(example(kind)) for kind in ("citizen-letter", "registered")]
    bad = good[0].replace(b"<ds:SignatureValue>", b"<ds:SignatureValue>AAAA")
    before = scrape(client)
    envelopes = [*good, bad]
    response = client.post("/v1/batches", json={"envelopes": [base64.b64encode(e).decode() for e in envelopes]})
    assert response.status_code == 207
    after = scrape(client)
    assert moved(before, after, "hub_messages_total", stage="accept", outcome="accepted") == 2
    assert moved(before, after, "hub_messages_total", stage="accept", outcome="refused") == 1


def test_a_retry_and_a_dead_letter_of_the_consume_loop_are_counted(broker, json_log):
    declared(broker)
    publish(broker, "hub.route", "route", b"{}", message_id="flaky", headers={"hub_message_id": "m-flaky"})
    publish(broker, "hub.route", "route", b"{}", message_id="bad", headers={"hub_message_id": "m-bad"})
    before = process_metrics()
    done: list[str | None] = []
    stop = threading.Event()

    def handler(body: bytes, headers: dict[str, Any], properties: Properties) -> None:
        if properties.message_id == "bad":
            done.append("bad")
            raise Rejected(ErrorCode.SSIN_INVALID, "85073003328 fails its checksum", path="/A/SSIN")
        if properties.attempt == 1:
            raise Unavailable("the directory cannot be reached; try again shortly")
        done.append(properties.message_id)

    worker = run(broker, handler, stop, policy(3, 0.05))
    try:
        wait_for(lambda: sorted(map(str, done)) == ["bad", "flaky"])
        dead = drain(broker, "hub.dead", expect=1, limit=5)
    finally:
        stop.set()
        worker.join(10)
    assert [d.message_id for d in dead] == ["bad"]
    after = process_metrics()
    assert moved(before, after, "hub_retries_total", queue="hub.routing") == 1
    assert moved(before, after, "hub_dead_letters_total", queue="hub.routing", code="SSIN_INVALID") == 1
    # the log lines say which hub message, which queue, which code; never the number in the refusal
    by_event = {line["event"]: line for line in lines(json_log) if line.get("event") in ("retry", "dead_letter")}
    assert by_event["retry"]["message_id"] == "m-flaky" and by_event["retry"]["queue"] == "hub.routing"
    assert by_event["dead_letter"]["message_id"] == "m-bad" and by_event["dead_letter"]["code"] == "SSIN_INVALID"
    assert "85073003328" not in json_log.getvalue()


def test_the_relay_counts_what_it_published_by_exchange(sessions, broker):
    from hub.broker.relay import OutboxRelay
    from tests.test_broker import add_rows

    declared(broker)
    add_rows(sessions, 3)
    before = process_metrics()
    with OutboxRelay(sessions, broker) as relay:
        assert relay.run_once() == 3
    after = process_metrics()
    assert moved(before, after, "hub_outbox_published_total", exchange="hub.route") == 3
    assert moved(before, after, "hub_stage_seconds_count", stage="relay") == 1


def test_a_push_counts_pushed_and_refused_by_stage():
    handled = metrics.counted("deliver", lambda *args: None, done="pushed")
    refusing = metrics.counted(
        "forward", lambda *args: (_ for _ in ()).throw(Rejected(ErrorCode.PUSH_REFUSED, "HTTP 403")), done="pushed"
    )
    before = process_metrics()
    handled(b"", {}, None)
    with pytest.raises(Rejected):
        refusing(b"", {}, None)
    after = process_metrics()
    assert moved(before, after, "hub_messages_total", stage="deliver", outcome="pushed") == 1
    assert moved(before, after, "hub_refusals_total", stage="forward", code="PUSH_REFUSED") == 1


# -- queue depths --------------------------------------------------------------------------------


@RABBITMQ_ONLY
def test_queue_depths_on_rabbitmq_show_what_waits_and_are_cached(broker, tmp_path):
    declared(broker)
    for n in range(3):
        publish(broker, "hub.route", "route", b"{}", message_id=f"m{n}")
    clock = [0.0]
    depths = metrics.QueueDepths(broker, lambda: metrics.hub_queues(PROVIDERS, SENDERS), clock=lambda: clock[0])
    registry = metrics.scrape_registry(depths)
    text = metrics.exposition(registry).decode()
    assert value(text, "hub_broker_up") == 1
    assert value(text, "hub_queue_messages", queue="hub.routing") == 3
    assert value(text, "hub_queue_messages", queue="hub.dead") == 0
    assert value(text, "hub_queue_messages", queue="provider.myebox.retry") == 0
    assert ("hub_queue_consumers", frozenset({("queue", "hub.acks")})) in samples(text)
    # within the cache period the broker is not asked again
    publish(broker, "hub.route", "route", b"{}", message_id="m3")
    assert value(metrics.exposition(registry).decode(), "hub_queue_messages", queue="hub.routing") == 3
    clock[0] += 5.0
    assert value(metrics.exposition(registry).decode(), "hub_queue_messages", queue="hub.routing") == 4
    # and the HTTP app of a hub on this broker shows them on /metrics
    runtime = make_hub(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", HUB_BROKER_URL=broker)
    try:
        with TestClient(build_app(runtime)) as client:
            assert value(scrape(client), "hub_queue_messages", queue="hub.routing") == 4
    finally:
        runtime.close()


def test_an_unreachable_broker_shows_as_down_without_queue_depths():
    depths = metrics.QueueDepths("amqp://guest:guest@127.0.0.1:9//", lambda: ["hub.routing"], timeout=1.0)
    text = metrics.exposition(metrics.scrape_registry(depths)).decode()
    assert value(text, "hub_broker_up") == 0
    assert not any(name == "hub_queue_messages" for name, _ in samples(text))


def test_the_in_process_broker_has_no_queue_depths(hub, client):
    text = scrape(client)
    assert not any(name.startswith(("hub_queue_", "hub_broker_up")) for name, _ in samples(text))
    assert "hub_messages_total" in text


# -- several processes ---------------------------------------------------------------------------


def test_in_multiprocess_mode_a_scrape_adds_up_every_worker(tmp_path):
    folder = tmp_path / "prometheus"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    folder.mkdir()
    count = "from hub import metrics; metrics.count('accept', 'accepted'); metrics.refused('accept', 'IBAN_INVALID')"
    for _ in range(2):  # two worker processes, each counting once
        subprocess.run([sys.executable, "-c", count], env=env, check=True, cwd=ROOT, timeout=60)
    show = "from hub import metrics; print(metrics.exposition(metrics.scrape_registry()).decode())"
    text = subprocess.run(
        [sys.executable, "-c", show], env=env, check=True, cwd=ROOT, timeout=60, capture_output=True, text=True
    ).stdout
    assert value(text, "hub_messages_total", stage="accept", outcome="accepted") == 2
    assert value(text, "hub_refusals_total", stage="accept", code="IBAN_INVALID") == 2


def test_hub_serve_with_several_workers_gives_them_a_fresh_multiprocess_folder(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert metrics.multiprocess_dir(1) is None
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    folder = metrics.multiprocess_dir(4)
    assert folder is not None and folder.is_dir() and not any(folder.iterdir())
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(folder)
    (folder / "counter_123.db").write_bytes(b"stale")
    assert metrics.multiprocess_dir(4) == folder and not any(folder.iterdir())  # a given folder is emptied


# -- a worker's own metrics server ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_metrics_port_serves_the_process_metrics_while_the_command_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("HUB_CONFIG_DIR", str(tmp_path))
    port = free_port()
    seen: list[str] = []

    @click.command()
    @metrics.metrics_port_option
    def worker() -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            seen.append(response.read().decode())

    result = CliRunner().invoke(worker, ["--metrics-port", str(port)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "hub_messages_total" in seen[0] and "process_cpu_seconds_total" in seen[0]
    with pytest.raises(OSError):  # the server stopped with the command
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    # the default comes from [metrics] port (HUB_METRICS_PORT); 0 is off
    monkeypatch.setenv("HUB_METRICS_PORT", str(port))
    assert CliRunner().invoke(worker, [], catch_exceptions=False).exit_code == 0
    assert len(seen) == 2
    monkeypatch.setenv("HUB_METRICS_PORT", "0")
    with pytest.raises(OSError):
        CliRunner().invoke(worker, [], catch_exceptions=False)


def test_every_long_running_command_offers_metrics_port():
    commands = [
        ["worker", "inbound"],
        ["worker", "routing"],
        ["worker", "acks"],
        ["worker", "forward"],
        ["worker", "subscriptions"],
        ["worker", "push"],
        ["relay"],
        ["lifecycle", "run"],
        ["run"],
    ]
    for command in commands:
        result = CliRunner().invoke(cli, [*command, "--help"])
        assert "--metrics-port" in result.output, command


# -- settings ------------------------------------------------------------------------------------


def test_metrics_and_log_settings_come_from_hub_toml_and_variables(tmp_path):
    settings = load_settings(tmp_path, {"HUB_METRICS_PORT": "9109", "HUB_LOG_FORMAT": "json", "HUB_LOG_LEVEL": "debug"})
    assert (settings.metrics_port, settings.log_format, settings.log_level) == (9109, "json", "DEBUG")
    with pytest.raises(ConfigError, match="format must be text or json"):
        load_settings(tmp_path, {"HUB_LOG_FORMAT": "yaml"})
    (tmp_path / "hub.toml").write_text('[log]\nformat = "text"\nlevel = "LOUD"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, {})
    assert (caught.value.line, "level") == (3, "level") and "LOUD" in str(caught.value)
    (tmp_path / "hub.toml").write_text("[metrics]\nport = 70000\n")
    with pytest.raises(ConfigError, match="between 0"):
        load_settings(tmp_path, {})


# -- logs ----------------------------------------------------------------------------------------


def test_json_log_lines_parse_and_national_numbers_are_masked(json_log):
    log = logging.getLogger("hub.test")
    log.info("looked up %s", "85073003328", extra={"event": "lookup", "message_id": "m-1", "note": "85.07.30-033.28"})
    try:
        raise KeyError("85073003328")
    except KeyError:
        log.exception("a bug", extra={"event": "bug"})
    first, second = lines(json_log)
    assert set(first) >= {"timestamp", "level", "logger", "message", "event", "message_id"}
    assert first["message"] == "looked up ***********" and first["note"] == "***********"
    assert first["message_id"] == "m-1" and first["timestamp"].endswith("Z")
    assert second["level"] == "ERROR" and "KeyError" in second["exception"]
    assert "85073003328" not in json_log.getvalue()
    # a hub message id (a UUID) is never mistaken for a number
    uuid = "6f1c2d3e-0000-4000-8000-123456789012"
    assert logs.mask(f"message {uuid}") == f"message {uuid}"


def test_text_logs_carry_the_same_fields_and_masks():
    stream = io.StringIO()
    with root_logger_kept():
        logs.configure("text", "INFO", stream=stream)
        logging.getLogger("hub.test").info("accepted 85073003328", extra={"event": "accepted", "message_id": "m-2"})
    line = stream.getvalue()
    assert "INFO hub.test: accepted *********** event=accepted message_id=m-2" in line


def test_the_whole_loop_logs_json_with_message_ids_and_no_personal_data(tmp_path):
    # Given the demo (every stage, in-process) with JSON logs
    with root_logger_kept():
        result = CliRunner().invoke(
            cli,
            ["demo", "--keep", str(tmp_path / "d")],
            env={"HUB_LOG_FORMAT": "json", "HUB_LOG_LEVEL": "INFO"},
            catch_exceptions=False,
        )
    assert result.exit_code == 0, result.output
    # Then every log line is JSON, and the stage logs name the hub message id
    records = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert len(records) == len([line for line in result.stderr.splitlines() if line.strip()])
    for event in ("accepted", "routed", "acknowledgement"):
        found = [r for r in records if r.get("event") == event]
        assert found, event
        assert all(re.fullmatch(r"[0-9a-f-]{36}", r["message_id"]) for r in found), found
    # And nothing in them is, or had to be masked as, a national number
    assert not SSIN.search(result.stderr)
    assert logs.MASK not in result.stderr


# -- readiness -----------------------------------------------------------------------------------


def test_readyz_fails_without_the_database_while_metrics_still_answer(tmp_path):
    runtime = make_hub_without_database(tmp_path)
    try:
        with TestClient(build_app(runtime)) as client:
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["database"] != "ok"
            assert client.get("/metrics").status_code == 200
    finally:
        runtime.close()


def make_hub_without_database(tmp_path: Path) -> Any:
    from hub.runtime import build_runtime
    from tests.kit import directory

    settings = load_settings(
        tmp_path / "config",
        {"HUB_DATA_DIR": str(tmp_path / "var"), "HUB_DATABASE_URL": "postgresql://postgres@127.0.0.1:9/none"},
    )
    return build_runtime(settings, directory=directory())


def test_the_shipped_configuration_documents_metrics_and_log():
    text = (ROOT / "config/hub.toml").read_text()
    for section in ("[metrics]", "[log]"):
        block = text.split(section, 1)[1].split("\n[", 1)[0]
        keys = [line for line in block.splitlines() if re.match(r"^\w+ = ", line)]
        assert keys and all("#" in line for line in keys), section
