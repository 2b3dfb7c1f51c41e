"""A mailbox provider for the chaos run, built on the provider SDK, with a mailbox on disk.

    python -m tests.chaos.provider NAME --mailbox FILE --key K --certificate C [--fail-every-second]

What a careful provider does with the hub's at-least-once delivery: it files each delivery in
its mailbox under the delivery id (the idempotency key of the contract, ``docs/providers.md``),
so a delivery that comes again, after a crash or a lost broker ack, changes nothing; then it
acknowledges ``delivered`` (``printed`` for paper), with the deterministic acknowledgement id,
so a repeated acknowledgement is the same one, which the hub ignores.

The mailbox (SQLite, survives ``kill -9``) keeps what the run's checks need:

    mailbox    one row per delivery filed: the effect, exactly once
    handled    every time a delivery was handed to this provider, redeliveries included

``--fail-every-second``: of the distinct deliveries it is handed, every second one fails the
first time (``Unavailable``, as an overloaded provider would answer), and is retried by the
SDK with back-off; counted in ``handled`` with ``failed = 1``.
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import threading
import time
from pathlib import Path

from hub.errors import Unavailable
from hub.outbound.acks import Event
from hub.outbound.sdk import Delivery, ProviderClient
from hub.signing.keys import load_key_pair

SCHEMA = """
CREATE TABLE IF NOT EXISTS mailbox (
    delivery_id TEXT PRIMARY KEY,
    hub_message_id TEXT NOT NULL,
    filed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS handled (
    delivery_id TEXT NOT NULL,
    at REAL NOT NULL,
    failed INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS distinct_seen (
    delivery_id TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
"""


def open_mailbox(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, timeout=30)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.executescript(SCHEMA)
    return connection


class Mailbox:
    def __init__(self, path: Path, *, fail_every_second: bool) -> None:
        self.db = open_mailbox(path)
        self.fail_every_second = fail_every_second

    def should_fail(self, delivery_id: str) -> bool:
        """True the first time every second distinct delivery is handed over (kept on disk)."""
        if not self.fail_every_second:
            return False
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            if self.db.execute("SELECT 1 FROM distinct_seen WHERE delivery_id = ?", (delivery_id,)).fetchone():
                return False
            (count,) = self.db.execute("SELECT count(*) FROM distinct_seen").fetchone()
            self.db.execute("INSERT INTO distinct_seen VALUES (?, ?)", (delivery_id, count + 1))
            return (count + 1) % 2 == 0

    def handled(self, delivery_id: str, *, failed: bool) -> None:
        self.db.execute("INSERT INTO handled VALUES (?, ?, ?)", (delivery_id, time.time(), int(failed)))

    def file(self, delivery: Delivery) -> None:
        row = (delivery.delivery_id, delivery.hub_message_id, time.time())
        self.db.execute("INSERT OR IGNORE INTO mailbox VALUES (?, ?, ?)", row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--mailbox", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--certificate", type=Path, required=True)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument("--fail-every-second", action="store_true")
    args = parser.parse_args()

    mailbox = Mailbox(args.mailbox, fail_every_second=args.fail_every_second)
    event = Event.PRINTED if args.name == "paper" else Event.DELIVERED
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    with ProviderClient(args.name, args.broker, load_key_pair(args.key, args.certificate)) as client:

        def handle(delivery: Delivery) -> None:
            if mailbox.should_fail(delivery.delivery_id):
                mailbox.handled(delivery.delivery_id, failed=True)
                raise Unavailable("the provider's mailbox is overloaded (every second delivery fails once)")
            mailbox.handled(delivery.delivery_id, failed=False)
            mailbox.file(delivery)
            client.acknowledge(delivery, event)

        client.run(handle, stop)


if __name__ == "__main__":
    main()
