"""Private keys and certificates: create, load once, check they are strong enough.

Keys are parsed into ``cryptography`` objects once and then passed around as objects:
handing PEM bytes to signxml on every call re-loads and re-checks an RSA key each time.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from hub.errors import ConfigError

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

MIN_RSA_BITS = 2048
ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


@dataclass(frozen=True)
class KeyPair:
    """A loaded private key with its certificate."""

    key: PrivateKey
    certificate: x509.Certificate


def check_public_key(public_key: object, *, source: str) -> PublicKey:
    """Refuse key types and sizes the hub does not accept."""
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise ConfigError(
                f"RSA keys must have at least {MIN_RSA_BITS} bits (this one: {public_key.key_size})", file=source
            )
        return public_key
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, ALLOWED_CURVES):
            raise ConfigError(
                f"elliptic curve {public_key.curve.name} is not accepted; use P-256 or P-384", file=source
            )
        return public_key
    raise ConfigError(f"unsupported key type {type(public_key).__name__}; use RSA or ECDSA", file=source)


def load_private_key(path: str | Path, *, password: bytes | None = None) -> PrivateKey:
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"not a usable PEM private key: {exc}", file=str(path)) from exc
    check_public_key(key.public_key(), source=str(path))
    return key  # type: ignore[return-value]


def load_certificates(path: str | Path) -> list[x509.Certificate]:
    data = _read(path)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ConfigError(f"not a PEM certificate: {exc}", file=str(path)) from exc
    for certificate in certificates:
        check_public_key(certificate.public_key(), source=str(path))
    return certificates


def load_key_pair(key_path: str | Path, cert_path: str | Path) -> KeyPair:
    key = load_private_key(key_path)
    certificate = load_certificates(cert_path)[0]
    if _spki(certificate.public_key()) != _spki(key.public_key()):
        raise ConfigError("the certificate does not belong to this private key", file=str(cert_path))
    return KeyPair(key, certificate)


def _spki(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _read(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=str(path)) from exc


def generate_key(kind: str = "ec") -> PrivateKey:
    """A new private key: ``ec`` (P-256, the hub's default: fast signatures) or ``rsa`` (3072 bits)."""
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise ValueError(f"unknown key kind {kind!r}; use 'ec' or 'rsa'")


def self_signed_certificate(
    key: PrivateKey,
    common_name: str,
    *,
    organization: str | None = None,
    not_before: datetime | None = None,
    days: int = 730,
    hosts: tuple[str, ...] = (),
) -> x509.Certificate:
    """A self-signed certificate; ``hosts`` (DNS names or IP addresses) make it usable for a TLS server."""
    start = (not_before or datetime.now(UTC)).replace(microsecond=0)
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    name = x509.Name(attributes)
    builder = x509.CertificateBuilder()
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return (
        builder.subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )


def write_key_pair(pair: KeyPair, directory: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key.pem`` (mode 0600) and ``NAME.cert.pem``; refuse to overwrite."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = folder / f"{name}.key.pem", folder / f"{name}.cert.pem"
    for path in (key_path, cert_path):
        if path.exists():
            raise ConfigError("already exists; choose another name or folder", file=str(path))
    key_bytes = pair.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_bytes)
    cert_path.write_bytes(pair.certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path
