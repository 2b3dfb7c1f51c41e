"""The provider's side of the claim check: fetch an envelope that travelled by reference.

A delivery whose envelope is larger than the hub's ``[broker] claim_check_bytes`` arrives
with an empty body and three headers (``hub.broker.relay``): ``envelope-url`` (on the hub's
HTTP door), ``envelope-bytes`` and ``envelope-sha256``. ``EnvelopeFetcher.resolve`` GETs it
with the provider's API token and checks that the bytes are the ones the headers announce.

The token goes only to the hub: a URL that is not under the ``hub_url`` the provider was
configured with is refused (a message planted in the provider's queue cannot make it send
its token elsewhere). What can happen, and what the consume loop then does:

    the hub answers 200 with the announced bytes    the envelope, handled as if it came in the body
    404 (not this provider's), 410 (expired)        ``Rejected``: dead-lettered, never retried
    another origin, malformed claim headers         ``Rejected``
    5xx, 401/403 (a token not yet registered),      ``Unavailable``: retried with back-off, then
    a network error, bytes that differ              dead-lettered (replayable once fixed)
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from hub.errors import ErrorCode, Rejected, Unavailable

CLAIM_HEADERS = ("envelope-url", "envelope-bytes", "envelope-sha256")


def is_claim(body: bytes, headers: Mapping[str, Any]) -> bool:
    """A delivery whose envelope travels by reference (empty body, ``envelope-url``)."""
    return not body and bool(headers.get("envelope-url"))


def _origin(url: str) -> tuple[str, str, int | None, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port, parts.path.rstrip("/")


class EnvelopeFetcher:
    """GETs claim-checked envelopes from the hub with the provider's API token (see the module's doc)."""

    def __init__(
        self, hub_url: str, api_token: str, *, timeout_s: float = 60.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        if not hub_url.startswith(("http://", "https://")):
            raise ValueError(f"hub_url must start with http:// or https://, not {hub_url!r}")
        if not api_token:
            raise ValueError("an API token is needed to fetch envelopes from the hub")
        self.hub_url = hub_url.rstrip("/")
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            transport=transport,
            headers={"Authorization": f"Bearer {api_token}", "Accept": "application/xml"},
        )

    def _check_origin(self, url: str) -> None:
        scheme, host, port, path = _origin(url)
        hub_scheme, hub_host, hub_port, hub_path = _origin(self.hub_url)
        if (scheme, host, port) != (hub_scheme, hub_host, hub_port) or not path.startswith(hub_path + "/v1/"):
            raise Rejected(
                ErrorCode.SCHEMA_INVALID,
                "the delivery's envelope-url is not on the hub this provider is configured with; not fetched",
            )

    def resolve(self, body: bytes, headers: Mapping[str, Any]) -> bytes:
        """``body``, or for a claim-checked delivery the envelope fetched from the hub."""
        if not is_claim(body, headers):
            return body
        url = str(headers["envelope-url"])
        try:
            size = int(headers["envelope-bytes"])
            digest = str(headers["envelope-sha256"]).lower()
            bytes.fromhex(digest)
        except (KeyError, TypeError, ValueError):
            raise Rejected(
                ErrorCode.SCHEMA_INVALID, "a claim-checked delivery needs envelope-bytes and envelope-sha256"
            ) from None
        self._check_origin(url)
        try:
            response = self._client.get(url)
        except httpx.HTTPError as exc:
            raise Unavailable(f"the hub did not answer for the envelope ({type(exc).__name__})") from exc
        if response.status_code == 404:
            raise Rejected(ErrorCode.MESSAGE_NOT_FOUND, "the hub knows no such delivery for this provider")
        if response.status_code == 410:
            raise Rejected(ErrorCode.CONTENT_EXPIRED, "the message expired before its envelope was fetched")
        if response.status_code != 200:
            raise Unavailable(f"the hub answered {response.status_code} for the envelope")
        data = response.content
        if len(data) != size or not hmac.compare_digest(hashlib.sha256(data).hexdigest(), digest):
            raise Unavailable(f"the envelope fetched is not the one announced ({len(data)} of {size} bytes)")
        return data

    def close(self) -> None:
        self._client.close()


__all__ = ["CLAIM_HEADERS", "EnvelopeFetcher", "is_claim"]
