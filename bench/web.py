"""Benchmark: the web console's pages over a large store (PostgreSQL).

Loads N messages (default 1,000,000, a year of traffic: ``bench/stats.py``'s generator, with
their events and deliveries) into a fresh schema, signs an operator and an institution user in,
then times each page ``--runs`` times through the ASGI app in this process (no network: what the
server itself spends), and reports the median in milliseconds:

- ``live_json_ms``: ``/web/console/live.json``, which the dashboard fetches every 2 s;
- ``dashboard_ms``: ``/web/console``;
- ``search_sender_ms``: ``/web/console/messages?sender=...`` (newest first, 50 a page);
- ``search_reference_ms``: by sender message id and sender;
- ``search_state_ms``: ``?state=failed``;
- ``my_messages_ms``: an institution user's ``/web/messages`` (page 1);
- ``stats_page_ms``: ``/web/console/stats?month=2026-10`` (charts of a month's statistics).

    python bench/web.py [--messages 1000000] [--runs 11] [--keep]

The last line is one JSON object of these figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import pyotp  # noqa: E402
from benchdb import drop_schema, postgres_schema  # noqa: E402
from sqlalchemy import select  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402
from stats import INSTITUTIONS, TYPES, generate  # noqa: E402

from hub.envelope.rules import MessageTypePolicy  # noqa: E402
from hub.inbound.http import build_app  # noqa: E402
from hub.inbound.senders import Institution, SenderDirectory  # noqa: E402
from hub.runtime import build_runtime  # noqa: E402
from hub.settings import load_settings  # noqa: E402
from hub.store.db import make_engine, upgrade  # noqa: E402
from hub.store.models import Message  # noqa: E402
from hub.web.accounts import create_account  # noqa: E402

SCHEMA = "bench_web"
PASSWORD = "a benchmark password"


def directory() -> SenderDirectory:
    return SenderDirectory(
        {
            ident: Institution(
                id=ident,
                name=f"institution {ident}",
                applications=frozenset({"bench"}),
                message_types={name: MessageTypePolicy() for name in TYPES[ident]},
            )
            for ident in INSTITUTIONS
        },
        {},
    )


def signed_in(app, username: str, secret: str) -> TestClient:
    client = TestClient(app)
    form = client.get("/web/signin").text
    token = form.split('name="csrf" value="')[1].split('"')[0]
    answer = client.post(
        "/web/signin",
        data={"csrf": token, "username": username, "password": PASSWORD, "code": pyotp.TOTP(secret).now()},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    return client


def timed(client: TestClient, path: str, runs: int) -> float:
    client.get(path)  # warm: templates compiled, plans cached
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        answer = client.get(path)
        samples.append(time.perf_counter() - began)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
    return round(statistics.median(samples) * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    url, schema = postgres_schema(SCHEMA)
    folder = Path(tempfile.mkdtemp(prefix="bench-web-"))
    try:
        upgrade(make_engine(url))
        began = time.perf_counter()
        rows = generate(url, args.messages, args.months)
        print(f"loaded {rows} in {time.perf_counter() - began:.1f} s", flush=True)
        engine = make_engine(url)
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
        engine.dispose()
        settings = load_settings(folder, {"HUB_DATA_DIR": str(folder / "var"), "HUB_DATABASE_URL": url})
        runtime = build_runtime(settings, directory=directory())
        operator = create_account(runtime.sessions, "ops", PASSWORD, role="operator").totp_secret
        user = create_account(
            runtime.sessions, "user", PASSWORD, role="institution", institution_id=INSTITUTIONS[0]
        ).totp_secret
        with runtime.sessions() as session:
            reference = session.scalar(
                select(Message.sender_message_id).where(Message.institution_id == INSTITUTIONS[0]).limit(1)
            )
        app = build_app(runtime)
        ops, institution = signed_in(app, "ops", operator), signed_in(app, "user", user)
        figures = {
            "messages": rows["messages"],
            "live_json_ms": timed(ops, "/web/console/live.json", args.runs),
            "dashboard_ms": timed(ops, "/web/console", args.runs),
            "search_sender_ms": timed(ops, f"/web/console/messages?sender={INSTITUTIONS[1]}", args.runs),
            "search_reference_ms": timed(
                ops, f"/web/console/messages?sender={INSTITUTIONS[0]}&sender_message_id={reference}", args.runs
            ),
            "search_state_ms": timed(ops, "/web/console/messages?state=failed", args.runs),
            "my_messages_ms": timed(institution, "/web/messages", args.runs),
            "stats_page_ms": timed(ops, "/web/console/stats?month=2026-10", args.runs),
        }
        runtime.close()
    finally:
        if not args.keep:
            drop_schema(schema)
    for key, value in figures.items():
        print(f"{key:>22}: {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
