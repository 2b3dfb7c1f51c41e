"""Benchmark: submission to ``delivered`` at the sender, through the whole running hub.

On PostgreSQL + RabbitMQ, as an operator would run it, each in its own process:
``hub serve --workers 1`` (the REST door), ``hub relay``, ``hub worker routing``, ``hub worker
acks``, ``hub worker forward`` (``--single-process``: all four as ``hub run --no-http``), and
two simulated providers (``hub provider simulate``: they
acknowledge ``delivered`` as soon as a delivery arrives, and open nothing). This process is the
sender: it POSTs signed envelopes at a steady offered rate (each to a citizen who reads with
both providers) and listens on its acknowledgement queue ``sender.<id>.acks``; the latency of a
message is from the start of its POST to the first ``delivered`` acknowledgement (signed by
the hub) arriving in that queue.

Prints p50 / p95 / p99 of that latency, the accepted and delivered rates; its last line is one
JSON object with ``delivered_p50_ms``, ``delivered_p99_ms``, ``delivered_per_s`` and
``offered_per_s``. Target (issue 5): p99 under 500 ms at 200 messages/s.

    python bench/e2e.py [--rate 200] [--seconds 15]
"""

from __future__ import annotations

import argparse
import contextlib
import json
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
from benchdb import drop_schema, postgres_schema  # noqa: E402
from kombu import Connection, Consumer, Queue  # noqa: E402
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def prepare_config(folder: Path) -> Path:
    now = datetime.now(UTC)
    config = write_config(folder, {pid: key_pair_for(f"provider {pid}", None, now) for pid in PROVIDERS})
    ring = keyring()
    for org, pair in ring.pairs.items():
        write_key_pair(pair, config / "keys", org)
    senders = (ROOT / "config" / "senders.yaml").read_text()
    # the tax administration takes its acknowledgements by AMQP here (polling in the shipped file)
    senders = senders.replace("acknowledgements: {channel: polling}", "acknowledgements: {channel: amqp}", 1)
    (config / "senders.yaml").write_text(senders)
    return config


def envelopes(count: int) -> list[bytes]:
    ring = keyring()
    now = datetime.now(UTC)
    base = ex.example("citizen-letter", created=now - timedelta(minutes=1))
    tag = uuid.uuid4().hex[:8]
    out = []
    for i in range(count):
        header = replace(
            base.header,
            sender_message_id=f"E2E-{tag}-{i}",
            recipient=m.Recipient(ebox_type=m.EboxType.CITIZEN, id=ssin(i)),
        )
        out.append(ring.sign(replace(base, header=header)))
    return out


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
def processes(env: dict[str, str], config: Path, port: int, *, single: bool) -> Iterator[dict[str, int]]:
    hub = [str(Path(sys.executable).parent / "hub")]  # the console script of this environment
    started: list[subprocess.Popen[bytes]] = []
    names: list[str] = []
    logs = config.parent / "logs"
    logs.mkdir(exist_ok=True)

    def start(name: str, *args: str) -> None:
        out = (logs / f"{name}.log").open("wb")
        started.append(subprocess.Popen([*hub, *args], env=env, stdout=out, stderr=subprocess.STDOUT))
        names.append(name)

    try:
        if single:
            start("run", "run", "--no-http")
        else:  # one process per stage, as docker-compose.yml runs them
            for name, *command in (
                ("relay", "relay"),
                ("routing", "worker", "routing"),
                ("acks", "worker", "acks"),
                ("forward", "worker", "forward"),
            ):
                start(name, *command)
        start("serve", "serve", "--workers", "1")
        for pid in READ_WITH:
            keys = config / "keys"
            start(
                f"provider-{pid}",
                "provider",
                "simulate",
                pid,
                "--key",
                str(keys / f"{pid}.key.pem"),
                "--certificate",
                str(keys / f"{pid}.cert.pem"),
                "--open-probability",
                "0",
                "--reply-probability",
                "0",
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
    """Consumes ``sender.<id>.acks``: when each message's first ``delivered`` arrived."""

    def __init__(self, url: str, queue: str) -> None:
        self.url, self.queue = url, queue
        self.delivered: dict[str, float] = {}
        self.events = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with Connection(self.url) as connection:

            def on_message(body: object, message: object) -> None:
                headers = message.headers or {}  # type: ignore[attr-defined]
                self.events += 1
                if headers.get("event") == "delivered":
                    self.delivered.setdefault(str(headers.get("hub-message-id")), time.perf_counter())
                message.ack()  # type: ignore[attr-defined]

            with Consumer(connection, [Queue(self.queue, no_declare=True)], callbacks=[on_message], prefetch_count=500):
                while not self.stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        connection.drain_events(timeout=0.2)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc), 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pids_named(name: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == name:
                    found.append(int(entry.name))
    return found


def cpu_by_stage(started: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each hub process, of RabbitMQ, of PostgreSQL (all its processes) and of this one."""
    figures = {name: cpu_seconds(pid) for name, pid in started.items()}
    figures["rabbitmq"] = sum(cpu_seconds(pid) for pid in pids_named("beam.smp"))
    figures["postgresql"] = sum(cpu_seconds(pid) for pid in pids_named("postgres"))
    figures["sender (this benchmark)"] = cpu_seconds(os.getpid())
    return figures


def purge(url: str, queues: list[str]) -> None:
    with Connection(url) as connection:
        channel = connection.channel()
        for queue in queues:
            with contextlib.suppress(Exception):
                channel.queue_purge(queue)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0, help="Envelopes offered per second.")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--clients", type=int, default=16, help="Concurrent HTTP clients.")
    parser.add_argument(
        "--single-process", action="store_true", help="The hub's stages in one process (hub run) instead of one each."
    )
    args = parser.parse_args()
    count = int(args.rate * args.seconds)
    folder = Path(tempfile.mkdtemp(prefix="hub-bench-e2e-"))
    url, schema = postgres_schema(f"hub_bench_e2e_{os.getpid()}")
    try:
        config = prepare_config(folder)
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
        upgrade(make_engine(url))
        fill_directory(url, count)
        with Connection(RABBITMQ) as connection:
            declare(connection, list(PROVIDERS), [SENDER])
        # a fresh start: what earlier runs left (their messages, retries, dead letters) would be worked on too
        purge(RABBITMQ, [spec.name for spec in queues(list(PROVIDERS), [SENDER, ex.SOCIAL, ex.INTEGRATOR])])
        data = envelopes(count)
        listener = Listener(RABBITMQ, f"sender.{SENDER}.acks")
        listener.thread.start()
        submitted: dict[str, float] = {}
        refused = 0
        statuses: Counter[int] = Counter()
        with processes(env, config, port, single=args.single_process) as started:
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
            cpu_before = cpu_by_stage(started)
            start = time.perf_counter()

            def post(index: int) -> None:
                nonlocal refused
                due = start + index / args.rate
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                began = time.perf_counter()
                answer = client.post("/v1/messages", content=data[index], headers={"Content-Type": "application/xml"})
                if answer.status_code != 201:
                    refused += 1
                    statuses[answer.status_code] += 1
                    return
                message_id = answer.headers.get("location", "").rsplit("/", 1)[-1] or _message_id(answer.content)
                submitted[message_id] = began

            with ThreadPoolExecutor(args.clients) as pool:
                list(pool.map(post, range(count)))
            offered_wall = time.perf_counter() - start
            deadline = time.perf_counter() + 60
            while len(set(submitted) & set(listener.delivered)) < len(submitted) and time.perf_counter() < deadline:
                time.sleep(0.1)
            wall = time.perf_counter() - start
            cpu_after = cpu_by_stage(started)
            client.close()
        listener.stop.set()
        listener.thread.join(5)
    finally:
        drop_schema(schema)
        if os.environ.get("HUB_BENCH_KEEP"):
            print(f"kept {folder} (logs/)")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    latencies = sorted((listener.delivered[m] - t0) * 1000 for m, t0 in submitted.items() if m in listener.delivered)
    if not latencies:
        raise SystemExit("no message reached the sender as delivered")
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
    figures = {
        "offered_per_s": round(count / offered_wall, 1),
        "accepted": len(submitted),
        "refused": refused,
        "delivered_at_sender": len(latencies),
        "delivered_per_s": round(len(latencies) / wall, 1),
        "delivered_p50_ms": round(quantiles[49], 1),
        "delivered_p95_ms": round(quantiles[94], 1),
        "delivered_p99_ms": round(quantiles[98], 1),
    }
    print("CPU milliseconds per message delivered, by process:")
    spent = {name: (cpu_after[name] - cpu_before[name]) * 1000 / len(latencies) for name in cpu_after}
    for name, ms in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<24} {ms:>7.2f}")
    print(f"  {'total':<24} {sum(spent.values()):>7.2f}  (this machine has {os.cpu_count()} cores)")
    figures["cpu_ms_per_message"] = round(sum(spent.values()), 2)
    if statuses:
        print("refused by status:", dict(statuses))
    for key, value in figures.items():
        print(f"{key:<22} {value:>10}")
    print(json.dumps(figures, sort_keys=True))


def _message_id(receipt: bytes) -> str:
    from lxml import etree

    root = etree.fromstring(receipt)
    return str(root.findtext("{urn:ebox-hub:acknowledgement:1}HubMessageId"))


if __name__ == "__main__":
    main()
