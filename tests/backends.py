"""The real back ends the suite runs on, beside the embedded ones.

PostgreSQL and RabbitMQ are reached at their usual local addresses (override with
HUB_TEST_POSTGRES_URL / HUB_TEST_RABBITMQ_URL). Where one cannot be reached the tests
that need it are skipped, except under CI=true, where they fail: CI must prove the hub
on the real components, not silently fall back to the embedded ones.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

POSTGRES_URL = os.environ.get("HUB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
RABBITMQ_URL = os.environ.get("HUB_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
CI = os.environ.get("CI") == "true"


def unreachable(what: str, error: Exception) -> None:
    message = f"{what} is not reachable ({error.__class__.__name__}: {error})"
    if CI:
        pytest.fail(f"{message}; CI must run against it", pytrace=False)
    pytest.skip(message)


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A database URL whose tables live in a fresh schema, dropped afterwards."""
    import psycopg

    schema = f"hub_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3) as connection:
            connection.execute(f"CREATE SCHEMA {schema}")
    except psycopg.OperationalError as exc:
        unreachable("PostgreSQL", exc)
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")


def rabbitmq_url() -> str:
    """The RabbitMQ URL, after checking it answers."""
    import kombu

    try:
        with kombu.Connection(RABBITMQ_URL, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:  # kombu raises several kinds; all mean "not reachable"
        unreachable("RabbitMQ", exc)
    return RABBITMQ_URL


@contextmanager
def own_vhost(url: str) -> Iterator[str]:
    """``url`` in a fresh virtual host (the same user may use it), deleted afterwards; ``url`` unchanged where
    ``rabbitmqctl`` is missing or refuses (another host's broker, no rights), or HUB_TEST_RABBITMQ_URL is set."""
    import shutil
    import subprocess

    import kombu

    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None or "HUB_TEST_RABBITMQ_URL" in os.environ:
        yield url
        return
    name = f"hub_test_{uuid.uuid4().hex[:12]}"
    parsed = kombu.Connection(url)

    def ctl(*args: str) -> bool:
        try:
            return subprocess.run([rabbitmqctl, *args], capture_output=True, timeout=60, check=False).returncode == 0
        except (OSError, subprocess.SubprocessError):
            return False

    if not (ctl("add_vhost", name) and ctl("set_permissions", "-p", name, parsed.userid, ".*", ".*", ".*")):
        ctl("delete_vhost", name)
        yield url
        return
    try:
        yield f"amqp://{parsed.userid}:{parsed.password}@{parsed.hostname}:{parsed.port or 5672}/{name}"
    finally:
        ctl("delete_vhost", name)
