"""Sign a document with an enveloped XML-DSig signature over the whole document.

Reference URI "" (or "#" + the root's Id), transforms enveloped-signature + exclusive
c14n, SHA-256 digest, ECDSA (curve-sized hash) or RSA-SHA256, the certificate in KeyInfo.
The key and certificate are loaded once into the ``Signer``.

Two back ends write the same structure: ``fast`` (the default: lxml c14n + cryptography
on the tree at hand) and ``signxml`` (the reference). Tests verify what the fast one signs
with signxml's verifier, so the two cannot drift apart.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import warnings
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
