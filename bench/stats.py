"""Benchmark: ``hub stats`` (``monthly_stats``) over a million messages in PostgreSQL.

Writes N messages (default 1,000,000) with their events and deliveries into a fresh schema
with COPY, in a realistic mix: 5 institutions, 10 message types, 3 digital providers and a
paper one; ~85% delivered, ~60% opened (a tenth of them replied), ~7% paper, ~3%
undeliverable, some failed and expired unread; a fifth of the digital messages routed to
two providers; ~1% refused envelopes. The messages are accepted over ``--months`` months
ending with 2026-10 (default 12: a year of traffic, the month measured holds a twelfth;
``--months 1`` puts the whole million in that month, the worst case); then VACUUM ANALYZE,
and ``monthly_stats`` (what ``hub stats`` runs) for 2026-10 is timed ``--runs`` times; the
headline is the median. Events carry their real details (the routed event's reasons, as
routing writes them); envelopes are left out (stored out of line, they take no part).

    python bench/stats.py [--messages 1000000] [--months 12] [--runs 3] [--keep] [--schema NAME]

The last line is one JSON object with ``stats_seconds``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchdb import drop_schema, postgres_schema  # noqa: E402

from hub.lifecycle.stats import Month, monthly_stats  # noqa: E402
from hub.lifecycle.stats_cli import table  # noqa: E402
from hub.routing.deliveries import detail  # noqa: E402
from hub.routing.rules import Decision, Outcome  # noqa: E402
from hub.routing.rules import Delivery as Chosen  # noqa: E402
from hub.store.db import make_engine, upgrade  # noqa: E402

SCHEMA = "bench_stats"
MONTH = Month(2026, 10)
INSTITUTIONS = ("0308357159", "0206731645", "0207373429", "0404485801", "0212345600")
TYPES = {
    institution: (f"TYPE_{index}_LETTER", f"TYPE_{index}_NOTICE") for index, institution in enumerate(INSTITUTIONS)
}
DIGITAL = ("myebox", "doccle", "irisbox")
PAPER = "paper"


def tsv(value: object) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def routed_detail(outcome: Outcome, providers: tuple[str, ...]) -> str:
    reasons = ["rule 'citizens' matches (first in order)"]
    reasons += [f"{p}: the recipient reads with it" for p in providers]
    if outcome is Outcome.PAPER:
        reasons.append(f"fallback: paper, through {PAPER!r}")
    decision = Decision(
        outcome=outcome,
        rule="citizens",
        deliveries=tuple(Chosen(provider=p) for p in providers),
        reasons=tuple(reasons),
    )
    return json.dumps(detail(decision))


class Writer:
    """Rows as COPY text, sent in chunks."""

    def __init__(self, cursor, table: str, columns: tuple[str, ...]) -> None:
        self.cursor, self.table, self.columns = cursor, table, columns
        self.lines: list[str] = []
        self.count = 0

    def add(self, *values: object) -> None:
        self.lines.append("\t".join(tsv(v) for v in values))

    def flush(self) -> None:
        if not self.lines:
            return
        with self.cursor.copy(f"COPY {self.table} ({', '.join(self.columns)}) FROM STDIN") as copy:
            copy.write("\n".join(self.lines) + "\n")
        self.count += len(self.lines)
        self.lines = []


MESSAGE_COLUMNS = (
    "id", "institution_id", "submitter_id", "application_id", "sender_message_id", "message_type", "recipient_kind",
    "recipient_id", "registered", "priority", "environment", "state", "created_at", "accepted_at", "expires_at",
    "envelope_sha256", "envelope", "receipt", "expired_at",
)  # fmt: skip
EVENT_COLUMNS = ("id", "message_id", "kind", "occurred_at", "source", "provider", "detail", "seq")
DELIVERY_COLUMNS = ("id", "message_id", "provider", "state", "priority", "created_at", "updated_at")
REFUSAL_COLUMNS = ("at", "sender_id", "submitter_id", "message_type", "code", "door")


def generate(url: str, count: int, months: int, seed: int = 7) -> dict[str, int]:
    import psycopg

    rng = random.Random(seed)
    first = MONTH
    for _ in range(months - 1):
        first = first.previous()
    start, span = first.start, (MONTH.end - first.start).total_seconds()
    details: dict[object, str] = {(p,): routed_detail(Outcome.DELIVER, (p,)) for p in DIGITAL}
    details.update({(a, b): routed_detail(Outcome.DELIVER, (a, b)) for a in DIGITAL for b in DIGITAL if a != b})
    details.update(
        {
            "paper": routed_detail(Outcome.PAPER, (PAPER,)),
            "undeliverable": json.dumps(
                detail(Decision(outcome=Outcome.UNDELIVERABLE, rule="citizens", reasons=("no provider serves",)))
            ),
        }
    )
    receipt = "\\x" + "00" * 8  # bytea, hex
    with (
        psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as connection,
        connection.cursor() as cur,
    ):
        messages = Writer(cur, "messages", MESSAGE_COLUMNS)
        events = Writer(cur, "events", EVENT_COLUMNS)
        deliveries = Writer(cur, "deliveries", DELIVERY_COLUMNS)
        refusals = Writer(cur, "refusals", REFUSAL_COLUMNS)
        event_id = 0

        def event(message_id: str, kind: str, when: datetime, provider: str | None, said: str) -> None:
            nonlocal event_id
            event_id += 1
            events.add(event_id, message_id, kind, when, provider or "hub", provider, said, event_id)

        for n in range(count):
            institution = INSTITUTIONS[n % len(INSTITUTIONS)] if rng.random() < 0.5 else rng.choice(INSTITUTIONS)
            message_type = rng.choice(TYPES[institution])
            accepted = start + timedelta(seconds=rng.random() * span)
            message_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            expires = accepted + timedelta(days=365)
            event(message_id, "accepted", accepted, None, json.dumps({"door": "rest", "digest": f"{n:064x}"}))
            routed_at = accepted + timedelta(seconds=rng.uniform(0.05, 2))
            roll = rng.random()
            state, expired_at = "routed", None
            if roll < 0.03:
                state = "undeliverable"
                event(message_id, "undeliverable", routed_at, None, details["undeliverable"])
            elif roll < 0.10:
                event(message_id, "routed", routed_at, None, details["paper"])
                delivery_state = "pending"
                if rng.random() < 0.8:
                    state = delivery_state = "printed"
                    event(message_id, "printed", routed_at + timedelta(days=rng.uniform(0.5, 3)), PAPER, "{}")
                deliveries.add(f"{message_id}:{PAPER}", message_id, PAPER, delivery_state, 4, routed_at, routed_at)
            else:
                two = rng.random() < 0.2
                providers = rng.sample(DIGITAL, 2 if two else 1)
                event(message_id, "routed", routed_at, None, details[tuple(providers)])
                delivered = rng.random() < 0.945
                opened = delivered and rng.random() < 0.667
                replied = opened and rng.random() < 0.1
                opened_at = routed_at + timedelta(hours=rng.lognormvariate(2.5, 1.5))
                for index, provider in enumerate(providers):
                    ack = json.dumps({"ack_id": f"{provider}-{n}"})
                    provider_state = "pending"
                    if delivered:
                        provider_state = "delivered"
                        delivered_at = routed_at + timedelta(seconds=rng.uniform(1, 600))
                        event(message_id, "delivered", delivered_at, provider, ack)
                        if opened and index == 0:
                            provider_state = "opened"
                            event(message_id, "opened", opened_at, provider, ack)
                            if replied:
                                provider_state = "replied"
                                replied_at = opened_at + timedelta(hours=rng.uniform(1, 72))
                                event(message_id, "replied", replied_at, provider, ack)
                    elif rng.random() < 0.5:
                        provider_state = "failed"
                        event(message_id, "failed", routed_at + timedelta(minutes=5), provider, ack)
                    deliveries.add(
                        f"{message_id}:{provider}", message_id, provider, provider_state, 4, routed_at, routed_at
                    )
                state = "replied" if replied else "opened" if opened else "delivered" if delivered else "routed"
                if not opened and rng.random() < 0.1:  # never read, its time ran out: expired unread
                    state, expired_at = "expired", accepted + timedelta(days=20)
                    event(message_id, "expired", expired_at, None, "{}")
            messages.add(
                message_id, institution, institution, "app", f"S-{n}", message_type, "citizen", "85073003328",
                False, "normal", "PROD", state, accepted, accepted, expires, "0" * 64, None, receipt, expired_at,
            )  # fmt: skip
            if rng.random() < 0.01:
                refusals.add(accepted, institution, institution, message_type, "IBAN_INVALID", "rest")
            if len(events.lines) >= 50_000:  # messages first: the events' and deliveries' foreign keys
                for writer in (messages, events, deliveries, refusals):
                    writer.flush()
        for writer in (messages, events, deliveries, refusals):
            writer.flush()
        connection.commit()
    return {"messages": messages.count, "events": events.count, "deliveries": deliveries.count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--months", type=int, default=12, help="Months the messages are spread over (ending 2026-10).")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="Keep the schema afterwards.")
    parser.add_argument("--schema", default=SCHEMA, help=f"The PostgreSQL schema to (re)create (default {SCHEMA}).")
    args = parser.parse_args()

    url, schema = postgres_schema(args.schema)
    engine = make_engine(url)
    try:
        upgrade(engine)
        began = time.perf_counter()
        rows = generate(url, args.messages, args.months)
        load_seconds = time.perf_counter() - began
        print(f"loaded {rows} in {load_seconds:.1f} s", flush=True)
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
        timings = []
        for _ in range(args.runs):
            began = time.perf_counter()
            stats = monthly_stats(engine, MONTH, paper_providers=(PAPER,))
            timings.append(time.perf_counter() - began)
        print(table(stats), end="")
        sent = sum(i.totals.sent for i in stats.institutions)
        print(f"runs: {', '.join(f'{t:.3f} s' for t in timings)} for {sent} messages in {MONTH}")
    finally:
        engine.dispose()
        if not args.keep:
            drop_schema(schema)
    print(
        json.dumps(
            {
                "stats_seconds": round(statistics.median(timings), 3),
                "stats_seconds_best": round(min(timings), 3),
                "messages_in_month": sent,
                "messages": rows["messages"],
                "events": rows["events"],
                "months": args.months,
                "load_seconds": round(load_seconds, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
