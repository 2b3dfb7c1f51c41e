"""Fixtures of the hostile suite: a back end per module (both of them), and a hub on it (``stack.World``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kombu import Connection

from tests.hostile.fuzzing import BUDGET
from tests.hostile.stack import Backend, World, build_world
from tests.test_broker import rabbitmq_vhost  # noqa: F401 - a module's own virtual host on the local RabbitMQ


@pytest.fixture(scope="module", params=["sqlite+memory", "postgresql+rabbitmq"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    if request.param == "sqlite+memory":
        folder = tmp_path_factory.mktemp("sqlite")
        yield Backend(request.param, f"sqlite:///{folder / 'hub.db'}", f"memory://localhost/{uuid.uuid4().hex}")
        return
    from tests.backends import postgres_schema, rabbitmq_url

    with postgres_schema() as database_url:
        url = rabbitmq_url()
        vhost = request.getfixturevalue("rabbitmq_vhost")
        if vhost is not None:
            c = Connection(url)
            url = f"amqp://{c.userid}:{c.password}@{c.hostname}:{c.port or 5672}/{vhost}"
        yield Backend(request.param, database_url, url, private=vhost is not None)


@pytest.fixture(scope="module")
def world(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from build_world(backend, tmp_path_factory.mktemp("hub"))


@pytest.fixture()
def fuzz_clock() -> Iterator[None]:
    """Times a fuzz test against the suite's fuzzing budget (``fuzzing.BUDGET``)."""
    BUDGET.start()
    yield
    BUDGET.stop()
