"""The routing stage: accepted messages from ``hub.routing`` to the providers' queues.

For each routing message (``{"message_id": ...}``, published by the relay from acceptance's
outbox row) ``RoutingWorker.handle``:

1. loads the message; an unknown id is ``Rejected`` (MESSAGE_NOT_FOUND: dead-lettered);
2. does nothing when it is no longer ``accepted`` (already routed: the broker delivers at
   least once, routing takes effect once);
3. marks it ``expired`` (event and audit entry) and rejects the routing message
   (EXPIRY_OUT_OF_RANGE: dead-lettered, for the operators to see) when it expired before it
   could be routed; rejects it (MESSAGE_NOT_FOUND) when its content is gone otherwise;
4. takes the ``MessageFacts`` acceptance stored beside the envelope (``messages.routing_facts``;
   the envelope itself is not read: it may be megabytes; a message accepted before those were
   stored has its envelope parsed once more), looks the recipient up in the directory and calls the pure
   ``decide`` with the current providers and rules (``RoutingSource``);
5. writes the decision in one transaction (``hub.routing.deliveries``): deliveries, their
   outbox rows to ``hub.deliver``, the ``routed`` / ``undeliverable`` event, the audit entry,
   the message's new state. The relay publishes the outbox rows (held ones when due).

A database outage is ``Unavailable``: the routing message is requeued and comes again.

``RoutingSource`` keeps ``providers.yaml`` and ``routing.yaml`` loaded, re-reads them when
either file changes (checked at most every ``check_every`` seconds), and keeps the last good
version when the new one is wrong, logging the ``ConfigError`` (file:line: problem).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hub import metrics
from hub.broker.connection import RetryPolicy
from hub.broker.consumer import Incoming, Properties, consume, consume_batches
from hub.broker.retry import REDELIVERY
from hub.broker.topology import declare_at
from hub.envelope.reader import read_envelope
from hub.errors import ConfigError, ErrorCode, Rejected
from hub.groupcommit import GroupCommit
from hub.routing.deliveries import Plan, Routable, State, expiry_plan, plan, store
from hub.routing.directory import Directory
from hub.routing.providers import ProviderCatalog
from hub.routing.rules import Decision, MessageFacts, RuleSet, check, decide, load_routing
from hub.safexml import DEFAULT_LIMITS, ParseLimits, parse
from hub.store.db import unavailable_on_outage
from hub.store.models import Message

log = logging.getLogger("hub.routing")

ROUTING_QUEUE = "hub.routing"
ROUTED = {"deliver": "routed"}
"""``hub_messages_total{stage="route"}`` outcomes: a decision's outcome, ``deliver`` counted as ``routed``."""

Routing = tuple[ProviderCatalog, RuleSet]
_messages: Table = Message.__table__  # type: ignore[assignment]
_COLUMNS = (
    _messages.c.id,
    _messages.c.state,
    _messages.c.institution_id,
    _messages.c.submitter_id,
    _messages.c.message_type,
    _messages.c.priority,
    _messages.c.registered,
    _messages.c.expires_at,
    _messages.c.envelope.is_not(None).label("has_content"),  # without reading it: it may be megabytes
    _messages.c.routing_facts,
)


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- the rules, reloaded on change -------------------------------------------------------------


Signature = tuple[tuple[int, int, int] | None, ...]


class RoutingSource:
    """``providers.yaml`` + ``routing.yaml`` of ``config_dir``, re-read when they change.

    The first load must succeed (``ConfigError``: the hub refuses to start). Later, a change
    of either file (modification time, size or inode) is noticed by ``current()`` at most
    ``check_every`` seconds after it happened; the pair is re-read and, if good, replaces
    the one in use (``on_change`` is then called with it). A bad pair is logged once, with
    the file, the line and the problem, and the last good one stays in use. Thread-safe.
    """

    FILES = ("providers.yaml", "routing.yaml")

    def __init__(
        self,
        config_dir: str | Path,
        *,
        check_every: float = 2.0,
        on_change: Callable[[ProviderCatalog, RuleSet], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config_dir = Path(config_dir)
        self.check_every = check_every
        self.on_change = on_change
        self.monotonic = monotonic
        self._lock = threading.Lock()
        seen = self._signature()
        self._routing: Routing = load_routing(self.config_dir)
        self._seen = seen
        self._checked = monotonic()
        self.generation = 1
        """How many good versions were loaded (1: the one at start)."""
        self.last_error: ConfigError | None = None
        """Why the files on disk are not the ones in use (``None``: they are)."""
        self._report(self._routing)

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(self.config_dir / name for name in self.FILES)

    def _signature(self) -> Signature:
        marks: list[tuple[int, int, int] | None] = []
        for path in self.files:
            try:
                stat = path.stat()
            except OSError:
                marks.append(None)
            else:
                marks.append((stat.st_mtime_ns, stat.st_size, stat.st_ino))
        return tuple(marks)

    def current(self) -> Routing:
        """The providers and rules in use (re-read first if a check is due and the files changed)."""
        if self.monotonic() - self._checked >= self.check_every:
            self.refresh()
        return self._routing

    def refresh(self) -> bool:
        """Check the files now; True when a new good version was loaded."""
        with self._lock:
            self._checked = self.monotonic()
            seen = self._signature()
            if seen == self._seen:
                return False
            self._seen = seen
            try:
                routing = load_routing(self.config_dir)
            except ConfigError as bad:
                self.last_error = bad
                log.error("routing configuration not reloaded; the last good one stays in use: %s", bad)
                return False
            self._routing, self.last_error = routing, None
            self.generation += 1
        providers, rules = routing
        log.info(
            "routing configuration reloaded: %d rules, %d providers (%s)",
            len(rules.rules),
            len(providers.providers),
            ", ".join(providers.ids()),
        )
        self._report(routing)
        if self.on_change is not None:
            try:
                self.on_change(providers, rules)
            except Exception:  # the new rules are in use; what the callback does is its own business
                log.exception("routing configuration reloaded, but its on_change callback failed")
        return True

    @staticmethod
    def _report(routing: Routing) -> None:
        providers, rules = routing
        for problem in check(rules, providers):
            log.warning("routing configuration: %s", problem)


# --- the worker ----------------------------------------------------------------------------------


def message_id_of(body: bytes) -> str:
    """The message id a routing message carries (``{"message_id": "..."}``), else ``Rejected``."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        value = None
    ident = value.get("message_id") if isinstance(value, dict) else None
    if not isinstance(ident, str) or not ident or len(ident) > 36:
        raise Rejected(ErrorCode.SCHEMA_INVALID, 'a routing message is {"message_id": "<hub message id>"}')
    return ident


class RoutingWorker:
    """Routes accepted messages; ``handle`` is the ``consume`` handler of ``hub.routing``.

    ``source`` gives the providers and rules for each message (a ``RoutingSource``, or any
    callable returning the pair); ``clock`` judges consent, maintenance windows, effective
    dates and expiry. One per process, shared by its consume threads (``run(consumers=N)``).

    Group commit: ``route`` (and so ``handle``) may be called from several threads at once.
    While one caller routes a batch, the others queue their messages; when it is done, its
    callers return and one of the waiting ones routes every message queued meanwhile as the
    next batch (``route_many``: one query for the messages, one for their recipients, one
    transaction for all the writes). One consumer thread makes batches of one; more share
    the queries and the commit, which is what makes a routing worker fast (``bench/routing.py``).
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        directory: Directory,
        source: RoutingSource | Callable[[], Routing],
        *,
        clock: Callable[[], datetime] = utcnow,
        parse_limits: ParseLimits = DEFAULT_LIMITS,
        linger: float = 0.0,
    ) -> None:
        self.sessions = sessions
        self.linger = linger
        """Seconds a caller about to route a batch waits for more (worth it with several consumer threads)."""
        self.directory = directory
        self.routing: Callable[[], Routing] = source.current if isinstance(source, RoutingSource) else source
        self.clock = clock
        self.parse_limits = parse_limits
        self._group: GroupCommit[str, Decision | None] = GroupCommit(
            lambda ids: self.route_many(ids),
            linger=linger,  # late-bound: subclasses and tests may replace it
        )

    @metrics.timed("route")
    def handle(self, body: bytes, headers: dict[str, Any], properties: Properties) -> None:
        self.route(message_id_of(body))

    @metrics.timed("route")
    def handle_batch(self, batch: Sequence[Incoming]) -> list[BaseException | None]:
        """The ``consume_batches`` handler: route the batch's messages together (``route_many``).

        Per routing message: ``None`` (routed, or nothing to do) or its refusal. An outage
        raises ``Unavailable`` for the whole batch (nothing was written; each is retried).
        """
        outcomes: list[BaseException | None] = [None] * len(batch)
        ids: list[str] = []
        where: list[int] = []
        for index, incoming in enumerate(batch):
            try:
                ids.append(message_id_of(incoming.body))
            except Rejected as refused:
                outcomes[index] = refused
            else:
                where.append(index)
        if ids:
            for index, result in zip(where, self.route_many(ids), strict=True):
                if isinstance(result, Rejected):
                    outcomes[index] = result
        return outcomes

    def route(self, message_id: str) -> Decision | None:
        """Route one message: its decision, ``None`` when it was already routed (nothing done), or raise.

        ``Rejected``: it can never be routed (unknown, expired, content gone); ``Unavailable``:
        the database cannot be reached (nothing was written).
        """
        return self._group.submit(message_id)

    def route_many(self, message_ids: Sequence[str]) -> list[Decision | Rejected | None]:
        """Route a batch in one transaction: per message its decision, ``None`` (nothing to do) or refusal.

        Raises ``Unavailable`` (nothing written) when the database cannot be reached. When
        another worker routed one of them meanwhile, each is routed again on its own.
        """
        now = self.clock()
        providers, rules = self.routing()  # before the transaction: a reload may take a moment
        results: list[Decision | Rejected | None] = [None] * len(message_ids)
        with unavailable_on_outage(), self.sessions() as session:
            messages = self._load(session, set(message_ids))
            if session.get_bind().dialect.name != "postgresql":
                session.rollback()  # SQLite: write from a fresh snapshot (a stale one cannot take the write lock)
            plans: list[tuple[int, Plan]] = []
            todo: list[tuple[int, Routable, MessageFacts]] = []
            seen: set[str] = set()
            for index, message_id in enumerate(message_ids):
                if message_id in seen:
                    continue  # twice in one batch: the first routes it, the repeat has nothing to do
                seen.add(message_id)
                message = messages.get(message_id)
                if message is None:
                    results[index] = Rejected(
                        ErrorCode.MESSAGE_NOT_FOUND, f"no message {message_id} is stored; nothing to route"
                    )
                elif message.state != State.ACCEPTED:
                    log.debug("routing: message %s is %s already; nothing to do", message_id, message.state)
                elif message.expires_at is not None and message.expires_at <= now:
                    plans.append((index, expiry_plan(message, now)))
                    results[index] = Rejected(
                        ErrorCode.EXPIRY_OUT_OF_RANGE,
                        f"message {message_id} expired at {message.expires_at.isoformat()} before it could be "
                        "routed; it is marked expired",
                    )
                elif not message.has_content:
                    results[index] = Rejected(
                        ErrorCode.MESSAGE_NOT_FOUND,
                        f"the content of message {message_id} was removed before it could be routed",
                    )
                else:
                    try:
                        facts = self._facts(message)
                    except Rejected as unreadable:  # accepted once, so this is a bug or a damaged row
                        results[index] = unreadable
                    else:
                        todo.append((index, message, facts))
            if todo:
                recipients = self.directory.get_many((f.recipient_kind, f.recipient_id) for _, _, f in todo)
                for index, message, facts in todo:
                    recipient = recipients.get((facts.recipient_kind, facts.recipient_id))
                    decision = decide(facts, recipient, providers, rules, now)
                    plans.append((index, plan(message, decision, now)))
                    results[index] = decision
            if not plans:
                return results
            try:
                stored = store(session, [planned for _, planned in plans])
            except IntegrityError:
                stored = False
            if not stored:
                session.rollback()
                if len(plans) > 1:  # one of them was routed meanwhile: each on its own, to tell which
                    return [self.route_many([message_id])[0] for message_id in message_ids]
                log.debug("routing: message %s was routed meanwhile; nothing to do", plans[0][1].message_id)
                return [None] * len(message_ids)
            session.commit()
        for index, planned in plans:
            self._log(planned, results[index])
        return results

    @staticmethod
    def _log(planned: Plan, result: Decision | Rejected | None) -> None:
        if isinstance(result, Decision):
            metrics.count("route", ROUTED.get(result.outcome.value, result.outcome.value))
            log.info(
                "routed",
                extra={
                    "event": "routed",
                    "message_id": planned.message_id,
                    "outcome": result.outcome.value,
                    "rule": result.rule,
                    "providers": list(result.providers),
                },
            )
        else:
            metrics.count("route", "expired")
            log.warning(
                "routing: message %s expired before it could be routed; marked expired",
                planned.message_id,
                extra={"event": "expired", "message_id": planned.message_id},
            )

    def _facts(self, message: Routable) -> MessageFacts:
        """The message's routing facts: as acceptance stored them, else read from its envelope."""
        if message.routing_facts is not None:
            try:
                return MessageFacts.from_json(message.routing_facts)
            except (ValueError, KeyError, TypeError) as exc:
                raise Rejected(
                    ErrorCode.SCHEMA_INVALID, f"the stored routing facts of message {message.id} are unreadable: {exc}"
                ) from exc
        if message.envelope is None:
            raise Rejected(ErrorCode.MESSAGE_NOT_FOUND, f"the content of message {message.id} was removed")
        return MessageFacts.of(read_envelope(parse(message.envelope, limits=self.parse_limits)))

    @staticmethod
    def _load(session: Session, message_ids: set[str]) -> dict[str, Routable]:
        query = select(*_COLUMNS)
        if len(message_ids) == 1:
            query = query.where(_messages.c.id == next(iter(message_ids)))
        else:
            query = query.where(_messages.c.id.in_(sorted(message_ids)))
        connection = session.connection()
        found = {row.id: Routable(**row._asdict()) for row in connection.execute(query)}  # Core: cheaper than ORM
        legacy = sorted(m.id for m in found.values() if m.routing_facts is None and m.has_content)
        if legacy:  # accepted before acceptance stored the routing facts: read the envelope, as routing did
            envelopes = select(_messages.c.id, _messages.c.envelope).where(_messages.c.id.in_(legacy))
            for row in connection.execute(envelopes):
                if row.envelope is not None:
                    found[row.id] = dataclasses.replace(found[row.id], envelope=bytes(row.envelope))
        return found

    def run(
        self,
        broker_url: str,
        stop: threading.Event,
        *,
        prefetch: int | None = None,
        consumers: int = 1,
        batch_size: int = 100,
        backoff: RetryPolicy = REDELIVERY,
    ) -> None:
        """Consume ``hub.routing`` until ``stop`` is set.

        ``batch_size`` > 1: each consumer hands what the broker pushed (up to that many) to
        ``route_many`` at once (``handle_batch``); 1: message by message (``handle``, with
        the group commit across ``consumers`` threads). Each thread has its own connection.
        ``backoff``: how a message that failed for a transient reason is retried (``[retry]``).
        """

        def loop() -> None:
            if batch_size > 1:
                consume_batches(
                    broker_url,
                    ROUTING_QUEUE,
                    self.handle_batch,
                    batch_size=batch_size,
                    prefetch=prefetch,
                    stop=stop,
                    backoff=backoff,
                )
            else:
                consume(broker_url, ROUTING_QUEUE, self.handle, prefetch=prefetch or 100, stop=stop, backoff=backoff)

        if consumers <= 1:
            loop()
            return
        failures: list[BaseException] = []

        def guarded() -> None:
            try:
                loop()
            except BaseException as exc:  # e.g. a missing queue (ConfigError): stop them all, report it
                failures.append(exc)
                stop.set()

        threads = [threading.Thread(target=guarded, name=f"routing-{n}", daemon=True) for n in range(consumers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]


def declare_provider_queues(broker_url: str, providers: ProviderCatalog) -> None:
    """Declare the topology with a ``provider.<id>`` queue for every provider (idempotent)."""
    declare_at(broker_url, providers.ids())
