"""Waking a polling loop when there is work: PostgreSQL LISTEN/NOTIFY, or a poke within the process.

The relay and the forwarder poll the database for work. Polling often costs queries; polling
seldom costs latency. So writers ``notify(session, channel)`` in the transaction that creates
work, and the loop waits with ``Wakeup.wait(timeout)``, which returns as soon as such a
transaction committed, or after ``timeout`` (the loop still polls then: a wake-up is a hint,
never the only way work is found).

- PostgreSQL: ``pg_notify`` inside the transaction is delivered by the server at commit (and
  dropped on rollback); the waiting loop holds a dedicated connection that LISTENs.
- Any database, within one process (``hub run``, ``hub demo``, SQLite): the notifying session
  pokes an event after its commit.

Channels: ``OUTBOX`` (rows for the relay), ``EVENTS`` (events for the forwarder).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

log = logging.getLogger("hub.store")

OUTBOX = "hub_outbox"
EVENTS = "hub_events"
GATHER = 0.05
"""Seconds a woken loop lets more work gather (``[broker] gather_s``): without it, a relay woken by
every commit makes a round (a claim, a publish with its confirm, an update) per row, which costs
more CPU than the latency it saves (bench/e2e.py: 60 msg/s, one round per row: +6 ms of CPU per
message). 20 ms against 50 ms, the whole hub on two cores (bench/e2e.py, small envelopes): at
100 msg/s p50 249 against 331 ms, at 150 msg/s p99 788 against 520 ms and 12.6 against 9.8 ms of
CPU per message: the longer wait costs a light load little and gives a heavy one its batches."""

_pokes: dict[str, threading.Event] = {}
_pokes_lock = threading.Lock()


def _poke_of(channel: str) -> threading.Event:
    with _pokes_lock:
        return _pokes.setdefault(channel, threading.Event())


def notify(session: Session, *channels: str) -> None:
    """Wake whoever waits on ``channels`` once this session's transaction commits (one statement)."""
    if session.get_bind().dialect.name == "postgresql":
        calls = ", ".join(f"pg_notify(:c{n}, '')" for n in range(len(channels)))
        session.execute(text(f"SELECT {calls}"), {f"c{n}": channel for n, channel in enumerate(channels)})
    for channel in channels:
        poke = _poke_of(channel)
        event.listen(session, "after_commit", lambda _session, poke=poke: poke.set(), once=True)


class Wakeup:
    """Waits for ``channel``'s notifications (see the module's doc). One per polling loop; not thread-safe."""

    def __init__(self, engine: Engine, channel: str, *, gather: float = GATHER) -> None:
        self.channel = channel
        self.gather = gather
        """After a wake-up, wait this long for more work before returning (one round serves it all)."""
        self._poke = _poke_of(channel)
        self._engine = engine
        self._listener: Any = None

    def _listen(self) -> Any:
        if self._listener is None and self._engine.dialect.name == "postgresql":
            import psycopg

            url = self._engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
            try:
                listener = psycopg.connect(url, autocommit=True)
                listener.execute(f"LISTEN {self.channel}")  # a fixed identifier of this module, not input
            except psycopg.Error as exc:  # the database is down: plain polling until it is back
                log.debug("wakeup: cannot listen on %s (%s); polling", self.channel, exc)
                return None
            self._listener = listener
        return self._listener

    def wait(self, timeout: float) -> bool:
        """Until a notification (True) or ``timeout`` seconds (False)."""
        if self._poke.is_set():
            self._gather()
            self._poke.clear()
            return True
        listener = self._listen()
        if listener is None:
            woken = self._poke.wait(timeout)
            if woken:
                self._gather()
            self._poke.clear()
            return woken
        try:
            woken = any(True for _ in listener.notifies(timeout=timeout, stop_after=1))
            if woken:  # (not inside that loop: the generator holds the connection's lock)
                self._gather()
                self._drain(listener)
        except Exception as exc:  # the connection broke: listen again next time, poll meanwhile
            log.debug("wakeup: %s lost (%s)", self.channel, exc)
            self.close()
            woken = False
        self._poke.clear()
        return woken

    def _gather(self) -> None:
        if self.gather > 0:
            time.sleep(self.gather)

    @staticmethod
    def _drain(listener: Any) -> None:
        """Take the notifications already waiting: one wake-up serves them all."""
        with contextlib.suppress(Exception):
            for _ in listener.notifies(timeout=0):
                pass

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(Exception):
                listener.close()
