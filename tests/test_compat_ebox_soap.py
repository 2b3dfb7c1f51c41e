"""The e-Box EBoxMessage v1 SOAP door, driven by zeep from the official WSDL, signing with WS-Security.

Every request is checked against the official XSD as it was sent, every answer and fault too. A message
published this way is stored as any other (the hub's envelope, its digest, the audit trail, the outbox);
repeats are idempotent; hostile input gets its fault and leaves nothing stored.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree
from sqlalchemy import select
from starlette.testclient import TestClient

from hub.compat import ebox_soap_mapping as mapping
from hub.compat import ebox_soap_schema
from hub.compat.ebox_soap import PATH
from hub.compat.ebox_soap_mime import split_request
from hub.envelope import examples as ex
from hub.envelope import model as m
from hub.envelope.reader import read_envelope
from hub.errors import Rejected
from hub.inbound.http import build_app
from hub.routing.directory import Change, Directory
from hub.routing.recipients import RecipientKind
from hub.safexml import parse
from hub.signing.verifier import Verifier
from hub.store.models import AuditEntry, Event, Message
from tests.compat_ebox_soap_kit import (
    ERR,
    SOAP,
    Attachment,
    EboxClient,
    T,
    counts,
    document,
    ebox_client,
    multipart,
    official_schema,
    official_valid,
    reference_dir,
)
from tests.kit import NOW, directory, key_pair, keyring
from tests.test_inbound_soap import NOWHERE, make_hub

PDF = ex.minimal_pdf("Avertissement-extrait de role 2026")
CSV = b"year;amount\n2026;1234.56\n"


@pytest.fixture
def sqlite_hub(tmp_path):
    runtime = make_hub(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}")
    yield runtime
    runtime.close()


def _client(runtime, organisation: str = ex.FINANCE, **options) -> EboxClient:
    http = TestClient(build_app(runtime))
    return ebox_client(runtime, http, keyring().pairs[organisation], **options)


@pytest.fixture
def finance(sqlite_hub) -> EboxClient:
    """zeep as the tax administration's e-Box client (the hub on SQLite)."""
    return _client(sqlite_hub)


def publish(client: EboxClient, *, ticket: str = "AER-2026-0001", sequence: int | None = 1, **fields):
    """publishEboxMessage with a PDF document (attached by swaRef), and whatever ``fields`` change."""
    main = Attachment(fields.pop("pdf", PDF))
    request = {
        "MessageID": {"Ticket": ticket, **({"Sequence": sequence} if sequence is not None else {})},
        "SenderID": {"Application": "tax-on-web", "Institution": ex.FINANCE},
        "RecipientID": [{"INSS": ex.CITIZEN_A, "EboxType": "CITIZEN"}],
        "MessageType": "TAX_ASSESSMENT",
        "Document": document(main.content, attachment=main),
    }
    attachments = [*([] if "Document" in fields else [main]), *fields.pop("attachments", [])]
    request.update(fields)
    client.attach(*attachments)
    return client.service.publishEboxMessage(**request)


def sent_is_official(client: EboxClient) -> None:
    """The request as it went out validates against the official schema."""
    official_valid(client.sent_body_entry())


# --- publishEboxMessage ---------------------------------------------------------------------------------


def test_a_published_message_is_stored_with_every_field_mapped(hub):
    client = _client(hub)
    annex = Attachment(CSV, content_type="text/csv", encoding="base64")
    message_id = publish(
        client,
        FreeInformation={"FreeText": "Votre avertissement-extrait de rôle est disponible."},
        Meta=[{"Type": "dossier", "Value": ["F-2026-1", "F-2026-2"]}],
        Annex=[
            document(
                CSV, title="Détail du calcul", name="detail.csv", mime="text/csv", digest="SHA-512", attachment=annex
            )
        ],
        IsRegistered=True,
        attachments=[annex],
    )
    sent_is_official(client)
    response = etree.fromstring(client.transport.last_response.content).find(f"{SOAP}Body")[0]
    official_valid(response)
    assert re.fullmatch(r"[0-9a-f-]{36}", message_id)
    with hub.sessions() as session:
        message = session.get(Message, message_id)
        assert message is not None and message.state == "accepted" and message.registered
        assert (message.submitter_id, message.institution_id, message.sender_message_id) == (
            ex.FINANCE,
            ex.FINANCE,
            "ebox:AER-2026-0001:1",
        )
        envelope = read_envelope(parse(message.envelope))
        accepted = session.scalars(select(Event).where(Event.message_id == message_id)).one()
        assert '"door": "ebox-soap"' in accepted.detail
        audit = session.scalars(select(AuditEntry).where(AuditEntry.message_id == message_id)).one()
        assert ex.CITIZEN_A not in audit.detail
    header, content = envelope.header, envelope.content
    assert header.recipient == m.Recipient(ebox_type=m.EboxType.CITIZEN, id=ex.CITIZEN_A)
    assert (header.message_type, header.registered, header.sender.application_id) == (
        "TAX_ASSESSMENT",
        True,
        "tax-on-web",
    )
    assert content.subjects == (m.Text(lang=m.Language.FR, value="Votre avertissement-extrait de rôle"),)
    assert content.bodies[0].value == "Votre avertissement-extrait de rôle est disponible."
    assert content.document is not None and content.document.content == PDF
    assert (content.document.file_name, content.document.media_type) == ("aer.pdf", "application/pdf")
    [detail] = content.annexes
    assert (detail.content, detail.file_name, detail.media_type) == (CSV, "detail.csv", "text/csv")
    assert detail.titles[0].value == "Détail du calcul"
    [meta] = content.business_data
    assert meta.names[0].value == "dossier" and meta.values == ("F-2026-1", "F-2026-2")


def test_an_enterprise_recipient_for_the_attention_of_a_person_with_a_table_and_no_sender_id(sqlite_hub):
    client = _client(sqlite_hub, ex.SOCIAL)
    # SOCIAL has three applications: without SenderID the hub cannot choose one
    recipient = {
        "CompanyID": ex.ENTERPRISE,
        "SubentityId": "HRBRUSSELS",
        "QualityCode": "QUAL_EMP_NOSS",
        "Person": {"INSS": ex.EMPLOYEE, "FirstName": "Ann", "LastName": "Peeters"},
    }
    fields = {
        "SenderID": {"Application": "employer-declarations", "Institution": ex.SOCIAL},
        "RecipientID": [recipient],
        "MessageType": "EMPLOYER_NOTICE",
        "FreeInformation": {"Table": {"Title": "Aangifte", "Row": [{"LeftCell": "Kwartaal", "RightCell": "3"}]}},
    }
    message_id = publish(client, ticket="DMFA Q3/2026", sequence=None, **fields)
    sent_is_official(client)
    with sqlite_hub.sessions() as session:
        message = session.get(Message, message_id)
        envelope = read_envelope(parse(message.envelope))
    assert message.sender_message_id.startswith("eboxh:") and message.sender_message_id.endswith(":none")
    assert envelope.header.recipient == m.Recipient(
        ebox_type=m.EboxType.ENTERPRISE,
        id=ex.ENTERPRISE,
        sub_entity_id="HRBRUSSELS",
        for_the_attention_of=m.ForTheAttentionOf(ssin=ex.EMPLOYEE, name="Ann Peeters"),
    )
    data = {entry.key: entry for entry in envelope.content.business_data}
    assert data["ebox.qualityCode"].values == ("QUAL_EMP_NOSS",)
    assert data["ebox.table.title"].values == ("Aangifte",)
    assert data["ebox.table.1"].names[0].value == "Kwartaal" and data["ebox.table.1"].values == ("3",)

    code = client.fault(
        lambda: publish(client, ticket="NOAPP", SenderID=None, **{k: v for k, v in fields.items() if k != "SenderID"})
    )[1]
    assert code == "INVALID_SENDER"


def test_a_repeat_is_idempotent_and_the_same_ticket_with_other_content_is_refused(finance):
    first = publish(finance)
    again = publish(finance)  # a new timestamp, signature, boundary and Content-IDs: the same message
    assert again == first
    before = counts(finance.runtime)
    faultcode, code, error = finance.fault(lambda: publish(finance, pdf=ex.minimal_pdf("another document")))
    assert (faultcode, code) == ("soap:Client", "DUPLICATE_MESSAGE")
    assert "[DUPLICATE_MESSAGE_ID]" in error.findtext(f"{ERR}Message")
    after = counts(finance.runtime)
    assert after["messages"] == before["messages"] and after["refusals"] == before["refusals"] + 1
    assert publish(finance, sequence=2) != first  # another Sequence: another message


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"RecipientID": [{"INSS": "85073003399", "EboxType": "CITIZEN"}]}, "INVALID_RECIPIENT"),  # check digits
        ({"RecipientID": [{"NIHII": "12345678", "EboxType": "CITIZEN"}]}, "INVALID_RECIPIENT"),
        ({"RecipientID": [{"INSS": ex.CITIZEN_A, "EboxType": "ENTERPRISE"}]}, "INVALID_RECIPIENT"),
        ({"RecipientID": [{"INSS": ex.CITIZEN_A, "EboxType": "CITIZEN"}] * 2}, "INVALID_RECIPIENT"),
        ({"MessageType": "PARKING_PERMIT"}, "UNKNOWN_MESSAGE_TYPE"),
        ({"MessageType": "Not a hub type"}, "UNKNOWN_MESSAGE_TYPE"),
        ({"SenderID": {"Application": "tax-on-web", "Institution": ex.CITY}}, "NOT_AUTHORIZED"),
        ({"SenderID": {"Application": "parking", "Institution": ex.FINANCE}}, "INVALID_SENDER"),
    ],
    ids=[
        "ssin",
        "nihii",
        "ebox-type",
        "two-recipients",
        "type-not-allowed",
        "type-not-a-token",
        "other-institution",
        "application",
    ],
)
def test_business_errors_earn_their_code_and_store_nothing(finance, change, code):
    before = counts(finance.runtime)
    faultcode, got, _ = finance.fault(lambda: publish(finance, **change))
    sent_is_official(finance)  # each a request the official schema accepts
    assert (faultcode, got) == ("soap:Client", code)
    after = counts(finance.runtime)
    assert after["messages"] == before["messages"] and after["outbox"] == before["outbox"]
    assert after["refusals"] == before["refusals"] + 1  # counted for the statistics, as any refusal


def test_an_integrator_publishes_for_an_institution_it_has_a_mandate_for(sqlite_hub):
    client = _client(sqlite_hub, ex.INTEGRATOR)
    fields = {
        "SenderID": {"Application": "citizen-portal", "Institution": ex.CITY},
        "RecipientID": [{"INSS": ex.CITIZEN_B, "EboxType": "CITIZEN"}],
        "MessageType": "PARKING_PERMIT",
    }
    message_id = publish(client, ticket="CITY-1", **fields)
    with sqlite_hub.sessions() as session:
        message = session.get(Message, message_id)
        assert (message.submitter_id, message.institution_id) == (ex.INTEGRATOR, ex.CITY)
    mandate_missing = {**fields, "SenderID": {"Application": "tax-on-web", "Institution": ex.FINANCE}}
    assert client.fault(lambda: publish(client, ticket="FIN-1", **mandate_missing))[1] == "NOT_AUTHORIZED"


# --- attachments --------------------------------------------------------------------------------------------


def test_attachment_faults(finance):
    runtime = finance.runtime
    before = counts(runtime)
    wrong = Attachment(PDF)
    request = document(ex.minimal_pdf("what the sender meant"), attachment=wrong)
    assert finance.fault(lambda: publish(finance, Document=request, attachments=[wrong]))[1] == "DIGEST_MISMATCH"
    attached = Attachment(PDF)  # attached, but the swaRef names another Content-ID
    nowhere = document(PDF, attachment=Attachment(PDF, content_id="missing@client"))
    assert finance.fault(lambda: publish(finance, Document=nowhere, attachments=[attached]))[1] == "INVALID_ATTACHMENT"
    extra = Attachment(b"not referenced", content_type="text/plain")
    assert finance.fault(lambda: publish(finance, attachments=[extra]))[1] == "INVALID_ATTACHMENT"
    sha1 = Attachment(PDF)
    old = document(PDF, attachment=sha1, digest="SHA-1")
    assert finance.fault(lambda: publish(finance, Document=old, attachments=[sha1]))[1] == "UNSUPPORTED_DIGEST_METHOD"
    zipped = Attachment(b"PK\x03\x04", content_type="application/zip")
    archive = document(b"PK\x03\x04", attachment=zipped, name="files.zip", mime="application/zip")
    assert finance.fault(lambda: publish(finance, Document=archive, attachments=[zipped]))[1] == "INVALID_ATTACHMENT"
    unnamed = Attachment(PDF)
    no_extension = document(PDF, attachment=unnamed, name="avertissement")
    assert finance.fault(lambda: publish(finance, Document=no_extension, attachments=[unnamed]))[1] == (
        "INVALID_ATTACHMENT"
    )
    long_title = Attachment(PDF)
    titled = document(PDF, attachment=long_title, title="t" * 300)  # the contract allows 400, the hub's subject 255
    assert finance.fault(lambda: publish(finance, Document=titled, attachments=[long_title]))[1] == "INVALID_REQUEST"
    after = counts(runtime)
    assert (after["messages"], after["outbox"]) == (before["messages"], before["outbox"])


def test_a_database_outage_is_a_system_error_to_retry(tmp_path):
    runtime = make_hub(tmp_path, NOWHERE, migrate=False)
    try:
        client = _client(runtime)
        faultcode, code, error = client.fault(lambda: publish(client))
        assert (faultcode, code, error.tag) == ("soap:Server", "SERVICE_UNAVAILABLE", f"{ERR}SystemError")
        assert error.findtext(f"{ERR}Retry") == "true"
        assert client.transport.last_response.status_code == 503
    finally:
        runtime.close()


def test_a_request_over_the_size_limit_is_refused_before_it_is_read(tmp_path):
    runtime = make_hub(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}", HUB_LIMITS_MAX_ENVELOPE_BYTES="20000")
    try:
        client = _client(runtime)
        big = ex.minimal_pdf("x" * 30000)
        faultcode, code, _ = client.fault(lambda: publish(client, pdf=big))
        assert (faultcode, code) == ("soap:Client", "MESSAGE_TOO_LARGE")
        assert client.transport.last_response.headers["connection"] == "close"
        assert counts(runtime)["messages"] == 0
    finally:
        runtime.close()


def test_the_mime_parser_keeps_binary_bytes_and_refuses_broken_requests():
    binary = bytes(range(256)) * 4 + b"\r\n--not-the-boundary\r\n"
    body, content_type = multipart(
        b"<soap/>", [Attachment(binary, content_id="a@b"), Attachment(binary, content_id="c@d", encoding="base64")]
    )
    request = split_request(content_type, body)
    assert request.soap == b"<soap/>"
    assert request.referenced("cid:a@b").content == binary and request.referenced("cid:c%40d").content == binary
    for broken in (body[:-30], body.replace(b"Content-ID: <c@d>", b"Content-ID: <a@b>")):
        with pytest.raises(Rejected):
            split_request(content_type, broken)
    with pytest.raises(Rejected) as refused:
        split_request("application/json", b"{}")
    assert refused.value.code.value == "CONTENT_TYPE_INVALID"


# --- WS-Security ----------------------------------------------------------------------------------------------


def _body_changed(soap: bytes) -> bytes:
    return soap.replace(b"AER-2026-0001", b"AER-2026-0666")


def _wrapped(soap: bytes) -> bytes:
    """The signed Body moved into a header block, another Body (with the signed id) in its place."""
    root = etree.fromstring(soap)
    body = root.find(f"{SOAP}Body")
    header = root.find(f"{SOAP}Header")
    wrapper = etree.SubElement(header, "{urn:attacker}Wrapper")
    forged = etree.fromstring(etree.tostring(body))
    forged.find(f".//{T}Ticket").text = "FORGED"
    root.replace(body, forged)
    wrapper.append(body)
    return etree.tostring(root)


def _second_body_id(soap: bytes) -> bytes:
    """The signed Body untouched, a new Body element appended with another request (two Bodies)."""
    root = etree.fromstring(soap)
    body = root.find(f"{SOAP}Body")
    forged = etree.fromstring(etree.tostring(body))
    root.append(forged)
    return etree.tostring(root)


def _timestamp_unsigned(soap: bytes) -> bytes:
    root = etree.fromstring(soap)
    signed_info = root.find(".//{http://www.w3.org/2000/09/xmldsig#}SignedInfo")
    references = signed_info.findall("{http://www.w3.org/2000/09/xmldsig#}Reference")
    signed_info.remove(references[-1])
    return etree.tostring(root)


@pytest.mark.parametrize(
    ("setup", "faultcode", "code"),
    [
        (lambda c: setattr(c.client, "wsse", None), "wsse:InvalidSecurity", "SECURITY_MISSING"),
        (lambda c: setattr(c.stamp, "enabled", False), "wsse:InvalidSecurity", "SECURITY_INVALID"),
        (
            lambda c: setattr(c.stamp, "clock", lambda: NOW - timedelta(minutes=30)),
            "wsse:MessageExpired",
            "SECURITY_TIMESTAMP_EXPIRED",
        ),
        (
            lambda c: setattr(c.stamp, "clock", lambda: NOW + timedelta(minutes=30)),
            "wsse:InvalidSecurity",
            "SECURITY_TIMESTAMP_INVALID",
        ),
        (lambda c: setattr(c.transport, "tamper", _body_changed), "wsse:FailedCheck", "SECURITY_INVALID"),
        (lambda c: setattr(c.transport, "tamper", _wrapped), "wsse:InvalidSecurity", "SECURITY_INVALID"),
        (lambda c: setattr(c.transport, "tamper", _second_body_id), "soap:Client", "INVALID_REQUEST"),
        (lambda c: setattr(c.transport, "tamper", _timestamp_unsigned), "wsse:InvalidSecurity", "SECURITY_INVALID"),
    ],
    ids=["unsigned", "no-timestamp", "stale", "future", "body-changed", "wrapped", "two-bodies", "timestamp-unsigned"],
)
def test_forged_or_stale_requests_are_refused_and_leave_nothing(finance, setup, faultcode, code):
    setup(finance)
    got = finance.fault(lambda: publish(finance))
    assert got[:2] == (faultcode, code)
    assert counts(finance.runtime) == {"messages": 0, "events": 0, "audit": 0, "outbox": 0, "refusals": 0}


def test_sha1_and_unknown_or_expired_certificates_are_refused(sqlite_hub):
    http = TestClient(build_app(sqlite_hub))
    sha1 = ebox_client(sqlite_hub, http, keyring().pairs[ex.FINANCE], sha1=True)
    assert sha1.fault(lambda: publish(sha1))[:2] == ("wsse:UnsupportedAlgorithm", "SECURITY_UNSUPPORTED_ALGORITHM")
    stranger = ebox_client(sqlite_hub, http, key_pair("stranger"))
    assert stranger.fault(lambda: publish(stranger))[:2] == (
        "wsse:FailedAuthentication",
        "SECURITY_UNKNOWN_CERTIFICATE",
    )
    later = NOW + timedelta(days=3650)
    sqlite_hub.intake.clock = lambda: later  # the registered certificate has ended
    assert sha1.fault(lambda: publish(_client(sqlite_hub)))[:2] == (
        "wsse:InvalidSecurityToken",
        "SECURITY_CERTIFICATE_NOT_VALID",
    )
    assert counts(sqlite_hub)["messages"] == 0


def test_a_replayed_request_is_refused(finance):
    publish(finance)
    replay = finance.transport.last_response.request
    answer = finance.http.post(PATH, content=replay.content, headers=dict(replay.headers))
    error = etree.fromstring(answer.content).find(f".//{ERR}BusinessError")
    assert answer.status_code == 500 and error.findtext(f"{ERR}Code") == "SECURITY_REPLAY"
    assert counts(finance.runtime)["messages"] == 1


def test_a_replay_reaching_another_worker_process_is_refused_too(finance, sqlite_hub):
    """The register of received signatures is in the store: a second app (another `hub serve` worker,
    with its own memory) over the same database refuses the replay as well."""
    publish(finance)
    replay = finance.transport.last_response.request
    other_worker = TestClient(build_app(sqlite_hub))
    answer = other_worker.post(PATH, content=replay.content, headers=dict(replay.headers))
    error = etree.fromstring(answer.content).find(f".//{ERR}BusinessError")
    assert answer.status_code == 500 and error.findtext(f"{ERR}Code") == "SECURITY_REPLAY"


def test_an_operation_the_hub_does_not_serve_and_a_soap_12_request_get_their_faults(finance):
    faultcode, code, _ = finance.fault(
        lambda: finance.service.getEboxInfo(EboxType="CITIZEN", EboxID=[{"INSS": ex.CITIZEN_A}])
    )
    assert (faultcode, code) == ("soap:Client", "OPERATION_NOT_SUPPORTED")
    answer = finance.http.post(PATH, content=b"<x/>", headers={"Content-Type": "application/soap+xml"})
    assert answer.status_code == 500
    assert etree.fromstring(answer.content).findtext(f".//{ERR}Code") == "INVALID_REQUEST"


# --- hasAnEbox, getMessageStatus, healthCheck ----------------------------------------------------------------


def test_has_an_ebox_answers_from_the_recipient_directory(finance):
    runtime = finance.runtime
    directory = Directory(runtime.sessions, clock=runtime.intake.clock)
    at = NOW - timedelta(days=2)
    directory.apply(
        [
            Change(
                op="activate", kind=RecipientKind.CITIZEN, id=ex.CITIZEN_A, at=at, provider="myebox", exclusive=True
            ),
            Change(op="activate", kind=RecipientKind.ENTERPRISE, id=ex.ENTERPRISE, at=at, provider="enterprise"),
        ]
    )
    answer = finance.service.hasAnEbox(
        EboxType="CITIZEN", EboxID=[{"INSS": ex.CITIZEN_A}, {"INSS": ex.CITIZEN_B}, {"NIHII": "12345678"}]
    )
    sent_is_official(finance)
    official_valid(etree.fromstring(finance.transport.last_response.content).find(f"{SOAP}Body")[0])
    assert [(e.Exists, e.ExclusivelyEbox) for e in answer.Ebox] == [(True, True), (False, False), (False, False)]
    assert answer.Ebox[0].Ebox.INSS == ex.CITIZEN_A
    enterprise = finance.service.hasAnEbox(QualityCode="QUAL_EMP_NOSS", EboxID=[{"CompanyID": ex.ENTERPRISE}])
    assert enterprise.Ebox[0].Exists is True and enterprise.QualityCode == "QUAL_EMP_NOSS"
    code = finance.fault(lambda: finance.service.hasAnEbox(EboxType="CITIZEN", EboxID=[{"INSS": "85073003399"}]))[1]
    assert code == "INVALID_RECIPIENT"


def status(client: EboxClient, *items: tuple[str, str, int | None]):
    messages = [
        {"EboxID": {"INSS": ssin}, "MessageID": {"Ticket": ticket, **({"Sequence": seq} if seq is not None else {})}}
        for ssin, ticket, seq in items
    ]
    answer = client.service.getMessageStatus(EboxType="CITIZEN", Message=messages)
    sent_is_official(client)
    official_valid(etree.fromstring(client.transport.last_response.content).find(f"{SOAP}Body")[0])
    return answer


def test_get_message_status_reports_consultation_and_the_documented_error_cases(finance):
    message_id = publish(finance, ticket="T-1", sequence=1)
    publish(finance, ticket="T-1", sequence=2)
    answer = status(
        finance,
        (ex.CITIZEN_A, "T-1", 1),
        (ex.CITIZEN_A, "T-1", None),  # two sequences: say which
        (ex.CITIZEN_A, "T-9", None),
        (ex.CITIZEN_B, "T-1", 1),  # another e-Box
    )
    assert [m.HasBeenConsulted for m in answer.Message] == [False]
    assert [e.ErrorCode for e in answer.ErrorCase] == ["MULTIPLE_RESULTS_SPECIFY_SEQUENCE", "NOT_FOUND", "NOT_FOUND"]
    # another sender does not see it
    social = _client(finance.runtime, ex.SOCIAL)
    assert [e.ErrorCode for e in status(social, (ex.CITIZEN_A, "T-1", 1)).ErrorCase] == ["NOT_FOUND"]
    # a provider reports it opened: consulted
    with finance.runtime.sessions() as session:
        session.add(
            Event(
                message_id=message_id, kind="opened", occurred_at=NOW, source="provider", provider="myebox", detail="{}"
            )
        )
        session.commit()
    assert [m.HasBeenConsulted for m in status(finance, (ex.CITIZEN_A, "T-1", 1)).Message] == [True]


def test_health_check(finance):
    answer = finance.service.healthCheck(type="DEFAULT")
    official_valid(etree.fromstring(finance.transport.last_response.content).find(f"{SOAP}Body")[0], "monitoring")
    assert answer.Status.Level == "OK" and answer.SanityCheck[0].Resource.name == "database"
    ping = finance.service.healthCheck(type="PING")
    assert ping.Status.Level == "OK" and not ping.SanityCheck


# --- the hub's own schema agrees with the official one ------------------------------------------------------


def test_the_hubs_schema_accepts_what_the_official_one_accepts_and_refuses_what_it_refuses(finance):
    reference_dir()
    official = official_schema()
    publish(finance)
    valid = finance.sent_body_entry()
    samples = [valid]

    def variant(path: str, value: str | None) -> etree._Element:
        copy = etree.fromstring(etree.tostring(valid))
        target = copy.find(path)
        if value is None:
            target.getparent().remove(target)
        else:
            target.text = value
        return copy

    samples += [
        variant(f"{T}MessageID/{T}Ticket", "x" * 26),
        variant(f"{T}MessageID/{T}Sequence", "100000"),
        variant(f"{T}MessageID/{T}Sequence", None),
        variant(f"{T}RecipientID/{T}INSS", "123"),
        variant(f"{T}MessageType", "short"),
        variant(f"{T}Document/{T}DownloadFileName", "x" * 81),
        variant(f"{T}Document/{T}Digest/{T}DigestMethod", "MD5"),
        variant(f"{T}Document/{T}Title", None),
        variant(f"{T}SenderID/{T}Institution", "12345"),
        variant(f"{T}SenderID", None),
    ]
    for sample in samples:
        verdict = official.validate(sample)
        try:
            ebox_soap_schema.check(sample)
            ours = True
        except Rejected:
            ours = False
        assert ours == verdict, etree.tostring(sample)[:300]


def test_sender_keys_are_hub_identifiers_and_tell_tickets_apart():
    keys = {mapping.sender_key(t, s) for t in ("A", "A:1", "a b", "ticket-" + "x" * 18) for s in (None, 0, 1, 99999)}
    assert len(keys) == 16
    assert all(mapping.TOKEN.fullmatch(key) and len(key) <= 64 for key in keys)
    assert mapping.sequence_of(mapping.sender_key("A", 1), "A") == 1
    assert mapping.sequence_of(mapping.sender_key("A:1", None), "A") is False


def test_the_hub_needs_neither_the_reference_nor_xmlsec_at_run_time():
    for path in Path(ebox_soap_schema.__file__).parent.glob("ebox_soap*.py"):
        text = path.read_text()
        assert "/work/shared" not in text and "import xmlsec" not in text, path


def test_rsa_sha256_as_the_x509sha256_policy_asks(sqlite_hub):
    rsa = keyring("rsa")
    senders = directory(rsa)
    sqlite_hub.directory = sqlite_hub.intake.directory = senders
    sqlite_hub.intake.verifier = Verifier(senders.trust_store())
    client = ebox_client(sqlite_hub, TestClient(build_app(sqlite_hub)), rsa.pairs[ex.FINANCE])
    message_id = publish(client)
    signature_method = client.sent.find(".//{http://www.w3.org/2000/09/xmldsig#}SignatureMethod")
    assert signature_method.get("Algorithm").endswith("rsa-sha256")
    assert counts(sqlite_hub)["messages"] == 1 and message_id


def test_responses_are_signed_by_the_hub_and_xmlsec_checks_them(finance):
    import xmlsec
    from zeep.exceptions import SignatureVerificationFailed
    from zeep.wsse.signature import _verify_envelope_with_key

    publish(finance)  # the client's wsse plugin verified the response with the hub's certificate (xmlsec)
    response = etree.fromstring(finance.transport.last_response.content)
    serial = response.findtext(".//{http://www.w3.org/2000/09/xmldsig#}X509SerialNumber")
    assert serial == str(finance.runtime.hub_keys.certificate.serial_number)
    official_valid(response.find(f"{SOAP}Body")[0])
    response.find(f".//{T}ID").text = "00000000-0000-0000-0000-000000000000"
    hub_cert = finance.runtime.hub_keys.certificate.public_bytes(Encoding.PEM)
    with pytest.raises(SignatureVerificationFailed):
        _verify_envelope_with_key(response, xmlsec.Key.from_memory(hub_cert, xmlsec.KeyFormat.CERT_PEM, None))
