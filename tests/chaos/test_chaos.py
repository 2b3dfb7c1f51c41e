"""Crash and outage suite: while 5,000 messages flow through a hub of separate processes on
PostgreSQL + RabbitMQ, every kind of process is killed (SIGKILL) at random moments and
restarted, RabbitMQ is restarted, PostgreSQL becomes unreachable for 10 seconds, and one
provider fails every second delivery. At the end:

- no loss: every message that got a receipt reached exactly the providers the rules chose
  (the hub's deliveries and the providers' mailboxes agree with the rules);
- no duplicated effect: no provider filed a delivery twice, however often it was handed it,
  and no envelope was accepted twice;
- each sender's feed holds each of its events exactly once (and the AMQP channel delivers
  each event at least once, a repeat carrying the same acknowledgement id);
- the audit chain verifies, and nothing is left in the dead-letter queue.

The counts are printed (``pytest -s`` shows them; CI's log keeps them).

How the faults are made:
- kill: ``kill -9`` of the process, restarted by the test's supervisor after 0.3 to 1.5 s;
- RabbitMQ: ``rabbitmqctl stop_app`` then ``start_app``: a real restart of the broker (the
  run uses a virtual host of its own, deleted afterwards);
- PostgreSQL: the hub's processes reach it through a TCP proxy (``tests.chaos.proxy``), which
  resets every connection and refuses new ones for 10 s: to the hub, the database is gone,
  mid-transaction for some, and comes back on the same address. The server itself is not
  stopped, so that the test's own checks and other users of it are untouched;
- the provider: ``tests.chaos.provider --fail-every-second``.

``HUB_CHAOS_MESSAGES`` sets the number of messages (default 5,000); ``HUB_CHAOS_SPARE_BROKER=1``
leaves RabbitMQ running (for a broker others use at the same time; ignored under CI).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from kombu import Connection

from hub.broker.topology import DEAD_QUEUE, declare_at
from hub.demo import PROVIDERS
from hub.store.db import make_engine, upgrade
from tests.backends import CI, postgres_schema, rabbitmq_url
from tests.chaos.harness import (
    ROOT,
    RUNNING_PROVIDERS,
    SENDERS,
    TOKENS,
    Expected,
    FeedReader,
    QueueReader,
    Submitter,
    Supervisor,
    envelopes,
    expected_events,
    fill_directory,
    hub_commands,
    prepare,
    providers_for,
    seen,
    sender_of,
)
from tests.chaos.proxy import Proxy

MESSAGES = int(os.environ.get("HUB_CHAOS_MESSAGES", "5000"))
RATE = 150.0
"""Envelopes offered a second: about a third of what this 2-core machine sustains without faults."""
KILL_EVERY = (1.5, 3.5)
"""Seconds between two kills."""
RABBITMQ_RESTART_AT = 12.0
POSTGRES_OUTAGE_AT, POSTGRES_OUTAGE_S = 28.0, 10.0
SPARE_BROKER = os.environ.get("HUB_CHAOS_SPARE_BROKER") == "1" and not CI
"""For a developer whose broker serves others at the same time: no RabbitMQ restart (never under CI)."""
SETTLE_S = 300.0
"""How long, after the last envelope got its receipt, everything may take to reach the senders."""

pytestmark = pytest.mark.chaos


def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr or done.stdout}")
    return done.stdout


@pytest.fixture
def vhost() -> Iterator[str]:
    """A RabbitMQ virtual host of the run's own (guest may use it), deleted afterwards."""
    base = rabbitmq_url()
    if shutil.which("rabbitmqctl") is None:
        message = "the chaos run restarts RabbitMQ with rabbitmqctl, which is not on this machine"
        if CI:
            pytest.fail(message + "; CI must run it", pytrace=False)
        pytest.skip(message)
    name = f"hub-chaos-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield base.rstrip("/") + "/" + name
    finally:
        with contextlib.suppress(Exception):
            rabbitmqctl("start_app")  # in case the run failed with the broker stopped
            rabbitmqctl("await_startup")
        rabbitmqctl("delete_vhost", name)


def restart_rabbitmq() -> float:
    """Stop the broker's application and start it again; how long it was away."""
    began = time.monotonic()
    rabbitmqctl("stop_app")
    time.sleep(2.0)
    rabbitmqctl("start_app")
    rabbitmqctl("await_startup")
    return time.monotonic() - began


def through(proxy: Proxy, url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


def wait_ready(port: int, supervisor: Supervisor) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                time.sleep(1.0)  # the workers declare nothing, but start consuming
                return
        time.sleep(0.3)
    raise AssertionError(f"the hub did not come up; see {supervisor.logs}")


class Chaos:
    """Kills a process of each kind in turn at random moments; restarts RabbitMQ; cuts PostgreSQL."""

    def __init__(self, supervisor: Supervisor, proxy: Proxy, *, until: threading.Event) -> None:
        self.supervisor, self.proxy, self.until = supervisor, proxy, until
        self.rabbitmq_restarts: list[float] = []
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self.run, name="chaos", daemon=True)

    def run(self) -> None:
        began = time.monotonic()
        kinds: list[str] = []
        next_kill = began + random.uniform(*KILL_EVERY)
        pending = {"rabbitmq": began + RABBITMQ_RESTART_AT, "postgresql": began + POSTGRES_OUTAGE_AT}
        try:
            while pending or not self.until.is_set() or len(self.supervisor.kills) < len(self.supervisor.commands):
                now = time.monotonic()
                if now >= next_kill:
                    if not kinds:
                        kinds = list(self.supervisor.commands)
                        random.shuffle(kinds)
                    self.supervisor.kill(kinds.pop())
                    next_kill = now + random.uniform(*KILL_EVERY)
                if now >= pending.get("postgresql", float("inf")):
                    del pending["postgresql"]
                    self.proxy.outage(POSTGRES_OUTAGE_S)
                if now >= pending.get("rabbitmq", float("inf")):
                    del pending["rabbitmq"]
                    if not SPARE_BROKER:
                        self.rabbitmq_restarts.append(restart_rabbitmq())
                time.sleep(0.05)
        except Exception as exc:  # reported by the test, which must not wait in vain
            self.errors.append(f"{exc.__class__.__name__}: {exc}")


def mailbox(folder: Path, provider: str) -> tuple[set[tuple[str, str]], Counter[str]]:
    """A provider's filed deliveries as (hub message id, provider), and how often each delivery was handed over."""
    with contextlib.closing(sqlite3.connect(folder / f"{provider}.sqlite")) as db:
        filed = {(message, provider) for (message,) in db.execute("SELECT hub_message_id FROM mailbox")}
        handed = Counter(delivery for (delivery,) in db.execute("SELECT delivery_id FROM handled"))
    return filed, handed


def failed_once(folder: Path, provider: str) -> int:
    with contextlib.closing(sqlite3.connect(folder / f"{provider}.sqlite")) as db:
        return int(db.execute("SELECT count(*) FROM handled WHERE failed = 1").fetchone()[0])


def dead_letters(url: str) -> int:
    with Connection(url) as connection:
        _, count, _ = connection.default_channel.queue_declare(DEAD_QUEUE.name, passive=True)
    return int(count)


def complete(expected: dict[str, set[Expected]], feeds: dict[str, FeedReader], queue: QueueReader) -> bool:
    return all(expected[org] <= set(seen(feeds[org].items)) for org in SENDERS) and expected[queue_owner(queue)] <= set(
        seen(queue.items)
    )


def queue_owner(queue: QueueReader) -> str:
    return queue.queue.split(".")[1]


def test_nothing_is_lost_or_duplicated_through_crashes_and_outages(tmp_path: Path, vhost: str) -> None:
    data = envelopes(MESSAGES)  # first: it forks, and no thread may run yet
    with postgres_schema() as database_url:
        engine = make_engine(database_url)
        upgrade(engine)
        engine.dispose()
        fill_directory(database_url, MESSAGES)
        declare_at(vhost, list(PROVIDERS), list(SENDERS))

        config = prepare(tmp_path)
        proxy = Proxy(urlsplit(database_url).port or 5432)
        port = _free_port()
        mailboxes = tmp_path / "mailboxes"
        mailboxes.mkdir()
        env = {
            **os.environ,
            "HUB_CONFIG_DIR": str(config),
            "HUB_DATA_DIR": str(tmp_path / "var"),
            "HUB_DATABASE_URL": through(proxy, database_url),
            "HUB_BROKER_URL": vhost,
            "HUB_HTTP_PORT": str(port),
            "PYTHONPATH": str(ROOT),
        }
        supervisor = Supervisor(env, tmp_path / "logs", hub_commands(config, port, mailboxes, vhost))
        feeds = {org: FeedReader(port, TOKENS[org]) for org in SENDERS}
        queue = QueueReader(vhost, f"sender.{next(o for o, c in SENDERS.items() if c == 'amqp')}.acks")
        submitter = Submitter(port, data, RATE)
        chaos = Chaos(supervisor, proxy, until=submitter.done)
        started = time.monotonic()
        supervisor.start()
        try:
            wait_ready(port, supervisor)
            for reader in (*feeds.values(), queue):
                reader.thread.start()
            chaos.thread.start()
            submitter.run()
            flowed = time.monotonic() - started
            chaos.thread.join(120)

            ids = submitter.message_ids()
            expected: dict[str, set[Expected]] = {org: set() for org in SENDERS}
            for index, message_id in ids.items():
                expected[sender_of(index)] |= expected_events(message_id, index)
            deadline = time.monotonic() + SETTLE_S
            while time.monotonic() < deadline and not complete(expected, feeds, queue):
                time.sleep(1.0)
            settled = time.monotonic() - started
            time.sleep(3.0)  # the audit sealer chains what the last events wrote
        finally:
            supervisor.stop()
            for reader in (*feeds.values(), queue):
                reader.stop.set()
            proxy.close()

        for reader in (*feeds.values(), queue):
            reader.thread.join(10)
        audit = subprocess.run(
            [str(Path(sys.executable).parent / "hub"), "audit", "verify"],
            env=env | {"HUB_DATABASE_URL": database_url},
            capture_output=True,
            text=True,
            timeout=300,
        )
        dead = dead_letters(vhost)
        stored = _stored(database_url)

    # -- what each party holds ------------------------------------------------------------------
    chosen = {(ids[i], p) for i in ids for p in providers_for(i)}
    filed: set[tuple[str, str]] = set()
    handed: Counter[str] = Counter()
    for provider in RUNNING_PROVIDERS:
        theirs, counts = mailbox(mailboxes, provider)
        filed |= theirs
        handed += counts
    feed_counts = {org: seen(feeds[org].items) for org in SENDERS}
    queue_counts = seen(queue.items)
    queue_ids: dict[Expected, set[str]] = {}
    for ack in queue.items:
        queue_ids.setdefault((str(ack.hub_message_id), ack.event.value, ack.provider), set()).add(ack.ack_id)

    report = {
        "envelopes": len(data),
        "accepted (one receipt id each)": len(ids),
        "accepted twice (201 more than once)": sum(1 for n in submitter.created.values() if n > 1),
        "receipts lost in transit, then 200 on retry": sum(1 for i in ids if submitter.created[i] == 0),
        "refused": len(submitter.refused),
        "POSTs retried": dict(submitter.retried),
        "kill -9 by kind": dict(supervisor.kills),
        "exits on their own by kind": dict(supervisor.exits),
        "RabbitMQ restarts (s away)": [round(s, 1) for s in chaos.rabbitmq_restarts],
        "PostgreSQL outages / connections cut / refused": (proxy.outages, proxy.cut, proxy.refused),
        "deliveries chosen by the rules": len(chosen),
        "deliveries in the store": len(stored["deliveries"]),
        "deliveries filed by providers": len(filed),
        "deliveries handed over more than once": sum(1 for n in handed.values() if n > 1),
        "handed over in all / filed": (sum(handed.values()), len(filed)),
        "failed once by the flaky provider": failed_once(mailboxes, RUNNING_PROVIDERS[0]),
        "feed events by sender (expected)": {o: (sum(c.values()), len(expected[o])) for o, c in feed_counts.items()},
        "feed events seen twice": sum(1 for c in feed_counts.values() for n in c.values() if n > 1),
        "AMQP events (distinct, repeats)": (len(queue_counts), sum(queue_counts.values()) - len(queue_counts)),
        "AMQP reconnects": queue.reconnects,
        "dead letters": dead,
        "audit": (audit.stdout or audit.stderr).strip(),
        "seconds to send / to settle": (round(flowed, 1), round(settled, 1)),
    }
    print("\nchaos run:")
    for name, value in report.items():
        print(f"  {name:<48} {value}")

    assert not chaos.errors, chaos.errors
    assert set(supervisor.kills) == set(supervisor.commands), "every kind of process was killed at least once"
    # no envelope refused, none accepted twice or under two ids
    assert not submitter.refused, list(submitter.refused.items())[:5]
    assert len(ids) == len(data) == len(submitter.receipts)
    assert max(submitter.created.values()) <= 1, "an envelope was answered 201 Created twice"
    assert stored["messages"] == set(ids.values())
    # no loss: exactly the providers the rules chose, in the hub and in the providers' mailboxes
    assert stored["deliveries"] == chosen, _sample(stored["deliveries"] ^ chosen)
    assert filed == chosen, _sample(filed ^ chosen)
    # each sender's feed: every event of its messages, exactly once, and nothing else
    for org in SENDERS:
        counts = feed_counts[org]
        assert set(counts) == expected[org], _sample(set(counts) ^ expected[org])
        assert max(counts.values()) == 1, _sample({k for k, n in counts.items() if n > 1})
    # the AMQP channel: at least once, a repeat being the same acknowledgement
    owner = queue_owner(queue)
    assert set(queue_counts) == expected[owner], _sample(set(queue_counts) ^ expected[owner])
    assert all(len(ack_ids) == 1 for ack_ids in queue_ids.values())
    # the audit chain: every entry chained (sealed, through the sealer's crashes) and verified
    assert audit.returncode == 0 and audit.stdout.startswith("OK:"), audit.stderr
    assert f"OK: {stored['audit']} entries chained" in audit.stdout and "; 0 not sealed yet" in audit.stdout
    assert dead == 0


def _sample(things: set) -> list:  # type: ignore[type-arg]
    return sorted(things, key=str)[:10]


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stored(url: str) -> dict[str, Any]:
    import psycopg

    schema = url.rsplit("%3D", 1)[1]
    with psycopg.connect(url.split("?", 1)[0], autocommit=True) as connection:
        connection.execute(f"SET search_path TO {schema}")
        messages = {row[0] for row in connection.execute("SELECT id FROM messages")}
        deliveries = {(row[0], row[1]) for row in connection.execute("SELECT message_id, provider FROM deliveries")}
        (audit,) = connection.execute("SELECT count(*) FROM audit").fetchone()
    return {"messages": messages, "deliveries": deliveries, "audit": audit}
