"""Authentication of the e-Box REST door: OAuth2 client credentials with a private-key JWT assertion.

The flow e-Box senders already implement (RFC 7523 client authentication):

1. ``POST /ebox/oauth2/token`` (``application/x-www-form-urlencoded``) with
   ``grant_type=client_credentials``,
   ``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`` and
   ``client_assertion=<JWT>``. The JWT is signed with the private key of a certificate registered
   for the sender in ``senders.yaml``; its header names the certificate by ``x5c`` (the chain, the
   sender's certificate first) or ``x5t#S256`` (base64url SHA-256 of the certificate). Its claims:
   ``iss`` = ``sub`` = the client id (the organisation's CBE number, the certificate's party),
   ``aud`` = the token endpoint's URL, ``exp`` (at most ``MAX_ASSERTION_LIFETIME`` after ``iat``),
   ``iat``, optional ``nbf``, and a ``jti`` never used before (replays are refused).
2. The hub answers ``{"access_token", "token_type": "Bearer", "expires_in"}``: a JWT signed with the
   hub's own key (``runtime.hub_keys``), valid ``ACCESS_TOKEN_LIFETIME`` seconds, naming the party
   and the fingerprint of the certificate that authenticated it.
3. The API takes ``Authorization: Bearer <access token>``. Each call checks the token's signature
   and time, and that its certificate is still registered and within its window (removing a
   certificate from ``senders.yaml`` ends its tokens at the next reload).

Why a signed token rather than an opaque one kept by the hub: ``hub serve --workers N`` runs several
processes that share the hub's key but no memory, and the hub must not need a table for them; a
short lifetime and the per-call certificate check bound what a stolen token is worth.

The ``jti`` of each accepted assertion is remembered in this process until the assertion expires
(``ReplayGuard``): a replay to the same process is refused. Several processes each keep their own:
see ``docs/ebox-compatibility.md`` (a shared table would close that gap).

Every JWT operation uses PyJWT. Times are checked against the hub's clock (``runtime.intake.clock``),
with ``SKEW`` of tolerance, so that one clock decides everything the hub dates. Neither tokens nor
assertions are ever logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hub.errors import ErrorCode, Rejected
from hub.signing.keys import KeyPair
from hub.signing.truststore import TrustedCertificate, TrustStore, fingerprint
from hub.store.single_use import SingleUse

GRANT_TYPE = "client_credentials"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
"""Asymmetric algorithms only: never ``none``, never HMAC (a public key used as a shared secret)."""
SKEW = timedelta(seconds=60)
MAX_ASSERTION_LIFETIME = timedelta(minutes=10)
ACCESS_TOKEN_LIFETIME = timedelta(minutes=15)
ISSUER = "ebox-hub"
AUDIENCE = "ebox-hub:ebox-rest"
MAX_ASSERTION_CHARS = 32 * 1024


class AuthError(Rejected):
    """A refused token request; ``error`` is the RFC 6749 error code (``invalid_client``, ...)."""

    def __init__(self, error: str, message: str, *, code: ErrorCode = ErrorCode.UNAUTHENTICATED) -> None:
        super().__init__(code, message)
        self.error = error


@dataclass(frozen=True)
class Caller:
    """Who calls the API: the party (institution or integrator) a valid access token names."""

    party: str
    credential: TrustedCertificate


def _b64url(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _certificate_of(header: Mapping[str, Any], trust: TrustStore) -> TrustedCertificate:
    """The registered certificate the assertion's header names (``x5c`` first, else ``x5t#S256``)."""
    chain, thumbprint = header.get("x5c"), header.get("x5t#S256")
    try:
        if chain is not None:
            if not isinstance(chain, list) or not chain or not isinstance(chain[0], str):
                raise ValueError("x5c is not a list of base64 certificates")
            der = base64.b64decode(chain[0], validate=True)
            x509.load_der_x509_certificate(der)
            print_ = fingerprint(der)
        elif isinstance(thumbprint, str):
            print_ = _b64url(thumbprint)
        else:
            raise AuthError("invalid_client", "name your certificate in the assertion's header: x5c or x5t#S256.")
    except (ValueError, binascii.Error) as exc:
        raise AuthError("invalid_client", f"the assertion's certificate cannot be read ({exc}).") from None
    registered = trust.by_fingerprint(print_)
    if registered is None:
        raise AuthError(
            "invalid_client",
            "the assertion's certificate is not registered for any sender; sign with the certificate "
            "registered for you.",
            code=ErrorCode.UNKNOWN_SIGNER,
        )
    return registered


def _instant(claims: Mapping[str, Any], name: str, *, required: bool = True) -> datetime | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise AuthError("invalid_client", f"the assertion has no {name} claim.")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthError("invalid_client", f"the assertion's {name} claim is not a NumericDate.")
    try:
        return datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise AuthError("invalid_client", f"the assertion's {name} claim is out of range.") from None


def verify_assertion(
    assertion: str,
    *,
    trust: TrustStore,
    audiences: Iterable[str],
    now: datetime,
    replays: SingleUse,
    client_id: str | None = None,
) -> TrustedCertificate:
    """The registered certificate that signed a valid, fresh, first-used ``assertion``; else ``AuthError``."""
    if len(assertion) > MAX_ASSERTION_CHARS:
        raise AuthError("invalid_client", "the client assertion is too long.")
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        raise AuthError("invalid_client", "the client assertion is not a JWT.") from None
    if header.get("alg") not in ASSERTION_ALGORITHMS:
        raise AuthError(
            "invalid_client",
            f"the assertion's algorithm must be one of {', '.join(ASSERTION_ALGORITHMS)}.",
            code=ErrorCode.SIGNATURE_ALGORITHM,
        )
    credential = _certificate_of(header, trust)
    try:
        claims = jwt.decode(
            assertion,
            key=credential.public_key,
            algorithms=[str(header["alg"])],
            audience=list(audiences),
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "require": ["aud"]},
        )
    except jwt.InvalidAudienceError:
        raise AuthError("invalid_client", "the assertion's aud must be the hub's token endpoint URL.") from None
    except jwt.PyJWTError:
        raise AuthError(
            "invalid_client",
            "the client assertion's signature does not verify with the certificate it names.",
            code=ErrorCode.SIGNATURE_INVALID,
        ) from None
    issuer, subject = claims.get("iss"), claims.get("sub")
    if not isinstance(issuer, str) or issuer != subject:
        raise AuthError("invalid_client", "the assertion's iss and sub must both be your client id.")
    if issuer != credential.party or (client_id is not None and client_id != issuer):
        raise AuthError(
            "invalid_client",
            "the client id (iss, sub, client_id) must be the organisation the certificate is registered for.",
            code=ErrorCode.NOT_AUTHORISED,
        )
    expires = _instant(claims, "exp")
    issued = _instant(claims, "iat")
    not_before = _instant(claims, "nbf", required=False)
    assert expires is not None and issued is not None
    if expires <= now - SKEW:
        raise AuthError("invalid_client", "the client assertion has expired; make a new one for each request.")
    if issued > now + SKEW or (not_before is not None and not_before > now + SKEW):
        raise AuthError("invalid_client", "the client assertion is not valid yet; check your clock.")
    if expires - issued > MAX_ASSERTION_LIFETIME:
        raise AuthError(
            "invalid_client",
            f"the client assertion may live at most {int(MAX_ASSERTION_LIFETIME.total_seconds())} s (exp - iat).",
        )
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 0 < len(jti) <= 256:
        raise AuthError("invalid_client", "the assertion needs a jti: a unique id for each assertion.")
    try:
        credential.check_valid(now)
    except Rejected as refused:
        raise AuthError("invalid_client", refused.message, code=refused.code) from None
    if not replays.first_use("jwt-jti", f"{issuer}\0{jti}", expires + SKEW, now):
        raise AuthError("invalid_client", "this client assertion (jti) was already used; make a new one.")
    return credential


def _algorithm(keys: KeyPair) -> str:
    key = keys.key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {256: "ES256", 384: "ES384", 521: "ES512"}[key.curve.key_size]
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    raise TypeError(f"the hub's key ({type(key).__name__}) cannot sign an access token")


def issue_access_token(keys: KeyPair, credential: TrustedCertificate, *, now: datetime) -> tuple[str, int]:
    """A signed access token for ``credential``'s party, and its lifetime in seconds."""
    lifetime = int(ACCESS_TOKEN_LIFETIME.total_seconds())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": credential.party,
        "iat": int(now.timestamp()),
        "exp": int(now.timestamp()) + lifetime,
        "jti": uuid.uuid4().hex,
        "x5t#S256": base64.urlsafe_b64encode(credential.fingerprint).rstrip(b"=").decode(),
    }
    return jwt.encode(claims, keys.key, algorithm=_algorithm(keys)), lifetime


def authenticate(authorization: str, *, keys: KeyPair, trust: TrustStore, now: datetime) -> Caller:
    """The caller of an API request from its ``Authorization: Bearer`` header; else ``Rejected`` UNAUTHENTICATED."""
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Rejected(
            ErrorCode.UNAUTHENTICATED,
            "send 'Authorization: Bearer <access token>' with a token from POST /ebox/oauth2/token.",
        )
    try:
        claims = jwt.decode(
            token,
            key=cast(Any, keys.certificate.public_key()),
            algorithms=[_algorithm(keys)],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"verify_exp": False, "verify_iat": False, "require": ["exp", "sub", "x5t#S256"]},
        )
    except jwt.PyJWTError:
        raise Rejected(ErrorCode.UNAUTHENTICATED, "the access token is not one the hub issued.") from None
    expires = claims["exp"]
    if not isinstance(expires, int) or datetime.fromtimestamp(expires, tz=UTC) <= now:
        raise Rejected(ErrorCode.UNAUTHENTICATED, "the access token has expired; ask for a new one.")
    try:
        print_ = _b64url(str(claims["x5t#S256"]))
    except (ValueError, binascii.Error):
        raise Rejected(ErrorCode.UNAUTHENTICATED, "the access token is not one the hub issued.") from None
    credential = trust.by_fingerprint(print_)
    if credential is None or credential.party != claims["sub"]:
        raise Rejected(ErrorCode.UNAUTHENTICATED, "the certificate this token was issued for is no longer registered.")
    credential.check_valid(now)
    return Caller(party=credential.party, credential=credential)


def thumbprint(certificate_der: bytes) -> str:
    """``x5t#S256`` of a certificate (base64url SHA-256, no padding), as a client puts it in its header."""
    return base64.urlsafe_b64encode(hashlib.sha256(certificate_der).digest()).rstrip(b"=").decode()
