"""Wake-ups: a polling loop wakes when a transaction that created work commits, not before, not on rollback."""

from __future__ import annotations

import threading
import time

from sqlalchemy.orm import sessionmaker

from hub.store.db import make_engine
from hub.store.wakeup import Wakeup, notify


def test_a_commit_wakes_the_waiter_at_once_and_a_rollback_does_not(database_url):
    engine = make_engine(database_url)
    sessions = sessionmaker(bind=engine)
    channel = f"hub_test_{int(time.time() * 1000) % 100000}"
    waiter = Wakeup(engine, channel)
    try:
        assert waiter.wait(0.05) is False  # nothing yet: the timeout

        def write(commit: bool) -> None:
            time.sleep(0.2)
            with sessions() as session:
                notify(session, channel)
                session.commit() if commit else session.rollback()

        writer = threading.Thread(target=write, args=(False,))
        started = time.monotonic()
        writer.start()
        assert waiter.wait(1.0) is False  # rolled back: no wake-up, the whole timeout
        assert time.monotonic() - started >= 0.9
        writer.join()

        writer = threading.Thread(target=write, args=(True,))
        started = time.monotonic()
        writer.start()
        assert waiter.wait(5.0) is True
        assert time.monotonic() - started < 2.0  # woken by the commit, long before the timeout
        writer.join()
        assert waiter.wait(0.05) is False  # one commit, one wake-up
    finally:
        waiter.close()
        engine.dispose()
