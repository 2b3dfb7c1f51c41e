"""Hostile submissions to the HTTP doors (REST, batch, SOAP), on SQLite and on PostgreSQL.

Each attack of ``attacks`` on these doors gets its stable code and status, and leaves what its
``leaves`` column says and nothing more: the row count of every table of the store is taken before
and after it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest

from hub.inbound.soap import SOAP12_NS, SOAP_NS
from tests.hostile import envelopes
from tests.hostile.answers import Answer, batch_item, rest, soap, soap_request
from tests.hostile.attacks import SUBMISSIONS, Attack, Door, Leaves, attacks, param
from tests.hostile.stack import COUNTED_ROWS, MAX_BATCH, MAX_ENVELOPE_BYTES, World, grown
from tests.kit import example, keyring

XML = {"Content-Type": "application/xml"}
SOAP_XML = {"Content-Type": "text/xml; charset=utf-8"}


def post_rest(world: World, data: bytes) -> Answer:
    return rest(world.client.post("/v1/messages", content=data, headers=XML))


def post_batch(world: World, data: bytes) -> Answer:
    return batch_item(world.client.post("/v1/batches", json={"envelopes": [base64.b64encode(data).decode()]}))


def post_soap(world: World, data: bytes) -> Answer:
    request = soap_request(data) if data.startswith(b"<?xml") else data  # not an envelope: sent as it is
    return soap(world.client.post("/soap", content=request, headers=SOAP_XML))


SEND: dict[Door, Callable[[World, bytes], Answer]] = {
    Door.REST: post_rest,
    Door.BATCH: post_batch,
    Door.SOAP: post_soap,
}


def expected_rows(attack: Attack) -> dict[str, int]:
    return COUNTED_ROWS if attack.leaves is Leaves.COUNTED else {}


SUBMISSION_ATTACKS = [a for a in attacks(*SEND) if a.name in envelopes.HOW]
REQUEST_ATTACKS = [a for a in attacks(*SEND) if a.name not in envelopes.HOW]


@pytest.mark.parametrize("attack", [param(a) for a in SUBMISSION_ATTACKS])
def test_every_door_that_takes_an_envelope_refuses_each_hostile_one(world: World, attack: Attack):
    send = SEND[attack.door]
    sending = envelopes.HOW[attack.name]()
    first = None
    if sending.first is not None:
        first = send(world, sending.first)
        assert first.status in (200, 201) and first.code is None, first.body[:300]
    before = world.footprint()
    answer = send(world, sending.attack)
    answer.expect(attack.code, attack.status)
    if attack.door is Door.SOAP and attack.code is not None:
        assert answer.faultcode == "soap:Client"
    if attack.name == "replayed-envelope":
        assert first is not None and answer.body == first.body  # the original receipt, byte for byte
    assert grown(before, world.footprint()) == expected_rows(attack)


# --- the request itself --------------------------------------------------------------------------------------


def _oversized() -> bytes:
    return b"<a>" + b"x" * MAX_ENVELOPE_BYTES + b"</a>"


def _soap_envelope(namespace: str, entry: bytes = b"") -> bytes:
    return b'<s:Envelope xmlns:s="' + namespace.encode() + b'"><s:Body>' + entry + b"</s:Body></s:Envelope>"


SIGNED = keyring().sign(example("payment"))


REQUESTS: dict[str, Callable[[World], Answer]] = {
    "rest/json-content-type": lambda w: rest(
        w.client.post(
            "/v1/messages", content=envelopes.signed(envelopes.fresh()), headers={"Content-Type": "application/json"}
        )
    ),
    "rest/oversized-body": lambda w: post_rest(w, _oversized()),
    "rest/chunked-oversized-body": lambda w: rest(
        w.client.post("/v1/messages", content=iter([_oversized()[:40_000], _oversized()[40_000:]]), headers=XML)
    ),
    "rest/bad-content-length": lambda w: rest(
        w.client.post("/v1/messages", content=b"<a/>", headers={**XML, "Content-Length": "4x"})
    ),
    "batch/deeply-nested-json": lambda w: rest(
        w.client.post(
            "/v1/batches", content=b"[" * 100_000 + b"]" * 100_000, headers={"Content-Type": "application/json"}
        )
    ),
    "batch/too-many-envelopes": lambda w: rest(
        w.client.post("/v1/batches", json={"envelopes": [base64.b64encode(SIGNED).decode()] * (MAX_BATCH + 1)})
    ),
    "batch/envelopes-not-a-list": lambda w: rest(
        w.client.post(
            "/v1/batches", content=json.dumps({"envelopes": "PGEvPg=="}), headers={"Content-Type": "application/json"}
        )
    ),
    "soap/soap-not-xml": lambda w: post_soap(w, b"this is not XML at all"),
    "soap/soap-1.2-envelope": lambda w: post_soap(w, _soap_envelope(SOAP12_NS, SIGNED.split(b"?>", 1)[1])),
    "soap/soap-1.2-content-type": lambda w: soap(
        w.client.post("/soap", content=soap_request(SIGNED), headers={"Content-Type": "application/soap+xml"})
    ),
    "soap/missing-operation": lambda w: post_soap(w, _soap_envelope(SOAP_NS)),
    "soap/unknown-operation": lambda w: post_soap(w, _soap_envelope(SOAP_NS, b'<x:Publish xmlns:x="urn:other"/>')),
    "soap/xxe-in-soap-envelope": lambda w: post_soap(
        w, b'<!DOCTYPE s:Envelope [<!ENTITY x SYSTEM "file:///etc/passwd">]>' + _soap_envelope(SOAP_NS, b"&x;")
    ),
    "soap/oversized-request": lambda w: post_soap(w, soap_request(_oversized())),
    "soap/must-understand-header": lambda w: post_soap(
        w,
        soap_request(SIGNED).replace(
            b"<soap:Body>",
            b'<soap:Header><w:Security xmlns:w="urn:wsse" soap:mustUnderstand="1"/></soap:Header><soap:Body>',
        ),
    ),
}
"""Attacks on the request (not the envelope), by attack id."""

SAME_AS_REST = {"soap/soap-not-xml": b"this is not XML at all", "soap/oversized-request": _oversized()}
"""SOAP attacks whose request, posted to the REST door, gets the same code there."""


@pytest.mark.parametrize("attack", [param(a) for a in REQUEST_ATTACKS])
def test_each_hostile_request_is_refused(world: World, attack: Attack):
    before = world.footprint()
    answer = REQUESTS[attack.id](world)
    answer.expect(attack.code, attack.status)
    assert grown(before, world.footprint()) == {}
    if attack.door is Door.SOAP:
        wanted = {
            "soap/soap-1.2-envelope": "soap:VersionMismatch",
            "soap/soap-1.2-content-type": "soap:VersionMismatch",
            "soap/must-understand-header": "soap:MustUnderstand",
        }.get(attack.id, "soap:Client")
        assert answer.faultcode == wanted
    if attack.id in SAME_AS_REST:
        assert post_rest(world, SAME_AS_REST[attack.id]).code == answer.code


def test_the_table_and_these_ways_are_the_same_list():
    table = {a.id for a in attacks(Door.REST, Door.BATCH, Door.SOAP)}
    ways = {f"{door.name.lower()}/{name}" for door in SEND for name in envelopes.HOW} | set(REQUESTS)
    assert ways == table
    assert set(envelopes.HOW) == {name for name, *_ in SUBMISSIONS}
