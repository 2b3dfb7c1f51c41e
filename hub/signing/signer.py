"""Sign a document with an enveloped XML-DSig signature over the whole document.

Reference URI "" (or "#" + the root's Id), transforms enveloped-signature + exclusive
c14n, SHA-256 digest, ECDSA (curve-sized hash) or RSA-SHA256, the certificate in KeyInfo.
The key and certificate are loaded once into the ``Signer``.

Documents of one fixed shape that differ only in some texts (the hub's receipts) can be
signed from a ``SigningTemplate``: lxml writes a specimen once (its c14n, its SignedInfo, its
signed serialisation) and each document is then those texts put into the pieces, hashed and
signed, with no tree built. Only plain values take that path (printable ASCII without markup
characters, which every serialisation writes as they are); any other value is signed from a
tree, as before.

Two back ends write the same structure: ``fast`` (the default: lxml c14n + cryptography
on the tree at hand) and ``signxml`` (the reference). Tests verify what the fast one signs
with signxml's verifier, so the two cannot drift apart.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import re
import warnings
from collections.abc import Callable, Mapping
from typing import Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from lxml import etree

from hub.signing.algorithms import DS_NS, ENVELOPED_TRANSFORM, Canonicalization, DigestMethod, SignatureMethod
from hub.signing.keys import KeyPair

_DS = "{" + DS_NS + "}"
_EXC = Canonicalization.EXCLUSIVE.value

_EC_METHODS = {
    "secp256r1": SignatureMethod.ECDSA_SHA256,
    "secp384r1": SignatureMethod.ECDSA_SHA384,
    "secp521r1": SignatureMethod.ECDSA_SHA512,
}

Backend = Literal["fast", "signxml"]


class Signer:
    """Signs documents with one key pair; reusable, thread-safe and cheap per call."""

    def __init__(self, pair: KeyPair, *, backend: Backend = "fast") -> None:
        self.pair = pair
        self.backend = backend
        if isinstance(pair.key, ec.EllipticCurvePrivateKey):
            self.method = _EC_METHODS[pair.key.curve.name]
        else:
            self.method = SignatureMethod.RSA_SHA256
        der = pair.certificate.public_bytes(serialization.Encoding.DER)
        self._certificate_b64 = base64.b64encode(der).decode("ascii")

    def sign(self, root: etree._Element) -> etree._Element:
        """A signed copy of ``root`` (an existing signature is refused, not replaced)."""
        if root.find(".//" + _DS + "Signature") is not None:
            raise ValueError("the document is already signed; sign the unsigned document")
        reference = f"#{root.get('Id')}" if root.get("Id") else ""
        if self.backend == "signxml":
            return self._sign_signxml(root, reference)
        return self._sign_fast(copy.deepcopy(root), reference)

    def _sign_fast(self, root: etree._Element, reference: str) -> etree._Element:
        document = etree.tostring(root, method="c14n", exclusive=True, with_comments=False)
        digest = base64.b64encode(hashlib.sha256(document).digest()).decode("ascii")
        signature = etree.SubElement(root, _DS + "Signature", nsmap={"ds": DS_NS})
        signed_info = etree.SubElement(signature, _DS + "SignedInfo")
        etree.SubElement(signed_info, _DS + "CanonicalizationMethod", Algorithm=_EXC)
        etree.SubElement(signed_info, _DS + "SignatureMethod", Algorithm=self.method.value)
        ref = etree.SubElement(signed_info, _DS + "Reference", URI=reference)
        transforms = etree.SubElement(ref, _DS + "Transforms")
        etree.SubElement(transforms, _DS + "Transform", Algorithm=ENVELOPED_TRANSFORM)
        etree.SubElement(transforms, _DS + "Transform", Algorithm=_EXC)
        etree.SubElement(ref, _DS + "DigestMethod", Algorithm=DigestMethod.SHA256.value)
        etree.SubElement(ref, _DS + "DigestValue").text = digest
        to_sign = etree.tostring(signed_info, method="c14n", exclusive=True, with_comments=False)
        etree.SubElement(signature, _DS + "SignatureValue").text = base64.b64encode(
            self._raw_signature(to_sign)
        ).decode()
        key_info = etree.SubElement(signature, _DS + "KeyInfo")
        etree.SubElement(
            etree.SubElement(key_info, _DS + "X509Data"), _DS + "X509Certificate"
        ).text = self._certificate_b64
        return root

    def template(self, specimen: etree._Element, serialise: Callable[[etree._Element], bytes]) -> SigningTemplate:
        """A template for documents shaped like ``specimen``, whose variable texts read ``@@name@@``."""
        return SigningTemplate(self, specimen, serialise)

    def _raw_signature(self, data: bytes) -> bytes:
        key = self.pair.key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            # XML-DSig wants r || s, each as long as the curve's order (RFC 4050), not DER.
            r, s = decode_dss_signature(key.sign(data, ec.ECDSA(self.method.hash)))
            size = (key.curve.key_size + 7) // 8
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def _sign_signxml(self, root: etree._Element, reference: str) -> etree._Element:
        from signxml import XMLSigner
        from signxml import algorithms as sx

        signer = XMLSigner(
            signature_algorithm=sx.SignatureMethod(self.method.value),
            digest_algorithm=sx.DigestAlgorithm.SHA256,
            c14n_algorithm=sx.CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return signer.sign(root, key=self.pair.key, cert=[self.pair.certificate], reference_uri=reference or None)


_FIELD = re.compile(r"@@(\w+)@@")
_DIGEST, _SIGNATURE = "hub_digest_value", "hub_signature_value"
# Printable ASCII but "&", "<" and ">": written alike by c14n and by serialisation, as they are.
_PLAIN = re.compile(r"[ -%'-;=?-~]+")


def _format(text: str, names: set[str]) -> str:
    """``text`` as a ``str.format`` pattern whose fields are the ``@@name@@`` placeholders (each once)."""
    pieces = _FIELD.split(text)
    found = pieces[1::2]
    if sorted(found) != sorted(names):
        raise ValueError(f"the specimen's placeholders {sorted(found)} are not the fields {sorted(names)}")
    literal = [piece.replace("{", "{{").replace("}", "}}") for piece in pieces[0::2]]
    fields = [f"{{{name}}}" for name in found] + [""]
    return "".join(part for pair in zip(literal, fields, strict=True) for part in pair)


class SigningTemplate:
    """Signs documents of one shape by putting texts into pieces lxml wrote once (see the module's doc).

    ``sign`` returns exactly the bytes ``serialise(signer.sign(tree))`` would for the same tree
    (ECDSA signature values aside, which differ on every signing), or None when a value is not
    plain: the caller then signs the tree.
    """

    def __init__(self, signer: Signer, specimen: etree._Element, serialise: Callable[[etree._Element], bytes]) -> None:
        if signer.backend != "fast":
            raise ValueError("templates are built with the fast back end")
        names = set(_FIELD.findall(etree.tostring(specimen, encoding="unicode")))
        self.signer = signer
        self.fields = frozenset(names)
        reference = f"#{specimen.get('Id')}" if specimen.get("Id") else ""
        c14n = etree.tostring(specimen, method="c14n", exclusive=True, with_comments=False).decode("utf-8")
        self._c14n = _format(c14n, names)
        signed = signer._sign_fast(copy.deepcopy(specimen), reference)
        signature = signed[-1]
        signed_info = signature.find(_DS + "SignedInfo")
        digest_value = signature.find(f"{_DS}SignedInfo/{_DS}Reference/{_DS}DigestValue")
        signature_value = signature.find(_DS + "SignatureValue")
        assert signed_info is not None and digest_value is not None and signature_value is not None
        digest_value.text = f"@@{_DIGEST}@@"
        signature_value.text = f"@@{_SIGNATURE}@@"
        info = etree.tostring(signed_info, method="c14n", exclusive=True, with_comments=False).decode("utf-8")
        self._signed_info = _format(info, {_DIGEST})
        self._document = _format(serialise(signed).decode("utf-8"), names | {_DIGEST, _SIGNATURE})

    def sign(self, values: Mapping[str, str]) -> bytes | None:
        """The signed document with these texts, serialised; None when a value is not plain."""
        for value in values.values():
            if not _PLAIN.fullmatch(value):
                return None
        if values.keys() != self.fields:
            raise ValueError(f"the template's fields are {sorted(self.fields)}, not {sorted(values)}")
        digest = base64.b64encode(hashlib.sha256(self._c14n.format_map(values).encode("utf-8")).digest()).decode()
        signed_info = self._signed_info.format_map({_DIGEST: digest}).encode("utf-8")
        signature = base64.b64encode(self.signer._raw_signature(signed_info)).decode()
        return self._document.format_map({**values, _DIGEST: digest, _SIGNATURE: signature}).encode("utf-8")
