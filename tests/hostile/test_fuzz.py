"""Fuzzing the parser and the HTTP doors with hypothesis, for a bounded time (``fuzzing.BUDGET``).

- ``open_envelope`` with signed envelopes mutated (bits flipped, cut short, bytes inserted or
  removed, elements doubled): the outcome is the unchanged envelope or a ``Rejected`` with a stable
  code, never another exception.
- The REST, batch, SOAP and acknowledgement doors with arbitrary bodies, content types and
  headers, and the reading routes with arbitrary paths and queries: every answer is a success or a
  well-formed error document (a SOAP fault) with a stable code and a 4xx status, never a 500; the
  store gains only what an accepted envelope stores (a refusal of a known sender: its count).

The AMQP door's fuzzing is in ``test_amqp`` (it needs the broker fixtures there).
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.envelope import model as m
from hub.envelope.examples import KINDS
from hub.errors import ErrorCode, Rejected
from hub.safexml import ParseLimits, parse
from tests.hostile.answers import KNOWN_CODES, Answer, rest, soap, soap_request
from tests.hostile.fuzzing import (
    BODIES,
    BUDGET,
    CONTENT_TYPES,
    EXTRA_HEADERS,
    PATH_SEGMENT,
    examples,
    mutated_envelope,
    mutation,
    signed,
)
from tests.hostile.stack import PROVIDER_TOKENS, World, bearer, grown
from tests.hostile.test_providers import UNKNOWN_ID, ack
from tests.kit import TOKENS, example, keyring

pytestmark = pytest.mark.usefixtures("fuzz_clock")


def model(kind: str) -> m.Envelope:
    """The example of ``kind`` as ``fuzzing.signed`` signed it (its own SenderMessageId)."""
    root = parse(signed(kind))
    smid = root.findtext(f"{{{m.ENVELOPE_NS}}}Header/{{{m.ENVELOPE_NS}}}SenderMessageId")
    envelope = example(kind)
    return replace(envelope, header=replace(envelope.header, sender_message_id=smid))


def opens_unchanged(data: bytes) -> bool:
    """Whether ``data`` opens (signature, schema, rules) to one of the signed examples, unchanged."""
    try:
        opened = keyring().open(data)
    except Rejected:
        return False
    kinds = [k for k in KINDS if opened.envelope.header.sender_message_id.startswith(f"FUZZ-{k}-")]
    return len(kinds) == 1 and opened.envelope == model(kinds[0])


# --- the parser ----------------------------------------------------------------------------------------------


@examples(400)
@given(mutated_envelope())
def test_a_mutated_envelope_opens_unchanged_or_is_refused_with_a_stable_code(mutated: tuple[str, bytes]):
    if BUDGET.spent():
        return
    kind, data = mutated
    try:
        opened = keyring().open(data)
    except Rejected as refused:
        assert refused.code in ErrorCode and all(v.code in ErrorCode for v in refused.violations)
        assert refused.message
        return
    assert opened.envelope == model(kind), "a changed document was accepted as signed"


@examples(60)
@given(mutated_envelope())
def test_both_signature_back_ends_agree_on_a_mutated_envelope(mutated: tuple[str, bytes]):
    if BUDGET.spent():
        return
    _, data = mutated
    outcomes = []
    for backend in ("fast", "signxml"):
        try:
            outcomes.append(keyring().open(data, backend=backend).envelope)
        except Rejected as refused:
            outcomes.append(refused.code)
    assert outcomes[0] == outcomes[1]


@examples(300)
@given(st.binary(max_size=600) | BODIES)
def test_the_safe_parser_takes_any_bytes(data: bytes):
    if BUDGET.spent():
        return
    try:
        parse(data, limits=ParseLimits(max_bytes=4096, max_depth=24))
    except Rejected as refused:
        assert refused.code in (ErrorCode.XML_MALFORMED, ErrorCode.XML_FORBIDDEN, ErrorCode.TOO_LARGE)


# --- the HTTP doors -------------------------------------------------------------------------------------------

ROUTES = st.sampled_from(["/v1/messages", "/v1/batches", "/soap", "/v1/acks", "/v1/providers/myebox/subscriptions"])
TOKEN = st.sampled_from([None, "", TOKENS["0308357159"], PROVIDER_TOKENS["myebox"], "guess", "\x7f"])


def checked(answer: Answer) -> None:
    """Any refusal: a stable code, a 4xx (SOAP: a fault, 500 by SOAP 1.1, or a 503)."""
    assert (answer.status is not None and answer.status < 500) or answer.faultcode is not None, answer.body[:300]
    if answer.faultcode is not None:
        assert answer.faultcode in ("soap:Client", "soap:VersionMismatch", "soap:MustUnderstand"), answer.body[:300]
        assert answer.code is not None or answer.faultcode == "soap:MustUnderstand"
    elif answer.status is not None and answer.status >= 400:
        assert answer.code in KNOWN_CODES


def stored_only_what_was_accepted(world: World, before: dict[str, int], accepted: int) -> None:
    """The store grew by ``accepted`` messages (each: a message, an event, an audit entry, an outbox row),
    and by a refusal row and an audit entry per refusal of a known sender: nothing else."""
    change = grown(before, world.footprint())
    refused = change.pop("refusals", 0)
    assert change.pop("audit", 0) == accepted + refused
    assert change == {name: accepted for name in ("messages", "events", "outbox") if accepted}, change


@examples(300)
@given(ROUTES, BODIES, CONTENT_TYPES, EXTRA_HEADERS, TOKEN, st.booleans())
def test_any_request_to_a_door_is_answered_with_a_stable_code_and_never_a_500(
    world: World, route: str, body: bytes, content_type: str, extra: dict[str, str], token: str | None, wrap: bool
):
    if BUDGET.spent():
        return
    headers = {"Content-Type": content_type, **extra}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if route == "/soap" and wrap:
        body = soap_request(body)
    elif route == "/v1/batches" and wrap:
        body = b'{"envelopes": ["' + base64.b64encode(body) + b'"]}'
    before = world.footprint()
    response = world.client.post(route, content=body, headers=headers)
    successes: list[bytes] = []  # the envelopes the door says it accepted
    if route == "/soap":
        answer = soap(response)
        if answer.status == 200 and answer.faultcode is None:
            successes.append(body_of_soap(body))
    elif route == "/v1/batches" and response.status_code == 207:
        answer = Answer(207, None, response.content)
        sent = json.loads(body)["envelopes"]
        for index, item in enumerate(response.json()["results"]):
            if item["status"] < 300:
                successes.append(base64.b64decode(sent[index]))
            else:
                assert 400 <= item["status"] < 500 and item["code"] in KNOWN_CODES, item
    else:
        answer = rest(response)
        if route == "/v1/messages" and answer.status is not None and answer.status < 300:
            successes.append(body)
    checked(answer)
    for data in successes:
        assert opens_unchanged(data), "a changed envelope was accepted"
    created = world.footprint()["messages"] - before["messages"]
    assert created <= len(successes)
    stored_only_what_was_accepted(world, before, created)


def body_of_soap(request: bytes) -> bytes:
    """The envelope a SOAP request carries, as the door takes it out (the test's own wrapping)."""
    from hub.inbound.soap import body_entry, extract

    return extract(body_entry(parse(request)))


@examples(150)
@given(st.sampled_from(["message", "delivery", "recipient", "feed"]), PATH_SEGMENT, PATH_SEGMENT, TOKEN)
def test_any_path_or_query_on_the_reading_routes_is_answered_with_a_stable_code(
    world: World, route: str, first: str, second: str, token: str | None
):
    if BUDGET.spent():
        return
    path = {
        "message": f"/v1/messages/{first}",
        "delivery": f"/v1/deliveries/{first}/envelope",
        "recipient": f"/v1/recipients/{first}/{second}",
        "feed": f"/v1/acks?after={urllib.parse.quote(first)}&limit={urllib.parse.quote(second)}",
    }[route]
    before = world.footprint()
    response = world.client.get(path, headers=bearer(token) if token is not None else {})
    if response.status_code in (404, 405) and response.headers.get("content-type", "").startswith("text/plain"):
        return  # Starlette's own answer: the path matched no route (an empty id, a slash too many)
    answer = rest(response)
    checked(answer)
    assert grown(before, world.footprint()) == {}


@examples(80)
@given(mutation(ack("myebox", UNKNOWN_ID)) | BODIES, st.sampled_from(["myebox", "doccle"]))
def test_any_acknowledgement_body_is_refused_with_a_stable_code(world: World, body: bytes, provider: str):
    if BUDGET.spent():
        return
    before = world.footprint()
    answer = rest(
        world.client.post(
            "/v1/acks", content=body, headers={"Content-Type": "application/xml", **bearer(PROVIDER_TOKENS[provider])}
        )
    )
    checked(answer)
    assert answer.status is not None and answer.status >= 400  # no delivery of that message: never applied
    assert grown(before, world.footprint()) == {}


def test_the_oracle_tells_an_unchanged_envelope_from_a_changed_one():
    # The control group of the fuzz tests' oracle: every signed example opens unchanged; a changed one does not
    for kind in sorted(KINDS):
        assert opens_unchanged(signed(kind)), kind
    assert not opens_unchanged(signed("payment").replace(b"1234.56", b"9234.56"))
    assert not opens_unchanged(keyring().sign(example("payment")))  # another SenderMessageId: not a fuzzed one
