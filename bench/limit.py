"""Benchmark: the LIMIT, what raw pika does on this machine with the hub's bytes, hops and durability.

The hub carries a message through RabbitMQ four times between the sender's POST and the
sender's acknowledgement: the routing stage takes it, publishes the envelope to each of the
recipient's providers (two here), each provider acknowledges, the acks stage takes the
acknowledgement and the forwarder publishes it to the sender's queue. This benchmark sends
the same bytes through the same hops with nothing else: no database, no XML, no signature.
(The hub sends an envelope above ``[broker] claim_check_bytes``, 256 KiB, by reference: the
provider fetches it over HTTP. Here every envelope goes through RabbitMQ, to both providers.)
It is the ceiling a hub on this machine could reach, and ``bench/e2e.py`` divides its own
figure by it (``ratio_to_limit``).

Each stage is its own OS process (multiprocessing, ``spawn``) with its own pika
``BlockingConnection``, as each hub stage is:

    producer (this process)  publishes each envelope to ``limit.route``
    router                   ``limit.route`` -> the same bytes to ``limit.provider.a`` and ``limit.provider.b``
    provider a, provider b   ``limit.provider.<x>`` -> an acknowledgement (2,500 bytes) to ``limit.acks``
    acks                     ``limit.acks`` -> ``limit.sender``
    sink                     ``limit.sender``: when the first acknowledgement of each message arrived

The durability is the hub's: every queue durable, of the kind the hub declares for that hop
(``hub.broker.topology``: classic with ``x-max-priority`` 9 for routing and providers,
quorum for acks and the sender's queue), every message persistent (``delivery_mode`` 2) and
published with publisher confirms, and a stage acks a message it consumed (prefetch 100)
only once the broker has confirmed what it published for it: at least once, as the hub.

Confirms, ``--confirms``:

``pipelined`` (the default, the limit): as the hub's relay, a stage publishes without waiting
and takes the broker's confirms as they come (often several at once), acking each consumed
message when all its publishes are confirmed; the producer keeps up to 200 unconfirmed. pika's
``BlockingChannel.basic_publish`` waits for each confirm, so this drives the channel it wraps
(pika's asynchronous ``Channel``) from the same ``BlockingConnection``.

``sync``: ``BlockingChannel.basic_publish`` as it is, one confirm awaited per publish. On two
cores that leaves the CPU partly idle, each stage waiting on the broker's disk writes in turn
(measured on two cores: 125-180 small envelopes a second, against 970-1,090 pipelined): a
figure of pika's blocking API, near what the hub itself reaches, so not the machine's limit.

Figures: ``limit_per_s``, messages whose first acknowledgement reached the sink per second of
wall time from the first publish to the last arrival; ``p50_ms`` / ``p99_ms``, from the start
of a message's publish to that arrival (the stages' clocks are all ``CLOCK_MONOTONIC``);
``cpu_ms_per_message``, the CPU of the producer, the five stage processes and RabbitMQ
(``beam.smp``) over the run, per message. With no ``--rate`` the producer publishes as fast
as the confirms come back: the limit; the latencies then include the queue that builds up
in front of the slowest stage.

The envelopes are those of ``bench/e2e.py`` (real signed citizen letters), in the size mix
of ``size_mix`` (``--mix realistic``) or all alike, about 2.4 KB (``--mix small``). The queues are
deleted before and after. The last line printed is one JSON object with ``limit_per_s``,
``p50_ms``, ``p99_ms`` and ``cpu_ms_per_message``.

    python bench/limit.py [--count 10000] [--mix realistic|small] [--rate N] [--confirms pipelined|sync]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import multiprocessing
import os
import random
import statistics
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pika
from procstat import cpu_seconds, pids_named

RABBITMQ = os.environ.get("HUB_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")

ROUTE = "limit.route"
PROVIDER_QUEUES = ("limit.provider.a", "limit.provider.b")
ACKS = "limit.acks"
SENDER = "limit.sender"
_CLASSIC = {"x-queue-type": "classic", "x-max-priority": 9}  # as hub.routing and provider.<id>
_QUORUM = {"x-queue-type": "quorum"}  # as hub.acks and sender.<id>.acks
QUEUES: dict[str, dict[str, Any]] = {ROUTE: _CLASSIC, **dict.fromkeys(PROVIDER_QUEUES, _CLASSIC)}
QUEUES |= {ACKS: _QUORUM, SENDER: _QUORUM}
NORMAL = 4
"""The priority the hub gives a normal message on its priority queues (``hub.inbound.acceptance.PRIORITIES``)."""
PREFETCH = 100
ACK_BYTES = 2500
"""About the size of a provider's signed acknowledgement, and of the hub's to the sender."""
_FILLER = base64.b64encode(random.Random(0).randbytes(ACK_BYTES))

KB, MB = 1024, 1024 * 1024
MIX = (
    (0.70, 5 * KB, 20 * KB, "letters"),
    (0.20, 50 * KB, 300 * KB, "PDF documents"),
    (0.08, 512 * KB, 1 * MB, "large PDFs"),
    (0.02, 1536 * KB, 2 * MB, "scans"),
)


def size_mix(count: int, seed: int = 0) -> list[int]:
    """Sizes in bytes of ``count`` envelopes, as an institution's day mixes them; shuffled by ``seed``.

    70 % letters of 5-20 KB, 20 % PDF documents of 50-300 KB, 8 % large PDFs of 0.5-1 MB and 2 %
    scans of 1.5-2 MB (KB and MB of 1024), each uniform in its range: about 140 KB on average.
    The shares are exact (rounded), not drawn, so a short run has its large envelopes too.
    """
    chance = random.Random(seed)
    sizes: list[int] = []
    for index, (share, low, high, _) in enumerate(MIX):
        many = count - len(sizes) if index == len(MIX) - 1 else round(share * count)
        sizes += [chance.randint(low, high) for _ in range(max(0, min(many, count - len(sizes))))]
    chance.shuffle(sizes)
    return sizes


def parameters(url: str) -> pika.ConnectionParameters:
    """pika's parameters for a kombu-style URL (``amqp://user:password@host:port//``: ``//`` is the vhost ``/``)."""
    parts = urlsplit(url)
    return pika.ConnectionParameters(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5672,
        virtual_host=unquote(parts.path[1:]) or "/",
        credentials=pika.PlainCredentials(unquote(parts.username or "guest"), unquote(parts.password or "guest")),
    )


def persistent(message_id: str, priority: int | None = None) -> pika.BasicProperties:
    return pika.BasicProperties(delivery_mode=2, message_id=message_id, priority=priority)


def acknowledgement(message_id: str, provider: str) -> bytes:
    """A provider's acknowledgement of ``message_id``: a fixed blob of ``ACK_BYTES`` that names it."""
    head = f"<Acknowledgement provider='{provider}'><HubMessageId>{message_id}</HubMessageId><Signature>".encode()
    tail = b"</Signature></Acknowledgement>"
    return head + _FILLER[: ACK_BYTES - len(head) - len(tail)] + tail


def declare_fresh(url: str) -> None:
    """The benchmark's queues, empty: what an earlier run left is deleted first (with its arguments)."""
    delete_queues(url)
    with contextlib.closing(pika.BlockingConnection(parameters(url))) as connection:
        channel = connection.channel()
        for queue, arguments in QUEUES.items():
            channel.queue_declare(queue, durable=True, arguments=arguments)


def delete_queues(url: str) -> None:
    with contextlib.closing(pika.BlockingConnection(parameters(url))) as connection:
        channel = connection.channel()
        for queue in QUEUES:
            channel.queue_delete(queue)


# --- the stages (each in its own process) ---------------------------------------------------

Output = tuple[str, bytes, pika.BasicProperties]
"""A message a stage publishes: (queue, body, properties)."""
Transform = Callable[[pika.BasicProperties, bytes], list[Output]]
WINDOW = 2 * PREFETCH
"""The most unconfirmed publishes the producer keeps in flight (``pipelined``)."""


class Confirms:
    """Pipelined publisher confirms on one channel: which publishes the broker has not confirmed yet."""

    def __init__(self) -> None:
        self.sent = 0
        self.open: set[int] = set()

    def published(self) -> int:
        """Count a publish; its sequence number (the delivery tag its confirm will carry)."""
        self.sent += 1
        self.open.add(self.sent)
        return self.sent

    def on_confirm(self, frame: Any) -> None:
        method = frame.method
        if not isinstance(method, pika.spec.Basic.Ack):
            raise RuntimeError(f"the broker refused a publish: {method}")
        if method.multiple:
            self.open = {tag for tag in self.open if tag > method.delivery_tag}
        else:
            self.open.discard(method.delivery_tag)

    def lowest_open(self) -> float:
        return min(self.open) if self.open else math.inf


def _sync(connection: pika.BlockingConnection, queue: str, transform: Transform) -> Any:
    """Consume ``queue``; per message: each output published and confirmed, one at a time, then the ack."""
    channel = connection.channel()
    channel.confirm_delivery()  # each basic_publish returns once the broker has the message (on disk)
    channel.basic_qos(prefetch_count=PREFETCH)

    def on_message(_: Any, method: Any, properties: pika.BasicProperties, body: bytes) -> None:
        for target, out, out_properties in transform(properties, body):
            channel.basic_publish("", target, out, out_properties)
        channel.basic_ack(method.delivery_tag)

    channel.basic_consume(queue, on_message)
    return channel


def _pipelined(connection: pika.BlockingConnection, queue: str, transform: Transform) -> Any:
    """Consume ``queue``; publish each message's outputs at once, ack it when the broker confirmed them all."""
    blocking = connection.channel()
    channel = blocking._impl  # the asynchronous channel BlockingChannel wraps: confirms as callbacks
    confirms = Confirms()
    waiting: deque[tuple[int, int]] = deque()  # (the last publish for a consumed message, its delivery tag)

    def on_confirm(frame: Any) -> None:
        confirms.on_confirm(frame)
        lowest = confirms.lowest_open()
        while waiting and waiting[0][0] < lowest:
            channel.basic_ack(waiting.popleft()[1])

    def on_message(_: Any, method: Any, properties: pika.BasicProperties, body: bytes) -> None:
        last = 0
        for target, out, out_properties in transform(properties, body):
            channel.basic_publish("", target, out, out_properties)
            last = confirms.published()
        waiting.append((last, method.delivery_tag))

    channel.confirm_delivery(on_confirm)
    channel.basic_qos(prefetch_count=PREFETCH)
    channel.basic_consume(queue, on_message)
    return blocking


def _stage(url: str, queue: str, transform: Transform, confirms: str, stop: Any, ready: Any) -> None:
    """A stage's process: consume ``queue`` through ``transform`` until ``stop``."""
    connection = pika.BlockingConnection(parameters(url))
    channel = (_pipelined if confirms == "pipelined" else _sync)(connection, queue, transform)
    ready.put(queue)
    while not stop.is_set():
        connection.process_data_events(time_limit=0.1)
    with contextlib.suppress(Exception):
        channel.close()
        connection.close()


def to_providers(properties: pika.BasicProperties, body: bytes) -> list[Output]:
    """The routing stage: the envelope to both providers (the hub routes to two here)."""
    return [(queue, body, persistent(properties.message_id, NORMAL)) for queue in PROVIDER_QUEUES]


def acknowledge(provider: str) -> Transform:
    """A provider: an acknowledgement of each envelope that arrives (``delivered``, as ``hub provider simulate``)."""
    return lambda properties, _: [
        (ACKS, acknowledgement(properties.message_id, provider), persistent(properties.message_id))
    ]


def to_sender(properties: pika.BasicProperties, body: bytes) -> list[Output]:
    """The acks stage and the forwarder in one: each acknowledgement on to the sender's queue."""
    return [(SENDER, body, persistent(properties.message_id))]


def router(url: str, confirms: str, stop: Any, ready: Any) -> None:
    _stage(url, ROUTE, to_providers, confirms, stop, ready)


def provider(url: str, queue: str, confirms: str, stop: Any, ready: Any) -> None:
    _stage(url, queue, acknowledge(queue.rsplit(".", 1)[-1]), confirms, stop, ready)


def acks(url: str, confirms: str, stop: Any, ready: Any) -> None:
    _stage(url, ACKS, to_sender, confirms, stop, ready)


def sink(url: str, stop: Any, ready: Any, arrived: Any, results: Any) -> None:
    """The sender: when the first acknowledgement of each message arrived; sent to ``results`` at the end."""
    first: dict[str, float] = {}
    connection = pika.BlockingConnection(parameters(url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=5 * PREFETCH)

    def record(_: Any, method: Any, properties: pika.BasicProperties, __: bytes) -> None:
        if properties.message_id not in first:
            first[properties.message_id] = time.monotonic()
            arrived.value += 1
        channel.basic_ack(method.delivery_tag)

    channel.basic_consume(SENDER, record)
    ready.put(SENDER)
    while not stop.is_set():
        connection.process_data_events(time_limit=0.1)
    with contextlib.suppress(Exception):
        connection.close()
    results.put(first)


# --- the measurement ------------------------------------------------------------------------


def publish(
    url: str, bodies: list[bytes], rate: float | None, cap: float, confirms: str = "pipelined"
) -> tuple[dict[str, float], float]:
    """The producer: ``bodies`` to ``limit.route`` at ``rate`` a second (None: as fast as the confirms allow).

    ``pipelined``: up to ``WINDOW`` publishes awaiting their confirm; ``sync``: one. Returns when
    each message's publish began (by message id) and when the first began, once every publish
    is confirmed; stops publishing after ``cap`` seconds.
    """
    tag = uuid.uuid4().hex[:8]
    sent: dict[str, float] = {}
    with contextlib.closing(pika.BlockingConnection(parameters(url))) as connection:
        blocking = connection.channel()
        tracker = Confirms()
        if confirms == "pipelined":
            channel = blocking._impl
            channel.confirm_delivery(tracker.on_confirm)
        else:
            channel = blocking
            channel.confirm_delivery()
        start = time.monotonic()
        for index, body in enumerate(bodies):
            if rate:
                pause = start + index / rate - time.monotonic()
                if pause > 0:
                    connection.sleep(pause)  # confirms and heartbeats meanwhile
            while len(tracker.open) >= WINDOW:
                connection.process_data_events(time_limit=0.01)
            began = time.monotonic()
            if began - start > cap:
                break
            message_id = f"limit-{tag}-{index}"
            sent[message_id] = began
            channel.basic_publish("", ROUTE, body, persistent(message_id, NORMAL))
            if confirms == "pipelined":
                tracker.published()
                connection.process_data_events(time_limit=0)  # take the confirms that are in
        while tracker.open:
            connection.process_data_events(time_limit=0.01)
    return sent, start


def _cpu(stages: dict[str, int]) -> dict[str, float]:
    figures = {name: cpu_seconds(pid) for name, pid in stages.items()}
    figures["producer (this process)"] = cpu_seconds(os.getpid())
    figures["rabbitmq"] = sum(cpu_seconds(pid) for pid in pids_named("beam.smp"))
    return figures


def measure_limit(
    url: str,
    bodies: list[bytes],
    *,
    rate: float | None = None,
    seconds_cap: float = 600.0,
    confirms: str = "pipelined",
) -> dict:
    """Send ``bodies`` through the hub's hops with raw pika; the figures (see the module's docstring).

    ``rate``: messages offered a second (None: as fast as confirms allow, the limit).
    ``seconds_cap``: the most the run may take from its first publish; what arrived by then counts.
    ``confirms``: ``pipelined`` or ``sync`` (one publish awaited at a time).
    """
    if confirms not in ("pipelined", "sync"):
        raise ValueError(f"confirms must be pipelined or sync, not {confirms!r}")
    context = multiprocessing.get_context("spawn")
    stop, ready, results = context.Event(), context.Queue(), context.Queue()
    arrived = context.Value("l", 0, lock=False)  # written by the sink alone
    stages = {
        "router": context.Process(target=router, args=(url, confirms, stop, ready), daemon=True),
        **{
            f"provider-{queue[-1]}": context.Process(
                target=provider, args=(url, queue, confirms, stop, ready), daemon=True
            )
            for queue in PROVIDER_QUEUES
        },
        "acks": context.Process(target=acks, args=(url, confirms, stop, ready), daemon=True),
        "sink": context.Process(target=sink, args=(url, stop, ready, arrived, results), daemon=True),
    }
    declare_fresh(url)
    first: dict[str, float] = {}
    try:
        for process in stages.values():
            process.start()
        for _ in stages:
            ready.get(timeout=60)
        pids = {name: int(process.pid or 0) for name, process in stages.items()}
        cpu_before = _cpu(pids)
        sent, start = publish(url, bodies, rate, seconds_cap, confirms)
        while arrived.value < len(sent) and time.monotonic() - start < seconds_cap:
            if not all(process.is_alive() for process in stages.values()):
                raise RuntimeError("a stage of the limit benchmark died; see its traceback above")
            time.sleep(0.01)
        cpu_after = _cpu(pids)
        stop.set()
        first = results.get(timeout=60)
    finally:
        stop.set()
        for process in stages.values():
            process.join(10)
            if process.is_alive():
                process.kill()
        delete_queues(url)
    figures = _figures(sent, start, first, cpu_before, cpu_after, sum(len(body) for body in bodies[: len(sent)]))
    return {"confirms": confirms, **figures}


def _figures(
    sent: dict[str, float],
    start: float,
    first: dict[str, float],
    cpu_before: dict[str, float],
    cpu_after: dict[str, float],
    volume: int,
) -> dict:
    latencies = sorted((first[m] - began) * 1000 for m, began in sent.items() if m in first)
    if not latencies:
        raise RuntimeError("no acknowledgement reached the sink")
    wall = max(first[m] for m in sent if m in first) - start
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    spent = {name: (cpu_after[name] - cpu_before[name]) * 1000 / len(latencies) for name in cpu_after}
    return {
        "published": len(sent),
        "arrived": len(latencies),
        "wall_s": round(wall, 2),
        "limit_per_s": round(len(latencies) / wall, 1),
        "limit_mb_per_s": round(volume / MB / wall, 1),
        "p50_ms": round(quantiles[49], 1),
        "p95_ms": round(quantiles[94], 1),
        "p99_ms": round(quantiles[98], 1),
        "cpu_ms_per_message": round(sum(spent.values()), 2),
        "cpu_ms_by_process": {name: round(ms, 3) for name, ms in spent.items()},
    }


def report(figures: dict) -> None:
    """The figures as a table: CPU by process, then the rest."""
    print("CPU milliseconds per message, by process:")
    for name, ms in sorted(figures["cpu_ms_by_process"].items(), key=lambda kv: -kv[1]):
        print(f"  {name:<24} {ms:>7.2f}")
    print(f"  {'total':<24} {figures['cpu_ms_per_message']:>7.2f}  (this machine has {os.cpu_count()} cores)")
    for key, value in figures.items():
        if not isinstance(value, dict):
            print(f"{key:<22} {value:>10}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000, help="Envelopes to send.")
    parser.add_argument("--mix", choices=["realistic", "small"], default="realistic", help="Envelope sizes.")
    parser.add_argument("--rate", type=float, help="Envelopes offered per second (default: as fast as possible).")
    parser.add_argument("--seconds-cap", type=float, default=600.0, help="The most a run may take.")
    parser.add_argument("--seed", type=int, default=0, help="Shuffles the size mix.")
    parser.add_argument(
        "--confirms", choices=["pipelined", "sync"], default="pipelined", help="How publishes wait for the broker."
    )
    args = parser.parse_args()
    from e2e import envelopes  # the hub benchmark's envelopes: real, signed, in the same mix

    began = time.perf_counter()
    bodies = envelopes(args.count, args.mix, args.seed)
    print(
        f"prepared {len(bodies)} envelopes ({args.mix} mix, {sum(map(len, bodies)) / MB:.0f} MB) "
        f"in {time.perf_counter() - began:.1f} s"
    )
    figures = measure_limit(RABBITMQ, bodies, rate=args.rate, seconds_cap=args.seconds_cap, confirms=args.confirms)
    report(figures)
    print(json.dumps({key: value for key, value in figures.items() if not isinstance(value, dict)}, sort_keys=True))


if __name__ == "__main__":
    main()
