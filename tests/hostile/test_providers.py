"""Providers overstepping over HTTP: acknowledging another's delivery, an unknown one, with another's
key or token; fetching another's claim-checked envelope. Each gets its stable code and writes nothing.

The world's hub has routed SOCIAL's message to myebox (not to doccle).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from hub.envelope import examples as ex
from hub.outbound.acks import Acknowledgement, Event, signed_acknowledgement
from hub.outbound.intake import MAX_ACK_BYTES
from hub.signing.signer import Signer
from tests.hostile.answers import Answer, rest
from tests.hostile.attacks import Attack, Door, attacks, params
from tests.hostile.stack import World, grown, provider, provider_keys, sender, unique
from tests.kit import NOW

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


def ack(issuer: str, message_id: str, *, key: str | None = None, event: Event = Event.DELIVERED, **more: str) -> bytes:
    document = Acknowledgement(
        ack_id=unique(issuer),
        event=event,
        occurred_at=NOW + timedelta(minutes=1),
        issuer=issuer,
        hub_message_id=message_id,
        provider=issuer,
        **more,  # type: ignore[arg-type]
    )
    return signed_acknowledgement(Signer(provider_keys(key or issuer)), document)


def post_ack(world: World, data: bytes, headers: dict[str, str]) -> Answer:
    return rest(world.client.post("/v1/acks", content=data, headers={"Content-Type": "application/xml", **headers}))


def fetch(world: World, delivery_id: str, headers: dict[str, str]) -> Answer:
    return rest(world.client.get(f"/v1/deliveries/{delivery_id}/envelope", headers=headers))


def _replayed(world: World) -> Callable[[], Answer]:
    data = ack("myebox", world.message_id, event=Event.OPENED)
    first = post_ack(world, data, provider("myebox"))
    assert first.status == 200 and b'"outcome":"moved"' in first.body, first.body
    return lambda: post_ack(world, data, provider("myebox"))


HOW: dict[str, Callable[[World], Callable[[], Answer]]] = {
    # each returns the attack itself, once what it needs is in place
    "acks/another-providers-delivery": lambda w: (
        lambda: post_ack(w, ack("doccle", w.message_id, delivery_id=w.delivery_id), provider("doccle"))
    ),
    "acks/unknown-delivery": lambda w: lambda: post_ack(w, ack("myebox", UNKNOWN_ID), provider("myebox")),
    "acks/signed-by-another-provider": lambda w: (
        lambda: post_ack(w, ack("myebox", w.message_id, key="doccle"), provider("myebox"))
    ),
    "acks/another-providers-token": lambda w: lambda: post_ack(w, ack("myebox", w.message_id), provider("doccle")),
    "acks/no-token": lambda w: lambda: post_ack(w, ack("myebox", w.message_id), {}),
    "acks/sender-token": lambda w: lambda: post_ack(w, ack("myebox", w.message_id), sender(ex.SOCIAL)),
    "acks/replayed-acknowledgement": _replayed,
    "acks/oversized": lambda w: lambda: post_ack(w, b"<a>" + b"x" * MAX_ACK_BYTES + b"</a>", provider("myebox")),
    "claim/another-providers-envelope": lambda w: lambda: fetch(w, w.delivery_id, provider("doccle")),
    "claim/sender-token": lambda w: lambda: fetch(w, w.delivery_id, sender(ex.SOCIAL)),
    "claim/nul-in-the-id": lambda w: lambda: fetch(w, "%00", provider("myebox")),
    "subscriptions/nul-in-another-providers-id": lambda w: (
        lambda: rest(w.client.post("/v1/providers/%00/subscriptions", json={"changes": []}, headers=provider("myebox")))
    ),
    "subscriptions/deeply-nested-json": lambda w: (
        lambda: rest(
            w.client.post(
                "/v1/providers/myebox/subscriptions",
                content=b"[" * 100_000 + b"]" * 100_000,
                headers={"Content-Type": "application/json", **provider("myebox")},
            )
        )
    ),
}

DOORS = (Door.ACKS, Door.CLAIM, Door.SUBSCRIPTIONS)


@pytest.mark.parametrize("attack", params(*DOORS))
def test_a_provider_reaches_only_its_own_deliveries(world: World, attack: Attack):
    attempt = HOW[attack.id](world)
    before = world.footprint()
    answer = attempt()
    answer.expect(attack.code, attack.status)
    if attack.name == "replayed-acknowledgement":
        assert b'"outcome":"repeat"' in answer.body
    assert grown(before, world.footprint()) == {}


def test_the_table_and_these_ways_are_the_same_list():
    assert set(HOW) == {a.id for a in attacks(*DOORS)}


def test_the_provider_a_delivery_is_for_fetches_it_and_acknowledges_it(world: World):
    # The control group: what the attacks change is all that keeps them out
    fetched = world.client.get(f"/v1/deliveries/{world.delivery_id}/envelope", headers=provider("myebox"))
    assert fetched.status_code == 200 and fetched.content.startswith(b"<?xml")
    applied = post_ack(world, ack("myebox", world.message_id), provider("myebox"))
    assert applied.status == 200 and applied.code is None, applied.body
