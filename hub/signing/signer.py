"""Sign a document with an enveloped XML-DSig signature over the whole document.

signxml does the work (Reference URI "", enveloped-signature + exclusive c14n,
SHA-256 or stronger); the key and certificate are loaded once into the ``Signer``.
"""

from __future__ import annotations

import warnings

from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree
from signxml import XMLSigner
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod

from hub.signing.algorithms import DS_NS
from hub.signing.keys import KeyPair

_DS = "{" + DS_NS + "}"

_EC_METHODS = {
    "secp256r1": SignatureMethod.ECDSA_SHA256,
    "secp384r1": SignatureMethod.ECDSA_SHA384,
    "secp521r1": SignatureMethod.ECDSA_SHA512,
}


class Signer:
    """Signs documents with one key pair; reusable and cheap per call."""

    def __init__(self, pair: KeyPair) -> None:
        self.pair = pair
        if isinstance(pair.key, ec.EllipticCurvePrivateKey):
            method = _EC_METHODS[pair.key.curve.name]
        else:
            method = SignatureMethod.RSA_SHA256
        self._signer = XMLSigner(
            signature_algorithm=method,
            digest_algorithm=DigestAlgorithm.SHA256,
            c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
        )

    def sign(self, root: etree._Element) -> etree._Element:
        """A signed copy of ``root`` (an existing signature is refused, not replaced)."""
        if root.find(".//" + _DS + "Signature") is not None:
            raise ValueError("the document is already signed; sign the unsigned document")
        reference = f"#{root.get('Id')}" if root.get("Id") else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self._signer.sign(root, key=self.pair.key, cert=[self.pair.certificate], reference_uri=reference)
