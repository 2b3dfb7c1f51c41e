"""The hub's Prometheus metrics, defined once, and how a process exposes them.

Names and labels are stable; labels take a few values each (a stage, an outcome, an error
code, a queue or exchange of the topology) and never a message id, a recipient's number or a
sender's message id:

    hub_messages_total{stage,outcome}        messages (or acknowledgements) each stage handled, by outcome
    hub_refusals_total{stage,code}           refusals by error code (accept: envelopes; acknowledge:
                                             providers' acknowledgements; deliver/forward: webhook receivers)
    hub_stage_seconds{stage}                 histogram: time to handle one message, or one batch, in a stage
    hub_retries_total{queue}                 a message set aside to be tried again (consume loop)
    hub_dead_letters_total{queue,code}       a message given up on, into hub.dead (consume loop)
    hub_outbox_published_total{exchange}     outbox rows the relay published, confirmed by the broker
    hub_queue_messages{queue}                messages ready in each queue of the topology (RabbitMQ, at scrape)
    hub_queue_consumers{queue}               consumers of each queue (idem)
    hub_broker_up                            1 when the broker answered the last queue-depth query (idem)

Stages and their outcomes:

    accept       accepted, repeat, refused                 every door (REST, batches, SOAP, AMQP)
    route        routed, paper, undeliverable, expired      routing decisions (refusals: dead letters of hub.routing)
    deliver      pushed, refused                            webhook pushes to providers (AMQP providers:
                                                            hub_outbox_published_total{exchange="hub.deliver"})
    acknowledge  moved, repeat, late, notice, refused       providers' acknowledgements
    forward      queued, polling; pushed, refused           events to senders: outbox rows for AMQP/webhook
                                                            senders (polling: read by the sender from the feed);
                                                            webhook pushes to senders
    expire       warned, reminded, expired                  the retention scheduler
    relay        (time only)                                relay rounds that published rows

Exposition: ``GET /metrics`` on the HTTP app (``hub serve``, ``hub run``), and
``--metrics-port`` / ``HUB_METRICS_PORT`` (``[metrics] port``) for the processes without one
(``hub worker ...``, ``hub relay``, ``hub lifecycle run``, ``hub run --no-http``).

``hub serve`` runs N uvicorn worker processes; each counts in its own memory, so with more than
one worker it sets ``PROMETHEUS_MULTIPROC_DIR`` to a fresh temporary folder before they start
(``multiprocess_dir``) and a scrape (answered by any one worker) adds up the files of all of
them (prometheus_client's multiprocess mode). Caveats of that mode: the process and garbage
collector metrics (``process_*``, ``python_gc_*``) are not shown; the folder grows with every
worker process that ever ran (a restarted worker leaves its files, whose counts stay in the
sums, as they should for counters); a folder set by the operator is emptied of its ``*.db``
files at start, as the mode requires. Queue depths are not counted by any process: they are
asked of RabbitMQ at scrape time (passive ``queue_declare``, short timeouts, cached for a few
seconds) and shown only on ``/metrics`` of the HTTP app; there are none for ``memory://``.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import functools
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hub.errors import Rejected

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
STAGES = ("accept", "route", "deliver", "acknowledge", "forward", "expire", "relay")
OUTCOMES: dict[str, tuple[str, ...]] = {
    "accept": ("accepted", "repeat", "refused"),
    "route": ("routed", "paper", "undeliverable", "expired"),
    "deliver": ("pushed", "refused"),
    "acknowledge": ("moved", "repeat", "late", "notice", "refused"),
    "forward": ("queued", "polling", "pushed", "refused"),
    "expire": ("warned", "reminded", "expired"),
}
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

disable_created_metrics()  # no ``*_created`` series beside every counter and histogram
MESSAGES = Counter("hub_messages", "Messages each stage handled, by outcome.", ["stage", "outcome"])
REFUSALS = Counter("hub_refusals", "Refusals, by stage and error code.", ["stage", "code"])
STAGE_SECONDS = Histogram(
    "hub_stage_seconds", "Time to handle one message, or one batch, in a stage.", ["stage"], buckets=BUCKETS
)
RETRIES = Counter("hub_retries", "Messages set aside to be tried again, by queue.", ["queue"])
DEAD_LETTERS = Counter(
    "hub_dead_letters", "Messages given up on (into hub.dead), by queue and code.", ["queue", "code"]
)
OUTBOX_PUBLISHED = Counter(
    "hub_outbox_published", "Outbox rows published and confirmed by the broker, by exchange.", ["exchange"]
)

for _stage, _outcomes in OUTCOMES.items():  # every series there from the start: rate() needs no first event
    for _outcome in _outcomes:
        MESSAGES.labels(stage=_stage, outcome=_outcome)

P = ParamSpec("P")
R = TypeVar("R")


# -- counting ----------------------------------------------------------------------------------


def count(stage: str, outcome: str, n: int = 1) -> None:
    """``n`` messages of ``stage`` ended with ``outcome``."""
    if n > 0:
        MESSAGES.labels(stage=stage, outcome=outcome).inc(n)


def refused(stage: str, code: str) -> None:
    """One refusal in ``stage``: ``hub_messages_total{outcome="refused"}`` and ``hub_refusals_total{code}``."""
    MESSAGES.labels(stage=stage, outcome="refused").inc()
    REFUSALS.labels(stage=stage, code=code).inc()


def observe(stage: str, started: float) -> None:
    """A stage's message or batch took from ``started`` (``time.perf_counter()``) until now."""
    STAGE_SECONDS.labels(stage=stage).observe(time.perf_counter() - started)


def timed(stage: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: every call (returning or raising) is observed in ``hub_stage_seconds{stage}``."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                observe(stage, started)

        return wrapper

    return decorate


def counted(stage: str, handler: Callable[P, None], *, done: str) -> Callable[P, None]:
    """A consume handler, timed, counting ``done`` when it returns and its refusals (``Rejected``)."""

    @functools.wraps(handler)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        started = time.perf_counter()
        try:
            handler(*args, **kwargs)
        except Rejected as refusal:
            refused(stage, refusal.code.value)
            raise
        finally:
            observe(stage, started)
        count(stage, done)

    return wrapper


def retried(queue: str) -> None:
    RETRIES.labels(queue=queue).inc()


def dead(queue: str, code: str) -> None:
    DEAD_LETTERS.labels(queue=queue, code=code).inc()


def published(exchanges: Iterable[str]) -> None:
    """The relay published (and the broker confirmed) one row to each of ``exchanges``."""
    for exchange, n in collections.Counter(exchanges).items():
        OUTBOX_PUBLISHED.labels(exchange=exchange).inc(n)


# -- queue depths (asked of the broker at scrape time) -----------------------------------------


class QueueDepths:
    """Collector: messages ready and consumers of the hub's queues, by passive ``queue_declare`` on RabbitMQ.

    ``queues`` names the queues to ask about (called at each query: a provider added to the
    configuration shows up). Each query uses a connection of its own with ``timeout`` seconds
    to connect and to answer; its result (or that the broker did not answer) is kept ``cache_s``
    seconds, so frequent scrapes and several scrapers cost the broker one query per period.
    A queue that does not exist is left out.
    """

    def __init__(
        self,
        broker_url: str,
        queues: Callable[[], Iterable[str]],
        *,
        timeout: float = 2.0,
        cache_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.broker_url, self.queues, self.timeout, self.cache_s, self.clock = (
            broker_url,
            queues,
            timeout,
            cache_s,
            clock,
        )
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, tuple[int, int]] | None] | None = None

    def depths(self) -> dict[str, tuple[int, int]] | None:
        """Per queue (messages ready, consumers); None when the broker did not answer. Cached."""
        with self._lock:
            now = self.clock()
            if self._cached is None or now - self._cached[0] >= self.cache_s:
                self._cached = (now, self._query())
            return self._cached[1]

    def _query(self) -> dict[str, tuple[int, int]] | None:
        import amqp.exceptions  # type: ignore[import-untyped]
        from kombu import Connection

        from hub.broker.connection import CONNECTION_ERRORS

        found: dict[str, tuple[int, int]] = {}
        connection = Connection(
            self.broker_url,
            connect_timeout=self.timeout,
            heartbeat=0,
            transport_options={"read_timeout": self.timeout, "write_timeout": self.timeout},
        )
        try:
            connection.ensure_connection(max_retries=0)
            channel = None
            for name in dict.fromkeys(self.queues()):
                if channel is None:
                    channel = connection.channel()
                try:
                    _, ready, consumers = channel.queue_declare(queue=name, passive=True)
                except amqp.exceptions.NotFound:
                    channel = None  # the broker closed the channel: the next queue gets a new one
                    continue
                found[name] = (int(ready), int(consumers))
        except (*CONNECTION_ERRORS, amqp.exceptions.AMQPError):
            return None
        finally:
            with contextlib.suppress(Exception):  # the connection is already gone
                connection.release()
        return found

    def collect(self) -> Iterator[Metric]:
        depths = self.depths()
        up = GaugeMetricFamily("hub_broker_up", "1 when the broker answered the last queue-depth query.")
        up.add_metric([], 0 if depths is None else 1)
        ready = GaugeMetricFamily("hub_queue_messages", "Messages ready in the queue (RabbitMQ).", labels=["queue"])
        consumers = GaugeMetricFamily("hub_queue_consumers", "Consumers of the queue (RabbitMQ).", labels=["queue"])
        for name, (messages, takers) in sorted((depths or {}).items()):
            ready.add_metric([name], messages)
            consumers.add_metric([name], takers)
        yield up
        yield ready
        yield consumers


def hub_queues(providers: Iterable[str], senders: Iterable[str]) -> list[str]:
    """Every queue of the topology (with retry queues and ``hub.dead``) for these providers and senders."""
    from hub.broker.topology import queues

    return [spec.name for spec in queues(providers, senders)]


# -- exposition --------------------------------------------------------------------------------


class _Process:
    """This process's own metrics (the default registry), as a collector of another registry."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def scrape_registry(*extra: Collector) -> CollectorRegistry:
    """What a scrape shows: this process's metrics (in multiprocess mode every worker's), then ``extra``."""
    registry = CollectorRegistry()
    if multiprocess_mode():
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_Process())
    for collector in extra:
        registry.register(collector)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The text exposition format (blocking: queue depths may ask the broker)."""
    return generate_latest(registry)


def multiprocess_dir(workers: int) -> Path | None:
    """Before N > 1 worker processes start: a fresh ``PROMETHEUS_MULTIPROC_DIR`` for them (None for one).

    The workers inherit the variable and count into files there; the folder is removed when
    this process exits. A folder the operator set is kept, emptied of old ``*.db`` files.
    """
    if workers <= 1:
        return None
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink(missing_ok=True)
        return folder
    folder = Path(tempfile.mkdtemp(prefix="hub-metrics-"))
    os.environ[MULTIPROC_ENV] = str(folder)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def start_server(port: int, host: str = "127.0.0.1") -> Any:
    """Serve ``/metrics`` of this process on ``host:port`` (a thread of its own); the server."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host)
    return server


def metrics_port_option(command: Callable[P, R]) -> Callable[P, R]:
    """``--metrics-port``: serve this process's metrics (default ``[metrics] port``, ``HUB_METRICS_PORT``; 0: off)."""
    import click

    def start(ctx: click.Context, _param: click.Parameter, value: int | None) -> None:
        from hub.errors import ConfigError
        from hub.settings import load_settings

        if ctx.resilient_parsing:
            return
        try:
            settings = load_settings()
        except ConfigError:  # the command loads the settings too, and says what is wrong with them
            settings = None
        host = settings.metrics_host if settings is not None else "127.0.0.1"
        if value is None:
            value = settings.metrics_port if settings is not None else 0
        if not value:
            return
        try:
            server = start_server(value, host)
        except OSError as exc:
            raise click.ClickException(f"cannot serve metrics on {host}:{value}: {exc}") from exc
        ctx.call_on_close(lambda: (server.shutdown(), server.server_close()))  # when the command ends
        click.echo(f"metrics on http://{host}:{value}/metrics", err=True)

    return click.option(
        "--metrics-port",
        type=click.IntRange(0, 65535),
        default=None,
        expose_value=False,
        callback=start,
        help="Serve Prometheus metrics on this port (default: [metrics] port, HUB_METRICS_PORT; 0: off).",
    )(command)


__all__ = [
    "DEAD_LETTERS",
    "MESSAGES",
    "OUTBOX_PUBLISHED",
    "REFUSALS",
    "RETRIES",
    "STAGE_SECONDS",
    "QueueDepths",
    "count",
    "counted",
    "dead",
    "exposition",
    "hub_queues",
    "metrics_port_option",
    "multiprocess_dir",
    "observe",
    "published",
    "refused",
    "retried",
    "scrape_registry",
    "start_server",
    "timed",
]
