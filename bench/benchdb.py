"""PostgreSQL schemas for benchmarks: each run gets its own, dropped afterwards."""

from __future__ import annotations

import os

POSTGRES = os.environ.get("HUB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def postgres_schema(name: str) -> tuple[str, str]:
    """A fresh schema ``name``: (database URL whose tables live there, schema name)."""
    import psycopg

    with psycopg.connect(POSTGRES, autocommit=True) as connection:
        connection.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        connection.execute(f"CREATE SCHEMA {name}")
    return f"{POSTGRES}?options=-csearch_path%3D{name}", name


def drop_schema(name: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES, autocommit=True) as connection:
        connection.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
