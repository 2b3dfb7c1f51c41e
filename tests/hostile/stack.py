"""What the hostile suite attacks (the fixtures are in ``conftest``): a hub on each back end, with the
example senders, two providers and one accepted message routed to one of them; and how it tells that
an attack left nothing behind.

Back ends: the embedded default (SQLite, kombu's in-process transport) and PostgreSQL + RabbitMQ
(a fresh schema, and a virtual host of the module's own where ``rabbitmqctl`` can make one). Under
CI=true an unreachable PostgreSQL or RabbitMQ fails the tests (``tests.backends``).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from starlette.testclient import TestClient

from hub.envelope import examples as ex
from hub.inbound.http import build_app
from hub.routing.providers import Provider, ProviderCatalog
from hub.runtime import Runtime
from hub.signing.keys import KeyPair
from hub.signing.truststore import trusted
from hub.store.models import Base, Delivery
from tests.kit import NOW, TOKENS, key_pair, keyring
from tests.test_inbound_rest import make_hub

PROVIDERS = ("myebox", "doccle")
PROVIDER_TOKENS = {provider: f"hostile-token-{provider}" for provider in PROVIDERS}
SENDERS = (ex.FINANCE, ex.SOCIAL, ex.CITY, ex.INTEGRATOR)
MAX_ENVELOPE_BYTES = 50_000
"""The hubs of this suite take envelopes up to this size (the examples are 2 to 4 kB)."""
MAX_BATCH = 5


def provider_keys(provider: str) -> KeyPair:
    return key_pair(f"hostile-provider-{provider}")


def catalog() -> ProviderCatalog:
    return ProviderCatalog(
        {
            p: Provider(
                id=p,
                name=f"provider {p}",
                certificates=(trusted(p, provider_keys(p).certificate),),
                token_hashes=frozenset({hashlib.sha256(PROVIDER_TOKENS[p].encode()).hexdigest()}),
            )
            for p in PROVIDERS
        }
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sender(organisation: str) -> dict[str, str]:
    return bearer(TOKENS[organisation])


def provider(name: str) -> dict[str, str]:
    return bearer(PROVIDER_TOKENS[name])


def unique(prefix: str = "HOSTILE") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# --- what an attack leaves behind ---------------------------------------------------------------------


def footprint(runtime: Runtime) -> dict[str, int]:
    """Rows in every table of the store."""
    with runtime.sessions() as session:
        return {
            table.name: int(session.scalar(select(func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
        }


def grown(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The tables whose row count changed, and by how much."""
    return {name: after[name] - before[name] for name in after if after[name] != before[name]}


COUNTED_ROWS = {"refusals": 1, "audit": 1}


# --- back ends -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    name: str
    database_url: str
    broker_url: str
    private: bool = True
    """The broker's queues are this module's own (in-process, or a virtual host made for it)."""

    @property
    def rabbitmq(self) -> bool:
        return self.broker_url.startswith("amqp")


# --- a hub with a message routed to myebox ----------------------------------------------------------------


@dataclass
class World:
    """A hub on one back end: its runtime, an HTTP client of its doors, and what the attacks aim at."""

    backend: Backend
    runtime: Runtime
    client: TestClient
    message_id: str
    """A message of SOCIAL's, accepted and routed to myebox (delivery ``<message_id>:myebox``)."""
    finance_message_id: str
    """A message of FINANCE's, accepted (its ``accepted`` event is in FINANCE's feed)."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def delivery_id(self) -> str:
        return f"{self.message_id}:myebox"

    def footprint(self) -> dict[str, int]:
        return footprint(self.runtime)

    def __repr__(self) -> str:  # hypothesis prints the fixtures of a failing example
        return f"World({self.backend.name})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def route_to(runtime: Runtime, message_id: str, provider_id: str) -> None:
    """What the routing worker would store: a delivery of the message to ``provider_id``."""
    with runtime.sessions() as session:
        session.add(
            Delivery(
                id=f"{message_id}:{provider_id}",
                message_id=message_id,
                provider=provider_id,
                state="pending",
                priority=4,
                created_at=NOW,
                updated_at=NOW,
            )
        )
        session.commit()


def build_world(backend: Backend, folder: Path, **env: str) -> Iterator[World]:
    env = {
        "HUB_LIMITS_MAX_ENVELOPE_BYTES": str(MAX_ENVELOPE_BYTES),
        "HUB_LIMITS_MAX_BATCH": str(MAX_BATCH),
        "HUB_BROKER_URL": backend.broker_url,
        **env,
    }
    runtime = make_hub(folder, backend.database_url, **env)
    ring = keyring()
    social = runtime.intake.submit(ring.sign(_renamed("registered")), door="test").message_id
    finance = runtime.intake.submit(ring.sign(_renamed("payment")), door="test").message_id
    route_to(runtime, social, "myebox")
    app = build_app(runtime)
    app.state.providers = catalog()
    app.state.provider_tokens = catalog().tokens()
    with TestClient(app, raise_server_exceptions=False) as client:
        yield World(backend, runtime, client, social, finance)
    runtime.close()


def _renamed(kind: str) -> Any:
    from dataclasses import replace

    from tests.kit import example

    envelope = example(kind)
    return replace(envelope, header=replace(envelope.header, sender_message_id=unique("WORLD")))
