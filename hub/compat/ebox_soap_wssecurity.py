"""WS-Security 1.0 for the EBoxMessage v1 door: who sent the request, and that it is fresh.

What the contract's policy asks (X.509 token always included, timestamp, body signed) and what the
hub accepts, checked on the parsed SOAP envelope with lxml and ``cryptography`` (no xmlsec):

- exactly one ``wsse:Security`` header for the ultimate receiver, holding exactly one ``ds:Signature``
  and exactly one ``wsu:Timestamp``; no other ``ds:Signature`` anywhere in the request;
- the signature's references are exactly the SOAP ``Body`` (the one the hub reads) and that
  ``Timestamp``, plus, optionally, the ``BinarySecurityToken`` that signs (``sp:ProtectTokens``), each by
  ``wsu:Id``; every id in the request unique (signature wrapping: a copy of a signed element elsewhere,
  or a second element answering to a signed id, is refused);
- exclusive c14n only; allow-listed signature and digest algorithms (``hub.signing.algorithms``: no SHA-1,
  so the contract's ``X509Sha256`` policy, not its ``Basic256`` one);
- the key: ``KeyInfo/wsse:SecurityTokenReference/wsse:Reference`` to an X.509 v3
  ``wsse:BinarySecurityToken`` of the same header, whose certificate is registered (``senders.yaml``) for
  a sender or an integrator and valid now; the signature is checked against the registered certificate;
- the timestamp: ``Created`` not in the future, not older than ``max_age``; ``Expires`` not passed
  (each with ``skew`` of tolerance); the window a replay cache must remember the signature for.

Refusals are ``Rejected`` with the hub's codes (SIGNATURE_MISSING, SIGNATURE_SCOPE, SIGNATURE_INVALID,
SIGNATURE_ALGORITHM, UNKNOWN_SIGNER, CERT_EXPIRED, CERT_NOT_YET_VALID); a stale, premature or replayed
request is ``Unfresh`` (a ``Rejected`` with SIGNATURE_INVALID and its own e-Box code).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from lxml import etree

from hub.errors import ErrorCode, Rejected
from hub.signing.algorithms import DS_NS, Canonicalization, DigestMethod, SignatureMethod
from hub.signing.keys import KeyPair
from hub.signing.signer import Signer
from hub.signing.truststore import TrustedCertificate, TrustStore, fingerprint

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
X509V3 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3"
BASE64_BINARY = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
NEXT_ACTOR = "http://schemas.xmlsoap.org/soap/actor/next"

_S, _DS, _WSSE, _WSU = (f"{{{ns}}}" for ns in (SOAP_NS, DS_NS, WSSE_NS, WSU_NS))
_WSU_ID = _WSU + "Id"
_XML_ID = "{http://www.w3.org/XML/1998/namespace}id"
_EXC_C14N = Canonicalization.EXCLUSIVE.value
_INCLUSIVE_NAMESPACES = "{http://www.w3.org/2001/10/xml-exc-c14n#}InclusiveNamespaces"

_METHODS = {member.value: member for member in SignatureMethod}
_DIGESTS = {member.value: member for member in DigestMethod}


@dataclass(frozen=True)
class Freshness:
    """How fresh a request must be; ``skew`` tolerates clocks that differ."""

    max_age: timedelta = timedelta(minutes=5)
    skew: timedelta = timedelta(minutes=5)


@dataclass(frozen=True)
class Authenticated:
    credential: TrustedCertificate
    """The registered certificate that signed the request (``.party``: the sender or integrator)."""
    body: etree._Element
    """The signed ``soap:Body``: the only part of the request the hub reads."""
    signature_value: bytes
    remember_until: datetime
    """Until when a replay of this request could still pass the freshness checks."""


class Unfresh(Rejected):
    """A request outside its timestamp's window, or a replay; ``ebox_code`` is the door's code for it."""

    def __init__(self, ebox_code: str, message: str) -> None:
        super().__init__(ErrorCode.SIGNATURE_INVALID, message)
        self.ebox_code = ebox_code


def _scope(message: str) -> Rejected:
    return Rejected(ErrorCode.SIGNATURE_SCOPE, message)


def _invalid(message: str) -> Rejected:
    return Rejected(ErrorCode.SIGNATURE_INVALID, message)


def _b64(text: str | None, what: str) -> bytes:
    try:
        return base64.b64decode("".join((text or "").split()), validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(f"{what} is not valid base64.") from None


def _one(parent: etree._Element, tag: str, what: str, code: ErrorCode = ErrorCode.SIGNATURE_INVALID) -> etree._Element:
    found = list(parent.iterchildren(tag))
    if len(found) != 1:
        raise Rejected(code, f"{what}: expected exactly one, found {len(found)}.")
    return found[0]


def security_header(root: etree._Element) -> etree._Element | None:
    """The ``wsse:Security`` block addressed to the hub (no actor, or the next one), if any; two: refused."""
    header = next(root.iterchildren(_S + "Header"), None)
    if header is None:
        return None
    blocks = [
        block
        for block in header.iterchildren(_WSSE + "Security")
        if (block.get(_S + "actor") or NEXT_ACTOR) == NEXT_ACTOR
    ]
    if len(blocks) > 1:
        raise _scope(f"the request has {len(blocks)} wsse:Security headers for the hub; send exactly one.")
    return blocks[0] if blocks else None


def _check_unique_ids(root: etree._Element) -> dict[str, etree._Element]:
    """Every id in the request (wsu:Id, Id, ID, id, xml:id) once; the elements by wsu:Id."""
    values: list[str] = []
    by_wsu_id: dict[str, etree._Element] = {}
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue
        for name in (_WSU_ID, "Id", "ID", "id", _XML_ID):
            value = element.get(name)
            if value is not None:
                values.append(value)
                if name == _WSU_ID:
                    by_wsu_id[value] = element
    repeated = [value for value, count in Counter(values).items() if count > 1]
    if repeated:
        raise _scope(f"the id {repeated[0][:64]!r} appears more than once in the request; ids must be unique.")
    return by_wsu_id


def _c14n(element: etree._Element, prefixes: list[str] | None) -> bytes:
    return etree.tostring(element, method="c14n", exclusive=True, with_comments=False, inclusive_ns_prefixes=prefixes)


def _prefixes(method: etree._Element) -> list[str] | None:
    inclusive = next(method.iterchildren(_INCLUSIVE_NAMESPACES), None)
    return None if inclusive is None else (inclusive.get("PrefixList") or "").split()


def _algorithm(table: Mapping[str, object], value: str | None, what: str) -> object:
    member = table.get(value or "")
    if member is None:
        raise Rejected(
            ErrorCode.SIGNATURE_ALGORITHM,
            f"{what} {(value or '')[:80]!r} is not accepted (SHA-1 is refused: use the X509Sha256 policy); "
            f"use one of: {', '.join(table)}.",
        )
    return member


def _token_certificate(security: etree._Element, signature: etree._Element) -> tuple[bytes, etree._Element]:
    """The DER certificate of the BinarySecurityToken the signature's KeyInfo refers to, and the token."""
    key_info = _one(signature, _DS + "KeyInfo", "ds:KeyInfo in the signature")
    reference_holder = _one(key_info, _WSSE + "SecurityTokenReference", "wsse:SecurityTokenReference in KeyInfo")
    reference = _one(
        reference_holder,
        _WSSE + "Reference",
        "wsse:Reference in the SecurityTokenReference (to the wsse:BinarySecurityToken of the header)",
    )
    uri = reference.get("URI") or ""
    tokens = [
        token
        for token in security.iterchildren(_WSSE + "BinarySecurityToken")
        if "#" + (token.get(_WSU_ID) or "") == uri
    ]
    if len(tokens) != 1:
        raise _invalid(f"the key reference {uri[:80]!r} names no wsse:BinarySecurityToken of the Security header.")
    token = tokens[0]
    if token.get("ValueType", X509V3) != X509V3 or token.get("EncodingType", BASE64_BINARY) != BASE64_BINARY:
        raise _invalid("the BinarySecurityToken must be an X.509 v3 certificate in Base64Binary.")
    return _b64(token.text, "the BinarySecurityToken"), token


def _instant(timestamp: etree._Element, name: str, required: bool) -> datetime | None:
    found = list(timestamp.iterchildren(_WSU + name))
    if not found:
        if required:
            raise _scope(f"the wsu:Timestamp has no wsu:{name}.")
        return None
    text = (found[0].text or "").strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise _scope(f"wsu:{name} {text[:40]!r} is not a UTC date-time (e.g. 2026-11-26T10:00:00Z).")
    return moment


def _verify_signature_value(entry: TrustedCertificate, method: SignatureMethod, value: bytes, signed: bytes) -> None:
    key = entry.public_key
    try:
        if method.is_rsa:
            if not isinstance(key, rsa.RSAPublicKey):
                raise _invalid("an RSA signature cannot come from an elliptic-curve certificate.")
            key.verify(value, signed, padding.PKCS1v15(), method.hash)
        else:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise _invalid("an ECDSA signature cannot come from an RSA certificate.")
            size = (key.curve.key_size + 7) // 8
            if len(value) != 2 * size:
                raise _invalid("the ECDSA signature value has the wrong length.")
            der = encode_dss_signature(int.from_bytes(value[:size], "big"), int.from_bytes(value[size:], "big"))
            key.verify(der, signed, ec.ECDSA(method.hash))
    except InvalidSignature:
        raise _invalid("the WS-Security signature does not match: the request was changed after signing.") from None


def authenticate(root: etree._Element, *, trust: TrustStore, now: datetime, freshness: Freshness) -> Authenticated:
    """Check the WS-Security header of the SOAP 1.1 envelope ``root``; who signed it, and its signed Body."""
    security = security_header(root)
    if security is None:
        raise Rejected(
            ErrorCode.SIGNATURE_MISSING,
            "the request has no wsse:Security header: sign the Body and a wsu:Timestamp with the X.509 "
            "certificate registered for your organisation (BinarySecurityToken).",
        )
    signature = _one(security, _DS + "Signature", "ds:Signature in wsse:Security", ErrorCode.SIGNATURE_MISSING)
    if sum(1 for _ in root.iter(_DS + "Signature")) != 1:
        raise _scope("the request carries more than one ds:Signature; only the WS-Security one is accepted.")
    timestamp = _one(security, _WSU + "Timestamp", "wsu:Timestamp in wsse:Security", ErrorCode.SIGNATURE_SCOPE)
    body = _one(root, _S + "Body", "soap:Body", ErrorCode.SIGNATURE_SCOPE)
    by_id = _check_unique_ids(root)
    der, token = _token_certificate(security, signature)

    signed_info = _one(signature, _DS + "SignedInfo", "ds:SignedInfo")
    c14n_method = _one(signed_info, _DS + "CanonicalizationMethod", "ds:CanonicalizationMethod")
    if c14n_method.get("Algorithm") != _EXC_C14N:
        raise Rejected(ErrorCode.SIGNATURE_ALGORITHM, f"canonicalise SignedInfo with exclusive c14n ({_EXC_C14N}).")
    method = _algorithm(
        _METHODS, _one(signed_info, _DS + "SignatureMethod", "ds:SignatureMethod").get("Algorithm"), "signature method"
    )
    assert isinstance(method, SignatureMethod)
    covered: list[etree._Element] = []
    for reference in signed_info.iterchildren(_DS + "Reference"):
        uri = reference.get("URI") or ""
        target = by_id.get(uri[1:]) if uri.startswith("#") else None
        if target is None:
            raise _scope(f"the signature refers to {uri[:80]!r}: refer to the Body and the Timestamp by wsu:Id.")
        if target not in (body, timestamp, token) or target in covered:
            raise _scope(
                f"the signature covers {etree.QName(target).localname!r} ({uri[:80]}); it must cover exactly the "
                "soap:Body and the wsu:Timestamp of the Security header (and, optionally, the token)."
            )
        covered.append(target)
        transforms_holder = next(reference.iterchildren(_DS + "Transforms"), None)
        transforms = [] if transforms_holder is None else list(transforms_holder)
        if len(transforms) != 1 or transforms[0].get("Algorithm") != _EXC_C14N:
            raise Rejected(ErrorCode.SIGNATURE_ALGORITHM, "each reference has exactly one transform: exclusive c14n.")
        digest_method = _algorithm(
            _DIGESTS, _one(reference, _DS + "DigestMethod", "ds:DigestMethod").get("Algorithm"), "digest method"
        )
        assert isinstance(digest_method, DigestMethod)
        expected = _b64(_one(reference, _DS + "DigestValue", "ds:DigestValue").text, "DigestValue")
        actual = hashlib.new(digest_method.hashlib_name, _c14n(target, _prefixes(transforms[0]))).digest()
        if not hmac.compare_digest(actual, expected):
            raise _invalid(f"the digest of the signed {etree.QName(target).localname} does not match: it was changed.")
    if body not in covered or timestamp not in covered:
        raise _scope("the signature must cover both the soap:Body and the wsu:Timestamp.")

    entry = trust.by_fingerprint(fingerprint(der))
    if entry is None:
        raise Rejected(
            ErrorCode.UNKNOWN_SIGNER,
            "the certificate of the BinarySecurityToken is not registered for any sender or integrator; sign with "
            "the certificate the hub's operator registered for you.",
        )
    entry.check_valid(now)
    value = _b64(_one(signature, _DS + "SignatureValue", "ds:SignatureValue").text, "SignatureValue")
    _verify_signature_value(entry, method, value, _c14n(signed_info, _prefixes(c14n_method)))
    return Authenticated(entry, body, value, _fresh_until(timestamp, now, freshness))


def _fresh_until(timestamp: etree._Element, now: datetime, freshness: Freshness) -> datetime:
    created = _instant(timestamp, "Created", required=True)
    expires = _instant(timestamp, "Expires", required=False)
    assert created is not None
    skew = freshness.skew
    if created > now + skew:
        raise Unfresh(
            "SECURITY_TIMESTAMP_INVALID", f"wsu:Created {created.isoformat()} is in the future; check the clock."
        )
    if expires is not None and expires < created:
        raise Unfresh("SECURITY_TIMESTAMP_INVALID", "wsu:Expires is before wsu:Created.")
    limit = created + freshness.max_age
    if expires is not None:
        limit = min(limit, expires)
    if now > limit + skew:
        raise Unfresh(
            "SECURITY_TIMESTAMP_EXPIRED",
            f"the request's timestamp ({created.isoformat()}) is no longer fresh (at most "
            f"{int(freshness.max_age.total_seconds())} s old); sign each request when it is sent.",
        )
    return limit + skew


# --- the hub's responses -------------------------------------------------------------------------------------


def signed_response(entry: etree._Element, pair: KeyPair, *, now: datetime, lifetime: timedelta) -> bytes:
    """A SOAP 1.1 response around ``entry``, WS-Security signed by the hub (the policy's recipient token).

    The Body and a Timestamp, by wsu:Id, exclusive c14n, SHA-256, the hub key's algorithm (``Signer``); the
    token is not included (``IncludeToken/Never``): KeyInfo names the hub certificate by issuer and serial.
    """
    method = Signer(pair).method
    envelope = etree.Element(_S + "Envelope", nsmap={"soap": SOAP_NS})
    security = etree.SubElement(
        etree.SubElement(envelope, _S + "Header"), _WSSE + "Security", nsmap={"wsse": WSSE_NS, "wsu": WSU_NS}
    )
    timestamp = etree.SubElement(security, _WSU + "Timestamp")
    timestamp.set(_WSU_ID, f"TS-{uuid.uuid4()}")
    for name, moment in (("Created", now), ("Expires", now + lifetime)):
        etree.SubElement(timestamp, _WSU + name).text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = etree.SubElement(envelope, _S + "Body", nsmap={"wsu": WSU_NS})
    body.set(_WSU_ID, f"Body-{uuid.uuid4()}")
    body.append(entry)
    signature = etree.Element(_DS + "Signature", nsmap={"ds": DS_NS})
    security.insert(0, signature)
    signed_info = etree.SubElement(signature, _DS + "SignedInfo")
    etree.SubElement(signed_info, _DS + "CanonicalizationMethod", Algorithm=_EXC_C14N)
    etree.SubElement(signed_info, _DS + "SignatureMethod", Algorithm=method.value)
    for target in (body, timestamp):
        reference = etree.SubElement(signed_info, _DS + "Reference", URI="#" + target.get(_WSU_ID))
        etree.SubElement(etree.SubElement(reference, _DS + "Transforms"), _DS + "Transform", Algorithm=_EXC_C14N)
        etree.SubElement(reference, _DS + "DigestMethod", Algorithm=DigestMethod.SHA256.value)
        digest = hashlib.sha256(_c14n(target, None)).digest()
        etree.SubElement(reference, _DS + "DigestValue").text = base64.b64encode(digest).decode()
    data = _c14n(signed_info, None)
    key = pair.key
    if isinstance(key, rsa.RSAPrivateKey):
        value = key.sign(data, padding.PKCS1v15(), method.hash)
    else:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(method.hash)))
        size = (key.curve.key_size + 7) // 8
        value = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    etree.SubElement(signature, _DS + "SignatureValue").text = base64.b64encode(value).decode()
    issuer_serial = etree.SubElement(
        etree.SubElement(
            etree.SubElement(etree.SubElement(signature, _DS + "KeyInfo"), _WSSE + "SecurityTokenReference"),
            _DS + "X509Data",
        ),
        _DS + "X509IssuerSerial",
    )
    etree.SubElement(issuer_serial, _DS + "X509IssuerName").text = pair.certificate.issuer.rfc4514_string()
    etree.SubElement(issuer_serial, _DS + "X509SerialNumber").text = str(pair.certificate.serial_number)
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
