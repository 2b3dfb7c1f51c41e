"""Single-use values (a signed request's signature, a JWT assertion's ``jti``), remembered in the store.

``SingleUse.first_use(scope, value, until)`` is True the first time a value is presented within its
window and False for every later presentation, whichever hub process (HTTP worker, host) it reaches:
the register is one primary key in the shared database, and the insert decides. Values are kept as
their SHA-256 (with the scope), never in clear; rows whose window has passed are pruned now and
then (a value presented after ``until`` is refused by its own freshness check before it gets here).
"""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import datetime

from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hub.store.db import unavailable_on_outage
from hub.store.models import SingleUse as Row

PRUNE_EVERY_S = 60.0


class SingleUse:
    """The register. Thread-safe; one per process (or per door) is enough, all share the database's."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self._pruned = 0.0
        self._lock = threading.Lock()

    def first_use(self, scope: str, value: bytes | str, until: datetime, now: datetime) -> bool:
        """Remember ``value`` (in ``scope``) until ``until``; False if it was presented before.

        Raises ``Unavailable`` when the database cannot be reached: a door then answers 503 rather
        than let a request through unchecked.
        """
        raw = value.encode() if isinstance(value, str) else value
        key = hashlib.sha256(scope.encode() + b"\0" + raw).hexdigest()
        with unavailable_on_outage(), self.sessions() as session:
            self._prune(session, now)
            try:
                session.execute(insert(Row).values(key=key, scope=scope[:16], until=until))
                session.commit()
            except IntegrityError:
                session.rollback()
                return False
        return True

    def _prune(self, session: Session, now: datetime) -> None:
        with self._lock:
            if time.monotonic() - self._pruned < PRUNE_EVERY_S:
                return
            self._pruned = time.monotonic()
        session.execute(delete(Row).where(Row.until < now))
        session.commit()
