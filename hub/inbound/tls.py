"""Client certificates for the HTTP doors.

uvicorn does not pass the TLS peer certificate to the application; this protocol adds the
ASGI TLS extension (``scope["extensions"]["tls"]["client_cert_chain"]``, PEM) so that a door
can check that the client certificate belongs to the party that signed the envelope.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import Any

from hub.inbound.deadline import DeadlineHttpToolsProtocol
from hub.signing.truststore import TrustedCertificate, TrustStore, fingerprint


class TLSHttpToolsProtocol(DeadlineHttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        self._hub_tls: dict[str, Any] = {"client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else []}

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {"tls": self._hub_tls}  # type: ignore[dict-item]


def client_certificate_der(scope: Mapping[str, Any]) -> bytes | None:
    """The DER of the TLS client certificate of this request, if one was presented."""
    chain = scope.get("extensions", {}).get("tls", {}).get("client_cert_chain") or []
    return ssl.PEM_cert_to_DER_cert(chain[0]) if chain else None


def client_party(scope: Mapping[str, Any], trust: TrustStore) -> tuple[bool, TrustedCertificate | None]:
    """(a certificate was presented, its registration, if it is registered for a party)."""
    der = client_certificate_der(scope)
    if der is None:
        return False, None
    return True, trust.by_fingerprint(fingerprint(der))
