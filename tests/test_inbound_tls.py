"""HTTPS with client certificates: the certificate must belong to the party that signed.

A real uvicorn server (TLS, client certificates required) in a thread, on SQLite.
"""

from __future__ import annotations

import base64
import socket
import ssl
import threading
import time
from datetime import timedelta

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives.serialization import Encoding

from hub.envelope import examples as ex
from hub.inbound.http import build_app
from hub.inbound.tls import TLSHttpToolsProtocol
from hub.signing.keys import KeyPair, generate_key, self_signed_certificate, write_key_pair
from tests.kit import CREATED, TOKENS, example, key_pair, keyring
from tests.test_inbound_rest import make_hub


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def tls_hub(tmp_path):
    runtime = make_hub(tmp_path, f"sqlite:///{tmp_path / 'hub.db'}")
    key = generate_key("ec")
    server = KeyPair(
        key,
        self_signed_certificate(key, "hub", hosts=("127.0.0.1",), not_before=CREATED - timedelta(days=1), days=3650),
    )
    server_key, server_cert = write_key_pair(server, tmp_path / "tls", "server")
    # The client CA bundle: the senders' registered certificates.
    bundle = tmp_path / "tls" / "clients.pem"
    bundle.write_bytes(b"".join(p.certificate.public_bytes(Encoding.PEM) for p in keyring().pairs.values()))
    clients = {}
    for org, pair in keyring().pairs.items():
        clients[org] = write_key_pair(pair, tmp_path / "clients", org)
    port = free_port()
    config = uvicorn.Config(
        build_app(runtime),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        http=TLSHttpToolsProtocol,
        ssl_keyfile=str(server_key),
        ssl_certfile=str(server_cert),
        ssl_ca_certs=str(bundle),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
    )
    server_ = uvicorn.Server(config)
    thread = threading.Thread(target=server_.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server_.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"https://127.0.0.1:{port}", server_cert, clients, tmp_path, runtime
    server_.should_exit = True
    thread.join(timeout=10)
    runtime.close()


def client(base, server_cert, cert=None):
    """An HTTPS client trusting the hub's certificate, presenting ``cert`` (key, certificate) if given."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(server_cert))
    if cert:
        context.load_cert_chain(certfile=str(cert[1]), keyfile=str(cert[0]))
    return httpx.Client(base_url=base, verify=context, timeout=10)


def test_the_signers_own_certificate_is_accepted(tls_hub):
    base, server_cert, clients, _ = tls_hub[:4]
    with client(base, server_cert, clients[ex.FINANCE]) as http:
        response = http.post(
            "/v1/messages", content=keyring().sign(example("payment")), headers={"Content-Type": "application/xml"}
        )
    assert response.status_code == 201, response.text


def test_another_senders_certificate_is_refused_even_with_a_valid_signature(tls_hub):
    base, server_cert, clients, _ = tls_hub[:4]
    with client(base, server_cert, clients[ex.SOCIAL]) as http:
        response = http.post(
            "/v1/messages", content=keyring().sign(example("payment")), headers={"Content-Type": "application/xml"}
        )
    assert response.status_code == 403
    assert b"NOT_AUTHORISED" in response.content
    assert b"signed by 0308357159" in response.content


def _soap_request(envelope: bytes) -> bytes:
    body = envelope.split(b"?>", 1)[1] if envelope.startswith(b"<?xml") else envelope
    soap = b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
    return soap + b"<s:Body>" + body + b"</s:Body></s:Envelope>"


def test_the_batch_and_soap_doors_hold_the_certificate_to_the_signer_too(tls_hub):
    """Every door that accepts envelopes checks the client certificate against the signer, not POST /v1/messages
    alone: social security's certificate carrying the tax administration's envelopes gets nothing accepted."""
    base, server_cert, clients, _ = tls_hub[:4]
    theirs = keyring().sign(example("payment"))
    with client(base, server_cert, clients[ex.SOCIAL]) as http:
        batch = http.post("/v1/batches", json={"envelopes": [base64.b64encode(theirs).decode()]})
        soap = http.post(
            "/soap", content=_soap_request(theirs), headers={"Content-Type": "text/xml", "SOAPAction": '""'}
        )
    assert batch.status_code == 207, batch.text
    assert [(r["status"], r["code"]) for r in batch.json()["results"]] == [(403, "NOT_AUTHORISED")]
    assert soap.status_code == 500 and b"NOT_AUTHORISED" in soap.content, soap.text
    with client(base, server_cert, clients[ex.FINANCE]) as http:  # the signer's own certificate: accepted
        batch = http.post("/v1/batches", json={"envelopes": [base64.b64encode(theirs).decode()]})
    assert [r["status"] for r in batch.json()["results"]] == [201]


def test_a_certificate_past_its_registered_window_is_refused(tls_hub, monkeypatch):
    """``valid_until`` in senders.yaml ends a certificate for the hub even while TLS (its own dates) accepts it."""
    base, server_cert, clients, _, runtime = tls_hub
    monkeypatch.setattr(runtime.intake, "clock", lambda: CREATED + timedelta(days=3650))
    with client(base, server_cert, clients[ex.FINANCE]) as http:
        response = http.get("/v1/acks", headers={"Authorization": f"Bearer {TOKENS[ex.FINANCE]}"})
    assert response.status_code == 401, response.text
    assert b"CERT_EXPIRED" in response.content


def test_without_a_client_certificate_the_handshake_fails(tls_hub):
    base, server_cert, _, _ = tls_hub[:4]
    with pytest.raises(httpx.HTTPError), client(base, server_cert) as http:
        http.post("/v1/messages", content=b"<x/>", headers={"Content-Type": "application/xml"})


def test_an_unknown_client_certificate_is_refused_by_tls(tls_hub):
    base, server_cert, _, tmp_path = tls_hub[:4]
    stranger = write_key_pair(key_pair("stranger"), tmp_path / "stranger", "s")
    with pytest.raises(httpx.HTTPError), client(base, server_cert, stranger) as http:
        http.post("/v1/messages", content=b"<x/>", headers={"Content-Type": "application/xml"})


def test_the_certificate_identifies_the_reader_of_a_status(tls_hub):
    base, server_cert, clients, _ = tls_hub[:4]
    with client(base, server_cert, clients[ex.FINANCE]) as http:
        created = http.post(
            "/v1/messages",
            content=keyring().sign(example("citizen-letter")),
            headers={"Content-Type": "application/xml"},
        )
        message_id = created.headers["x-hub-message-id"]
        assert http.get(f"/v1/messages/{message_id}").status_code == 200
    with client(base, server_cert, clients[ex.SOCIAL]) as http:
        # Another sender's certificate reads nothing, whatever token it adds.
        response = http.get(f"/v1/messages/{message_id}", headers={"Authorization": f"Bearer {TOKENS[ex.FINANCE]}"})
        assert response.status_code == 404


def test_hub_run_serves_the_same_tls_as_hub_serve(tmp_path):
    """``hub run`` (every stage in one process) takes [http] tls_* and client_ca like ``hub serve``:
    HTTPS only, and no handshake without a registered client certificate."""
    from hub.service import Service
    from tests.test_service import provider_config

    (tmp_path / "config").mkdir()
    provider_config(tmp_path / "config")
    key = generate_key("ec")
    server = KeyPair(key, self_signed_certificate(key, "hub", hosts=("127.0.0.1",), days=30))
    server_key, server_cert = write_key_pair(server, tmp_path / "tls", "server")
    bundle = tmp_path / "tls" / "clients.pem"
    bundle.write_bytes(keyring().pairs[ex.FINANCE].certificate.public_bytes(Encoding.PEM))
    finance = write_key_pair(keyring().pairs[ex.FINANCE], tmp_path / "clients", ex.FINANCE)
    port = free_port()
    runtime = make_hub(
        tmp_path,
        f"sqlite:///{tmp_path / 'hub.db'}",
        HUB_BROKER_URL="memory://",
        HUB_HTTP_PORT=str(port),
        HUB_HTTP_TLS_KEY=str(server_key),
        HUB_HTTP_TLS_CERTIFICATE=str(server_cert),
        HUB_HTTP_CLIENT_CA=str(bundle),
    )
    service = Service(runtime, http=True, check_every=3600)
    service.start()
    base = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with client(base, server_cert, finance) as finance_client:
                    if finance_client.get("/healthz").status_code == 200:
                        break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "hub run's HTTPS door did not come up"
            time.sleep(0.1)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=3)  # no plain HTTP beside it
        with pytest.raises((httpx.HTTPError, ssl.SSLError)), client(base, server_cert) as anonymous:
            anonymous.get("/healthz")  # no client certificate: no handshake
    finally:
        service.stop()
        runtime.close()
    assert not service.failures, service.failures
