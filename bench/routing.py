"""Benchmark: routing decisions per second through ``RoutingWorker``, on PostgreSQL (and SQLite).

Given N accepted messages (citizen letters, each to its own recipient who reads with three
providers; accepted through ``Intake.submit_many`` as the doors do) and the rules of
``config/``, measures in one process:

1. ``route_per_s``: ``route()`` one message after the other (batches of one: load, parse
   the stored envelope, directory lookup, ``decide``, one transaction writing 3 deliveries,
   3 outbox rows, the event, the audit entry and the state);
2. ``route_many50_per_s``: the same in batches of 50, and the relay publishing the
   deliveries to RabbitMQ with confirms;
3. ``consume_<mode>_per_s``: end to end on RabbitMQ: the routing messages waiting in
   ``hub.routing`` consumed by ``RoutingWorker.run``, acked after commit. Modes: ``bN``, one
   consumer handing what the broker pushed, up to N at a time, to ``route_many``
   (``hub worker routing --batch N``, the default), ``bNxK`` with K such consumers; ``cN``, N consumer threads calling
   ``handle()`` per message, routed together by the group commit (``--batch 1 --consumers N``).

Each figure by the wall clock (``_per_s``) and per CPU second of this process
(``_per_cpu_s``; the database's and the broker's CPU excluded; one process runs Python on
one core at a time). The last line is one JSON object; its headline ``routed_per_s_core``
is the best of (3) on PostgreSQL + RabbitMQ by the wall clock.

    python bench/routing.py [--messages 3000] [--backend all|postgresql|sqlite] [--consume b100,b200,c1,c16]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchdb import drop_schema, postgres_schema  # noqa: E402
from sqlalchemy import text  # noqa: E402

from hub.broker.connection import connect  # noqa: E402
from hub.broker.relay import OutboxRelay  # noqa: E402
from hub.broker.topology import declare  # noqa: E402
from hub.envelope import model as m  # noqa: E402
from hub.envelope.identifiers import is_valid_ssin  # noqa: E402
from hub.routing.directory import Change, Directory  # noqa: E402
from hub.routing.recipients import RecipientKind  # noqa: E402
from hub.routing.worker import RoutingSource, RoutingWorker  # noqa: E402
from hub.store.db import make_engine, upgrade  # noqa: E402
from tests.kit import NOW, example, keyring  # noqa: E402
from tests.test_inbound_rest import make_hub  # noqa: E402

RABBITMQ = os.environ.get("HUB_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
PROVIDERS = ("myebox", "doccle", "irisbox")


def ssin(n: int) -> str:
    born = date(1950, 1, 1) + timedelta(days=n // 997)
    first = f"{born:%y%m%d}{n % 997 + 1:03d}"
    value = f"{first}{97 - int(first) % 97:02d}"
    assert is_valid_ssin(value), value
    return value


def envelopes(count: int, tag: str) -> list[bytes]:
    base = example("citizen-letter")
    ring = keyring()
    out = []
    for i in range(count):
        header = replace(
            base.header,
            sender_message_id=f"{tag}-{i}",
            recipient=m.Recipient(ebox_type=m.EboxType.CITIZEN, id=ssin(i)),
        )
        out.append(ring.sign(replace(base, header=header)))
    return out


def purge(url: str) -> None:
    with connect(url) as connection:
        channel = connection.channel()
        for queue in ("hub.routing", *(f"provider.{p}" for p in PROVIDERS)):
            channel.queue_purge(queue)


def prepare(folder: Path, database_url: str, data: list[bytes]) -> tuple[object, list[str]]:
    """A hub with the directory filled and ``data`` accepted; the hub and the message ids."""
    (folder / "config").mkdir(parents=True, exist_ok=True)
    for name in ("providers.yaml", "routing.yaml"):
        shutil.copy(ROOT / "config" / name, folder / "config" / name)
    runtime = make_hub(folder, database_url)
    directory = Directory(runtime.sessions, clock=lambda: NOW)
    at = NOW - timedelta(days=30)
    for start in range(0, len(data), 1000):
        changes = []
        for i in range(start, min(start + 1000, len(data))):
            changes.append(Change(op="activate", kind=RecipientKind.CITIZEN, id=ssin(i), at=at, provider="myebox"))
            changes += [Change(op="link", kind=RecipientKind.CITIZEN, id=ssin(i), at=at, provider=p) for p in PROVIDERS]
        directory.apply(changes)
    directory.refresh_statistics()  # as `hub recipients import` does: the steady state, not stale statistics
    ids = []
    for start in range(0, len(data), 250):
        ids += [r.message_id for r in runtime.intake.submit_many(data[start : start + 250], door="bench")]  # type: ignore[union-attr]
    return runtime, ids


def worker_of(runtime, folder: Path) -> RoutingWorker:  # type: ignore[no-untyped-def]
    directory = Directory(runtime.sessions, clock=lambda: NOW)
    return RoutingWorker(runtime.sessions, directory, RoutingSource(folder / "config"), clock=lambda: NOW)


def bench_route(runtime, folder: Path, ids: list[str], batch: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """``route_many`` in batches of ``batch`` (1: ``route`` one message after the other), one thread."""
    worker = worker_of(runtime, folder)
    for ident in ids[:50]:
        worker.route(ident)
    rest = ids[50:]
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, len(rest), batch):
        for decision in worker.route_many(rest[start : start + batch]):
            assert decision is not None and len(decision.deliveries) == 3, decision  # type: ignore[union-attr]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    tag = "route" if batch == 1 else f"route_many{batch}"
    return {f"{tag}_per_s": len(rest) / wall, f"{tag}_per_cpu_s": len(rest) / cpu}


def bench_relay(runtime, url: str) -> dict[str, float]:  # type: ignore[no-untyped-def]
    with OutboxRelay(runtime.sessions, url, batch=500, clock=lambda: NOW) as relay:
        start, total = time.perf_counter(), 0
        while published := relay.run_once():
            total += published
        return {"relayed_rows_per_s": total / (time.perf_counter() - start)}


def bench_consume(runtime, folder: Path, url: str, ids: list[str], mode: str) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """The routing messages waiting in hub.routing, consumed by ``RoutingWorker.run``.

    ``mode`` ``b<N>``: one consumer handing batches of up to N to ``route_many`` (``hub worker
    routing``'s default); ``c<N>``: N consumer threads, ``handle()`` per message, group commit.
    """
    worker = worker_of(runtime, folder)
    size, _, threads = mode[1:].partition("x")
    size = int(size)
    if mode.startswith("b"):
        kwargs = {"consumers": int(threads or 1), "batch_size": size}
    else:
        worker.linger = 0.002 if size > 1 else 0.0  # as `hub worker routing --batch 1` (--linger-ms 2)
        kwargs = {"consumers": size, "batch_size": 1, "prefetch": 10 if size > 1 else 100}
    stop = threading.Event()
    runner = threading.Thread(target=worker.run, args=(url, stop), kwargs=kwargs)
    engine = runtime.engine
    cpu, wall = time.process_time(), time.perf_counter()
    runner.start()
    with engine.connect() as connection:
        while True:
            left = connection.execute(text("SELECT count(*) FROM messages WHERE state = 'accepted'")).scalar()
            connection.commit()
            if not left:
                break
            time.sleep(0.02)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stop.set()
    runner.join(30)
    return {f"consume_{mode}_per_s": len(ids) / wall, f"consume_{mode}_per_cpu_s": len(ids) / cpu}


def fresh(name: str, database_url: str, broker_url: str | None, count: int, folder: Path):  # type: ignore[no-untyped-def]
    upgrade(make_engine(database_url))
    runtime, ids = prepare(folder / name, database_url, envelopes(count, name))
    if broker_url is not None:
        with connect(broker_url) as connection:
            declare(connection, PROVIDERS)
        purge(broker_url)
        with OutboxRelay(runtime.sessions, broker_url) as relay:  # the routing messages, into hub.routing
            while relay.run_once():
                pass
    return runtime, ids


def run(name: str, make_url, broker_url: str | None, count: int, folder: Path, modes: list[str]) -> dict[str, float]:  # type: ignore[no-untyped-def]
    results: dict[str, float] = {}
    for batch in (1, 50):
        with make_url() as url:
            runtime, ids = fresh(f"{name}-b{batch}", url, broker_url, count, folder)
            try:
                results.update(bench_route(runtime, folder / f"{name}-b{batch}", ids, batch))
                if broker_url is not None and batch == 50:
                    results.update(bench_relay(runtime, broker_url))
            finally:
                runtime.close()
    if broker_url is not None:
        for mode in modes:
            with make_url() as url:
                runtime, ids = fresh(f"{name}-{mode}", url, broker_url, count, folder)
                try:
                    results.update(bench_consume(runtime, folder / f"{name}-{mode}", broker_url, ids, mode))
                finally:
                    runtime.close()
                    purge(broker_url)
    return results


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    url, schema = postgres_schema(f"hub_bench_routing_{os.getpid()}_{uuid.uuid4().hex[:8]}")
    try:
        yield url
    finally:
        drop_schema(schema)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--backend", choices=["all", "postgresql", "sqlite"], default="all")
    parser.add_argument(
        "--consume",
        default="b100,b200,c1,c16",
        help="End-to-end modes (comma-separated): bN = one consumer, batches of up to N; cN = N threads, one by one.",
    )
    args = parser.parse_args()
    modes = [mode.strip() for mode in args.consume.split(",")]
    if any(not re.fullmatch(r"b[1-9][0-9]*(x[1-9][0-9]*)?|c[1-9][0-9]*", m) for m in modes):
        parser.error("--consume takes modes like b100, b100x2 (two consumers) or c16")
    folder = Path(tempfile.mkdtemp(prefix="hub-bench-routing-"))
    results: dict[str, dict[str, float]] = {}
    try:
        if args.backend in ("all", "sqlite"):
            counter = iter(range(100))

            @contextlib.contextmanager
            def sqlite() -> Iterator[str]:
                yield f"sqlite:///{folder / f'hub-{next(counter)}.db'}"

            results["sqlite"] = run("sqlite", sqlite, None, args.messages, folder, modes)
        if args.backend in ("all", "postgresql"):
            results["postgresql"] = run("postgresql", postgres, RABBITMQ, args.messages, folder, modes)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for backend, figures in results.items():
        for key, value in figures.items():
            print(f"{backend:<12} {key:<26} {value:>10.1f}")
    headline = results.get("postgresql") or next(iter(results.values()))
    best = max((v for k, v in headline.items() if k.startswith("consume") and k.endswith("_per_s")), default=None)
    summary = {"routed_per_s_core": round(best if best is not None else headline["route_per_s"], 1)}
    for backend, figures in results.items():
        summary.update({f"{backend}_{key}": round(value, 1) for key, value in figures.items()})
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
