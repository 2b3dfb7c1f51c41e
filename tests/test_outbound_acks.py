"""The acknowledgement document: model <-> XML, signed by its issuer, and what the opener refuses."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from hub.envelope.model import ACK_NS, TYPES_NS, AssuranceLevel, Sender
from hub.envelope.schema import validate
from hub.errors import ErrorCode, Rejected
from hub.outbound.acks import (
    HUB,
    Acknowledgement,
    ErrorDetail,
    Event,
    Fallback,
    Proof,
    Reply,
    Routes,
    build_acknowledgement,
    build_acknowledgements,
    open_acknowledgement,
    open_acknowledgements,
    read_acknowledgement,
    read_acknowledgements,
    signed_acknowledgement,
    signed_acknowledgements,
)
from hub.safexml import ParseLimits, parse
from hub.signing.keys import KeyPair
from hub.signing.signer import Signer
from hub.signing.truststore import TrustStore, trusted
from hub.signing.verifier import Verifier
from tests.kit import NOW, key_pair

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples/acknowledgements").glob("*.xml"))
A = "{" + ACK_NS + "}"
T = "{" + TYPES_NS + "}"
DS = "{http://www.w3.org/2000/09/xmldsig#}"
C = ErrorCode

PROVIDERS = ("doccle", "myebox")
MESSAGE_ID = "3f0c6a52-6a43-4c1e-9d55-0b8f3f1d2a71"
DIGEST = hashlib.sha256(b"the envelope as received").digest()


# --- keys: each provider and the hub sign with their own registered key ---------------------


@cache
def pair(party: str) -> KeyPair:
    return key_pair(f"ack-{party}")


@cache
def trust() -> TrustStore:
    return TrustStore(trusted(party, pair(party).certificate) for party in (*PROVIDERS, HUB))


def signer(party: str) -> Signer:
    return Signer(pair(party))


def verifier(backend: str = "fast") -> Verifier:
    return Verifier(trust(), backend=backend)  # type: ignore[arg-type]


def opened(data: bytes, **kwargs: object) -> Acknowledgement:
    ack, verified = open_acknowledgement(data, verifier(), NOW, **kwargs)  # type: ignore[arg-type]
    assert verified.signer.party == ack.issuer
    return ack


def refused(data: bytes, **kwargs: object) -> Rejected:
    with pytest.raises(Rejected) as caught:
        open_acknowledgement(data, verifier(), NOW, **kwargs)  # type: ignore[arg-type]
    return caught.value


# --- models -----------------------------------------------------------------------------------


def delivered(**changes: object) -> Acknowledgement:
    ack = Acknowledgement(
        ack_id="doccle-5512-delivered",
        event=Event.DELIVERED,
        occurred_at=datetime(2026, 11, 2, 9, 0, 4, tzinfo=timezone(timedelta(hours=1))),
        issuer="doccle",
        hub_message_id=MESSAGE_ID,
        provider="doccle",
        delivery_id=f"{MESSAGE_ID}:doccle",
        proof=Proof(envelope_digest=DIGEST, provider="doccle", delivered_at=datetime(2026, 11, 2, 8, 0, 4, tzinfo=UTC)),
    )
    return replace(ack, **changes)  # type: ignore[arg-type]


def replied(**changes: object) -> Acknowledgement:
    fields: dict[str, object] = {
        "ack_id": "doccle-5512-replied",
        "event": Event.REPLIED,
        "reply": Reply(choice_id="contest"),
    }
    return delivered(**{**fields, **changes})


FULL = Acknowledgement(
    ack_id="hub-0001:fwd",
    event=Event.OPENED,
    occurred_at=datetime(2026, 11, 2, 9, 30, 0, 123456, tzinfo=UTC),
    issuer=HUB,
    hub_message_id=MESSAGE_ID,
    sender_message_id="INSP-2026-0042",
    sender=Sender(organization_id="0308357159", application_id="tax-on-web", on_behalf_of="0207446759"),
    provider="myebox",
    delivery_id=f"{MESSAGE_ID}:myebox",
    envelope_digest=DIGEST,
    routes=Routes(providers=("myebox", "doccle"), fallback=Fallback.PAPER, rule="citizens-default"),
    reply=Reply(text="Je conteste.\nLigne 2 — « ok » & <b>"),
    proof=Proof(
        envelope_digest=DIGEST,
        provider="myebox",
        delivered_at=datetime(2026, 11, 2, 9, 0, 4, tzinfo=UTC),
        opened_at=datetime(2026, 11, 2, 9, 30, 0, tzinfo=UTC),
        assurance_level=AssuranceLevel.HIGH,
    ),
    error=ErrorDetail(code="SOME_CODE", message="what happened", line=3, path="/PublishMessage/Header"),
)

ORDER = [
    "AcknowledgementId",
    "Event",
    "OccurredAt",
    "Issuer",
    "HubMessageId",
    "SenderMessageId",
    "Sender",
    "Provider",
    "DeliveryId",
    "EnvelopeDigest",
    "Routes",
    "Reply",
    "Proof",
    "Error",
]


def local(element: etree._Element) -> str:
    return etree.QName(element).localname


# --- the model --------------------------------------------------------------------------------


def test_event_has_every_value_of_the_schema():
    schema = etree.parse(str(ROOT / "hub/schemas/acknowledgement-1.xsd"))
    xs = "{http://www.w3.org/2001/XMLSchema}"
    values = [e.get("value") for e in schema.getroot().find(f"{xs}simpleType[@name='Event']").iter(f"{xs}enumeration")]
    assert [event.value for event in Event] == values


def test_timestamps_are_kept_in_utc_and_naive_ones_are_refused():
    ack = delivered()
    assert ack.occurred_at.tzinfo is UTC
    assert ack.occurred_at == datetime(2026, 11, 2, 8, 0, 4, tzinfo=UTC)
    with pytest.raises(ValueError, match="time zone"):
        delivered(occurred_at=datetime(2026, 11, 2, 9, 0, 4))
    with pytest.raises(ValueError, match="time zone"):
        Proof(envelope_digest=DIGEST, provider="doccle", opened_at=datetime(2026, 11, 2))


def test_a_reply_is_a_choice_or_a_text():
    assert Reply(text="").text == ""
    with pytest.raises(ValueError):
        Reply()
    with pytest.raises(ValueError):
        Reply(choice_id="yes", text="yes")


def test_models_are_frozen():
    with pytest.raises(AttributeError):
        delivered().event = Event.OPENED  # type: ignore[misc]


# --- build --------------------------------------------------------------------------------------


def test_a_full_acknowledgement_builds_in_the_schemas_order_and_validates():
    root = build_acknowledgement(FULL)
    assert [local(child) for child in root] == ORDER
    assert [local(child) for child in root.find(A + "Routes")] == ["Provider", "Provider", "Fallback", "Rule"]
    assert [local(child) for child in root.find(A + "Proof")] == [
        "EnvelopeDigest",
        "Provider",
        "DeliveredAt",
        "OpenedAt",
        "AssuranceLevel",
    ]
    assert [child.tag for child in root.find(A + "Error")] == [T + "Code", T + "Message", T + "Line", T + "Path"]
    assert [child.tag for child in root.find(A + "Sender")] == [
        T + "OrganizationId",
        T + "ApplicationId",
        T + "OnBehalfOf",
    ]
    assert root.findtext(A + "OccurredAt") == "2026-11-02T09:30:00.123456Z"
    assert root.find(A + "EnvelopeDigest").get("algorithm") == "sha_256"
    validate(root, expect=ACK_NS)
    assert read_acknowledgement(root) == FULL


def test_optional_fields_are_left_out():
    ack = Acknowledgement(ack_id="a", event=Event.EXPIRED, occurred_at=NOW, issuer=HUB)
    root = build_acknowledgement(ack)
    assert [local(child) for child in root] == ["AcknowledgementId", "Event", "OccurredAt", "Issuer"]
    assert read_acknowledgement(root) == ack


def test_empty_routes_round_trip():
    ack = Acknowledgement(ack_id="a", event=Event.UNDELIVERABLE, occurred_at=NOW, issuer=HUB, routes=Routes())
    assert read_acknowledgement(build_acknowledgement(ack)) == ack


def test_batches_hold_one_to_ten_thousand_items():
    acks = [delivered(ack_id=f"d-{i}") for i in range(3)]
    root = build_acknowledgements(acks)
    assert [local(child) for child in root] == ["Item"] * 3
    assert root.get("Id") is None and root[0].get("Id") is None
    assert read_acknowledgements(root) == acks
    with pytest.raises(ValueError, match="at least one"):
        build_acknowledgements([])
    with pytest.raises(ValueError, match="at most"):
        build_acknowledgements(delivered() for _ in range(10001))


# --- examples -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_reads_and_round_trips(path: Path):
    root = parse(path.read_bytes())
    if local(root) == "SubmissionReceipt":
        validate(root, expect=ACK_NS)  # not an acknowledgement: the reader says so
        with pytest.raises(Rejected) as caught:
            read_acknowledgement(root)
        assert caught.value.code is C.SCHEMA_INVALID
        return
    ack = read_acknowledgement(root)
    rebuilt = build_acknowledgement(ack)
    validate(rebuilt, expect=ACK_NS)
    assert read_acknowledgement(rebuilt) == ack
    assert opened(signed_acknowledgement(signer(ack.issuer), ack)) == ack


def test_the_examples_say_what_they_show():
    by_name = {p.stem: read_acknowledgement(parse(p.read_bytes())) for p in EXAMPLES if p.stem != "receipt"}
    registered = by_name["delivered-registered"]
    assert registered.event is Event.DELIVERED and registered.issuer == "myebox"
    assert registered.occurred_at == datetime(2026, 11, 2, 8, 0, 4, tzinfo=UTC)
    assert registered.proof is not None and registered.proof.envelope_digest.hex().startswith("0b6f0e2a")
    assert by_name["replied"].reply == Reply(choice_id="contest")
    rejected = by_name["rejected"]
    assert rejected.issuer == HUB and rejected.hub_message_id is None
    assert rejected.error == ErrorDetail(
        code="SSIN_INVALID",
        message=rejected.error.message if rejected.error else "",
        line=11,
        path="/PublishMessage/Header/Recipient/Citizen/SSIN",
    )


# --- build -> sign -> open ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["fast", "signxml"])
def test_signed_by_the_issuer_opens_to_the_same_model(backend: str):
    for ack, party in ((FULL, HUB), (delivered(), "doccle"), (replied(), "doccle")):
        data = signed_acknowledgement(signer(party), ack)
        got, verified = open_acknowledgement(data, verifier(backend), NOW)
        assert got == ack
        assert verified.signer.party == party


def test_a_signed_batch_opens_to_the_same_models():
    acks = [replace(FULL, ack_id=f"hub-{i}") for i in range(5)]
    data = signed_acknowledgements(signer(HUB), acks)
    got, verified = open_acknowledgements(data, verifier(), NOW)
    assert got == acks and verified.signer.party == HUB


def test_a_batch_speaks_for_one_issuer():
    data = signed_acknowledgements(signer("doccle"), [delivered(), delivered(issuer="myebox", provider="myebox")])
    with pytest.raises(Rejected) as caught:
        open_acknowledgements(data, verifier(), NOW)
    assert caught.value.code is C.NOT_AUTHORISED
    assert "one batch per issuer" in caught.value.message


def test_a_batch_is_not_a_single_acknowledgement():
    data = signed_acknowledgements(signer("doccle"), [delivered()])
    assert refused(data).code is C.SCHEMA_INVALID
    with pytest.raises(Rejected) as caught:
        open_acknowledgements(signed_acknowledgement(signer("doccle"), delivered()), verifier(), NOW)
    assert caught.value.code is C.SCHEMA_INVALID


# --- property: any model within the schema's bounds round-trips -----------------------------------

token = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:/\-]{0,63}", fullmatch=True)
xml_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Cn"), blacklist_characters="\ufffe\uffff")
    | st.sampled_from("\t\n\r"),
    max_size=200,
)
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
moments = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(9000, 1, 1), timezones=offsets)
digests = st.binary(min_size=32, max_size=32)
cbe = st.from_regex(r"[01][0-9]{9}", fullmatch=True)
maybe = st.none

acks = st.builds(
    Acknowledgement,
    ack_id=token,
    event=st.sampled_from(Event),
    occurred_at=moments,
    issuer=token,
    hub_message_id=maybe() | st.uuids().map(str),
    sender_message_id=maybe() | token,
    sender=maybe() | st.builds(Sender, organization_id=cbe, application_id=token, on_behalf_of=maybe() | cbe),
    provider=maybe() | token,
    delivery_id=maybe() | token,
    envelope_digest=maybe() | digests,
    routes=maybe()
    | st.builds(
        Routes,
        providers=st.lists(token, max_size=20).map(tuple),
        fallback=maybe() | st.sampled_from(Fallback),
        rule=maybe() | xml_text.filter(lambda s: 1 <= len(s) <= 255),
    ),
    reply=maybe() | st.builds(Reply, choice_id=token) | st.builds(Reply, text=xml_text),
    proof=maybe()
    | st.builds(
        Proof,
        envelope_digest=digests,
        provider=token,
        delivered_at=maybe() | moments,
        opened_at=maybe() | moments,
        assurance_level=maybe() | st.sampled_from(AssuranceLevel),
    ),
    error=maybe()
    | st.builds(
        ErrorDetail,
        code=st.from_regex(r"[A-Z][A-Z0-9_]{1,63}", fullmatch=True),
        message=xml_text,
        line=maybe() | st.integers(min_value=1, max_value=10**12),
        path=maybe() | xml_text,
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(acks)
def test_any_acknowledgement_builds_valid_and_reads_back_equal(ack: Acknowledgement):
    root = build_acknowledgement(ack)
    validate(root, expect=ACK_NS)
    assert read_acknowledgement(parse(etree.tostring(root))) == ack


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(acks.map(lambda a: replace(a, issuer="myebox", provider=None, proof=None)))
def test_any_acknowledgement_signed_by_its_issuer_opens_equal(ack: Acknowledgement):
    assert opened(signed_acknowledgement(signer("myebox"), ack)) == ack


# --- hostile documents ----------------------------------------------------------------------------


def signed_bytes(ack: Acknowledgement | None = None, party: str = "doccle") -> bytes:
    return signed_acknowledgement(signer(party), ack or delivered())


def swap(data: bytes, old: str, new: str) -> bytes:
    assert data.count(old.encode()) == 1, old
    return data.replace(old.encode(), new.encode())


def unsigned_bytes(ack: Acknowledgement | None = None) -> bytes:
    return etree.tostring(build_acknowledgement(ack or delivered()), xml_declaration=True, encoding="UTF-8")


def test_malformed_xml_is_refused():
    assert refused(b"<Acknowledgement xmlns='urn:ebox-hub:acknowledgement:1'><Event>").code is C.XML_MALFORMED
    assert refused(b"").code is C.XML_MALFORMED
    assert refused(b"not xml at all").code is C.XML_MALFORMED


def test_a_doctype_is_refused():
    data = b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]>' + unsigned_bytes().split(b"?>", 1)[1]
    assert refused(data).code is C.XML_FORBIDDEN


def test_a_document_over_the_size_limit_is_refused():
    assert refused(signed_bytes(), limits=ParseLimits(max_bytes=200)).code is C.TOO_LARGE


@pytest.mark.parametrize(
    "data",
    [
        b'<SubmissionReceipt xmlns="urn:ebox-hub:acknowledgement:1"/>',
        b'<PublishMessage xmlns="urn:ebox-hub:envelope:1"/>',
        b'<Acknowledgement xmlns="urn:example:other"/>',
        b"<Acknowledgement/>",
        b'<t:Error xmlns:t="urn:ebox-hub:types:1"/>',
    ],
    ids=["receipt", "envelope", "foreign-namespace", "no-namespace", "types-namespace"],
)
def test_a_wrong_root_is_refused_before_the_signature(data: bytes):
    problem = refused(data)
    assert problem.code is C.SCHEMA_INVALID
    assert "root element" in problem.message


def test_an_unknown_event_is_refused():
    problem = refused(swap(signed_bytes(), "<Event>delivered<", "<Event>read<"))
    assert problem.code is C.SCHEMA_INVALID
    assert "Event" in problem.message


def test_an_oversized_reply_text_is_refused():
    at_limit = replied(reply=Reply(text="x" * 10000))
    assert opened(signed_bytes(at_limit)) == at_limit
    problem = refused(signed_bytes(replied(reply=Reply(text="x" * 10001))))
    assert problem.code is C.SCHEMA_INVALID
    assert "/Reply/Text" in problem.message


def test_a_reply_with_both_a_choice_and_a_text_is_refused():
    data = swap(signed_bytes(replied()), "<ChoiceId>contest</ChoiceId>", "<ChoiceId>a</ChoiceId><Text>b</Text>")
    assert refused(data).code is C.SCHEMA_INVALID


def test_elements_out_of_order_are_refused():
    data = swap(unsigned_bytes(), "<Event>delivered</Event>", "")
    data = swap(data, "<Issuer>", "<Event>delivered</Event><Issuer>")
    assert refused(data).code is C.SCHEMA_INVALID


@pytest.mark.parametrize(
    ("when", "fragment"),
    [
        ("2026-11-02T09:00:04", "OccurredAt"),
        ("10000-01-01T00:00:00Z", "OccurredAt"),
        ("2026-11-02T24:00:00Z", "OccurredAt"),
        ("0001-01-01T00:00:00+01:00", "OccurredAt"),
    ],
    ids=["no-time-zone", "year-10000", "hour-24", "before-year-1-in-utc"],
)
def test_timestamps_the_model_cannot_hold_are_refused_with_their_place(when: str, fragment: str):
    root = build_acknowledgement(delivered())
    root.find(A + "OccurredAt").text = when
    with pytest.raises(Rejected) as caught:
        read_acknowledgement(root)
    assert caught.value.code is C.SCHEMA_INVALID
    assert fragment in caught.value.message


def test_an_unsigned_acknowledgement_is_refused():
    assert refused(unsigned_bytes()).code is C.SIGNATURE_MISSING


def test_another_providers_key_claiming_this_issuer_is_refused():
    forged = signed_acknowledgement(signer("myebox"), delivered())  # Issuer: doccle
    problem = refused(forged)
    assert problem.code is C.UNKNOWN_SIGNER
    assert "doccle" in problem.message


def test_another_providers_key_without_its_certificate_is_refused():
    root = etree.fromstring(signed_acknowledgement(signer("myebox"), delivered()))
    key_info = root.find(f"{DS}Signature/{DS}KeyInfo")
    key_info.getparent().remove(key_info)
    assert refused(etree.tostring(root, xml_declaration=True, encoding="UTF-8")).code is C.SIGNATURE_INVALID


def test_a_provider_cannot_speak_for_the_hub():
    forged = signed_acknowledgement(signer("doccle"), replace(FULL, provider="doccle"))  # Issuer: hub
    assert refused(forged).code is C.UNKNOWN_SIGNER


def test_an_unregistered_key_is_refused():
    data = signed_acknowledgement(Signer(key_pair("ack-stranger")), delivered())
    assert refused(data).code is C.UNKNOWN_SIGNER


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("<Event>delivered<", "<Event>opened<"),
        ("<Issuer>doccle<", "<Issuer>myebox<"),
        (f"<HubMessageId>{MESSAGE_ID}<", "<HubMessageId>00000000-0000-0000-0000-000000000000<"),
        ("<Provider>doccle</Provider><DeliveryId>", "<Provider>doccle</Provider><DeliveryId>x"),
    ],
    ids=["event", "issuer", "message-id", "delivery-id"],
)
def test_a_document_changed_after_signing_is_refused(old: str, new: str):
    problem = refused(swap(signed_bytes(), old, new))
    # Changing the Issuer to another registered provider selects that provider's certificates,
    # which the signature's embedded certificate is not: refused before the digest is compared.
    assert problem.code in (C.SIGNATURE_INVALID, C.UNKNOWN_SIGNER)
    if "Issuer" not in old:
        assert problem.code is C.SIGNATURE_INVALID


def test_a_changed_reply_is_refused():
    data = swap(signed_bytes(replied()), "<ChoiceId>contest<", "<ChoiceId>accept<")
    assert refused(data).code is C.SIGNATURE_INVALID


def test_a_second_signature_is_refused():
    root = etree.fromstring(signed_bytes())
    root.append(etree.fromstring(etree.tostring(root.find(DS + "Signature"))))
    assert refused(etree.tostring(root, xml_declaration=True, encoding="UTF-8")).code is C.SCHEMA_INVALID


def test_a_comment_spliced_into_signed_text_reads_as_signed():
    data = swap(signed_bytes(), "<Event>delivered<", "<Event>deli<!-- x -->vered<")
    assert opened(data) == delivered()


def test_an_expired_certificate_is_refused():
    problem = refused_at(signed_bytes(), NOW + timedelta(days=3650))
    assert problem.code is C.CERT_EXPIRED


def refused_at(data: bytes, now: datetime) -> Rejected:
    with pytest.raises(Rejected) as caught:
        open_acknowledgement(data, verifier(), now)
    return caught.value


def test_the_door_names_the_issuers_it_accepts():
    data = signed_bytes()
    assert opened(data, issuers={"doccle", "myebox"}) == delivered()
    problem = refused(data, issuers={"myebox"})
    assert problem.code is C.NOT_AUTHORISED
    assert "/Acknowledgement/Issuer" in problem.message


@pytest.mark.parametrize(
    "changes",
    [{"provider": "myebox"}, {"proof": Proof(envelope_digest=DIGEST, provider="myebox")}],
    ids=["provider", "proof-provider"],
)
def test_a_provider_acknowledges_its_own_deliveries_only(changes: dict[str, object]):
    problem = refused(signed_bytes(delivered(**changes)))
    assert problem.code is C.ACK_NOT_YOURS
    assert "myebox" in problem.message


def test_the_hub_may_name_any_provider():
    assert opened(signed_bytes(FULL, HUB)) == FULL
