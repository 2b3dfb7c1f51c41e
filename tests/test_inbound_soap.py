"""The SOAP 1.1 door, driven by zeep (a real SOAP client) from the WSDL the running hub serves.

zeep reaches the app through Starlette's TestClient (a zeep Transport), and once over a real
socket (uvicorn). Every case runs on SQLite and on PostgreSQL. A signed envelope travels in the
SOAP Body exactly as it was signed: zeep would rebuild it from Python values (its own prefixes),
so the ``Presigned`` plugin puts the signed element in place, as a client of this door does.
"""

from __future__ import annotations

import copy
import hashlib
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import uvicorn
import zeep
from lxml import etree
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker
from starlette.testclient import TestClient
from zeep import xsd
from zeep.plugins import HistoryPlugin, Plugin
from zeep.transports import Transport

from hub.envelope import examples as ex
from hub.envelope import schema
from hub.envelope.model import ACK_NS, ENVELOPE_NS, TYPES_NS
from hub.inbound.http import build_app
from hub.inbound.soap import SOAP_NS, extract
from hub.runtime import Runtime, build_runtime
from hub.safexml import parse
from hub.settings import load_settings
from hub.signing.truststore import TrustStore, trusted
from hub.signing.verifier import Verifier
from hub.store.db import make_engine, session_factory, upgrade
from hub.store.models import AuditEntry, Event, Message, OutboxEntry, Refusal
from tests.kit import NOW, TOKENS, directory, example, keyring

A = "{" + ACK_NS + "}"
T = "{" + TYPES_NS + "}"
S = "{" + SOAP_NS + "}"
E = "{" + ENVELOPE_NS + "}"
WSDL_FILE = Path(__file__).resolve().parents[1] / "hub" / "schemas" / "hub-soap-1.wsdl"
NOWHERE = "postgresql://postgres@127.0.0.1:9/none"


# --- a hub, and zeep in front of it ----------------------------------------------------------------


def make_hub(tmp_path: Path, database_url: str, *, migrate: bool = True, **env: str) -> Runtime:
    settings = load_settings(
        tmp_path / "config", {"HUB_DATA_DIR": str(tmp_path / "var"), "HUB_DATABASE_URL": database_url, **env}
    )
    if migrate:
        upgrade(make_engine(settings.effective_database_url))
    runtime = build_runtime(settings, directory=directory())
    runtime.intake.clock = lambda: NOW
    return runtime


class InProcessTransport(Transport):
    """zeep over Starlette's TestClient: no socket. Adds HTTP headers, may rewrite what zeep sends."""

    def __init__(self, client: TestClient) -> None:
        super().__init__()
        self.client = client
        self.http_headers: dict[str, str] = {}
        self.rewrite: Any = None
        self.last_response: Any = None

    def post(self, address, message, headers):
        headers = {**headers, **self.http_headers}
        if self.rewrite is not None:
            message, headers = self.rewrite(message, headers)
        self.last_response = self.client.post(address, content=message, headers=headers)
        return self.last_response

    def _load_remote_data(self, url):
        response = self.client.get(url)
        response.raise_for_status()
        return response.content


class Presigned(Plugin):
    """Put a signed envelope in the SOAP Body byte for byte as it was signed."""

    def __init__(self) -> None:
        self.envelope: bytes | None = None

    def egress(self, envelope, http_headers, operation, binding_options):
        if self.envelope is not None:
            envelope.find(S + "Body")[:] = [etree.fromstring(self.envelope)]
        return envelope, http_headers


@dataclass
class Soap:
    runtime: Runtime
    http: TestClient
    transport: InProcessTransport
    client: zeep.Client
    presigned: Presigned
    history: HistoryPlugin = field(default_factory=HistoryPlugin)

    def publish(self, data: bytes) -> Any:
        """publishMessage with a signed envelope (the Body values are the signed element, not zeep's)."""
        self.presigned.envelope = data
        try:
            return self.client.service.publishMessage(Header=xsd.SkipValue, Content=xsd.SkipValue)
        finally:
            self.presigned.envelope = None

    def status(self, message_id: str, token: str | None) -> Any:
        self.transport.http_headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            return self.client.service.getMessageStatus(HubMessageId=message_id)
        finally:
            self.transport.http_headers = {}

    def refusal(self, call: Any) -> tuple[str, str | None, int]:
        """Run ``call``; it must raise a SOAP fault: (faultcode, t:Code of the detail, HTTP status)."""
        with pytest.raises(zeep.exceptions.Fault) as caught:
            call()
        return caught.value.code, code_of(caught.value), self.transport.last_response.status_code

    @property
    def sent(self) -> bytes:
        return self.transport.last_response.request.content


def code_of(fault: zeep.exceptions.Fault) -> str | None:
    return None if fault.detail is None else fault.detail.findtext(f"{T}Error/{T}Code")


def connect(runtime: Runtime, http: TestClient, wsdl: str = "http://testserver/soap?wsdl") -> Soap:
    transport = InProcessTransport(http)
    presigned = Presigned()
    history = HistoryPlugin()
    client = zeep.Client(wsdl, transport=transport, plugins=[presigned, history])
    return Soap(runtime, http, transport, client, presigned, history)


@pytest.fixture()
def soap(hub):
    with TestClient(build_app(hub)) as http:
        yield connect(hub, http)


def counts(runtime: Runtime) -> dict[str, int]:
    with runtime.sessions() as session:
        return {
            model.__tablename__: session.scalar(select(func.count()).select_from(model))
            for model in (Message, Event, AuditEntry, OutboxEntry)
        }


NOTHING = {"messages": 0, "events": 0, "audit": 0, "outbox": 0}


def body_entry(document: bytes) -> etree._Element:
    return parse(document).find(S + "Body")[0]


def own_document(element: etree._Element) -> etree._Element:
    """What a client does with a signed element from a SOAP Body: take it out as a document of its own."""
    alone = copy.deepcopy(element)
    alone.tail = None
    return parse(etree.tostring(alone, xml_declaration=True, encoding="UTF-8"))


def rest_code(http: TestClient, data: bytes) -> str:
    response = http.post("/v1/messages", content=data, headers={"Content-Type": "application/xml"})
    assert response.status_code >= 400, response.text
    return parse(response.content).findtext(T + "Code")


def _replace(old: bytes, new: bytes):
    def rewrite(message, headers):
        assert old in message
        return message.replace(old, new, 1), headers

    return rewrite


def _headers(**changes: str):
    return lambda message, headers: (message, {**headers, **changes})


# --- the contract ----------------------------------------------------------------------------------


def test_the_wsdl_is_served_addressed_to_where_it_was_fetched_with_its_schemas(soap):
    for path in ("/soap?wsdl", "/soap?WSDL", "/soap/wsdl"):
        response = soap.http.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/xml")
        wsdl = parse(response.content)
        locations = wsdl.xpath("//soap:address/@location", namespaces={"soap": "http://schemas.xmlsoap.org/wsdl/soap/"})
        assert locations == ["http://testserver/soap"]
        imports = wsdl.xpath("//xs:import/@schemaLocation", namespaces={"xs": "http://www.w3.org/2001/XMLSchema"})
        assert sorted(imports) == [f"http://testserver/soap/schemas/{name}" for name in
                                   ("acknowledgement-1.xsd", "envelope-1.xsd", "types-1.xsd")]
    for name in ("envelope-1.xsd", "acknowledgement-1.xsd", "types-1.xsd"):
        served = soap.http.get(f"/soap/schemas/{name}")
        assert served.status_code == 200
        assert served.content == (schema.schema_dir() / name).read_bytes()
    assert soap.http.get("/soap/schemas/hub-soap-1.wsdl").status_code == 404
    assert soap.http.get("/soap/schemas/..%2Fsettings.py").status_code == 404
    assert soap.http.get("/soap").status_code == 400
    # Behind another base URL the WSDL says so.
    assert b'location="https://hub.example/soap"' in soap.http.get("https://hub.example/soap?wsdl").content


def test_zeep_reads_the_operations_and_message_shapes_from_the_wsdl(soap):
    # From the running hub, and from the file beside the schemas (relative imports, no network).
    for client in (soap.client, zeep.Client(str(WSDL_FILE))):
        binding = client.service._binding
        assert client.service._binding_options["address"].endswith("/soap")
        operations = {name: binding.get(name) for name in ("publishMessage", "getMessageStatus")}
        assert set(binding._operations) == set(operations)
        publish, status = operations["publishMessage"], operations["getMessageStatus"]
        assert publish.soapaction == "urn:ebox-hub:soap:1:publishMessage"
        assert status.soapaction == "urn:ebox-hub:soap:1:getMessageStatus"
        assert publish.style == status.style == "document"
        # document/literal: each Body holds one element of our schemas.
        assert publish.input.body.qname.text == E + "PublishMessage"
        assert publish.output.body.qname.text == A + "SubmissionReceipt"
        assert status.input.body.qname.text == "{urn:ebox-hub:soap:1}GetMessageStatus"
        assert status.input.signature() == "HubMessageId: ns1:HubMessageId"
        assert status.output.body.qname.text == A + "MessageStatus"
        for operation in (publish, status):
            assert list(operation.faults) == ["HubFault"]
            # zeep resolves the declared fault message; its one part is t:Error.
            parts = operation.faults["HubFault"].abstract.parts
            assert [part.element.qname.text for part in parts.values()] == [T + "Error"]


# --- publishMessage ------------------------------------------------------------------------------


def hub_verifier(runtime: Runtime) -> Verifier:
    return Verifier(TrustStore([trusted("hub", runtime.hub_keys.certificate)]))


@pytest.mark.parametrize("kind", sorted(ex.KINDS))
def test_every_kind_is_accepted_with_a_receipt_a_client_can_extract_and_verify(soap, kind):
    data = keyring().sign(example(kind))
    result = soap.publish(data)
    assert soap.transport.last_response.status_code == 200
    # The envelope as the hub took it out of the Body: the signed bytes themselves.
    extracted = extract(body_entry(soap.sent))
    assert extracted == data
    digest = hashlib.sha256(extracted).hexdigest()
    # zeep maps the receipt ...
    assert result.SenderMessageId == example(kind).header.sender_message_id
    assert result.EnvelopeDigest._value_1 == digest
    assert result.EnvelopeDigest.algorithm == "sha_256"
    # ... and a client takes the signed receipt out of the SOAP Body and verifies it with the hub's certificate.
    receipt = own_document(body_entry(soap.transport.last_response.content))
    schema.validate(receipt, expect=ACK_NS)
    assert hub_verifier(soap.runtime).verify(receipt, now=datetime.now(UTC)).signer.party == "hub"
    assert receipt.findtext(A + "HubMessageId") == result.HubMessageId
    assert receipt.findtext(A + "EnvelopeDigest") == digest
    assert soap.transport.last_response.headers["x-hub-message-id"] == result.HubMessageId
    assert counts(soap.runtime) == {"messages": 1, "events": 1, "audit": 1, "outbox": 1}
    with soap.runtime.sessions() as session:
        message = session.get(Message, result.HubMessageId)
        assert message.envelope == extracted and message.envelope_sha256 == digest
        # The receipt travelled byte for byte as the hub signed and stored it.
        assert message.receipt.split(b"?>", 1)[1].strip() in soap.transport.last_response.content
        event = session.scalars(select(Event)).one()
        assert '"door": "soap"' in event.detail


def test_a_repeat_returns_the_original_receipt_also_across_the_doors(soap):
    data = keyring().sign(example("payment"))
    first = soap.publish(data)
    first_bytes = soap.transport.last_response.content
    second = soap.publish(data)
    assert second.HubMessageId == first.HubMessageId
    assert soap.transport.last_response.content == first_bytes
    # The same file through the REST door is the same submission (same bytes, same digest).
    rest = soap.http.post("/v1/messages", content=data, headers={"Content-Type": "application/xml"})
    assert rest.status_code == 200
    assert rest.headers["x-hub-message-id"] == first.HubMessageId
    assert counts(soap.runtime)["messages"] == 1


def test_namespaces_declared_on_the_soap_envelope_leave_the_signature_whole(soap):
    data = keyring().sign(example("citizen-letter"))
    # zeep declares these on soap-env:Envelope; lxml then drops PublishMessage's own xmlns:t as redundant.
    soap.client.set_ns_prefix("t", TYPES_NS)
    soap.client.set_ns_prefix("x", "urn:example:other")
    result = soap.publish(data)
    root = parse(soap.sent)
    assert root.nsmap["t"] == TYPES_NS and root.nsmap["x"] == "urn:example:other"
    assert b'<PublishMessage xmlns="urn:ebox-hub:envelope:1">' in soap.sent  # xmlns:t now comes from the Envelope
    assert result.EnvelopeDigest._value_1 == hashlib.sha256(data).hexdigest()

    # A default namespace and a prefix for the envelope's own namespace on soap:Envelope, whitespace in the Body.
    other = keyring().sign(example("registered"))
    inner = other.split(b"?>", 1)[1].strip()

    def rewrite(message, headers):
        return (
            b'<?xml version="1.0"?>\n<s:Envelope xmlns:s="' + SOAP_NS.encode() + b'" xmlns="urn:example:default" '
            b'xmlns:e="urn:ebox-hub:envelope:1" xmlns:t="urn:example:clash">\n  <s:Header/>\n  <s:Body>\n    '
            + inner + b"\n  </s:Body>\n</s:Envelope>\n",
            headers,
        )

    soap.transport.rewrite = rewrite
    result = soap.publish(other)
    assert result.EnvelopeDigest._value_1 == hashlib.sha256(other).hexdigest()
    assert counts(soap.runtime)["messages"] == 2


def test_a_client_that_reserialises_the_envelope_is_refused_signature_invalid(soap):
    data = keyring().sign(example("payment"))
    # zeep's own rendering of the same values: other prefixes (ns0:, ns1:), so other canonical bytes.
    values = soap.client.get_element(E + "PublishMessage").parse(parse(data), soap.client.wsdl.types)
    faultcode, code, status = soap.refusal(lambda: soap.client.service.publishMessage(**{k: values[k] for k in values}))
    assert (faultcode, code, status) == ("soap:Client", "SIGNATURE_INVALID", 500)
    assert b"<ns0:PublishMessage" in soap.sent
    # Indentation added by a client is a change too.
    pretty = etree.tostring(parse(data), pretty_print=True)
    soap.transport.rewrite = _replace(data.split(b"?>", 1)[1].strip(), pretty)
    assert soap.refusal(lambda: soap.publish(data))[:2] == ("soap:Client", "SIGNATURE_INVALID")
    assert counts(soap.runtime) == NOTHING


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("tampered", "SIGNATURE_INVALID"),
        ("unsigned", "SIGNATURE_MISSING"),
        ("unknown-message-type", "UNKNOWN_MESSAGE_TYPE"),
        ("invalid-ssin", "SSIN_INVALID"),
    ],
)
def test_a_refused_envelope_is_a_client_fault_with_the_rest_doors_code(soap, case, code):
    ring = keyring()
    letter = example("citizen-letter")
    header = letter.header
    data = {
        "tampered": lambda: ring.sign(letter).replace(b"2026</", b"2027</"),
        "unsigned": lambda: ring.sign(letter).split(b"<ds:Signature")[0] + b"</PublishMessage>",
        "unknown-message-type": lambda: ring.sign(replace(letter, header=replace(header, message_type="NOPE"))),
        "invalid-ssin": lambda: ring.sign(replace(letter, header=replace(
            header, recipient=replace(header.recipient, id="85073003329")))),
    }[case]()
    faultcode, soap_code, status = soap.refusal(lambda: soap.publish(data))
    assert (faultcode, soap_code, status) == ("soap:Client", code, 500)
    assert soap_code == rest_code(soap.http, data)
    fault = parse(soap.transport.last_response.content).find(f"{S}Body/{S}Fault")
    assert fault.findtext("faultstring")  # the human message
    error = fault.find("detail")[0]
    schema.compiled(TYPES_NS).assertValid(own_document(error))
    # The detail is the declared fault element: zeep reads it with the WSDL's types.
    mapped = soap.client.get_element(T + "Error").parse(error, soap.client.wsdl.types)
    assert mapped.Code == code and mapped.Message in fault.findtext("faultstring")
    # Signed by a registered sender, refused for a business rule: each refusal (SOAP, then REST) is
    # counted for the statistics (a refusal row and an audit entry); forged input leaves nothing.
    identified = case in ("unknown-message-type", "invalid-ssin")
    assert counts(soap.runtime) == ({**NOTHING, "audit": 2} if identified else NOTHING)
    with soap.runtime.sessions() as session:
        doors = sorted(r.door for r in session.scalars(select(Refusal)) if r.code == code)
    assert doors == (["rest", "soap"] if identified else [])


def test_the_same_sender_message_id_with_other_content_is_refused(soap):
    model = example("payment")
    soap.publish(keyring().sign(model))
    other = replace(model, content=replace(model.content, subjects=(replace(model.content.subjects[0], value="x"),)))
    assert soap.refusal(lambda: soap.publish(keyring().sign(other)))[:2] == ("soap:Client", "DUPLICATE_MESSAGE_ID")
    assert counts(soap.runtime)["messages"] == 1


# --- the SOAP envelope itself --------------------------------------------------------------------------


XXE = b'<!DOCTYPE Envelope [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'


SOAP_CASES = {
    # case: (rewrite of what zeep sends, faultcode, code)
    "xxe": (lambda m, h: (XXE + m.split(b"?>", 1)[1].replace(b"<soap-env:Body>", b"<soap-env:Body>&x;"), h),
            "soap:Client", "XML_FORBIDDEN"),
    "soap-1.2-namespace": (_replace(SOAP_NS.encode(), b"http://www.w3.org/2003/05/soap-envelope"),
                           "soap:VersionMismatch", "SCHEMA_INVALID"),
    "soap-1.2-content-type": (_headers(**{"Content-Type": "application/soap+xml; charset=utf-8"}),
                              "soap:VersionMismatch", "CONTENT_TYPE_INVALID"),
    "application/json": (_headers(**{"Content-Type": "application/json"}), "soap:Client", "CONTENT_TYPE_INVALID"),
    "latin-1": (_headers(**{"Content-Type": "text/xml; charset=iso-8859-1"}), "soap:Client", "CONTENT_TYPE_INVALID"),
    "no-body": (lambda m, h: (m.split(b"<soap-env:Body>")[0] + b"</soap-env:Envelope>", h),
                "soap:Client", "SCHEMA_INVALID"),
    "empty-body": (lambda m, h: (m.split(b"<soap-env:Body>")[0] + b"<soap-env:Body/></soap-env:Envelope>", h),
                   "soap:Client", "SCHEMA_INVALID"),
    "two-entries": (_replace(b"</soap-env:Body>", b"<x:More xmlns:x='urn:x'/></soap-env:Body>"),
                    "soap:Client", "SCHEMA_INVALID"),
    "unknown-operation": (_replace(b'<PublishMessage xmlns="urn:ebox-hub:envelope:1"',
                                   b'<PublishMessage xmlns="urn:ebox-hub:envelope:2"'),
                          "soap:Client", "SCHEMA_INVALID"),
    "not-an-envelope": (lambda m, h: (m.split(b"<soap-env:Body>")[1].split(b"</soap-env:Body>")[0], h),
                        "soap:Client", "SCHEMA_INVALID"),
    "wrong-soapaction": (_headers(SOAPAction='"urn:ebox-hub:soap:1:getMessageStatus"'),
                         "soap:Client", "SCHEMA_INVALID"),
    "malformed": (lambda m, h: (m[:-20], h), "soap:Client", "XML_MALFORMED"),
    "must-understand": (_replace(b"<soap-env:Body>", b'<soap-env:Header><w:Security xmlns:w="urn:wsse" '
                                 b'soap-env:mustUnderstand="1"/></soap-env:Header><soap-env:Body>'),
                        "soap:MustUnderstand", None),
}


@pytest.mark.parametrize("case", sorted(SOAP_CASES))
def test_a_bad_soap_request_is_a_fault_with_a_stable_code_and_stores_nothing(soap, case):
    rewrite, faultcode, code = SOAP_CASES[case]
    soap.transport.rewrite = rewrite
    assert soap.refusal(lambda: soap.publish(keyring().sign(example("payment")))) == (faultcode, code, 500)
    assert counts(soap.runtime) == NOTHING


PUBLISH_ACTION = "urn:ebox-hub:soap:1:publishMessage"


@pytest.mark.parametrize("action", [None, "", '""', PUBLISH_ACTION, f' "{PUBLISH_ACTION}" '])
def test_soapaction_may_be_missing_empty_or_quoted(soap, action):
    def rewrite(message, headers):
        headers = {k: v for k, v in headers.items() if k.lower() != "soapaction"}
        return message, headers if action is None else {**headers, "SOAPAction": action}

    soap.transport.rewrite = rewrite
    assert soap.publish(keyring().sign(example("payment"))).HubMessageId


def test_an_oversized_soap_request_is_cut_off_and_refused_too_large(tmp_path, database_url):
    runtime = make_hub(tmp_path, database_url, HUB_LIMITS_MAX_ENVELOPE_BYTES="2000")
    with TestClient(build_app(runtime)) as http:
        soap = connect(runtime, http)
        assert soap.refusal(lambda: soap.publish(keyring().sign(example("citizen-pdf")))) == (
            "soap:Client", "TOO_LARGE", 500)
    assert counts(runtime) == NOTHING
    runtime.close()


# --- getMessageStatus --------------------------------------------------------------------------------


def test_a_sender_reads_its_own_message_status_with_its_api_token_and_nobody_else_does(soap):
    message_id = soap.publish(keyring().sign(example("payment"))).HubMessageId
    status = soap.status(message_id, TOKENS[ex.FINANCE])
    assert (status.HubMessageId, status.State) == (message_id, "accepted")
    assert [event.Kind for event in status.Events.Event] == ["accepted"]
    schema.validate(own_document(body_entry(soap.transport.last_response.content)), expect=ACK_NS)
    assert soap.transport.last_response.request.headers["soapaction"] == '"urn:ebox-hub:soap:1:getMessageStatus"'

    assert soap.refusal(lambda: soap.status(message_id, None)) == ("soap:Client", "UNAUTHENTICATED", 500)
    assert soap.refusal(lambda: soap.status(message_id, "guess")) == ("soap:Client", "UNAUTHENTICATED", 500)
    assert soap.refusal(lambda: soap.status(message_id, TOKENS[ex.SOCIAL])) == (
        "soap:Client", "MESSAGE_NOT_FOUND", 500)
    unknown = "00000000-0000-4000-8000-000000000000"
    assert soap.refusal(lambda: soap.status(unknown, TOKENS[ex.FINANCE]))[1] == "MESSAGE_NOT_FOUND"
    soap.transport.rewrite = _replace(message_id.encode(), b"not-an-id")
    assert soap.refusal(lambda: soap.status(message_id, TOKENS[ex.FINANCE]))[1] == "SCHEMA_INVALID"


def test_an_integrator_and_its_institution_read_the_status_of_what_it_sent(soap):
    message_id = soap.publish(keyring().sign(example("integrator"))).HubMessageId
    for token in (TOKENS[ex.INTEGRATOR], TOKENS[ex.CITY]):
        assert soap.status(message_id, token).HubMessageId == message_id


# --- outages ----------------------------------------------------------------------------------------------


def test_an_unreachable_database_is_a_server_fault_503_and_never_a_receipt(tmp_path):
    runtime = make_hub(tmp_path, NOWHERE, migrate=False)
    with TestClient(build_app(runtime)) as http:
        soap = connect(runtime, http)  # the contract is served without the database
        assert soap.refusal(lambda: soap.publish(keyring().sign(example("payment")))) == (
            "soap:Server", "SERVICE_UNAVAILABLE", 503)
        assert soap.transport.last_response.headers["retry-after"] == "5"
        assert soap.refusal(lambda: soap.status("00000000-0000-4000-8000-000000000000", TOKENS[ex.FINANCE])) == (
            "soap:Server", "SERVICE_UNAVAILABLE", 503)
    runtime.close()


def test_a_database_lost_while_accepting_stores_nothing(soap):
    nowhere = make_engine(NOWHERE)
    soap.runtime.intake.sessions = session_factory(nowhere)
    assert isinstance(soap.runtime.intake.sessions, sessionmaker)
    assert soap.refusal(lambda: soap.publish(keyring().sign(example("payment")))) == (
        "soap:Server", "SERVICE_UNAVAILABLE", 503)
    nowhere.dispose()
    assert counts(soap.runtime) == NOTHING


# --- over the network --------------------------------------------------------------------------------------


@pytest.fixture()
def served(hub):
    """The hub behind a real uvicorn server on a free port, in a thread."""
    server = uvicorn.Server(uvicorn.Config(build_app(hub), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    assert not thread.is_alive()


def test_zeep_works_over_the_network(hub, served):
    session = requests.Session()
    session.trust_env = False  # no proxy between the client and the local server
    presigned = Presigned()
    client = zeep.Client(f"{served}/soap?wsdl", transport=Transport(session=session), plugins=[presigned])
    assert client.service._binding_options["address"] == f"{served}/soap"

    data = keyring().sign(example("payment"))
    presigned.envelope = data
    receipt = client.service.publishMessage(Header=xsd.SkipValue, Content=xsd.SkipValue)
    assert receipt.EnvelopeDigest._value_1 == hashlib.sha256(data).hexdigest()

    tampered = keyring().sign(example("citizen-letter")).replace(b"2026</", b"2027</")
    presigned.envelope = tampered
    with pytest.raises(zeep.exceptions.Fault) as caught:
        client.service.publishMessage(Header=xsd.SkipValue, Content=xsd.SkipValue)
    assert (caught.value.code, code_of(caught.value)) == ("soap:Client", "SIGNATURE_INVALID")
    presigned.envelope = None

    with pytest.raises(zeep.exceptions.Fault) as caught:
        client.service.getMessageStatus(HubMessageId=receipt.HubMessageId)
    assert code_of(caught.value) == "UNAUTHENTICATED"
    session.headers["Authorization"] = f"Bearer {TOKENS[ex.FINANCE]}"
    assert client.service.getMessageStatus(HubMessageId=receipt.HubMessageId).State == "accepted"
    assert counts(hub)["messages"] == 1
