"""Engines, sessions and migrations for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from hub.errors import Unavailable


def normalise_url(url: str) -> str:
    """Use psycopg 3 for ``postgresql://`` URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(connection, _record):
            cursor = connection.cursor()
            # WAL + FULL: a committed acceptance survives a crash or power loss.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    # No pre-ping (a round trip per transaction): a connection found dead raises, the door
    # answers 503, and the pool discards it (pool_recycle bounds the age of idle ones).
    return create_engine(url, pool_size=10, max_overflow=20, pool_recycle=300)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def unavailable_on_outage(what: str = "the database") -> Iterator[None]:
    """Turn a lost connection into ``Unavailable`` (503), never a half-done answer."""
    try:
        yield
    except (OperationalError, DBAPIError) as exc:
        if isinstance(exc, DBAPIError) and not exc.connection_invalidated and not isinstance(exc, OperationalError):
            raise
        raise Unavailable(f"{what} cannot be reached; try again shortly") from exc


def ping(engine: Engine) -> None:
    with unavailable_on_outage(), engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", "hub.store:migrations")
    # ConfigParser interpolates "%": escape it (URLs carry %-encoded options).
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (``hub db upgrade``)."""
    from alembic import command

    config = alembic_config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def take_write_lock(session: Session | Connection) -> None:
    """SQLite: take the database's write lock now, at the start of the transaction.

    A deferred SQLite transaction that reads, then writes after another writer committed, fails
    at once on its stale snapshot instead of waiting its turn; a no-op write first makes it wait
    (``busy_timeout``) and then read what the other committed. PostgreSQL: nothing to do.
    """
    if _dialect(session) != "postgresql":
        session.execute(text("UPDATE messages SET state = state WHERE 0 = 1"))


def one_at_a_time(session: Session | Connection, key: int) -> None:
    """Until this transaction ends, no other one passes the same ``key`` (a singleton's round).

    PostgreSQL: a transaction-scoped advisory lock; SQLite: the database's write lock (one writer).
    """
    if _dialect(session) == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    else:
        take_write_lock(session)


def _dialect(session: Session | Connection) -> str:
    return session.get_bind().dialect.name if isinstance(session, Session) else session.dialect.name
