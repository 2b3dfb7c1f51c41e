"""Verify the enveloped XML-DSig signature of a document against a trust store.

The signature must cover the whole document, and nothing else may be signed:

- exactly one ``ds:Signature`` in the document, a direct child of the root;
- exactly one ``ds:Reference``, URI ``""`` or ``"#"`` + the root's Id;
- transforms exactly: enveloped-signature, then one allow-listed canonicalisation;
- no ``ds:Object`` and no duplicate Id attributes (signature-wrapping defence);
- allow-listed algorithms only (no SHA-1);
- the signer's certificate must be registered for an expected party and valid now.

Key material inside the document is never trusted: an embedded ``X509Certificate`` only
selects which registered certificate to check against.

Two back ends share these checks: ``fast`` (lxml c14n + cryptography, one pass over the
parsed tree) and ``signxml`` (the reference implementation, which re-parses the document
several times). The fast one is held to signxml by differential tests.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import warnings
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from lxml import etree

from hub.errors import ErrorCode, Rejected
from hub.signing.algorithms import (
    DS_NS,
    ENVELOPED_TRANSFORM,
    Canonicalization,
    DigestMethod,
    SignatureMethod,
)
from hub.signing.truststore import TrustedCertificate, TrustStore, fingerprint

_DS = "{" + DS_NS + "}"
_EXC_NS = "http://www.w3.org/2001/10/xml-exc-c14n#"
_INCLUSIVE_NAMESPACES = "{" + _EXC_NS + "}InclusiveNamespaces"
_ID_ATTRIBUTES = ("Id", "ID", "id")

Backend = Literal["fast", "signxml"]

# Compiled once: evaluating a string XPath compiles it on every call.
_ID_VALUES = etree.XPath("//@Id | //@ID")
_ANSWERS_TO = etree.XPath("//*[@id = $v or @xml:id = $v]")
_SIGNATURES = etree.XPath("//ds:Signature", namespaces={"ds": DS_NS})


@dataclass(frozen=True)
class SignatureParts:
    """The pieces of a signature whose shape has been checked (``check_scope``)."""

    signature: etree._Element
    signed_info: etree._Element
    c14n: Canonicalization
    inclusive_prefixes: tuple[str, ...] | None
    method: SignatureMethod
    reference_c14n: Canonicalization
    reference_prefixes: tuple[str, ...] | None
    digest_method: DigestMethod
    digest_value: bytes
    signature_value: bytes
    embedded_fingerprints: tuple[bytes, ...]


@dataclass(frozen=True)
class Verified:
    """A document whose signature holds: its tree (exactly what was signed) and who signed it."""

    root: etree._Element
    signer: TrustedCertificate
    method: SignatureMethod


def _scope(message: str, element: etree._Element | None = None) -> Rejected:
    return Rejected(ErrorCode.SIGNATURE_SCOPE, message, line=element.sourceline if element is not None else None)


# URI -> member of each allow-list: a dictionary look-up instead of an Enum call per field.
_BY_URI: dict[type, dict[str, object]] = {
    enum: {member.value: member for member in enum} for enum in (Canonicalization, SignatureMethod, DigestMethod)
}


def _algorithm(enum, value: str | None, what: str):
    member = _BY_URI[enum].get(value)  # type: ignore[arg-type]
    if member is not None:
        return member
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise Rejected(
            ErrorCode.SIGNATURE_ALGORITHM,
            f"{what} {value!r} is not accepted (SHA-1 and other weak or unusual algorithms are refused); "
            f"use one of: {allowed}.",
        ) from None


def _child(parent: etree._Element, name: str) -> etree._Element | None:
    """The first child ``ds:name`` (``find``, without its path machinery)."""
    return next(parent.iterchildren(_DS + name), None)


def _only(parent: etree._Element, name: str) -> etree._Element:
    found = list(parent.iterchildren(_DS + name))
    if len(found) != 1:
        raise Rejected(
            ErrorCode.SIGNATURE_INVALID,
            f"the signature must contain exactly one ds:{name} (found {len(found)}).",
            line=parent.sourceline,
        )
    return found[0]


def _prefixes(method: etree._Element) -> tuple[str, ...] | None:
    inclusive = next(method.iterchildren(_INCLUSIVE_NAMESPACES), None)
    if inclusive is None:
        return None
    return tuple((inclusive.get("PrefixList") or "").split())


def _b64(text: str | None, what: str) -> bytes:
    try:
        return base64.b64decode("".join((text or "").split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Rejected(ErrorCode.SIGNATURE_INVALID, f"{what} is not valid base64.") from exc


def check_scope(root: etree._Element) -> SignatureParts:
    """Check that one signature covers the whole document; return its parts or raise."""
    signatures = _SIGNATURES(root)
    if not signatures:
        raise Rejected(
            ErrorCode.SIGNATURE_MISSING,
            "the document is not signed; sign it (enveloped XML-DSig over the whole document) "
            "with the key registered for your organisation, e.g. `hub envelope sign`.",
        )
    if len(signatures) > 1:
        raise _scope(f"the document carries {len(signatures)} signatures; exactly one is accepted.", signatures[1])
    signature = signatures[0]
    if signature.getparent() is not root:
        raise _scope("the signature must be a direct child of the root element (enveloped signature).", signature)
    if _child(signature, "Object") is not None:
        raise _scope(
            "ds:Object is not accepted inside the signature: only the whole document may be signed.", signature
        )
    _check_unique_ids(root)

    signed_info = _only(signature, "SignedInfo")
    c14n_method = _only(signed_info, "CanonicalizationMethod")
    c14n = _algorithm(Canonicalization, c14n_method.get("Algorithm"), "canonicalisation")
    method = _algorithm(SignatureMethod, _only(signed_info, "SignatureMethod").get("Algorithm"), "signature method")
    references = list(signed_info.iterchildren(_DS + "Reference"))
    if len(references) != 1:
        raise _scope(
            f"the signature must have exactly one reference, to the whole document (found {len(references)}).",
            signed_info,
        )
    reference = references[0]
    uri = reference.get("URI")
    root_id = root.get("Id")
    if uri != "" and not (root_id and uri == "#" + root_id):
        raise _scope(
            f"the signature refers to {uri!r}; it must cover the whole document "
            '(Reference URI="" or "#" + the root element\'s Id).',
            reference,
        )
    transforms_parent = _child(reference, "Transforms")
    transforms = [] if transforms_parent is None else list(transforms_parent)
    if (
        len(transforms) != 2
        or transforms[0].tag != _DS + "Transform"
        or transforms[0].get("Algorithm") != ENVELOPED_TRANSFORM
        or transforms[1].tag != _DS + "Transform"
    ):
        raise Rejected(
            ErrorCode.SIGNATURE_ALGORITHM,
            "the reference's transforms must be exactly: enveloped-signature, then exclusive c14n.",
            line=reference.sourceline,
        )
    reference_c14n = _algorithm(Canonicalization, transforms[1].get("Algorithm"), "transform")
    digest_method = _algorithm(DigestMethod, _only(reference, "DigestMethod").get("Algorithm"), "digest method")
    digest_value = _b64(_only(reference, "DigestValue").text, "DigestValue")
    signature_value = _b64(_only(signature, "SignatureValue").text, "SignatureValue")
    embedded = tuple(
        _embedded_fingerprint(cert.text or "")
        for key_info in signature.iterchildren(_DS + "KeyInfo")
        for data in key_info.iterchildren(_DS + "X509Data")
        for cert in data.iterchildren(_DS + "X509Certificate")
    )
    return SignatureParts(
        signature=signature,
        signed_info=signed_info,
        c14n=c14n,
        inclusive_prefixes=_prefixes(c14n_method),
        method=method,
        reference_c14n=reference_c14n,
        reference_prefixes=_prefixes(transforms[1]),
        digest_method=digest_method,
        digest_value=digest_value,
        signature_value=signature_value,
        embedded_fingerprints=embedded,
    )


@functools.lru_cache(maxsize=1024)
def _embedded_fingerprint(text: str) -> bytes:
    """SHA-256 of an embedded certificate; a sender embeds the same one in every envelope."""
    return fingerprint(_b64(text, "X509Certificate"))


def _check_unique_ids(root: etree._Element) -> None:
    """No two elements share an Id, and nothing else answers to the root's Id.

    ``id`` (lower case) is an ordinary attribute of the envelope (reply choices), but XML
    signature tools also resolve ``#x`` against it, so it may not repeat the root's Id.
    """
    values = [str(value) for value in _ID_VALUES(root)]
    if len(values) > 1:
        repeated = [value for value, count in Counter(values).items() if count > 1]
        if repeated:
            raise _scope(f"the Id {repeated[0]!r} appears more than once; Ids must be unique.")
    root_id = root.get("Id")
    if root_id and _ANSWERS_TO(root, v=root_id):
        raise _scope(f"another element answers to the root's Id {root_id!r}; give it another id.")


def candidates(
    parts: SignatureParts, trust: TrustStore, parties: list[str] | None, now: datetime
) -> list[TrustedCertificate]:
    """The registered certificates to check the signature against, valid at ``now``."""
    parties = None if parties is None else [party for party in parties if party]
    allowed = trust.for_parties(parties)
    if parts.embedded_fingerprints:
        allowed_by_fp = {entry.fingerprint: entry for entry in allowed}
        matched = [allowed_by_fp[fp] for fp in parts.embedded_fingerprints if fp in allowed_by_fp]
        if not matched:
            who = ", ".join(parties) if parties else "any registered party"
            raise Rejected(
                ErrorCode.UNKNOWN_SIGNER,
                f"the certificate in the signature is not registered for {who}; "
                "sign with the key whose certificate the hub's operator registered for you.",
            )
        pool = matched
    else:
        pool = list(allowed)
        if not pool:
            who = ", ".join(parties) if parties else "anyone"
            raise Rejected(ErrorCode.UNKNOWN_SIGNER, f"no certificate is registered for {who}.")
    valid = []
    refusal: Rejected | None = None
    for entry in pool:
        try:
            entry.check_valid(now)
            valid.append(entry)
        except Rejected as exc:
            refusal = refusal or exc
    if not valid:
        assert refusal is not None
        raise refusal
    return valid


class Verifier:
    """Verifies signatures against a trust store. Thread-safe; build once, reuse."""

    def __init__(self, trust: TrustStore, *, backend: Backend = "fast") -> None:
        self.trust = trust
        self.backend = backend

    def verify(self, root: etree._Element, *, now: datetime, parties: list[str] | None = None) -> Verified:
        """Return who signed ``root``, or raise ``Rejected`` saying why the signature does not hold.

        ``parties`` restricts the signers accepted (e.g. the sender and its integrators);
        ``None`` accepts any registered party.
        """
        parts = check_scope(root)
        pool = candidates(parts, self.trust, parties, now)
        check = _verify_fast if self.backend == "fast" else _verify_signxml
        last: Rejected | None = None
        for entry in pool:
            try:
                check(root, parts, entry, now)
                return Verified(root=root, signer=entry, method=parts.method)
            except Rejected as exc:
                last = exc
        assert last is not None
        raise last


def _c14n(node: etree._Element, algorithm: Canonicalization, prefixes: tuple[str, ...] | None) -> bytes:
    return etree.tostring(
        node,
        method="c14n",
        exclusive=algorithm.exclusive,
        with_comments=False,
        inclusive_ns_prefixes=list(prefixes) if prefixes else None,
    )


def _document_without_signature(root: etree._Element, parts: SignatureParts) -> bytes:
    """c14n of the document with the Signature element removed (enveloped transform).

    The signature element is detached and put back; the text that followed it stays in
    the document, as the transform requires.
    """
    signature = parts.signature
    tail = signature.tail
    previous = signature.getprevious()
    index = root.index(signature)
    saved = previous.tail if previous is not None else root.text
    root.remove(signature)
    if tail:
        if previous is not None:
            previous.tail = (saved or "") + tail
        else:
            root.text = (saved or "") + tail
    try:
        return _c14n(root, parts.reference_c14n, parts.reference_prefixes)
    finally:
        if previous is not None:
            previous.tail = saved
        else:
            root.text = saved
        signature.tail = tail
        root.insert(index, signature)


def _invalid(message: str) -> Rejected:
    return Rejected(ErrorCode.SIGNATURE_INVALID, message)


def _verify_fast(root: etree._Element, parts: SignatureParts, entry: TrustedCertificate, now: datetime) -> None:
    signed_info = _c14n(parts.signed_info, parts.c14n, parts.inclusive_prefixes)
    key = entry.public_key
    try:
        if parts.method.is_rsa:
            if not isinstance(key, rsa.RSAPublicKey):
                raise _invalid(f"an RSA signature cannot come from {entry.party}'s elliptic-curve key.")
            key.verify(parts.signature_value, signed_info, padding.PKCS1v15(), parts.method.hash)
        else:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise _invalid(f"an ECDSA signature cannot come from {entry.party}'s RSA key.")
            size = (key.curve.key_size + 7) // 8
            raw = parts.signature_value
            if len(raw) != 2 * size:
                raise _invalid("the ECDSA signature value has the wrong length.")
            der = encode_dss_signature(int.from_bytes(raw[:size], "big"), int.from_bytes(raw[size:], "big"))
            key.verify(der, signed_info, ec.ECDSA(parts.method.hash))
    except InvalidSignature:
        raise _invalid(
            "the signature does not match: the document was changed after signing, or it was signed with another key."
        ) from None
    digest = hashlib.new(parts.digest_method.hashlib_name, _document_without_signature(root, parts)).digest()
    if not hmac.compare_digest(digest, parts.digest_value):
        raise _invalid(
            "the document's digest does not match the signed digest: the document was changed after signing."
        )


def _verify_signxml(root: etree._Element, parts: SignatureParts, entry: TrustedCertificate, now: datetime) -> None:
    from signxml import InvalidInput, SignatureConfiguration, XMLVerifier
    from signxml import algorithms as sx
    from signxml.exceptions import InvalidCertificate, InvalidDigest
    from signxml.exceptions import InvalidSignature as SxInvalidSignature

    config = SignatureConfiguration(
        location="./",
        expect_references=1,
        signature_methods=frozenset(sx.SignatureMethod(m.value) for m in SignatureMethod),
        digest_algorithms=frozenset(sx.DigestAlgorithm(d.value) for d in DigestMethod),
        verification_time=now,
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            XMLVerifier().verify(root, x509_cert=entry.certificate, expect_config=config)
    except (SxInvalidSignature, InvalidDigest, InvalidInput, InvalidCertificate) as exc:
        raise _invalid(f"the signature does not hold: {exc}") from exc
