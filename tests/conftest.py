from __future__ import annotations

import pytest

from tests.kit import Keyring, keyring


@pytest.fixture(scope="session")
def keys() -> Keyring:
    """Keys (ECDSA P-256) of the example organisations, registered in a trust store."""
    return keyring("ec")


@pytest.fixture(scope="session")
def rsa_keys() -> Keyring:
    return keyring("rsa")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """Each store test runs on the embedded SQLite file and on PostgreSQL (fresh schema)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hub.db'}"
    else:
        from tests.backends import postgres_schema

        with postgres_schema() as url:
            yield url


@pytest.fixture(params=["memory", "rabbitmq"])
def broker_url(request):
    """Each broker test runs on kombu's in-process transport and on RabbitMQ."""
    if request.param == "memory":
        import uuid

        # kombu's in-process transport shares its queues across connections whatever the
        # virtual host; broker tests empty the hub's queues before and after each test.
        yield f"memory://localhost/{uuid.uuid4().hex}"
    else:
        yield request.getfixturevalue("rabbitmq_session_url")


@pytest.fixture(scope="session")
def rabbitmq_session_url():
    """RabbitMQ in a virtual host of this test run's own (where ``rabbitmqctl`` can make one), so that two runs
    on one broker (a developer's and a CI check) never delete or consume each other's queues."""
    from tests.backends import own_vhost, rabbitmq_url

    with own_vhost(rabbitmq_url()) as url:
        yield url


@pytest.fixture()
def hub(tmp_path, database_url):
    """A hub (store, directory of the example senders, intake) on each database back end."""
    from tests.test_inbound_rest import make_hub

    runtime = make_hub(tmp_path, database_url)
    yield runtime
    runtime.close()
