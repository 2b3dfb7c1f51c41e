"""Benchmark: submission to ``delivered`` at the sender, through the whole running hub, against the machine's limit.

On PostgreSQL + RabbitMQ, as an operator would run it, each in its own process:
``hub serve --workers N`` (the REST door), ``hub relay``, ``hub worker routing``, ``hub worker
acks``, ``hub worker forward`` (``--single-process``: all four as ``hub run --no-http``), and
two simulated providers (``hub provider simulate``: they acknowledge ``delivered`` as soon as
a delivery arrives, and open nothing; an envelope above ``[broker] claim_check_bytes``, 256 KiB,
reaches them by reference, and they fetch it from the REST door with their API token, which
this benchmark writes into ``providers.yaml``). ``--processes N`` starts N of each (the REST
door as one ``hub serve --workers N``); the relay and the forwarder are singletons by design, one round at
a time under a PostgreSQL advisory lock, so of their N only one works at any moment (the CPU
by process shows how they shared the work).

This process is the sender: it POSTs signed envelopes at a steady offered rate (each to its
own citizen, who reads with both providers) from ``--clients`` threads and listens on its
acknowledgement queue ``sender.<id>.acks``; the latency of a message is from the start of its
POST to the first ``delivered`` acknowledgement (signed by the hub) arriving in that queue.
The listener reads both forms the forwarder sends: one ``Acknowledgement`` per AMQP message
(headers ``event`` and ``hub-message-id``) and batches (header ``items``; the body an
``Acknowledgements`` document whose ``Item`` elements carry ``Event`` and ``HubMessageId``;
``--ack-batch N`` asks the hub for batches of up to N). ``--submit-batch N`` sends the
envelopes as ``POST /v1/batches`` of N (each batch when its first envelope is due; the latency
of each envelope counts from the start of its batch's POST). The simulated providers take
what is waiting in their queue up to ``--provider-batch`` deliveries (default 100) and
acknowledge it under one signature (``ProviderClient.run_batches``, ``acknowledge_all``).

The envelopes: citizen letters signed by the tax administration. ``--mix realistic`` (the
default) adds a PDF document to each, padded with random bytes to reach a size drawn from
``limit.size_mix``: 70 % of 5-20 KB, 20 % of 50-300 KB, 8 % of 0.5-1 MB, 2 % of 1.5-2 MB
(about 140 KB on average); ``--mix small``: the letter alone, about 2.4 KB. They are signed
before the run in a process pool (one process per core); the time it took is printed.

How many: ``--count`` (default 10,000) when given; otherwise ``--rate`` x ``--seconds`` when
``--seconds`` is given; otherwise 10,000. ``--rates 50,100,200`` measures at each offered rate
in turn, each on a fresh hub (new schema, emptied queues), and draws delivered/s and the p50
and p99 latency against the offered rate (a PNG beside the JSON file in ``--out``).

Then, never at the same time as the hub, the LIMIT: ``limit.measure_limit`` sends the same
envelopes (the largest run's) through the same hops with raw pika, as fast as the confirms
allow (pipelined; ``--limit-confirms sync``: one awaited at a time; ``bench/limit.py`` says
how); ``ratio_to_limit`` is ``delivered_per_s / limit_per_s`` (``--no-limit``: skipped).

Figures, for each rate: ``offered_per_s`` (POSTs started a second), ``accepted_per_s`` (201
answers a second), ``delivered_per_s`` (messages delivered at the sender a second, from the
first POST to the last arrival: the same clock as ``limit_per_s``), ``delivered_steady_per_s``
(from the first arrival to the last: without the pipeline's fill time, which would count one
latency against a short run), ``delivered_p50_ms`` / ``_p95_ms`` / ``_p99_ms`` (``p99_ms`` is
the last again), ``cpu_ms_per_message`` (the hub's processes, RabbitMQ, PostgreSQL and the
sender, per message delivered), ``peak_rss_mb`` (the largest ``VmHWM`` of the hub's processes,
read just before they stop; each is printed). A rate is ``sustained`` when both the POSTs
(``offered_per_s``: the hub answered fast enough for ``--clients`` to keep the pace) and
``delivered_steady_per_s`` reach 95 % of it.

Where the time went: from the store's own timestamps (acceptance, the ``routed`` event, the
provider's ``delivered``, the hub applying it) and the arrival at the sender, the p50 / p99 of
each leg (``stages_ms`` in the JSON), so a slow tail can be put on a stage.

The last line printed is one JSON object: the run's figures with ``limit_per_s`` and
``ratio_to_limit``; with ``--rates``, those of the highest sustained rate (the lowest rate when
none was). The JSON file in ``--out`` (default: a new temporary folder) holds every rate's
figures and the limit's. Target (issue 5): p99 under 500 ms at 200 messages/s.

    python bench/e2e.py [--rate 200] [--count 10000 | --seconds 15] [--mix realistic|small]
    python bench/e2e.py --rates 50,100,200,400 --seconds 20 [--processes 2] [--out DIR] [--no-limit]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import httpx  # noqa: E402
from benchdb import POSTGRES, drop_schema, postgres_schema  # noqa: E402
from kombu import Connection, Consumer, Queue  # noqa: E402
from limit import MB, measure_limit, size_mix  # noqa: E402
from lxml import etree  # noqa: E402
from procstat import cpu_seconds, peak_rss_mb, pids_named, rss_mb, tree, tree_cpu_seconds  # noqa: E402
from routing import ssin  # noqa: E402 - the same recipients as the routing benchmark

from hub.broker.topology import declare, queues  # noqa: E402
from hub.demo import PROVIDERS, key_pair_for, write_config  # noqa: E402
from hub.envelope import examples as ex  # noqa: E402
from hub.envelope import model as m  # noqa: E402
from hub.routing.directory import Change, Directory  # noqa: E402
from hub.routing.recipients import RecipientKind  # noqa: E402
from hub.signing.keys import write_key_pair  # noqa: E402
from hub.store.db import make_engine, session_factory, upgrade  # noqa: E402
from tests.kit import keyring  # noqa: E402

RABBITMQ = os.environ.get("HUB_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
SENDER = ex.FINANCE
READ_WITH = ("myebox", "doccle")
ACK = "{urn:ebox-hub:acknowledgement:1}"
SINGLETONS = ("relay", "forward")
"""Hub processes that take one round at a time (a PostgreSQL advisory lock), however many run."""
ENVELOPE_BASE, BASE64_GROWTH = 2600, 4 / 3 * 77 / 76
"""A signed letter with a document of n bytes is about ``ENVELOPE_BASE + BASE64_GROWTH * n`` bytes (base64 lines)."""
PATIENCE = 30.0
"""Seconds without a new ``delivered`` after which the wait for the rest ends (they count as lost)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def prepare_config(folder: Path, ack_batch: int = 1) -> Path:
    now = datetime.now(UTC)
    config = write_config(folder, {pid: key_pair_for(f"provider {pid}", None, now) for pid in PROVIDERS})
    ring = keyring()
    for org, pair in ring.pairs.items():
        write_key_pair(pair, config / "keys", org)
    # each provider's API token: envelopes above [broker] claim_check_bytes travel by reference, fetched with it
    providers = (config / "providers.yaml").read_text()
    for pid in PROVIDERS:
        digest = hashlib.sha256(provider_token(pid).encode()).hexdigest()
        providers = providers.replace(f"  - id: {pid}\n", f"  - id: {pid}\n    api_token_sha256: [{digest}]\n", 1)
    (config / "providers.yaml").write_text(providers)
    senders = (ROOT / "config" / "senders.yaml").read_text()
    # the tax administration takes its acknowledgements by AMQP here (polling in the shipped file)
    channel = "{channel: amqp}" if ack_batch == 1 else f"{{channel: amqp, batch: {ack_batch}}}"
    senders = senders.replace("acknowledgements: {channel: polling}", f"acknowledgements: {channel}", 1)
    (config / "senders.yaml").write_text(senders)
    return config


def provider_token(provider: str) -> str:
    """The API token the simulated ``provider`` fetches claim-checked envelopes with."""
    return f"bench-e2e-{provider}"


def letter(tag: str, index: int, size: int | None, created: datetime) -> bytes:
    """Letter ``index`` to its own citizen, signed; with ``size``, a PDF document brings it to about that many bytes."""
    base = ex.example("citizen-letter", created=created)
    header = replace(
        base.header,
        sender_message_id=f"E2E-{tag}-{index}",
        recipient=m.Recipient(ebox_type=m.EboxType.CITIZEN, id=ssin(index)),
    )
    content = base.content
    if size is not None:
        pdf = ex.minimal_pdf(f"E2E {tag} {index}")
        # random bytes after the PDF's own: as incompressible as a real PDF's streams (the hub checks the %PDF- start)
        padded = pdf + os.urandom(max(0, int((size - ENVELOPE_BASE) / BASE64_GROWTH) - len(pdf)))
        content = replace(content, document=ex.attachment(f"letter-{index}.pdf", "application/pdf", padded))
    return keyring().sign(replace(base, header=header, content=content))


def envelopes(count: int, mix: str = "realistic", seed: int = 0) -> list[bytes]:
    """``count`` signed letters: ``realistic``, in the sizes of ``size_mix``; ``small``, the letter alone (~2.4 KB).

    Signed in a pool of one process per core, forked from this one so that it signs with this
    process's keys (``keyring()``, made here first), the keys ``prepare_config`` gives the hub.
    Call it before this process starts a thread (a fork copies no thread but may copy a held lock).
    """
    keyring()
    created = datetime.now(UTC) - timedelta(minutes=1)
    tag = uuid.uuid4().hex[:8]
    sizes: list[int | None] = list(size_mix(count, seed)) if mix == "realistic" else [None] * count
    jobs = [(tag, index, size, created) for index, size in enumerate(sizes)]
    with multiprocessing.get_context("fork").Pool(os.cpu_count() or 1) as pool:
        return pool.starmap(letter, jobs, chunksize=32)


def fill_directory(database_url: str, count: int) -> None:
    engine = make_engine(database_url)
    directory = Directory(session_factory(engine))
    at = datetime.now(UTC) - timedelta(days=30)
    for start in range(0, count, 1000):
        changes = []
        for i in range(start, min(start + 1000, count)):
            changes.append(Change(op="activate", kind=RecipientKind.CITIZEN, id=ssin(i), at=at, provider="myebox"))
            changes += [Change(op="link", kind=RecipientKind.CITIZEN, id=ssin(i), at=at, provider=p) for p in READ_WITH]
        directory.apply(changes)
    directory.refresh_statistics()  # as `hub recipients import` does
    engine.dispose()


@contextlib.contextmanager
def processes(
    env: dict[str, str], config: Path, port: int, *, single: bool, copies: int, provider_batch: int = 1
) -> Iterator[dict[str, int]]:
    """The hub's processes, ``copies`` of each (one ``hub serve --workers copies``): {name: pid} once it is ready."""
    hub = [str(Path(sys.executable).parent / "hub")]  # the console script of this environment
    started: list[subprocess.Popen[bytes]] = []
    names: list[str] = []
    logs = config.parent / "logs"
    logs.mkdir(exist_ok=True)

    def start(name: str, *args: str) -> None:
        out = (logs / f"{name}.log").open("wb")
        started.append(subprocess.Popen([*hub, *args], env=env, stdout=out, stderr=subprocess.STDOUT))
        names.append(name)

    def numbered(name: str, copy: int) -> str:
        return name if copies == 1 else f"{name}-{copy + 1}"

    try:
        for copy in range(copies):
            if single:
                start(numbered("run", copy), "run", "--no-http")
            else:  # one process per stage, as docker-compose.yml runs them
                for name, *command in (
                    ("relay", "relay"),
                    ("routing", "worker", "routing"),
                    ("acks", "worker", "acks"),
                    ("forward", "worker", "forward"),
                ):
                    start(numbered(name, copy), *command)
        start("serve", "serve", "--workers", str(copies))
        keys = config / "keys"
        for pid in READ_WITH:
            for copy in range(copies):
                start(
                    numbered(f"provider-{pid}", copy),
                    *("provider", "simulate", pid),
                    *("--key", str(keys / f"{pid}.key.pem"), "--certificate", str(keys / f"{pid}.cert.pem")),
                    *("--open-probability", "0", "--reply-probability", "0"),
                    *("--api-token", provider_token(pid), "--hub-url", f"http://127.0.0.1:{port}"),
                    *("--batch", str(provider_batch)),
                )
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline or any(p.poll() is not None for p in started):
                raise SystemExit(f"the hub did not come up; see {logs}")
            time.sleep(0.2)
        time.sleep(1.0)  # the workers declare their queues and start consuming
        yield dict(zip(names, (p.pid for p in started), strict=True))
    finally:
        for process in started:
            process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


class Listener:
    """Consumes ``sender.<id>.acks``: when each message's first ``delivered`` arrived (``time.perf_counter``)."""

    def __init__(self, url: str, queue: str) -> None:
        self.url, self.queue = url, queue
        self.delivered: dict[str, float] = {}
        self.events = 0
        self.batches = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def record(self, headers: dict, body: bytes | str, at: float) -> None:
        """One AMQP message: an ``Acknowledgement`` (headers ``event``, ``hub-message-id``) or a batch (``items``)."""
        if "items" in headers:  # an Acknowledgements document: Item elements, each with Event and HubMessageId
            self.batches += 1
            root = etree.fromstring(body.encode() if isinstance(body, str) else body)
            for item in root.iterchildren(ACK + "Item"):
                self.events += 1
                if item.findtext(ACK + "Event") == "delivered":
                    self.delivered.setdefault(str(item.findtext(ACK + "HubMessageId")), at)
            return
        self.events += 1
        if headers.get("event") == "delivered":
            self.delivered.setdefault(str(headers.get("hub-message-id")), at)

    def run(self) -> None:
        with Connection(self.url) as connection:

            def on_message(body: object, message: object) -> None:
                self.record(message.headers or {}, message.body, time.perf_counter())  # type: ignore[attr-defined]
                message.ack()  # type: ignore[attr-defined]

            with Consumer(connection, [Queue(self.queue, no_declare=True)], callbacks=[on_message], prefetch_count=500):
                while not self.stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        connection.drain_events(timeout=0.2)


def cpu_by_stage(started: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each hub process (with its children: uvicorn's workers), of RabbitMQ, of PostgreSQL
    (each of their processes once) and of this one (without its children, the hub's processes)."""
    figures = {name: tree_cpu_seconds(pid) for name, pid in started.items()}
    figures["rabbitmq"] = sum(cpu_seconds(pid) for pid in pids_named("beam.smp"))
    figures["postgresql"] = sum(cpu_seconds(pid) for pid in pids_named("postgres"))
    figures["sender (this benchmark)"] = cpu_seconds(os.getpid())
    return figures


def peak_memory(started: dict[str, int]) -> dict[str, float]:
    """The peak resident memory (MB) of each hub process and of its children (``serve/<pid>``: uvicorn's workers)."""
    peaks = {}
    for name, pid in started.items():
        for each in tree(pid):
            peak = peak_rss_mb(each)
            if peak is not None:
                peaks[name if each == pid else f"{name}/{each}"] = peak
    return peaks


class MemorySampler:
    """Samples the resident memory (``VmRSS``) of every hub process every ``every`` seconds while a run goes on.

    ``growth`` compares each process at the end of the run with itself once the run was a tenth
    of the way through (start-up and the first allocations done): a process whose memory stays
    flat over a long run grows by a few MB at most; a leak grows with the messages.
    """

    def __init__(self, started: dict[str, int], every: float = 2.0) -> None:
        self.started, self.every = started, every
        self.samples: list[dict[str, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.wait(self.every):
            sample = {}
            for name, pid in self.started.items():
                for each in tree(pid):
                    rss = rss_mb(each)
                    if rss is not None:
                        sample[name if each == pid else f"{name}/{each}"] = rss
            self.samples.append(sample)

    def growth(self) -> dict[str, tuple[float, float]]:
        """Each process's (MB a tenth of the way through, MB at the end)."""
        if len(self.samples) < 3:
            return {}
        early, last = self.samples[max(1, len(self.samples) // 10)], self.samples[-1]
        return {name: (early[name], last[name]) for name in last if name in early}


def purge(url: str, queues: list[str]) -> None:
    with Connection(url) as connection:
        channel = connection.channel()
        for queue in queues:
            with contextlib.suppress(Exception):
                channel.queue_purge(queue)


class Sender:
    """POSTs the envelopes at ``rate`` a second from ``clients`` threads; when each began and was answered."""

    def __init__(self, port: int, data: list[bytes], rate: float, clients: int, batch: int = 1) -> None:
        self.port, self.data, self.rate, self.clients, self.batch = port, data, rate, clients, batch
        self.submitted: dict[str, float] = {}
        """When the POST of each accepted message began, by hub message id."""
        self.began: list[float] = []
        self.answered: list[float] = []
        """When each 201 came back."""
        self.statuses: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.start = 0.0

    def run(self) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=120) as client:
            self.start = time.perf_counter()

            def post(index: int) -> None:
                pause = self.start + index / self.rate - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                began = time.perf_counter()
                self.began.append(began)
                try:
                    answer = client.post(
                        "/v1/messages", content=self.data[index], headers={"Content-Type": "application/xml"}
                    )
                except httpx.HTTPError as exc:
                    with self.lock:
                        self.statuses[type(exc).__name__] += 1
                    return
                if answer.status_code != 201:
                    with self.lock:
                        self.statuses[str(answer.status_code)] += 1
                    return
                message_id = answer.headers.get("location", "").rsplit("/", 1)[-1] or _message_id(answer.content)
                self.submitted[message_id] = began
                self.answered.append(time.perf_counter())

            def post_batch(first: int) -> None:
                """``batch`` envelopes in one POST /v1/batches, sent when the first of them is due."""
                pause = self.start + first / self.rate - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                chunk = self.data[first : first + self.batch]
                began = time.perf_counter()
                self.began += [began] * len(chunk)
                payload = {"envelopes": [base64.b64encode(envelope).decode() for envelope in chunk]}
                try:
                    answer = client.post("/v1/batches", json=payload)
                except httpx.HTTPError as exc:
                    with self.lock:
                        self.statuses[type(exc).__name__] += len(chunk)
                    return
                if answer.status_code not in (200, 207):
                    with self.lock:
                        self.statuses[str(answer.status_code)] += len(chunk)
                    return
                answered = time.perf_counter()
                for result in answer.json()["results"]:
                    if result["status"] != 201:
                        with self.lock:
                            self.statuses[str(result["status"])] += 1
                        continue
                    self.submitted[result["message_id"]] = began
                    self.answered.append(answered)

            with ThreadPoolExecutor(self.clients) as pool:
                if self.batch > 1:
                    list(pool.map(post_batch, range(0, len(self.data), self.batch)))
                else:
                    list(pool.map(post, range(len(self.data))))


def wait_delivered(listener: Listener, submitted: dict[str, float]) -> None:
    """Until every accepted message was delivered at the sender, or none more came for ``PATIENCE`` seconds."""
    seen, progress = -1, time.perf_counter()
    while (done := sum(1 for message in submitted if message in listener.delivered)) < len(submitted):
        if done != seen:
            seen, progress = done, time.perf_counter()
        elif time.perf_counter() - progress > PATIENCE:
            print(f"gave up waiting: {len(submitted) - done} accepted messages not delivered at the sender")
            return
        time.sleep(0.1)


def measure_hub(data: list[bytes], rate: float, args: argparse.Namespace) -> dict:
    """One run on a fresh hub (its own schema, emptied queues): ``data`` POSTed at ``rate`` a second; its figures."""
    folder = Path(tempfile.mkdtemp(prefix="hub-bench-e2e-"))
    url, schema = postgres_schema(f"hub_bench_e2e_{os.getpid()}")
    finished = False
    try:
        config = prepare_config(folder, args.ack_batch)
        port = free_port()
        env = {
            **os.environ,
            "HUB_CONFIG_DIR": str(config),
            "HUB_DATA_DIR": str(folder / "var"),
            "HUB_DATABASE_URL": url,
            "HUB_BROKER_URL": RABBITMQ,
            "HUB_HTTP_PORT": str(port),
            "PYTHONPATH": str(ROOT),
        }
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        fill_directory(url, len(data))
        with Connection(RABBITMQ) as connection:
            declare(connection, list(PROVIDERS), [SENDER])
        # a fresh start: what earlier runs left (their messages, retries, dead letters) would be worked on too
        purge(RABBITMQ, [spec.name for spec in queues(list(PROVIDERS), [SENDER, ex.SOCIAL, ex.INTEGRATOR])])
        listener = Listener(RABBITMQ, f"sender.{SENDER}.acks")
        listener.thread.start()
        sender = Sender(port, data, rate, args.clients, args.submit_batch)
        with processes(
            env, config, port, single=args.single_process, copies=args.processes, provider_batch=args.provider_batch
        ) as started:
            cpu_before, wal_before = cpu_by_stage(started), wal_position()
            sampler = MemorySampler(started)
            sampler.thread.start()
            sender.run()
            wait_delivered(listener, sender.submitted)
            cpu_after, wal_after = cpu_by_stage(started), wal_position()
            peaks = peak_memory(started)  # just before they stop
            sampler.stop.set()
            sampler.thread.join(5)
        listener.stop.set()
        listener.thread.join(5)
        footprint = store_footprint(url, wal_after - wal_before)
        stages = stage_latencies(url, listener.delivered)
        finished = True
    finally:
        drop_schema(schema)
        if os.environ.get("HUB_BENCH_KEEP") or not finished:  # a failed run keeps its processes' logs
            print(f"kept {folder} (logs/)")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    figures = figures_of(sender, listener, rate, cpu_before, cpu_after, peaks, data)
    if stages:
        print("where the time went (p50 / p99 ms; from the store's timestamps and the arrival at the sender):")
        for name, what in STAGES:
            if name in stages:
                print(f"  {name:<34} {stages[name]['p50_ms']:>8.1f} {stages[name]['p99_ms']:>8.1f}   ({what})")
        figures["stages_ms"] = stages
    growth = sampler.growth()
    if growth:
        print("resident memory (VmRSS), MB, a tenth of the way through -> at the end:")
        for name, (early, last) in sorted(growth.items()):
            print(f"  {name:<24} {early:>7.1f} -> {last:>7.1f}")
        figures["rss_growth_mb"] = round(max(last - early for early, last in growth.values()), 1)
    return figures | footprint


WALL_OFFSET = time.time() - time.perf_counter()
"""Turns the listener's ``perf_counter`` arrivals into wall-clock seconds, comparable with the store's times."""

STAGES = (
    ("accepted -> routed", "relay, hub.routing, the routing worker"),
    ("routed -> provider acknowledged", "relay, provider.<id>, the provider"),
    ("provider acknowledged -> applied", "hub.acks, the acks worker"),
    ("applied -> at the sender", "sequencer, forwarder, relay, sender.<id>.acks"),
)


def stage_latencies(url: str, arrivals: dict[str, float]) -> dict[str, dict[str, float]]:
    """Where each message's time went, from the store's own timestamps and the arrival at the sender.

    For each message and its first ``delivered``: acceptance (``messages.accepted_at``) to the
    ``routed`` event, to the provider's acknowledgement (its ``OccurredAt``), to the hub applying
    it (``provider_acks.received_at``), to the arrival in the sender's queue. One machine, one
    clock; p50 / p99 of each, in milliseconds.
    """
    from sqlalchemy import text

    query = text(
        """
        SELECT m.id, m.accepted_at, r.occurred_at AS routed, a.occurred_at AS acked, a.received_at AS applied
        FROM messages m
        JOIN events r ON r.message_id = m.id AND r.kind = 'routed'
        JOIN LATERAL (
            SELECT occurred_at, received_at FROM provider_acks p
            WHERE p.message_id = m.id AND p.event = 'delivered' ORDER BY received_at LIMIT 1
        ) a ON true
        """
    )
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(query).all()
    finally:
        engine.dispose()
    spans: dict[str, list[float]] = {name: [] for name, _ in STAGES}
    for row in rows:
        if row.id not in arrivals:
            continue
        arrived = arrivals[row.id] + WALL_OFFSET
        moments = [row.accepted_at, row.routed, row.acked, row.applied]
        seconds = [moment.timestamp() for moment in moments] + [arrived]
        for (name, _), start, end in zip(STAGES, seconds, seconds[1:], strict=False):
            spans[name].append((end - start) * 1000)
    figures = {}
    for name, values in spans.items():
        if len(values) >= 2:
            cuts = statistics.quantiles(values, n=100, method="inclusive")
            figures[name] = {"p50_ms": round(cuts[49], 1), "p99_ms": round(cuts[98], 1)}
    return figures


def wal_position() -> int:
    """PostgreSQL's current write-ahead log position, in bytes (the whole server: other work counts too)."""
    import psycopg

    with psycopg.connect(POSTGRES, autocommit=True) as connection:
        row = connection.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    return int(row[0]) if row else 0


def store_footprint(url: str, wal_bytes: int) -> dict[str, float]:
    """What each message cost the primary and the broker: WAL written, rows written, outbox rows published."""
    from sqlalchemy import text

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            messages = connection.execute(text("SELECT count(*) FROM messages")).scalar_one() or 1
            counts = {
                table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                for table in ("events", "audit", "outbox", "deliveries", "provider_acks")
            }
    finally:
        engine.dispose()
    rows = messages + sum(counts.values())
    return {
        "wal_kb_per_message": round(wal_bytes / 1024 / messages, 1),
        "rows_per_message": round(rows / messages, 1),
        "outbox_publishes_per_message": round(counts["outbox"] / messages, 2),
    }


def figures_of(
    sender: Sender,
    listener: Listener,
    rate: float,
    cpu_before: dict[str, float],
    cpu_after: dict[str, float],
    peaks: dict[str, float],
    data: list[bytes],
) -> dict:
    """A run's figures (printed: CPU by process, peak memory, the figures)."""
    start, count = sender.start, len(data)
    arrivals = {m: listener.delivered[m] for m in sender.submitted if m in listener.delivered}
    if not arrivals:
        raise SystemExit(f"no message reached the sender as delivered (refused: {dict(sender.statuses)})")
    latencies = sorted((arrivals[m] - began) * 1000 for m, began in sender.submitted.items() if m in arrivals)
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    first, last = min(arrivals.values()), max(arrivals.values())
    offered = (count - 1) / (max(sender.began) - start) if count > 1 else rate
    figures: dict = {
        "rate": rate,
        "count": count,
        "offered_per_s": round(min(offered, 10 * rate), 1),
        "accepted": len(sender.submitted),
        "accepted_per_s": round(len(sender.answered) / (max(sender.answered, default=start) - start or 1), 1),
        "refused": sum(sender.statuses.values()),
        "delivered_at_sender": len(latencies),
        "delivered_per_s": round(len(latencies) / (last - start), 1),
        "delivered_steady_per_s": round((len(latencies) - 1) / (last - first), 1) if last > first else None,
        "delivered_p50_ms": round(quantiles[49], 1),
        "delivered_p95_ms": round(quantiles[94], 1),
        "delivered_p99_ms": round(quantiles[98], 1),
        "p99_ms": round(quantiles[98], 1),
        "envelope_kb_mean": round(sum(map(len, data)) / count / 1024, 1),
        "ack_batches": listener.batches,
    }
    spent = {name: (cpu_after[name] - cpu_before[name]) * 1000 / len(latencies) for name in cpu_after}
    figures["cpu_ms_per_message"] = round(sum(spent.values()), 2)
    figures["cpu_ms_by_process"] = {name: round(ms, 3) for name, ms in spent.items()}
    figures["peak_rss_mb"] = round(max(peaks.values()), 1) if peaks else None
    figures["peak_rss_mb_by_process"] = {name: round(mb, 1) for name, mb in peaks.items()}
    steady = figures["delivered_steady_per_s"] or figures["delivered_per_s"]
    figures["sustained"] = figures["offered_per_s"] >= 0.95 * rate and steady >= 0.95 * rate
    if sender.statuses:
        figures["refused_by_status"] = dict(sender.statuses)
    return figures


def report(figures: dict) -> None:
    """A run's figures as tables: CPU by process, peak memory by process, the singletons, the rest."""
    print("CPU milliseconds per message delivered, by process:")
    for name, ms in sorted(figures["cpu_ms_by_process"].items(), key=lambda kv: -kv[1]):
        print(f"  {name:<24} {ms:>7.2f}")
    print(f"  {'total':<24} {figures['cpu_ms_per_message']:>7.2f}  (this machine has {os.cpu_count()} cores)")
    print("peak resident memory (VmHWM), MB, by hub process:")
    for name, mb in sorted(figures["peak_rss_mb_by_process"].items(), key=lambda kv: -kv[1]):
        print(f"  {name:<24} {mb:>7.1f}")
    for singleton in SINGLETONS:
        copies = {n: ms for n, ms in figures["cpu_ms_by_process"].items() if n.startswith(f"{singleton}-")}
        if copies:
            shares = ", ".join(f"{n} {ms:.2f}" for n, ms in copies.items())
            print(f"{singleton}: {len(copies)} started, one round at a time (advisory lock); CPU ms/message: {shares}")
    for key, value in figures.items():
        if not isinstance(value, dict):
            print(f"{key:<24} {value!s:>10}")


def draw(runs: list[dict], limit: dict | None, path: Path, title: str) -> None:
    """delivered/s (and POSTs started and accepted /s) and the p50 / p99 latency against the offered rate, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    offered = [run["rate"] for run in runs]
    figure, (rates, latency) = plt.subplots(2, 1, sharex=True, figsize=(8, 8))
    rates.plot(offered, offered, ":", color="grey", label="offered")
    rates.plot(offered, [run["offered_per_s"] for run in runs], "^:", label="POSTs started / s (the hub's pace)")
    rates.plot(offered, [run["accepted_per_s"] for run in runs], "s--", label="accepted / s")
    rates.plot(offered, [run["delivered_per_s"] for run in runs], "o-", label="delivered at the sender / s")
    if limit is not None:
        ceiling = limit["limit_per_s"]
        rates.axhline(ceiling, color="red", linestyle="--", label=f"limit, raw pika: {ceiling}/s")
    rates.set_ylabel("messages / s")
    rates.legend()
    rates.grid(alpha=0.3)
    latency.plot(offered, [run["delivered_p50_ms"] for run in runs], "o-", label="p50")
    latency.plot(offered, [run["delivered_p99_ms"] for run in runs], "o-", label="p99")
    latency.axhline(500, color="grey", linestyle=":", label="target: p99 500 ms")
    latency.set_yscale("log")
    latency.set_xlabel("offered messages / s")
    latency.set_ylabel("ms, POST to delivered at the sender")
    latency.legend()
    latency.grid(alpha=0.3, which="both")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def count_for(rate: float, args: argparse.Namespace) -> int:
    """``--count`` when given, else ``rate`` x ``--seconds`` when that is given, else 10,000."""
    if args.count is not None:
        return int(args.count)
    if args.seconds is not None:
        return max(1, int(rate * args.seconds))
    return 10_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0, help="Envelopes offered per second.")
    parser.add_argument("--rates", help="Offered rates to measure in turn, comma-separated (50,100,200): a chart.")
    parser.add_argument("--count", type=int, help="Envelopes per run (default 10,000, or --rate x --seconds).")
    parser.add_argument("--seconds", type=float, help="Run this long at each rate (when --count is not given).")
    parser.add_argument("--mix", choices=["realistic", "small"], default="realistic", help="Envelope sizes.")
    parser.add_argument("--seed", type=int, default=0, help="Shuffles the size mix.")
    parser.add_argument("--clients", type=int, default=16, help="Concurrent HTTP clients.")
    parser.add_argument("--processes", type=int, default=1, help="Processes of each hub stage.")
    parser.add_argument(
        "--single-process", action="store_true", help="The hub's stages in one process (hub run) instead of one each."
    )
    parser.add_argument("--ack-batch", type=int, default=1, help="The sender takes acknowledgements in batches of N.")
    parser.add_argument(
        "--submit-batch", type=int, default=1, help="POST /v1/batches of N envelopes (1: POST /v1/messages each)."
    )
    parser.add_argument(
        "--provider-batch", type=int, default=100, help="Simulated providers acknowledge up to N deliveries at once."
    )
    parser.add_argument("--no-limit", action="store_true", help="Skip the limit (raw pika) measurement.")
    parser.add_argument("--limit-cap", type=float, default=600.0, help="The most the limit run may take, seconds.")
    parser.add_argument(
        "--limit-confirms", choices=["pipelined", "sync"], default="pipelined", help="How the limit's publishes wait."
    )
    parser.add_argument("--out", type=Path, help="Folder for the JSON results and the chart (default: a new temp one).")
    args = parser.parse_args()
    rates = [float(rate) for rate in args.rates.split(",")] if args.rates else [args.rate]
    if any(rate <= 0 for rate in rates) or args.processes < 1:
        parser.error("rates and --processes must be positive")
    counts = [count_for(rate, args) for rate in rates]
    began = time.perf_counter()
    data = envelopes(max(counts), args.mix, args.seed)
    prepared = time.perf_counter() - began
    print(f"prepared {len(data)} envelopes ({args.mix} mix, {sum(map(len, data)) / MB:.0f} MB) in {prepared:.1f} s")
    runs = []
    for rate, count in zip(rates, counts, strict=True):
        print(f"--- offered {rate:g} messages/s, {count} envelopes, {args.processes} process(es) per stage ---")
        runs.append(measure_hub(data[:count], rate, args))
        report(runs[-1])
    limit = None
    if not args.no_limit:  # after the hub, never beside it: both would share the two cores
        print(f"--- the limit: raw pika, the same {len(data)} envelopes, {args.limit_confirms} confirms, flat out ---")
        limit = measure_limit(RABBITMQ, data, rate=None, seconds_cap=args.limit_cap, confirms=args.limit_confirms)
        for key, value in limit.items():
            if not isinstance(value, dict):
                print(f"limit {key:<18} {value!s:>10}")
    for run in runs:
        run["limit_per_s"] = limit["limit_per_s"] if limit else None
        run["limit_p50_ms"] = limit["p50_ms"] if limit else None
        run["limit_p99_ms"] = limit["p99_ms"] if limit else None
        run["limit_cpu_ms_per_message"] = limit["cpu_ms_per_message"] if limit else None
        run["ratio_to_limit"] = round(run["delivered_per_s"] / limit["limit_per_s"], 3) if limit else None
    sustained = [run for run in runs if run["sustained"]]
    headline = max(sustained, key=lambda run: run["rate"]) if sustained else runs[0]
    folder = args.out or Path(tempfile.mkdtemp(prefix="hub-bench-e2e-results-"))
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"e2e-{datetime.now():%Y%m%d-%H%M%S}"
    results = {"arguments": vars(args), "prepared_s": round(prepared, 1), "machine_cores": os.cpu_count()}
    results |= {"runs": runs, "limit": limit, "headline": headline}
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2, sort_keys=True, default=str))
    print(f"results: {stem.with_suffix('.json')}")
    if args.rates:
        title = f"ebox-hub end to end, {args.mix} mix, {args.processes} process(es) a stage, {os.cpu_count()} cores"
        draw(runs, limit, stem.with_suffix(".png"), title)
        print(f"chart:   {stem.with_suffix('.png')}")
    print(json.dumps({k: v for k, v in headline.items() if not isinstance(v, dict)}, sort_keys=True))


def _message_id(receipt: bytes) -> str:
    root = etree.fromstring(receipt)
    return str(root.findtext("{urn:ebox-hub:acknowledgement:1}HubMessageId"))


if __name__ == "__main__":
    main()
