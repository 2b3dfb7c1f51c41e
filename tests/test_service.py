"""``hub run``'s service, running: a sender posts over HTTP, simulated providers deliver, open and reply.

Every stage on its own thread (``hub.service``), on each database (SQLite, PostgreSQL) with each
broker (in-process, RabbitMQ), with two simulated providers consuming their queues: the sender's AMQP
queue then holds accepted, routed, delivered twice, opened and replied, each signed by the hub,
and its polling feed says the same.
"""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from hub.inbound.senders import AckChannel
from hub.outbound.acks import Acknowledgement, open_acknowledgements, read_acknowledgement
from hub.outbound.simulated import Behaviour, SimulatedProvider
from hub.routing.directory import Change, Directory
from hub.routing.recipients import RecipientKind
from hub.safexml import parse
from hub.service import Service
from hub.signing.keys import write_key_pair
from hub.signing.truststore import TrustStore, trusted
from hub.signing.verifier import Verifier
from tests.kit import NOW, TOKENS, directory, example, keyring
from tests.test_acknowledgements import LIVED, PROVIDER_KEYS, PROVIDER_TOKENS, SENDER, SENDER_QUEUE, _delete_queues
from tests.test_broker import drain
from tests.test_inbound_rest import make_hub
from tests.test_routing_worker import (
    ROUTING_YAML,
    providers_yaml,
    write,
)

USED = ("myebox", "irisbox")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_up(url: str, limit: float = 20.0) -> None:
    """Until the hub at ``url`` answers ``/healthz`` (at most ``limit`` seconds)."""
    deadline = time.monotonic() + limit
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the hub's HTTP door did not come up"
        time.sleep(0.05)


def provider_config(folder: Path) -> None:
    """providers.yaml of the routing tests, with each provider's certificate and token hash."""
    import hashlib

    keys = folder / "keys"
    lines = providers_yaml().splitlines()
    out: list[str] = []
    for line in lines:
        out.append(line)
        if line.startswith("  - id: "):
            pid = line.split(": ", 1)[1].strip()
            write_key_pair(PROVIDER_KEYS[pid], keys, pid)
            digest = hashlib.sha256(PROVIDER_TOKENS[pid].encode()).hexdigest()
            out += [
                "    certificates:",
                f"      - file: keys/{pid}.cert.pem",
                f'    api_token_sha256: ["{digest}"]',
            ]
    write(folder / "providers.yaml", "\n".join(out) + "\n")
    write(folder / "routing.yaml", ROUTING_YAML.format(deliver="all"))


@pytest.fixture
def running(tmp_path, database_url, broker_url) -> Iterator[tuple[Service, int]]:
    _delete_queues(broker_url)
    config = tmp_path / "config"
    config.mkdir()
    provider_config(config)
    port = free_port()
    runtime = make_hub(tmp_path, database_url, HUB_BROKER_URL=broker_url, HUB_HTTP_PORT=str(port))
    senders = directory()
    social = dataclasses.replace(senders.institutions[SENDER], acknowledgements=AckChannel(kind="amqp"))
    runtime.directory = dataclasses.replace(senders, institutions={**senders.institutions, SENDER: social})
    runtime.intake.directory = runtime.directory
    at = NOW.replace(day=1)
    Directory(runtime.sessions).apply(
        [Change(op="activate", kind=RecipientKind.CITIZEN, id="85073003328", at=at, provider="myebox")]
        + [Change(op="link", kind=RecipientKind.CITIZEN, id="85073003328", at=at, provider=p) for p in USED]
    )
    service = Service(runtime, http=True, check_every=3600)
    service.start()
    simulated = [
        SimulatedProvider(
            pid,
            broker_url,
            PROVIDER_KEYS[pid],
            behaviour=Behaviour(
                open_probability=1.0 if pid == "myebox" else 0.0, open_delay_s=0.05, reply_probability=1.0, seed=1
            ),
            poll=0.05,
            clock=lambda: NOW,  # the hub's clock here: a provider may not date events ahead of it
        )
        for pid in USED
    ]
    for provider in simulated:
        provider.start()
    try:
        wait_until_up(f"http://127.0.0.1:{port}", limit=15)
        yield service, port
    finally:
        for provider in simulated:
            provider.stop()
        service.stop()
        runtime.close()
        _delete_queues(broker_url)
    assert not service.failures, service.failures


def test_a_registered_letter_goes_round_the_whole_running_hub(running, broker_url):
    service, port = running
    data = keyring().sign(example("registered"))
    posted = httpx.post(
        f"http://127.0.0.1:{port}/v1/messages", content=data, headers={"Content-Type": "application/xml"}, timeout=10
    )
    assert posted.status_code == 201, posted.text

    got = drain(broker_url, SENDER_QUEUE, expect=6, limit=30)
    verifier = Verifier(TrustStore([trusted("hub", service.runtime.hub_keys.certificate)]))
    acks: list[Acknowledgement] = []
    for message in got:
        root = parse(message.body)
        verifier.verify(root, now=datetime.now(UTC), parties=["hub"])
        acks.append(read_acknowledgement(root))
    kinds = [(a.event.value, a.provider) for a in acks]
    assert kinds[:2] == [("accepted", None), ("routed", None)]
    assert sorted(kinds) == sorted(LIVED)  # a registered letter's six events, in an order the threads chose
    assert kinds.index(("delivered", "myebox")) < kinds.index(("opened", "myebox")) < kinds.index(("replied", "myebox"))
    replied = acks[kinds.index(("replied", "myebox"))]
    assert replied.reply is not None and replied.reply.choice_id in ("accept", "contest")

    feed = httpx.get(
        f"http://127.0.0.1:{port}/v1/acks?limit=100", headers={"Authorization": f"Bearer {TOKENS[SENDER]}"}, timeout=10
    )
    assert feed.status_code == 200, feed.text
    items, _ = open_acknowledgements(feed.content, verifier, datetime.now(UTC), issuers=["hub"])
    assert sorted((a.event.value, a.provider) for a in items) == sorted(kinds)
