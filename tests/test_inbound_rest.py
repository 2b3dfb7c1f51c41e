"""The REST door and the acceptance pipeline, on SQLite and on PostgreSQL.

Every accepted envelope gets a receipt signed by the hub only after its message row,
event, audit entry and outbox row are committed; a refusal stores no message (a properly signed
envelope refused for a business rule is counted: one refusal row, one audit entry; forged or
garbage input leaves nothing at all).
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from hub.envelope import examples as ex
from hub.envelope import schema
from hub.envelope.model import ACK_NS, TYPES_NS, Environment
from hub.inbound.http import build_app
from hub.runtime import build_runtime
from hub.safexml import parse
from hub.settings import load_settings
from hub.signing.truststore import TrustStore, trusted
from hub.signing.verifier import Verifier
from hub.store.db import make_engine, upgrade
from hub.store.models import AuditEntry, Event, Message, OutboxEntry, Refusal
from tests.kit import NOW, TOKENS, directory, example, keyring

A = "{" + ACK_NS + "}"
T = "{" + TYPES_NS + "}"


def make_hub(tmp_path, database_url, **env):
    settings = load_settings(
        tmp_path / "config", {"HUB_DATA_DIR": str(tmp_path / "var"), "HUB_DATABASE_URL": database_url, **env}
    )
    upgrade(make_engine(settings.effective_database_url))
    runtime = build_runtime(settings, directory=directory())
    runtime.intake.clock = lambda: NOW
    return runtime


@pytest.fixture()
def client(hub):
    with TestClient(build_app(hub)) as test_client:
        yield test_client


def post(client, data: bytes, content_type: str = "application/xml"):
    return client.post("/v1/messages", content=data, headers={"Content-Type": content_type})


def counts(hub) -> dict[str, int]:
    with hub.sessions() as session:
        return {
            model.__tablename__: session.scalar(select(func.count()).select_from(model))
            for model in (Message, Event, AuditEntry, OutboxEntry)
        }


def refusals(hub) -> list[Refusal]:
    with hub.sessions() as session:
        return list(session.scalars(select(Refusal)))


def hub_verifier(hub) -> Verifier:
    return Verifier(TrustStore([trusted("hub", hub.hub_keys.certificate)]))


# --- acceptance --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(ex.KINDS))
def test_every_kind_is_accepted_with_a_receipt_signed_by_the_hub(hub, client, kind):
    data = keyring().sign(example(kind))
    response = post(client, data)
    assert response.status_code == 201, response.text
    receipt = parse(response.content)
    # The receipt is a valid SubmissionReceipt, signed by the hub, quoting the digest of the bytes sent.
    schema.validate(receipt, expect=ACK_NS)
    assert hub_verifier(hub).verify(receipt, now=datetime.now(UTC)).signer.party == "hub"
    assert receipt.findtext(A + "EnvelopeDigest") == hashlib.sha256(data).hexdigest()
    assert receipt.findtext(A + "SenderMessageId") == example(kind).header.sender_message_id
    message_id = receipt.findtext(A + "HubMessageId")
    assert response.headers["location"] == f"/v1/messages/{message_id}"
    # And one transaction wrote the message, its event, the audit entry and the outbox row.
    assert counts(hub) == {"messages": 1, "events": 1, "audit": 1, "outbox": 1}
    with hub.sessions() as session:
        message = session.get(Message, message_id)
        assert message.envelope == data and message.state == "accepted"
        outbox = session.scalars(select(OutboxEntry)).one()
        assert (outbox.exchange, outbox.routing_key, outbox.sent_at) == ("hub.route", "route", None)
        audit = session.scalars(select(AuditEntry)).one()
        assert example(kind).header.recipient.id not in audit.detail  # no national number in the trail


def test_a_repeat_returns_the_original_receipt_and_stores_nothing_new(hub, client):
    data = keyring().sign(example("payment"))
    first, second = post(client, data), post(client, data)
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.content == first.content
    assert counts(hub)["messages"] == 1


def test_the_same_sender_message_id_with_other_content_is_refused(hub, client):
    model = example("payment")
    post(client, keyring().sign(model))
    other = replace(model, content=replace(model.content, subjects=(replace(model.content.subjects[0], value="x"),)))
    response = post(client, keyring().sign(other))
    assert response.status_code == 409
    error = parse(response.content)
    assert error.findtext(T + "Code") == "DUPLICATE_MESSAGE_ID"
    assert "AER-2026-778899" in error.findtext(T + "Message")
    assert counts(hub)["messages"] == 1


def test_concurrent_identical_submissions_create_one_message(hub):
    data = keyring().sign(example("registered"))
    outcomes, errors = [], []

    def submit():
        try:
            outcomes.append(hub.intake.submit(data, door="test"))
        except Exception as exc:  # collected: a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(o.created for o in outcomes) == [False, False, False, True]
    assert len({o.message_id for o in outcomes}) == 1
    assert counts(hub)["messages"] == 1


# --- refusals store no message; forged or garbage input leaves nothing at all --------------------


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("tampered", 401, "SIGNATURE_INVALID"),
        ("unsigned", 401, "SIGNATURE_MISSING"),
        ("xxe", 400, "XML_FORBIDDEN"),
        ("integrator-without-mandate", 403, "NOT_AUTHORISED"),
        ("unknown-message-type", 403, "UNKNOWN_MESSAGE_TYPE"),
        ("unknown-application", 403, "INVALID_SENDER"),
        ("wrong-environment", 403, "ENVIRONMENT_MISMATCH"),
        ("invalid-ssin", 400, "SSIN_INVALID"),
        ("json", 415, "CONTENT_TYPE_INVALID"),
    ],
)
def test_refusals_carry_their_code_and_store_no_message(hub, client, case, status, code):
    ring = keyring()
    letter = example("citizen-letter")
    header = letter.header
    bodies = {
        "tampered": lambda: ring.sign(letter).replace(b"2026</", b"2027</"),
        "unsigned": lambda: ring.sign(letter).split(b"<ds:Signature")[0] + b"</PublishMessage>",
        "xxe": lambda: b'<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>',
        "integrator-without-mandate": lambda: ring.sign(
            replace(
                letter,
                header=replace(
                    header, sender=replace(header.sender, organization_id=ex.INTEGRATOR, on_behalf_of=ex.FINANCE)
                ),
            )
        ),
        "unknown-message-type": lambda: ring.sign(replace(letter, header=replace(header, message_type="NOPE"))),
        "unknown-application": lambda: ring.sign(
            replace(letter, header=replace(header, sender=replace(header.sender, application_id="other-app")))
        ),
        "wrong-environment": lambda: ring.sign(replace(letter, header=replace(header, environment=Environment.INT))),
        "invalid-ssin": lambda: ring.sign(
            replace(letter, header=replace(header, recipient=replace(header.recipient, id="85073003329")))
        ),
        "json": lambda: ring.sign(letter),
    }
    response = post(client, bodies[case](), "application/json" if case == "json" else "application/xml")
    assert response.status_code == status, response.text
    assert parse(response.content).findtext(T + "Code") == code
    # Signed by a registered sender, refused for a business rule: counted (statistics), nothing else.
    identified = case not in ("tampered", "unsigned", "xxe", "json")
    assert counts(hub) == {"messages": 0, "events": 0, "audit": int(identified), "outbox": 0}
    assert [(r.code, r.door) for r in refusals(hub)] == ([(code, "rest")] if identified else [])


def test_an_oversized_body_is_cut_off_before_parsing(tmp_path, database_url):
    runtime = make_hub(tmp_path, database_url, HUB_LIMITS_MAX_ENVELOPE_BYTES="2000")
    with TestClient(build_app(runtime)) as client:
        big = keyring().sign(example("citizen-pdf"))
        assert len(big) > 2000
        response = post(client, big)
        assert response.status_code == 413
        assert parse(response.content).findtext(T + "Code") == "TOO_LARGE"
        # A chunked body without Content-Length is cut off too.
        response = client.post(
            "/v1/messages", content=iter([big[:1500], big[1500:]]), headers={"Content-Type": "application/xml"}
        )
        assert response.status_code == 413
    assert counts(runtime)["messages"] == 0
    runtime.close()


def test_a_client_that_stalls_while_sending_gets_408_and_nothing_is_stored(tmp_path, database_url):
    import socket

    import uvicorn

    runtime = make_hub(tmp_path, database_url, HUB_HTTP_TIMEOUT_S="0.3")
    data = keyring().sign(example("payment"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build_app(runtime), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        # Given a client that sends the headers and the start of the body, then stalls
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            head = "POST /v1/messages HTTP/1.1\r\nHost: hub\r\nContent-Type: application/xml\r\n"
            head += f"Content-Length: {len(data)}\r\n\r\n"
            connection.sendall(head.encode() + data[:100])
            # Then the hub answers 408 without waiting for the rest
            answer = connection.recv(65536)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"REQUEST_TIMEOUT" in answer
    assert counts(runtime)["messages"] == 0
    runtime.close()


def test_an_unreachable_database_answers_503_and_never_a_receipt(tmp_path):
    settings = load_settings(
        tmp_path / "config",
        {"HUB_DATA_DIR": str(tmp_path / "var"), "HUB_DATABASE_URL": "postgresql://postgres@127.0.0.1:9/none"},
    )
    runtime = build_runtime(settings, directory=directory())
    runtime.intake.clock = lambda: NOW
    with TestClient(build_app(runtime)) as client:
        response = post(client, keyring().sign(example("payment")))
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert parse(response.content).findtext(T + "Code") == "SERVICE_UNAVAILABLE"
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200
    runtime.close()


# --- status ----------------------------------------------------------------------------------


def test_a_sender_reads_its_own_message_status_and_nobody_else_does(hub, client):
    receipt = parse(post(client, keyring().sign(example("payment"))).content)
    message_id = receipt.findtext(A + "HubMessageId")
    own = client.get(f"/v1/messages/{message_id}", headers={"Authorization": f"Bearer {TOKENS[ex.FINANCE]}"})
    assert own.status_code == 200
    status = parse(own.content)
    schema.validate(status, expect=ACK_NS)
    assert status.findtext(A + "State") == "accepted"
    assert [e.findtext(A + "Kind") for e in status.iter(A + "Event")] == ["accepted"]
    other = client.get(f"/v1/messages/{message_id}", headers={"Authorization": f"Bearer {TOKENS[ex.SOCIAL]}"})
    assert other.status_code == 404
    assert client.get(f"/v1/messages/{message_id}").status_code == 401
    forged = client.get(f"/v1/messages/{message_id}", headers={"Authorization": "Bearer guess"})
    assert forged.status_code == 401


def test_an_integrator_reads_the_messages_it_sent_for_an_institution(hub, client):
    response = post(client, keyring().sign(example("integrator")))
    assert response.status_code == 201, response.text
    message_id = response.headers["x-hub-message-id"]
    for token in (TOKENS[ex.INTEGRATOR], TOKENS[ex.CITY]):
        assert client.get(f"/v1/messages/{message_id}", headers={"Authorization": f"Bearer {token}"}).status_code == 200


# --- batches ------------------------------------------------------------------------------------


def test_a_batch_gets_one_result_per_envelope_and_a_bad_one_sinks_nothing(hub, client):
    ring = keyring()
    good = [ring.sign(example(kind)) for kind in ("citizen-letter", "payment", "registered")]
    bad = good[1].replace(b"1234.56", b"9234.56")
    envelopes = [*good, bad, good[0]]
    response = client.post("/v1/batches", json={"envelopes": [base64.b64encode(e).decode() for e in envelopes]})
    assert response.status_code == 207
    body = response.json()
    assert [r["status"] for r in body["results"]] == [201, 201, 201, 401, 200]
    assert body["results"][3]["code"] == "SIGNATURE_INVALID"
    assert body["results"][4]["message_id"] == body["results"][0]["message_id"]
    assert (body["accepted"], body["refused"]) == (4, 1)
    assert counts(hub) == {"messages": 3, "events": 3, "audit": 3, "outbox": 3}


def test_a_malformed_or_oversized_batch_is_refused_whole(hub, client):
    assert client.post("/v1/batches", json={"nope": []}).status_code == 400
    assert client.post("/v1/batches", json={"envelopes": ["%%%"]}).status_code == 400
    assert client.post("/v1/batches", json={"envelopes": []}).status_code == 413
    assert client.post("/v1/batches", content=b"<x/>", headers={"Content-Type": "application/xml"}).status_code == 415
    assert counts(hub)["messages"] == 0


def test_an_expired_envelope_is_judged_at_the_hubs_clock(hub, client):
    hub.intake.clock = lambda: NOW + timedelta(days=800)
    response = post(client, keyring().sign(example("payment")))
    assert response.status_code in (400, 401)


def test_readyz_names_an_unreachable_broker(hub):
    from hub.inbound.http import broker_probe

    app = build_app(hub, broker_probe=broker_probe("amqp://guest:guest@127.0.0.1:9//"))
    with TestClient(app) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"] != "ok"


def test_readyz_is_ready_with_a_reachable_broker(hub):
    from hub.inbound.http import broker_probe
    from tests.backends import rabbitmq_url

    with TestClient(build_app(hub, broker_probe=broker_probe(rabbitmq_url()))) as client:
        assert client.get("/readyz").json() == {"ready": True, "checks": {"database": "ok", "broker": "ok"}}
