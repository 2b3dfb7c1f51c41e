"""The e-Box Message Registry REST v2.1 door, sender side: a sender written for the e-Box works unchanged.

Requests are built as the contract defines them (validated against the reference swagger's
definitions), authenticated as e-Box senders do (a client assertion JWT signed with the sender's
registered certificate, exchanged for a bearer token), and sent over HTTP. Answers validate against
the same definitions. Every documented error is earned by a request that deserves it, and a refused
request stores no message.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
from datetime import timedelta

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select, update
from starlette.testclient import TestClient

from hub.envelope import examples as ex
from hub.envelope import model as m
from hub.envelope.reader import read_envelope
from hub.inbound.http import build_app
from hub.routing.directory import Change, Directory
from hub.routing.recipients import RecipientKind
from hub.runtime import build_runtime
from hub.safexml import parse
from hub.settings import load_settings
from hub.signing.keys import generate_key, self_signed_certificate
from hub.store.db import make_engine, upgrade
from hub.store.models import AuditEntry, Message, Refusal
from tests.compat_ebox_rest_kit import (
    BASE,
    CSV,
    FILES,
    PDF,
    access_token,
    assertion,
    couple,
    digest,
    is_valid,
    message,
    publish,
    search,
    token_request,
    validate,
)
from tests.kit import NOW, directory, keyring
from tests.test_inbound_rest import counts, make_hub
from tests.test_inbound_soap import served  # noqa: F401 - the hub behind a real uvicorn, shared

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
"""For the many small refusals: the database plays no part in them (the others run on both back ends)."""


@pytest.fixture()
def client(hub):
    with TestClient(build_app(hub)) as test_client:
        yield test_client


@pytest.fixture()
def social(client) -> str:
    return access_token(client, ex.SOCIAL)


def stored(hub, message_id: str) -> tuple[Message, m.Envelope]:
    with hub.sessions() as session:
        row = session.get(Message, message_id)
        assert row is not None and row.envelope is not None
        return row, read_envelope(parse(row.envelope))


def activate(hub, kind: RecipientKind, ident: str) -> None:
    Directory(hub.sessions, clock=lambda: NOW).apply(
        [Change(op="activate", kind=kind, id=ident, at=NOW - timedelta(days=1), provider="myebox")]
    )


def refused(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    validate("StatusMessage", body)
    assert body["code"] == code, body
    return body


# --- publishMessage ------------------------------------------------------------------------------


def test_a_publication_is_accepted_and_mapped_with_nothing_lost(hub, client, social):
    request = message()
    validate("MessageToPublish", request)
    response = publish(client, social, request)
    assert response.status_code == 201, response.text
    answer = response.json()
    validate("PublicationStatusMessage", answer)
    assert answer["expirationDate"] == "2027-11-02T09:00:00Z"
    assert answer["code"] == "NO_DIGITAL_USER"  # nobody activated digital post yet: accepted, for paper
    row, envelope = stored(hub, answer["messageId"])
    h, c = envelope.header, envelope.content
    assert (h.sender.organization_id, h.sender.application_id, h.sender.on_behalf_of) == (
        ex.SOCIAL,
        "pension-statements",
        None,
    )
    assert (h.recipient.ebox_type, h.recipient.id, h.message_type) == (
        m.EboxType.CITIZEN,
        ex.CITIZEN_A,
        "PENSION_STATEMENT",
    )
    assert h.expires_at is not None and h.expires_at.isoformat() == "2027-11-02T09:00:00+00:00"
    assert not h.registered and c.reply_options is None
    assert {(t.lang.value, t.value) for t in c.subjects} == {
        ("nl", "Uw pensioenoverzicht"),
        ("fr", "Votre aperçu de pension"),
    }
    assert len(c.bodies) == 2 and not c.body_main_content  # an accompanying note: the PDF is the main content
    assert c.document is not None and (c.document.file_name, c.document.media_type, c.document.content) == (
        "overzicht.pdf",
        "application/pdf",
        PDF,
    )
    assert [(t.lang.value, t.value) for t in c.document.titles] == [("nl", "Overzicht")]
    assert [(a.file_name, a.content) for a in c.annexes] == [("loopbaan.csv", CSV)]
    assert (row.state, row.submitter_id, row.institution_id) == ("accepted", ex.SOCIAL, ex.SOCIAL)
    with hub.sessions() as session:
        audit = session.scalars(select(AuditEntry)).one()
    assert json.loads(audit.detail)["door"] == "ebox-rest"
    assert ex.CITIZEN_A not in audit.detail


def test_a_recipient_with_digital_post_gets_no_business_code(hub, client, social):
    activate(hub, RecipientKind.CITIZEN, ex.CITIZEN_A)
    response = publish(client, social, message())
    assert response.status_code == 201
    validate("PublicationStatusMessage", response.json())
    assert "code" not in response.json()


def test_every_field_of_a_rich_publication_reaches_the_hubs_message(hub, client):
    token = access_token(client, ex.SOCIAL)
    request = message(
        recipient={"eboxType": "enterprise", "eboxIdValue": ex.ENTERPRISE},
        forTheAttentionOf={"id": ex.EMPLOYEE, "type": "SSIN", "name": "Payroll department"},
        messageTypeId="FORMAL_NOTICE",
        senderApplicationId="inspection",
        registeredMail=True,
        replyAuthorized=True,
        originalMessageId="ORIG-42",
        bodyMainContent=True,
        bodyContent={"fr": "Veuillez payer."},
        subject={"fr": "Mise en demeure"},
        attachments=[
            {"httpPartName": "upfile1", "mainContent": False, "attachmentSigned": True, "digest": digest(PDF)}
        ],
        paymentData={
            "paymentDataId": "PAY-2026-1",
            "amount": 1234.56,
            "vatAmount": 0,
            "currency": "EUR",
            "dueDate": "2027-01-15T00:00:00+01:00",
            "iban": ex.IBAN,
            "bic": ex.BIC,
            "reference": {"structured": ex.REFERENCE},
        },
        businessDataList=[
            {"key": "year", "name": {"fr": "Année"}, "values": [{"fr": "2026", "nl": "2026"}]},
            {"key": "file", "values": [{"fr": "dossier"}, {"nl": "dossier-nl"}]},
        ],
    )
    validate("MessageToPublish", request)
    response = publish(client, token, request, files={"upfile1": FILES["upfile1"]})
    assert response.status_code == 201, response.text
    _, envelope = stored(hub, response.json()["messageId"])
    h, c = envelope.header, envelope.content
    assert h.registered and h.original_message_id == "ORIG-42" and h.correlation_id == "PAY-2026-1"
    assert h.recipient.for_the_attention_of == m.ForTheAttentionOf(ssin=ex.EMPLOYEE, name="Payroll department")
    assert c.body_main_content and c.document is None and c.annexes[0].signed
    assert c.reply_options is not None
    p = c.payment
    assert p is not None and (str(p.amount), str(p.vat_amount), p.currency, p.iban, p.bic) == (
        "1234.56",
        "0.00",
        "EUR",
        ex.IBAN,
        ex.BIC,
    )
    assert (p.due_date.isoformat(), p.structured_reference) == ("2027-01-15", ex.REFERENCE)
    year, file = c.business_data
    assert (year.key, year.values, [t.value for t in year.names]) == ("year", ("2026",), ["Année"])
    assert [(v.lang.value, v.value) for v in file.values if isinstance(v, m.Text)] == [
        ("fr", "dossier"),
        ("nl", "dossier-nl"),
    ]


def test_an_idempotency_key_repeat_gets_the_original_answer_and_other_content_is_refused(hub, client, social):
    key = {"Idempotency-Key": "7b0b1f0e-4a55-4b0e-9a53-2f3c1e1d9a01"}
    first = publish(client, social, message(), headers=key)
    again = publish(client, social, message(), headers=key)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    other = publish(client, social, message(subject={"nl": "Iets anders", "fr": "Autre chose"}), headers=key)
    refused(other, 400, "DUPLICATE_MESSAGE_ID")
    assert counts(hub)["messages"] == 1
    _, envelope = stored(hub, first.json()["messageId"])
    assert envelope.header.sender_message_id == key["Idempotency-Key"]
    # Without a key each request is a message of its own.
    assert publish(client, social, message()).json()["messageId"] != first.json()["messageId"]


def test_an_integrator_publishes_on_behalf_of_an_institution_that_mandated_it(hub, client):
    token = access_token(client, ex.INTEGRATOR)
    request = message(
        senderOrganizationId=None,
        senderApplicationId="population",
        messageTypeId="PARKING_PERMIT",
        recipient={"eboxType": "citizen", "eboxIdValue": ex.CITIZEN_B},
    )
    response = publish(client, token, request, headers={"On-Behalf-Of": ex.CITY})
    assert response.status_code == 201, response.text
    row, envelope = stored(hub, response.json()["messageId"])
    assert (row.institution_id, row.submitter_id) == (ex.CITY, ex.INTEGRATOR)
    assert envelope.header.sender.on_behalf_of == ex.CITY


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("no-token", "UNAUTHENTICATED"),
        ("garbage-token", "UNAUTHENTICATED"),
        ("token-forged-by-sender", "UNAUTHENTICATED"),
        ("token-expired", "UNAUTHENTICATED"),
        ("token-for-another-organisation", "NOT_AUTHORISED"),
        ("on-behalf-of-without-mandate", "NOT_AUTHORISED"),
        ("unknown-application", "INVALID_SENDER"),
        ("on-behalf-of-disagrees", "NOT_AUTHORISED"),
    ],
)
def test_authentication_and_authorisation_refusals_are_401_and_store_nothing(hub, client, case, code):
    token = access_token(client, ex.SOCIAL)
    headers: dict[str, str] = {}
    request = message()
    if case == "no-token":
        token = ""
    elif case == "garbage-token":
        token = "not-a-token"
    elif case == "token-forged-by-sender":  # a sender signs its own "access token" with its key
        claims = jwt.decode(token, options={"verify_signature": False})
        token = jwt.encode(claims, keyring().pairs[ex.SOCIAL].key, algorithm="ES256")
    elif case == "token-expired":
        hub.intake.clock = lambda: NOW + timedelta(hours=1)
    elif case == "token-for-another-organisation":
        token = access_token(client, ex.FINANCE)  # FINANCE's token, a message naming SOCIAL as sender
    elif case == "on-behalf-of-without-mandate":
        token = access_token(client, ex.INTEGRATOR)
        headers = {"On-Behalf-Of": ex.SOCIAL}
        request = message(senderOrganizationId=None)
    elif case == "unknown-application":
        request = message(senderApplicationId="other-app")
    elif case == "on-behalf-of-disagrees":
        token = access_token(client, ex.INTEGRATOR)
        headers = {"On-Behalf-Of": ex.CITY}  # senderOrganizationId says SOCIAL
    response = publish(client, token, request, headers=headers)
    refused(response, 401, code)
    assert counts(hub)["messages"] == 0


def _annexes(count: int) -> tuple[dict, dict]:
    request = message(
        bodyMainContent=True,
        attachments=[{"httpPartName": f"upfile{i}", "mainContent": False} for i in range(1, count + 1)],
    )
    return request, {f"upfile{i}": FILES["upfile2"] for i in range(1, count + 1)}


PDF_ONLY = {"upfile1": FILES["upfile1"]}
MAIN_PDF = [{"httpPartName": "upfile1", "mainContent": True}]
INVALID_DATA = [
    # (code, what the request does wrong, messageToPublish, files: None for the default two)
    ("DIGEST_MISMATCH", "digest", message(attachments=[{**MAIN_PDF[0], "digest": digest(b"x")}]), PDF_ONLY),
    ("TOO_LARGE", "7 files", *_annexes(7)),
    ("TOO_LARGE", "6 annexes", *_annexes(6)),
    (
        "MAIN_CONTENT_MISSING",
        "none",
        message(attachments=[{"httpPartName": "upfile2", "mainContent": False}]),
        {"upfile2": FILES["upfile2"]},
    ),
    ("MAIN_CONTENT_MISSING", "two", message(bodyMainContent=True), None),
    (
        "MAIN_CONTENT_MISSING",
        "body main without body",
        message(bodyMainContent=True, bodyContent=None, attachments=[]),
        {},
    ),
    ("MEDIA_TYPE_MISMATCH", "html", message(attachments=MAIN_PDF), {"upfile1": ("page.html", b"<html/>", "text/html")}),
    (
        "MEDIA_TYPE_MISMATCH",
        "not a pdf",
        message(attachments=MAIN_PDF),
        {"upfile1": ("a.pdf", b"text", "application/pdf")},
    ),
    ("SSIN_INVALID", "check digits", message(recipient={"eboxType": "citizen", "eboxIdValue": "85073003399"}), None),
    ("CBE_INVALID", "check digits", message(recipient={"eboxType": "enterprise", "eboxIdValue": "0406798007"}), None),
    ("UNKNOWN_MESSAGE_TYPE", "another's type", message(messageTypeId="TAX_ASSESSMENT"), None),
    ("EXPIRY_OUT_OF_RANGE", "10 years", message(expirationDate="2036-11-02T09:00:00Z"), None),
    ("LANGUAGE_MISSING", "body in de only", message(bodyContent={"de": "Anlage"}), None),
    (
        "IBAN_INVALID",
        "mod 97",
        message(
            paymentData={
                "paymentDataId": "P1",
                "amount": 1,
                "vatAmount": 0,
                "currency": "EUR",
                "dueDate": "2027-01-15",
                "iban": "BE71096123456768",
            }
        ),
        None,
    ),
    ("SCHEMA_INVALID", "unknown field", message(unknownField=1), None),
    ("SCHEMA_INVALID", "no messageTypeId", message(messageTypeId=None), None),
    (
        "SCHEMA_INVALID",
        "business data description",
        message(businessDataList=[{"key": "k", "values": [{"fr": "v"}], "description": {"fr": "d"}}]),
        None,
    ),
    (
        "SCHEMA_INVALID",
        "translated business data",
        message(businessDataList=[{"key": "k", "values": [{"fr": "oui", "nl": "ja"}]}]),
        None,
    ),
    ("SCHEMA_INVALID", "attention of a citizen", message(forTheAttentionOf={"id": ex.EMPLOYEE}), None),
    ("SCHEMA_INVALID", "a file no attachment names", message(), {**FILES, "upfile3": FILES["upfile2"]}),
    ("SCHEMA_INVALID", "an attachment naming no file", message(), PDF_ONLY),
    (
        "SCHEMA_INVALID",
        "a wrong digest method",
        message(attachments=[{**MAIN_PDF[0], "digest": {"digestMethod": "md5", "digestValue": "x"}}]),
        PDF_ONLY,
    ),
]


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("code", "case", "request_", "files"), INVALID_DATA, ids=[f"{c[0]}-{c[1]}" for c in INVALID_DATA]
)
def test_invalid_data_is_400_with_its_code_and_stores_nothing(hub, client, social, code, case, request_, files):
    if code not in ("SCHEMA_INVALID",):
        validate("MessageToPublish", request_)  # valid for the contract: the hub's own rules refuse it
    refused(publish(client, social, request_, files=files), 400, code)
    assert counts(hub)["messages"] == 0


def test_malformed_requests_are_400_and_counted_only_when_the_intake_refused_them(hub, client, social):
    for raw in (b"{not json", b"[]", b"[" * 100000, b'{"recipient": 1}'):
        refused(publish(client, social, raw), 400, "SCHEMA_INVALID")
    response = client.post(f"{BASE}/publishMessage", json=message(), headers={"Authorization": f"Bearer {social}"})
    refused(response, 400, "CONTENT_TYPE_INVALID")
    refused(publish(client, social, message(), headers={"Idempotency-Key": "bad key!"}), 400, "SCHEMA_INVALID")
    no_json = client.post(
        f"{BASE}/publishMessage", files={"upfile1": FILES["upfile1"]}, headers={"Authorization": f"Bearer {social}"}
    )
    refused(no_json, 400, "SCHEMA_INVALID")
    refused(publish(client, social, message(messageTypeId="TAX_ASSESSMENT")), 400, "UNKNOWN_MESSAGE_TYPE")
    assert counts(hub)["messages"] == 0
    with hub.sessions() as session:  # the intake's refusals are counted for the statistics, the rest not
        assert [(r.code, r.door, r.sender_id) for r in session.scalars(select(Refusal))] == [
            ("UNKNOWN_MESSAGE_TYPE", "ebox-rest", ex.SOCIAL)
        ]


def test_oversized_parts_and_too_many_parts_are_refused(hub, client, social):
    huge = message(bodyContent={"nl": "x" * (1024 * 1024 + 1), "fr": "x"})
    refused(publish(client, social, huge), 400, "TOO_LARGE")
    eight = {f"upfile{i}": FILES["upfile2"] for i in range(1, 9)}
    refused(publish(client, social, message(), files=eight), 400, "TOO_LARGE")
    assert counts(hub)["messages"] == 0


def test_no_national_number_body_or_token_is_logged(hub, client, caplog):
    caplog.set_level(logging.DEBUG)
    token = access_token(client, ex.SOCIAL)
    publish(client, token, message())
    publish(client, token, message(recipient={"eboxType": "citizen", "eboxIdValue": "85073003399"}))
    search(client, token, [couple("x")])
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert caplog.records
    for secret in (ex.CITIZEN_A, "85073003399", token, "In bijlage uw overzicht"):
        assert secret not in logged


def test_too_many_status_couples_are_refused(client, social):
    refused(search(client, social, [couple("x")] * 101), 400, "TOO_LARGE")
    refused(
        client.post(
            f"{BASE}/searchMessageStatus",
            content=b"[",
            headers={"Authorization": f"Bearer {social}", "Content-Type": "application/json"},
        ),
        400,
        "SCHEMA_INVALID",
    )


def test_an_oversized_request_is_cut_off(tmp_path, database_url):
    runtime = make_hub(tmp_path, database_url, HUB_LIMITS_MAX_ENVELOPE_BYTES="4000")
    try:
        with TestClient(build_app(runtime)) as client:
            token = access_token(client, ex.SOCIAL)
            big = {"upfile1": ("big.pdf", PDF + b"0" * 5000, "application/pdf")}
            request = message(attachments=[{"httpPartName": "upfile1", "mainContent": True}])
            refused(publish(client, token, request, files=big), 400, "TOO_LARGE")
        assert counts(runtime)["messages"] == 0
    finally:
        runtime.close()


# --- the token endpoint --------------------------------------------------------------------------------


def test_a_token_is_issued_for_a_valid_assertion_named_by_x5c_or_thumbprint(client):
    for by_thumbprint in (False, True):
        response = token_request(client, assertion(ex.SOCIAL, by_thumbprint=by_thumbprint))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["token_type"] == "Bearer" and body["expires_in"] == 900
        assert response.headers["cache-control"] == "no-store"


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("case", "status", "error"),
    [
        ("expired", 401, "invalid_client"),
        ("issued-in-the-future", 401, "invalid_client"),
        ("lives-too-long", 401, "invalid_client"),
        ("wrong-audience", 401, "invalid_client"),
        ("replayed", 401, "invalid_client"),
        ("forged", 401, "invalid_client"),
        ("unregistered-certificate", 401, "invalid_client"),
        ("another-organisations-client-id", 401, "invalid_client"),
        ("client-id-mismatch", 401, "invalid_client"),
        ("hmac", 401, "invalid_client"),
        ("alg-none", 401, "invalid_client"),
        ("no-jti", 401, "invalid_client"),
        ("not-a-jwt", 401, "invalid_client"),
        ("password-grant", 400, "unsupported_grant_type"),
        ("no-assertion-type", 400, "invalid_request"),
    ],
)
def test_a_bad_assertion_gets_no_token(client, case, status, error):
    extra: dict[str, str] = {}
    good = assertion(ex.SOCIAL)
    if case == "expired":
        value = assertion(ex.SOCIAL, issued=-timedelta(minutes=10))
    elif case == "issued-in-the-future":
        value = assertion(ex.SOCIAL, issued=timedelta(minutes=10))
    elif case == "lives-too-long":
        value = assertion(ex.SOCIAL, lifetime=timedelta(hours=2))
    elif case == "wrong-audience":
        value = assertion(ex.SOCIAL, aud="https://other.example/oauth2/token")
    elif case == "replayed":
        assert token_request(client, good).status_code == 200
        value = good
    elif case == "forged":  # SOCIAL's certificate in x5c, signed with FINANCE's key
        value = assertion(ex.SOCIAL, key_of=ex.FINANCE)
    elif case == "unregistered-certificate":
        key = generate_key("ec")
        cert = self_signed_certificate(key, "stranger", not_before=NOW - timedelta(days=1), days=10)
        value = jwt.encode(
            jwt.decode(good, options={"verify_signature": False}),
            key,
            algorithm="ES256",
            headers={"x5c": [base64.b64encode(cert.public_bytes(Encoding.DER)).decode()]},
        )
    elif case == "another-organisations-client-id":  # SOCIAL's certificate, claiming to be FINANCE
        value = assertion(ex.SOCIAL, claims={"iss": ex.FINANCE, "sub": ex.FINANCE})
    elif case == "client-id-mismatch":
        value, extra = good, {"client_id": ex.FINANCE}
    elif case == "hmac":
        value = jwt.encode({"iss": ex.SOCIAL}, "secret-long-enough-for-hmac-sha256!", algorithm="HS256")
    elif case == "alg-none":  # the sender's certificate named, no signature at all
        unsigned_claims = jwt.decode(good, options={"verify_signature": False})
        header = jwt.get_unverified_header(good)
        value = jwt.encode(unsigned_claims, None, algorithm="none", headers={"x5c": header["x5c"]})
    elif case == "no-jti":
        value = assertion(ex.SOCIAL, claims={"jti": None})
    elif case == "not-a-jwt":
        value = "abc.def"
    elif case == "password-grant":
        value, extra = good, {"grant_type": "password"}
    else:
        value, extra = good, {"client_assertion_type": "urn:other"}
    response = token_request(client, value, **extra)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert "access_token" not in response.json()


# --- searchMessageStatus ------------------------------------------------------------------------------


def test_search_message_status_reports_the_read_status(hub, client, social):
    message_id = publish(client, social, message()).json()["messageId"]
    request = [couple(message_id)]
    validate("MessagesStatusRequest", request)
    response = search(client, social, request)
    assert response.status_code == 201, response.text
    validate("MessagesStatusList", response.json())
    [status] = response.json()
    assert (status["messageId"], status["readStatus"], status["visible"]) == (message_id, False, True)
    assert status["expirationDate"] == "2027-11-02T09:00:00Z"
    with hub.sessions() as session:
        session.execute(update(Message).where(Message.id == message_id).values(state="opened"))
        session.commit()
    [status] = search(client, social, request).json()
    assert status["readStatus"] is True
    # Unknown, another sender's, another recipient's: not found.
    refused(search(client, social, [couple("00000000-0000-4000-8000-000000000000")]), 404, "MESSAGE_NOT_FOUND")
    refused(search(client, access_token(client, ex.FINANCE), request), 404, "MESSAGE_NOT_FOUND")
    refused(search(client, social, [couple(message_id, ex.CITIZEN_B)]), 404, "MESSAGE_NOT_FOUND")
    refused(search(client, social, [{"messageId": message_id}]), 400, "SCHEMA_INVALID")
    refused(search(client, "nope", request), 401, "UNAUTHENTICATED")


# --- referenceData/messageTypes -------------------------------------------------------------------------


def test_message_types_are_the_senders_registered_ones(client, social):
    headers = {"Authorization": f"Bearer {social}"}
    response = client.get(f"{BASE}/referenceData/messageTypes", headers=headers)
    assert response.status_code == 200, response.text
    validate("MessageTypes", response.json())
    body = response.json()
    assert body["totalItems"] == 3
    assert [t["messageTypeId"] for t in body["items"]] == ["EMPLOYER_NOTICE", "FORMAL_NOTICE", "PENSION_STATEMENT"]
    assert body["items"][0]["senderOrganizationIds"] == [ex.SOCIAL]
    assert body["items"][0]["validityPeriod"] == {"validityPeriodNumber": 12, "validityPeriodUnit": "month"}
    page = client.get(f"{BASE}/referenceData/messageTypes?page=2&pageSize=2", headers=headers).json()
    assert [t["messageTypeId"] for t in page["items"]] == ["PENSION_STATEMENT"] and page["totalItems"] == 3
    refused(client.get(f"{BASE}/referenceData/messageTypes?pageSize=101", headers=headers), 400, "SCHEMA_INVALID")
    one = client.get(f"{BASE}/referenceData/messageTypes/FORMAL_NOTICE", headers=headers)
    assert one.status_code == 200
    validate("MessageType", one.json())
    refused(client.get(f"{BASE}/referenceData/messageTypes/TAX_ASSESSMENT", headers=headers), 404, "MESSAGE_NOT_FOUND")
    integrator = {"Authorization": f"Bearer {access_token(client, ex.INTEGRATOR)}"}
    types = client.get(f"{BASE}/referenceData/messageTypes", headers=integrator).json()
    assert [t["messageTypeId"] for t in types["items"]] == ["INFORMATION_REQUEST", "PARKING_PERMIT"]
    assert types["items"][0]["senderOrganizationIds"] == [ex.CITY]
    refused(
        client.get(f"{BASE}/referenceData/messageTypes", headers={**integrator, "On-Behalf-Of": ex.SOCIAL}),
        401,
        "NOT_AUTHORISED",
    )


def test_the_contract_schemas_tell_valid_from_invalid():
    """The validation the other tests rely on does refuse what the contract forbids."""
    assert not is_valid("PublicationStatusMessage", {"messageId": "x"})  # expirationDate required
    assert not is_valid("MessageToPublish", {"subject": {}, "bodyMainContent": True, "replyAuthorized": False})
    assert not is_valid("StatusMessage", {"code": "X", "message": "y"})


def test_the_hub_never_needs_the_reference_at_run_time():
    import hub.compat.ebox_rest as door
    import hub.compat.ebox_rest_auth as auth_module
    import hub.compat.ebox_rest_mapping as mapping_module

    for module in (door, auth_module, mapping_module):
        assert module.__file__ is not None
        with open(module.__file__, encoding="utf-8") as source:
            assert "/work/shared" not in source.read()


# --- over the network ----------------------------------------------------------------------------------


def test_a_sender_works_over_the_network(hub, served):  # noqa: F811 - the shared fixture
    with httpx.Client(base_url=served, trust_env=False, timeout=10) as client:
        response = token_request(client, assertion(ex.SOCIAL, aud=f"{served}/ebox/oauth2/token"))
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        published = publish(client, token, message(), headers={"Idempotency-Key": "NET-1"})
        assert published.status_code == 201, published.text
        validate("PublicationStatusMessage", published.json())
        found = search(client, token, [couple(published.json()["messageId"])])
        assert found.status_code == 201
        validate("MessagesStatusList", found.json())


def hub_with(tmp_path, database_url, senders):  # type: ignore[no-untyped-def]
    """A hub like ``make_hub``'s, with another sender directory."""
    settings = load_settings(
        tmp_path / "config", {"HUB_DATA_DIR": str(tmp_path / "var"), "HUB_DATABASE_URL": database_url}
    )
    upgrade(make_engine(settings.effective_database_url))
    runtime = build_runtime(settings, directory=senders)
    runtime.intake.clock = lambda: NOW
    return runtime


@SQLITE_ONLY
def test_an_institution_registered_for_another_environment_is_refused(tmp_path, database_url):
    runtime = hub_with(tmp_path, database_url, directory(environment="INT"))  # a PROD hub
    try:
        with TestClient(build_app(runtime)) as client:
            refused(publish(client, access_token(client, ex.SOCIAL), message()), 401, "ENVIRONMENT_MISMATCH")
        assert counts(runtime)["messages"] == 0
    finally:
        runtime.close()


@SQLITE_ONLY
def test_a_token_ends_with_its_certificates_registered_window(tmp_path, database_url):
    senders = directory()
    social = senders.institutions[ex.SOCIAL]
    ending = dataclasses.replace(social.certificates[0], not_after=NOW + timedelta(minutes=5))
    institutions = {**senders.institutions, ex.SOCIAL: dataclasses.replace(social, certificates=(ending,))}
    runtime = hub_with(tmp_path, database_url, dataclasses.replace(senders, institutions=institutions))
    try:
        with TestClient(build_app(runtime)) as client:
            token = access_token(client, ex.SOCIAL)  # valid 15 minutes
            runtime.intake.clock = lambda: NOW + timedelta(minutes=10)
            refused(publish(client, token, message()), 401, "CERT_EXPIRED")
            response = token_request(client, assertion(ex.SOCIAL, issued=timedelta(minutes=10)))
            assert (response.status_code, response.json()["error"]) == (401, "invalid_client")
        assert counts(runtime)["messages"] == 0
    finally:
        runtime.close()


def test_with_a_public_url_only_the_token_endpoint_under_it_is_an_audience(hub, client):
    """[http] public_url names the address senders use: an assertion for the address a request's Host
    header claims (another service's, or the hub's under another name) gets no token."""
    hub.settings = dataclasses.replace(hub.settings, public_url="https://hub.example.be")
    refused = token_request(client, assertion(ex.SOCIAL))  # aud: http://testserver/..., the Host of the request
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    granted = token_request(client, assertion(ex.SOCIAL, aud="https://hub.example.be/ebox/oauth2/token"))
    assert granted.status_code == 200, granted.text


def test_an_assertion_replayed_to_another_worker_process_gets_no_token(hub, client):
    """Used assertions (jti) are registered in the store, not in one process's memory: a second app over
    the same database (another `hub serve` worker) refuses the replay."""
    once = assertion(ex.SOCIAL)
    assert token_request(client, once).status_code == 200
    with TestClient(build_app(hub)) as other_worker:
        replayed = token_request(other_worker, once)
    assert replayed.status_code == 401 and replayed.json()["error"] == "invalid_client"
    assert "already used" in replayed.json()["error_description"]
