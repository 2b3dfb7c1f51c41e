"""Allow-listed XML-DSig algorithms, as Enums whose values are the standard URIs.

What is not listed is refused (``SIGNATURE_ALGORITHM``): SHA-1, DSA, HMAC, XPath and
XSLT transforms, and canonicalisations "with comments" simply do not exist here.
"""

from __future__ import annotations

from enum import Enum

from cryptography.hazmat.primitives import hashes

DS_NS = "http://www.w3.org/2000/09/xmldsig#"


class SignatureMethod(Enum):
    RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    RSA_SHA384 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384"
    RSA_SHA512 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"
    ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
    ECDSA_SHA384 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384"
    ECDSA_SHA512 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512"

    @property
    def is_rsa(self) -> bool:
        return self.name.startswith("RSA")

    @property
    def hash(self) -> hashes.HashAlgorithm:
        return _HASHES[self.name[-3:]]


_HASHES: dict[str, hashes.HashAlgorithm] = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}


class DigestMethod(Enum):
    SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
    SHA384 = "http://www.w3.org/2001/04/xmldsig-more#sha384"
    SHA512 = "http://www.w3.org/2001/04/xmlenc#sha512"

    @property
    def hashlib_name(self) -> str:
        return self.name.lower()


class Canonicalization(Enum):
    EXCLUSIVE = "http://www.w3.org/2001/10/xml-exc-c14n#"
    INCLUSIVE_1_0 = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"

    @property
    def exclusive(self) -> bool:
        return self is Canonicalization.EXCLUSIVE


ENVELOPED_TRANSFORM = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
