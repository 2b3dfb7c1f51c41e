"""What an e-Box REST v2.1 sender does, for the tests: sign a client assertion, get a token, publish.

The reference contract (the public e-Box swagger) is read from ``/work/shared/reference`` (or
``HUB_TEST_EBOX_REFERENCE``) only by the tests, to validate requests and answers against its
definitions. Where it is absent the tests that need it are skipped, except under CI=true, where
they fail: compatibility must be proven against the contract itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.serialization import Encoding
from jsonschema import Draft4Validator

from hub.envelope import examples as ex
from tests.kit import NOW, keyring

REFERENCE = Path(
    os.environ.get(
        "HUB_TEST_EBOX_REFERENCE", "/work/shared/reference/ebox/e-Box-Enterprise-swagger-v2.1-AP-Public.yaml"
    )
)
CI = os.environ.get("CI") == "true"
TOKEN_URL = "http://testserver/ebox/oauth2/token"
BASE = "/ebox/rest/v2"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@cache
def _definitions() -> dict[str, Any] | None:
    if not REFERENCE.exists():
        return None
    return yaml.safe_load(REFERENCE.read_text())["definitions"]


def definitions() -> dict[str, Any]:
    found = _definitions()
    if found is None:
        message = f"the e-Box REST v2.1 reference contract is not at {REFERENCE} (set HUB_TEST_EBOX_REFERENCE)"
        if CI:
            pytest.fail(f"{message}; CI must prove compatibility against it", pytrace=False)
        pytest.skip(message)
    return found


def validate(definition: str, instance: object) -> None:
    """``instance`` is valid against the contract's ``definition`` (jsonschema; raises when not)."""
    defs = definitions()
    schema = {"$ref": f"#/definitions/{definition}", "definitions": defs}
    Draft4Validator(schema).validate(instance)


def is_valid(definition: str, instance: object) -> bool:
    defs = definitions()
    return Draft4Validator({"$ref": f"#/definitions/{definition}", "definitions": defs}).is_valid(instance)


def der(org: str) -> bytes:
    return keyring().pairs[org].certificate.public_bytes(Encoding.DER)


def assertion(
    org: str = ex.SOCIAL,
    *,
    aud: str = TOKEN_URL,
    issued: timedelta = timedelta(0),
    lifetime: timedelta = timedelta(minutes=2),
    jti: str | None = None,
    by_thumbprint: bool = False,
    key_of: str | None = None,
    claims: dict[str, Any] | None = None,
    header: dict[str, Any] | None = None,
) -> str:
    """A client assertion as an e-Box sender signs it: its certificate in x5c (or x5t#S256)."""
    iat = NOW + issued
    body: dict[str, Any] = {
        "iss": org,
        "sub": org,
        "aud": aud,
        "iat": int(iat.timestamp()),
        "exp": int((iat + lifetime).timestamp()),
        "jti": jti or uuid.uuid4().hex,
        **(claims or {}),
    }
    cert = der(org)
    names = (
        {"x5t#S256": base64.urlsafe_b64encode(hashlib.sha256(cert).digest()).rstrip(b"=").decode()}
        if by_thumbprint
        else {"x5c": [base64.b64encode(cert).decode()]}
    )
    return jwt.encode(body, keyring().pairs[key_of or org].key, algorithm="ES256", headers={**names, **(header or {})})


def token_request(client, client_assertion: str, **extra: str):  # type: ignore[no-untyped-def]
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": client_assertion,
        **extra,
    }
    return client.post("/ebox/oauth2/token", data=form)


def access_token(client, org: str = ex.SOCIAL) -> str:  # type: ignore[no-untyped-def]
    response = token_request(client, assertion(org))
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


PDF = ex.minimal_pdf("Pensioenoverzicht 2026")
CSV = b"jaar;dagen\n2024;312\n"


def digest(content: bytes) -> dict[str, str]:
    value = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
    return {"digestMethod": "sha_256", "digestValue": value}


def message(**fields: Any) -> dict[str, Any]:
    """A messageToPublish the social institution sends a citizen: a PDF main content and a CSV annex."""
    base: dict[str, Any] = {
        "recipient": {"eboxType": "citizen", "eboxIdValue": ex.CITIZEN_A},
        "subject": {"nl": "Uw pensioenoverzicht", "fr": "Votre aperçu de pension"},
        "messageTypeId": "PENSION_STATEMENT",
        "senderOrganizationId": ex.SOCIAL,
        "senderApplicationId": "pension-statements",
        "expirationDate": "2027-11-02T09:00:00Z",
        "registeredMail": False,
        "bodyMainContent": False,
        "bodyContent": {"nl": "In bijlage uw overzicht.", "fr": "Vous trouverez votre aperçu en annexe."},
        "replyAuthorized": False,
        "attachments": [
            {
                "httpPartName": "upfile1",
                "mainContent": True,
                "attachmentTitle": {"nl": "Overzicht"},
                "digest": digest(PDF),
                "attachmentSigned": False,
            },
            {"httpPartName": "upfile2", "mainContent": False, "digest": digest(CSV)},
        ],
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


FILES = {"upfile1": ("overzicht.pdf", PDF, "application/pdf"), "upfile2": ("loopbaan.csv", CSV, "text/csv")}


def publish(  # type: ignore[no-untyped-def]
    client,
    token: str | None,
    body: dict[str, Any] | str | bytes,
    files: dict[str, tuple[str, bytes, str]] | None = None,
    headers: dict[str, str] | None = None,
):
    """POST publishMessage as e-Box clients send it: the JSON as a part of its own, then the files."""
    raw = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
    parts: list[tuple[str, tuple[str | None, bytes, str]]] = [("messageToPublish", (None, raw, "application/json"))]
    parts += [(name, spec) for name, spec in (FILES if files is None else files).items()]
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post(f"{BASE}/publishMessage", files=parts, headers={**auth, **(headers or {})})


def search(client, token: str, couples: list[dict[str, Any]]):  # type: ignore[no-untyped-def]
    return client.post(f"{BASE}/searchMessageStatus", json=couples, headers={"Authorization": f"Bearer {token}"})


def couple(message_id: str, ssin: str = ex.CITIZEN_A, kind: str = "citizen") -> dict[str, Any]:
    return {"messageId": message_id, "eboxId": {"eboxType": kind, "eboxIdValue": ssin}}
