"""Dead letters: list, show, replay and purge what ``hub.dead`` holds (``hub dlq``).

A dead letter is a message that exhausted its retries or was refused (``hub.broker.retry``
writes ``x-hub-reason``, ``x-hub-queue``, ``x-hub-attempts``, ``x-hub-dead-at`` and
``x-hub-dead-id``), or one RabbitMQ dead-lettered on its own (``x-death``: rejected
elsewhere, expired, over a length or delivery limit); both kinds are shown and replayed.

Ids: ``x-hub-dead-id`` (12 hex digits, given when the consume loop dead-lettered the
message), else a digest of the message id, the first death and the body, prefixed ``x``:
stable as long as the message stays in ``hub.dead``. ``show``, ``replay`` also take a
message id when exactly one dead letter has it.

Browsing without losing anything: the messages are taken with ``basic.get`` without ack
and held unacknowledged while the command looks at them; the one replayed is acked only
after its copy was confirmed in its queue; every other one is requeued when the command
ends (explicitly, and by the broker anyway if the command dies: unacked messages of a
closed channel go back). Side by side, a second command does not see the messages the
first one holds at that moment (a list may come out short), but nothing is lost and none
is handed to two replays. A browse takes at most as many messages as the queue held when
it began, so messages that come back during a ``replay --all`` are not replayed twice.
On RabbitMQ 4 a quorum queue has a default delivery limit (20): give ``hub.dead`` an
unlimited one (a policy with ``delivery-limit`` -1) before browsing it often there.

Bodies are never printed (they may hold personal data); ``show --body FILE`` writes one to
a file (mode 0600).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import amqp.exceptions  # type: ignore[import-untyped]
import click
import kombu.exceptions
from kombu import Queue
from kombu.message import Message

from hub.broker.connection import (
    DEFAULT_OPTIONS,
    DEFAULT_RETRY,
    ConnectionOptions,
    RetryPolicy,
    broker_errors,
    connect,
)
from hub.broker.retry import (
    ATTEMPTS,
    DEAD_AT,
    DEAD_ID,
    QUEUE,
    REASON,
    Copy,
    Republisher,
    Unroutable,
    replay_headers,
)
from hub.broker.topology import DEAD_QUEUE
from hub.errors import ConfigError, HubError, Unavailable

DEAD = DEAD_QUEUE.name
HUB_MESSAGE_ID_HEADERS = ("hub_message_id", "hub-message-id")


class NotFound(HubError):
    """No dead letter has that id (or message id)."""


class Ambiguous(HubError):
    """Several dead letters have that message id: name one by its id."""


class NotReplayable(HubError):
    """The dead letter does not say which queue it came from."""


# -- what a dead letter says -----------------------------------------------------------------


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return str(value)


def _deaths(headers: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """RabbitMQ's ``x-death`` records, most recent first."""
    deaths = headers.get("x-death")
    return [d for d in deaths if isinstance(d, Mapping)] if isinstance(deaths, list) else []


@dataclass(frozen=True)
class DeadLetter:
    """One message of ``hub.dead``: where it came from, why, when; its body is kept out of ``repr``."""

    id: str
    message_id: str | None
    queue: str | None
    """The queue it was consumed from (where a replay puts it back); None when unknown."""
    reason: str
    attempts: int | None
    dead_at: str | None
    """ISO 8601 (UTC): when it was dead-lettered (the first time, for a broker dead letter)."""
    headers: dict[str, Any]
    properties: dict[str, Any]
    content_type: str | None
    content_encoding: str | None
    body: bytes = field(repr=False)

    @property
    def body_size(self) -> int:
        return len(self.body)

    @property
    def body_sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    @property
    def hub_message_id(self) -> str | None:
        for name in HUB_MESSAGE_ID_HEADERS:
            if self.headers.get(name):
                return _text(self.headers[name])
        return None

    @classmethod
    def of(cls, message: Message) -> DeadLetter:
        headers = dict(message.headers or {})
        properties = dict(message.properties or {})
        body = message.body
        body = body.encode(message.content_encoding or "utf-8") if isinstance(body, str) else bytes(body)
        deaths = _deaths(headers)
        first = deaths[-1] if deaths else {}
        queue = _text(headers.get(QUEUE) or headers.get("x-first-death-queue") or first.get("queue"))
        if headers.get(REASON):
            reason = str(_text(headers[REASON]))
        elif headers.get("x-first-death-reason") or first.get("reason"):
            reason = f"broker: {_text(headers.get('x-first-death-reason') or first.get('reason'))}"
        else:
            reason = "unknown: published to hub.dead without a reason"
        dead_at = _text(headers.get(DEAD_AT) or first.get("time"))
        try:
            attempts: int | None = int(headers[ATTEMPTS]) if ATTEMPTS in headers else None
        except (TypeError, ValueError):
            attempts = None
        message_id = _text(properties.get("message_id"))
        ident = _text(headers.get(DEAD_ID))
        if not ident:
            digest = hashlib.sha256()
            for part in (message_id or "", queue or "", dead_at or "", reason):
                digest.update(part.encode() + b"\0")
            digest.update(body)
            ident = "x" + digest.hexdigest()[:11]
        return cls(
            id=ident,
            message_id=message_id,
            queue=queue,
            reason=reason,
            attempts=attempts,
            dead_at=dead_at,
            headers=headers,
            properties=properties,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            body=body,
        )

    def copy_for_replay(self) -> Copy:
        """The message as it was first sent: attempts reset, death records removed, ``x-hub-replays`` counted."""
        return Copy.of(
            self.body,
            replay_headers(self.headers),
            self.properties,
            content_type=self.content_type,
            content_encoding=self.content_encoding,
        )


# -- the queue ---------------------------------------------------------------------------------


class _Held:
    """Dead letters taken without ack on one channel; the ones not settled go back on exit."""

    def __init__(self, channel: Any, limit: int) -> None:
        self.queue = Queue(DEAD, no_declare=True)(channel)
        self.limit = limit
        self.taken: list[tuple[Message, DeadLetter]] = []
        self._settled: set[int] = set()

    def __iter__(self) -> Iterator[tuple[Message, DeadLetter]]:
        while len(self.taken) < self.limit:
            message = self.queue.get(no_ack=False)
            if message is None:
                return
            pair = (message, DeadLetter.of(message))
            self.taken.append(pair)
            yield pair

    def settle(self, message: Message) -> None:
        message.ack()
        self._settled.add(id(message))

    def release(self) -> None:
        for message, _ in self.taken:
            if id(message) not in self._settled:
                with contextlib.suppress(Exception):  # the channel is gone: the broker requeues it anyway
                    message.requeue()


@dataclass(frozen=True)
class ReplayReport:
    replayed: list[DeadLetter]
    skipped: list[tuple[DeadLetter, str]]
    """Dead letters left in ``hub.dead``, with why."""


class DeadLetters:
    """``hub.dead`` on one broker. Each call opens its own connection and closes it."""

    def __init__(
        self,
        url: str,
        *,
        options: ConnectionOptions = DEFAULT_OPTIONS,
        retry: RetryPolicy = DEFAULT_RETRY,
        confirm_timeout: float = 10.0,
    ) -> None:
        self.url, self.options, self.retry, self.confirm_timeout = url, options, retry, confirm_timeout

    @contextlib.contextmanager
    def _channel(self) -> Iterator[Any]:
        """A channel on a connection of its own; closing it requeues whatever it still holds unacked."""
        connection = connect(self.url, options=self.options, retry=self.retry)
        try:
            with broker_errors(f"reading {DEAD}"):
                channel = connection.channel()
                try:
                    yield channel
                finally:
                    with contextlib.suppress(Exception):  # closed by the broker already
                        channel.close()
        finally:
            with contextlib.suppress(Exception):  # the connection is already gone
                connection.release()

    @staticmethod
    def _ready(channel: Any) -> int:
        try:
            _, ready, _ = Queue(DEAD, no_declare=True)(channel).queue_declare(passive=True)
        except (kombu.exceptions.ChannelError, amqp.exceptions.NotFound) as exc:
            raise ConfigError(f"queue {DEAD} does not exist; declare the topology first (hub broker declare)") from exc
        return int(ready)

    @contextlib.contextmanager
    def _held(self) -> Iterator[_Held]:
        with self._channel() as channel:
            held = _Held(channel, self._ready(channel))
            try:
                yield held
            finally:
                held.release()

    def count(self) -> int:
        """How many dead letters are ready (not held by a command running now)."""
        with self._channel() as channel:
            return self._ready(channel)

    def list(self, *, queue: str | None = None, limit: int | None = None) -> list[DeadLetter]:
        """The dead letters in queue order (those of ``queue`` only; the first ``limit``)."""
        found: list[DeadLetter] = []
        with self._held() as held:
            for _, letter in held:
                if queue is None or letter.queue == queue:
                    found.append(letter)
                    if limit is not None and len(found) >= limit:
                        break
        return found

    def _find(self, held: _Held, ident: str) -> tuple[Message, DeadLetter]:
        by_message_id: list[tuple[Message, DeadLetter]] = []
        for message, letter in held:
            if letter.id == ident:
                return message, letter
            if letter.message_id == ident:
                by_message_id.append((message, letter))
        if len(by_message_id) == 1:
            return by_message_id[0]
        if by_message_id:
            ids = ", ".join(letter.id for _, letter in by_message_id)
            raise Ambiguous(f"{len(by_message_id)} dead letters have message id {ident!r}: {ids}; name one by its id")
        raise NotFound(f"no dead letter {ident!r} in {DEAD}")

    def get(self, ident: str) -> DeadLetter:
        """The dead letter with this id (or this message id, when only one has it); it stays in ``hub.dead``."""
        with self._held() as held:
            return self._find(held, ident)[1]

    def replay(self, ident: str) -> DeadLetter:
        """Put one dead letter back in its queue (confirmed), then remove it from ``hub.dead``."""
        with self._held() as held, Republisher(self.url, options=self.options, retry=self.retry) as publisher:
            message, letter = self._find(held, ident)
            self._replay(held, publisher, message, letter)
            return letter

    def replay_all(self, *, queue: str | None = None) -> ReplayReport:
        """Replay every dead letter (of ``queue`` only); those that cannot be replayed stay, with why."""
        replayed: list[DeadLetter] = []
        skipped: list[tuple[DeadLetter, str]] = []
        with self._held() as held, Republisher(self.url, options=self.options, retry=self.retry) as publisher:
            for message, letter in held:
                if queue is not None and letter.queue != queue:
                    continue
                try:
                    self._replay(held, publisher, message, letter)
                except (NotReplayable, ConfigError) as exc:
                    skipped.append((letter, str(exc)))
                else:
                    replayed.append(letter)
        return ReplayReport(replayed, skipped)

    def _replay(self, held: _Held, publisher: Republisher, message: Message, letter: DeadLetter) -> None:
        if not letter.queue:
            raise NotReplayable(f"dead letter {letter.id} does not say which queue it came from")
        publisher.publish(letter.copy_for_replay(), exchange="", routing_key=letter.queue)
        held.settle(message)

    def purge(self) -> int:
        """Remove every dead letter that is ready (not those a running command holds); how many were removed."""
        with self._channel() as channel:
            self._ready(channel)
            return int(Queue(DEAD, no_declare=True)(channel).purge() or 0)


# -- hub dlq -----------------------------------------------------------------------------------


def _dead_letters(url: str | None) -> DeadLetters:
    if url is None:
        from hub.settings import load_settings

        url = load_settings().broker_url
    if url.startswith("memory:"):
        click.echo("warning: memory:// is in-process: this command sees only its own process's queues", err=True)
    return DeadLetters(url)


def _cli_errors(command: Callable[..., None]) -> Callable[..., None]:
    import functools

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except Unroutable as refused:  # e.g. a replay to a queue that no longer exists
            raise click.ClickException(str(refused)) from refused
        except ConfigError as bad:
            raise click.UsageError(str(bad)) from bad
        except (Unavailable, NotFound, Ambiguous, NotReplayable) as failed:
            raise click.ClickException(str(failed)) from failed

    return wrapper


AUDITED_IDS = 1000
"""Most dead letter ids one audit entry lists (the counts are always there)."""


def _audited(action: str, detail: dict[str, Any]) -> None:
    """The operator's action in the audit trail (ids and counts: no body, no personal data)."""
    from hub.lifecycle.audit_cli import operator_audit

    operator_audit(action, detail)


URL_OPTION = click.option("--url", metavar="URL", help="Broker URL. Default: the settings' broker (HUB_BROKER_URL).")


def _cell(value: object, width: int) -> str:
    text = "-" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


@click.group("dlq")
def dlq_group() -> None:
    """Dead letters in hub.dead: list, show, replay, purge (bodies are never printed)."""


@dlq_group.command("list")
@click.option("--queue", metavar="QUEUE", help="Only the dead letters that came from QUEUE.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="At most N.")
@URL_OPTION
@_cli_errors
def dlq_list(queue: str | None, limit: int | None, url: str | None) -> None:
    """List dead letters: id, queue, attempts, when, message id, reason."""
    letters = _dead_letters(url).list(queue=queue, limit=limit)
    if not letters:
        click.echo(f"no dead letters in {DEAD}" + (f" from {queue}" if queue else ""))
        return
    click.echo(f"{'ID':<12}  {'QUEUE':<24}  {'TRIES':>5}  {'DEAD AT':<29}  {'MESSAGE ID':<24}  REASON")
    for letter in letters:
        click.echo(
            f"{letter.id:<12}  {_cell(letter.queue, 24):<24}  {_cell(letter.attempts, 5):>5}  "
            f"{_cell(letter.dead_at, 29):<29}  {_cell(letter.message_id, 24):<24}  {_cell(letter.reason, 120)}"
        )
    click.echo(f"{len(letters)} dead letter(s)")


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_shown(v)}" for k, v in value.items()) + "}"
    return str(_text(value))


@dlq_group.command("show")
@click.argument("ident", metavar="ID")
@click.option("--body", "body_file", type=click.Path(dir_okay=False, path_type=Path), help="Write the body to FILE.")
@URL_OPTION
@_cli_errors
def dlq_show(ident: str, body_file: Path | None, url: str | None) -> None:
    """Show one dead letter (by id, or by message id): headers, properties and body size, not the body."""
    letter = _dead_letters(url).get(ident)
    lines = [
        ("id", letter.id),
        ("message id", letter.message_id),
        ("hub message id", letter.hub_message_id),
        ("queue", letter.queue),
        ("reason", letter.reason),
        ("attempts", letter.attempts),
        ("dead at", letter.dead_at),
        ("content type", letter.content_type),
        ("body", f"{letter.body_size} bytes, sha256 {letter.body_sha256}"),
    ]
    for name, value in lines:
        click.echo(f"{name + ':':<16}{'-' if value is None else value}")
    click.echo("properties:")
    for name in ("priority", "correlation_id", "reply_to", "type", "app_id", "timestamp", "delivery_mode"):
        if letter.properties.get(name) is not None:
            click.echo(f"  {name}: {_shown(letter.properties[name])}")
    click.echo("headers:")
    for name in sorted(letter.headers):
        click.echo(f"  {name}: {_shown(letter.headers[name])}")
    if body_file is not None:
        descriptor = os.open(body_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(letter.body)
        click.echo(f"body written to {body_file} ({letter.body_size} bytes)")


@dlq_group.command("replay")
@click.argument("ident", metavar="ID", required=False)
@click.option("--all", "everything", is_flag=True, help="Replay every dead letter (with --queue: of that queue).")
@click.option("--queue", metavar="QUEUE", help="With --all: only the dead letters that came from QUEUE.")
@URL_OPTION
@_cli_errors
def dlq_replay(ident: str | None, everything: bool, queue: str | None, url: str | None) -> None:
    """Put dead letters back in the queue they came from (attempts reset), then remove them from hub.dead."""
    if (ident is None) == (not everything):
        raise click.UsageError("name one dead letter (ID) or --all, not both")
    if queue and not everything:
        raise click.UsageError("--queue goes with --all")
    dead_letters = _dead_letters(url)
    if ident is not None:
        letter = dead_letters.replay(ident)
        click.echo(f"replayed {letter.id} ({letter.message_id or 'no message id'}) to {letter.queue}")
        _audited("dlq-replay", {"replayed": [letter.id], "queues": [letter.queue], "kept": []})
        return
    report = dead_letters.replay_all(queue=queue)
    _audited(
        "dlq-replay",
        {
            "replayed": [letter.id for letter in report.replayed][:AUDITED_IDS],
            "replayed_count": len(report.replayed),
            "kept": [letter.id for letter, _ in report.skipped][:AUDITED_IDS],
            "kept_count": len(report.skipped),
            "queues": sorted({str(letter.queue) for letter in report.replayed}),
            "only_queue": queue,
        },
    )
    for letter in report.replayed:
        click.echo(f"replayed {letter.id} ({letter.message_id or 'no message id'}) to {letter.queue}")
    for letter, why in report.skipped:
        click.echo(f"kept {letter.id}: {why}", err=True)
    click.echo(f"replayed {len(report.replayed)}, kept {len(report.skipped)}")
    if report.skipped:
        sys.exit(1)


@dlq_group.command("purge")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@URL_OPTION
@_cli_errors
def dlq_purge(yes: bool, url: str | None) -> None:
    """Remove every dead letter from hub.dead (asks first)."""
    dead_letters = _dead_letters(url)
    waiting = dead_letters.count()
    if waiting == 0:
        click.echo(f"no dead letters in {DEAD}")
        return
    if not yes:
        click.confirm(f"Remove all {waiting} dead letter(s) from {DEAD}? They cannot be recovered", abort=True)
    removed = dead_letters.purge()
    click.echo(f"removed {removed} dead letter(s)")
    _audited("dlq-purge", {"removed": removed})
