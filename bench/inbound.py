"""Benchmark: accepted envelopes per second through the REST door, and latency.

Starts ``hub serve`` (uvicorn, 2 worker processes) on each back end, with the outbox relay
running beside it where the broker is RabbitMQ, and drives it from this process with
keep-alive HTTP/1.1 connections (asyncio, no client library in the way):

1. single POSTs, closed loop, 32 connections: the most the hub accepts per second;
2. single POSTs, open loop at a fixed rate (default 250/s): p50 / p99 latency;
3. batches (POST /v1/batches, 250 envelopes each, 8 connections): envelopes per second, and the
   CPU time ``hub serve`` (and the relay) spent per envelope meanwhile.

Every envelope is distinct (its own SenderMessageId) and signed in advance. Prints a table;
the last line is one JSON object; its headline keys (``single_per_s``, ``single_p99_ms``,
``batch_per_s``) are for PostgreSQL + RabbitMQ.

    python bench/inbound.py [--single 3000] [--rate 250] [--seconds 8] [--batches 16]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchdb import drop_schema, postgres_schema  # noqa: E402

from hub.envelope.builder import build_envelope, to_bytes  # noqa: E402
from hub.envelope.examples import FINANCE, example  # noqa: E402
from hub.signing.keys import KeyPair, generate_key, self_signed_certificate, write_key_pair  # noqa: E402
from hub.signing.signer import Signer  # noqa: E402

RABBITMQ = os.environ.get("HUB_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")

SENDERS = """
institutions:
  - id: "{org}"
    name: bench
    applications: [tax-on-web]
    certificates: [{{file: keys/{org}.cert.pem}}]
    message_types: {{GENERAL_INFORMATION: {{}}}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_envelopes(pair: KeyPair, count: int, tag: str) -> list[bytes]:
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    base = example("citizen-letter", created=now)
    signer = Signer(pair)
    return [
        to_bytes(
            signer.sign(build_envelope(replace(base, header=replace(base.header, sender_message_id=f"{tag}-{i}"))))
        )
        for i in range(count)
    ]


class Connection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    last_body = b""

    async def request(self, path: str, body: bytes, content_type: str, collect: bool = False) -> tuple[int, float]:
        """Status and latency; a connection the server closed counts as status 0 (a failure) and is reopened."""
        try:
            return await self._request(path, body, content_type, collect)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.writer = None
            return 0, 0.0

    async def _request(self, path: str, body: bytes, content_type: str, collect: bool) -> tuple[int, float]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        start = time.perf_counter()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        answer = await self.reader.readexactly(length)
        if collect:
            self.last_body = answer
        return status, time.perf_counter() - start


async def closed_loop(port: int, bodies: list[bytes], connections: int) -> tuple[float, list[float], int]:
    queue = list(reversed(bodies))
    latencies: list[float] = []
    failures = 0

    async def worker() -> None:
        nonlocal failures
        conn = Connection(port)
        while queue:
            status, latency = await conn.request("/v1/messages", queue.pop(), "application/xml")
            latencies.append(latency)
            failures += status not in (200, 201)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return len(bodies) / (time.perf_counter() - start), latencies, failures


async def open_loop(port: int, bodies: list[bytes], rate: float) -> tuple[list[float], int]:
    pool = [Connection(port) for _ in range(64)]
    free = asyncio.Queue[Connection]()
    for conn in pool:
        free.put_nowait(conn)
    latencies: list[float] = []
    failures = 0

    async def one(body: bytes) -> None:
        nonlocal failures
        conn = await free.get()
        try:
            status, latency = await conn.request("/v1/messages", body, "application/xml")
            latencies.append(latency)
            failures += status not in (200, 201)
        finally:
            free.put_nowait(conn)

    start = time.perf_counter()
    tasks = []
    for index, body in enumerate(bodies):
        delay = start + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(body)))
    await asyncio.gather(*tasks)
    return latencies, failures


async def batches(port: int, bodies: list[bytes], size: int, connections: int) -> tuple[float, int]:
    payloads = [
        json.dumps({"envelopes": [base64.b64encode(b).decode() for b in bodies[i : i + size]]}).encode()
        for i in range(0, len(bodies), size)
    ]
    queue = list(reversed(payloads))
    failures = 0

    async def worker() -> None:
        nonlocal failures
        conn = Connection(port)
        while queue:
            status, _ = await conn.request("/v1/batches", queue.pop(), "application/json", collect=True)
            failures += status != 207 or conn.last_body.count(b'"status":20') != size

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return len(bodies) / (time.perf_counter() - start), failures


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds so far of ``pids`` and their children alive now (Linux /proc; 0 elsewhere)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return 0.0
    parents: dict[int, int] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    family, todo = set(), list(pids)
    while todo:
        pid = todo.pop()
        family.add(pid)
        todo += [child for child, parent in parents.items() if parent == pid and child not in family]
    total = 0
    for pid in family:
        try:
            fields = (proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"hub serve exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("hub serve did not become ready")


def run_backend(
    name: str, database_url: str, broker_url: str, args: argparse.Namespace, pair: KeyPair, folder: Path
) -> dict[str, float]:
    port = free_port()
    env = {
        **os.environ,
        "HUB_CONFIG_DIR": str(folder / "config"),
        "HUB_DATA_DIR": str(folder / f"var-{name}"),
        "HUB_DATABASE_URL": database_url,
        "HUB_BROKER_URL": broker_url,
        "HUB_HTTP_PORT": str(port),
        "HUB_LIMITS_MAX_BATCH_BYTES": str(256 * 1024 * 1024),
    }
    hub = shutil.which("hub") or str(Path(sys.executable).parent / "hub")
    log = (folder / f"serve-{name}.log").open("wb")
    server = subprocess.Popen([hub, "serve", "--workers", "2"], env=env, stdout=log, stderr=log)
    relay = None
    try:
        wait_ready(port, server)
        if broker_url.startswith("amqp"):
            subprocess.run([hub, "broker", "declare"], env=env, check=True, capture_output=True)
            relay = subprocess.Popen([hub, "relay"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tag = name.replace("+", "-")
        single = make_envelopes(pair, args.single, f"{tag}-s")
        paced = make_envelopes(pair, int(args.rate * args.seconds), f"{tag}-p")
        batched = make_envelopes(pair, args.batches * 250, f"{tag}-b")
        per_s, lat_max, fail_a = asyncio.run(closed_loop(port, single, 32)) if single else (0.0, [0.0], 0)
        lat_rate, fail_b = asyncio.run(open_loop(port, paced, args.rate)) if paced else ([0.0], 0)
        hub_cpu, relay_cpu = cpu_seconds([server.pid]), cpu_seconds([relay.pid] if relay else [])
        batch_per_s, fail_c = asyncio.run(batches(port, batched, 250, 8)) if batched else (0.0, 0)
        hub_cpu, relay_cpu = cpu_seconds([server.pid]) - hub_cpu, cpu_seconds([relay.pid] if relay else []) - relay_cpu
        figures = {
            "single_per_s": round(per_s),
            "single_max_p50_ms": round(percentile(lat_max, 0.5), 1),
            "single_max_p99_ms": round(percentile(lat_max, 0.99), 1),
            "paced_rate": args.rate,
            "single_p50_ms": round(percentile(lat_rate, 0.5), 1),
            "single_p99_ms": round(percentile(lat_rate, 0.99), 1),
            "batch_per_s": round(batch_per_s),
            # CPU the hub's processes spent per envelope during the batches: steadier than the rate
            # on a machine that is busy with other work.
            "batch_hub_cpu_ms": round(1000 * hub_cpu / max(1, len(batched)), 3),
            "batch_relay_cpu_ms": round(1000 * relay_cpu / max(1, len(batched)), 3),
            "failures": fail_a + fail_b + fail_c,
        }
        print(
            f"{name:<22} single {figures['single_per_s']:>6}/s (p50 {figures['single_max_p50_ms']} ms, "
            f"p99 {figures['single_max_p99_ms']} ms at 32 connections) | at {args.rate:g}/s: "
            f"p50 {figures['single_p50_ms']} ms, p99 {figures['single_p99_ms']} ms | "
            f"batches {figures['batch_per_s']}/s (CPU per envelope: hub {figures['batch_hub_cpu_ms']} ms, "
            f"relay {figures['batch_relay_cpu_ms']} ms) | failures {figures['failures']}"
        )
        if figures["failures"]:
            raise SystemExit(f"{name}: {figures['failures']} requests were not accepted; the figures would be false")
        return figures
    finally:
        for process in (relay, server):
            if process is not None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=250)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--backend", choices=["all", "sqlite", "postgresql"], default="all")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="hub-bench-"))
    (folder / "config").mkdir()
    key = generate_key("ec")
    pair = KeyPair(key, self_signed_certificate(key, "bench", not_before=datetime.now(UTC) - timedelta(days=1)))
    write_key_pair(pair, folder / "config" / "keys", FINANCE)
    (folder / "config" / "senders.yaml").write_text(SENDERS.format(org=FINANCE))
    results: dict[str, dict[str, float]] = {}
    try:
        if args.backend in ("all", "sqlite"):
            results["sqlite_memory"] = run_backend(
                "sqlite+memory", f"sqlite:///{folder / 'hub.db'}", "memory://", args, pair, folder
            )
        if args.backend in ("all", "postgresql"):
            url, schema = postgres_schema(f"hub_bench_{os.getpid()}")
            try:
                results["postgresql_rabbitmq"] = run_backend("postgresql+rabbitmq", url, RABBITMQ, args, pair, folder)
            finally:
                drop_schema(schema)
    finally:
        if os.environ.get("HUB_BENCH_KEEP"):
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    headline = results.get("postgresql_rabbitmq") or next(iter(results.values()))
    summary = {key: headline[key] for key in ("single_per_s", "single_p99_ms", "batch_per_s")}
    for backend, figures in results.items():
        summary.update({f"{backend}_{key}": value for key, value in figures.items()})
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
