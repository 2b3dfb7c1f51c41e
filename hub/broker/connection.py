"""Broker connections: kombu with sane defaults, a visible retry policy, one error vocabulary.

``amqp://`` / ``pyamqp://`` URLs reach RabbitMQ (py-amqp); ``memory://`` is kombu's
in-process transport, the embedded default. Whatever the transport raises when the broker
cannot be reached leaves this package as ``hub.errors.Unavailable``; a queue that exists
with other arguments than the topology's is a ``ConfigError``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import amqp.exceptions  # type: ignore[import-untyped]
import kombu.exceptions
import kombu.transport.pyamqp
from kombu import Connection

from hub.errors import ConfigError, Unavailable


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Back-off between attempts: start, then ×factor and +step after each failure, up to max, plus jitter.

    With the default ``factor`` 1 it is kombu's ``Connection.ensure`` back-off (start, +step,
    up to max); with ``factor`` 2 and ``step`` 0 it doubles: the exponential back-off of
    message redelivery (``hub.broker.retry``).
    """

    attempts: int = 3
    """How many tries in all (1 = no retry)."""
    start: float = 0.2
    """Seconds to wait after the first failure."""
    step: float = 0.5
    """Added to the wait after each further failure."""
    max: float = 5.0
    """The wait never exceeds this (before jitter)."""
    jitter: float = 0.0
    """Up to this fraction of each wait is added at random (0.1 = +0..10%), to spread reconnect storms."""
    factor: float = 1.0
    """Each further wait is the previous one's base times this (1 = linear, 2 = doubling)."""

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts is at least 1 (1 = no retry), not {self.attempts}")
        if min(self.start, self.step, self.max, self.jitter) < 0 or self.factor < 1:
            raise ValueError("start, step, max and jitter are at least 0, and factor at least 1")

    def delay(self, failures: int) -> float:
        """The wait after ``failures`` consecutive failures (1 = the first)."""
        n = max(failures - 1, 0)
        try:
            grown = self.start * self.factor**n + self.step * n
        except OverflowError:  # factor ** n past the float range: long past max anyway
            grown = self.max
        base = min(grown, self.max)
        return base + (base * self.jitter * random.random() if self.jitter else 0.0)  # noqa: S311 - not crypto

    def delays(self) -> Iterator[float]:
        """The waits between the attempts: ``attempts - 1`` of them."""
        for failure in range(1, self.attempts):
            yield self.delay(failure)

    def kombu_options(self) -> dict[str, Any]:
        """The same policy in the words of ``Connection.ensure_connection`` (linear: ``factor`` 1 only)."""
        if self.factor != 1:
            raise ValueError("kombu's connection retry is linear: use factor 1 for a connection policy")
        return {
            "max_retries": max(self.attempts - 1, 0),
            "interval_start": self.start,
            "interval_step": self.step,
            "interval_max": self.max,
        }


DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True, kw_only=True)
class ConnectionOptions:
    heartbeat: float = 30.0
    """Seconds; RabbitMQ drops a peer silent for two of them. Long-running loops call ``heartbeat_check``."""
    connect_timeout: float = 5.0
    confirm_publish: bool = True
    """py-amqp: every ``basic_publish`` waits for the broker's confirm (the relay batches its own)."""


DEFAULT_OPTIONS = ConnectionOptions()


def is_amqp(connection: Connection) -> bool:
    """True for RabbitMQ over py-amqp (publisher confirms, quorum and priority queues)."""
    return isinstance(connection.transport, kombu.transport.pyamqp.Transport)


def connect(
    url: str,
    *,
    options: ConnectionOptions = DEFAULT_OPTIONS,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> Connection:
    """An open connection, or ``Unavailable`` once ``retry`` is exhausted. The caller closes it."""
    connection = Connection(url, heartbeat=options.heartbeat, connect_timeout=options.connect_timeout)
    if is_amqp(connection):
        connection.transport_options = {
            **(connection.transport_options or {}),
            "confirm_publish": options.confirm_publish,
        }
    try:
        with broker_errors(f"the broker at {connection.as_uri()}"):
            connection.ensure_connection(**retry.kombu_options())
    except BaseException:
        connection.release()
        raise
    return connection


CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    kombu.exceptions.OperationalError,
    amqp.exceptions.ConnectionError,
    amqp.exceptions.RecoverableConnectionError,
    ConnectionError,
    TimeoutError,
    OSError,
)


@contextmanager
def broker_errors(what: str = "the broker") -> Iterator[None]:
    """Translate transport errors: outage -> ``Unavailable``, incompatible queue -> ``ConfigError``."""
    try:
        yield
    except amqp.exceptions.PreconditionFailed as exc:
        raise ConfigError(
            f"{what}: the broker refused a declaration ({exc}); an existing queue or exchange has other "
            "arguments than the hub's topology: delete it (or migrate its messages) and declare again"
        ) from exc
    except amqp.exceptions.AccessRefused as exc:
        raise ConfigError(f"{what}: the broker refused the credentials or virtual host ({exc})") from exc
    except CONNECTION_ERRORS as exc:
        raise Unavailable(f"{what} cannot be reached ({exc.__class__.__name__}: {exc}); try again shortly") from exc
