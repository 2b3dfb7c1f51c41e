"""Web console accounts: a password (Argon2id) and a TOTP code, created by an operator.

Sign-in checks both, in constant work whether or not the user exists (a hash is verified
either way), counts failures, and locks an account for ``LOCK_MINUTES`` after
``MAX_FAILURES`` in a row. A TOTP code is accepted once: the time step of the last code
used is kept, and a code of that step or an earlier one is refused (a replayed code).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from hub.envelope.identifiers import is_valid_cbe
from hub.errors import ConfigError
from hub.store.models import WebAccount, WebSession

ROLES = ("institution", "operator")
USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{2,63}")
MIN_PASSWORD = 12
MAX_PASSWORD = 1024
"""Longer passwords are refused before hashing: hashing a megabyte per attempt is a denial of service."""
MAX_FAILURES = 5
LOCK_MINUTES = 15
TOTP_WINDOW = 1
"""Codes of the step before and after now are accepted too (clocks drift)."""
ISSUER = "ebox-hub"

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class Principal:
    """Who a web session is for: an account (or ``cert:<party>``), its role and institution."""

    username: str
    role: str
    institution_id: str | None

    @property
    def operator(self) -> bool:
        return self.role == "operator"


@dataclass(frozen=True)
class NewAccount:
    username: str
    totp_secret: str

    @property
    def provisioning_uri(self) -> str:
        """The ``otpauth://`` URI an authenticator app reads (as a QR code or typed in)."""
        return pyotp.TOTP(self.totp_secret).provisioning_uri(name=self.username, issuer_name=ISSUER)


def password_problem(password: str) -> str | None:
    if len(password) < MIN_PASSWORD:
        return f"a password has at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"a password has at most {MAX_PASSWORD} characters"
    return None


def create_account(
    sessions: sessionmaker[Session],
    username: str,
    password: str,
    *,
    role: str,
    institution_id: str | None = None,
    known_institutions: frozenset[str] | None = None,
    now: datetime | None = None,
) -> NewAccount:
    """Create an account; ``ConfigError`` (with why) for a bad name, password, role or institution."""
    if not USERNAME.fullmatch(username):
        raise ConfigError("a user name is 3 to 64 characters: lower-case letters, digits, '.', '_', '@' or '-'")
    if problem := password_problem(password):
        raise ConfigError(problem)
    if role not in ROLES:
        raise ConfigError(f"a role is one of {', '.join(ROLES)}")
    if role == "institution":
        if not institution_id or not is_valid_cbe(institution_id):
            raise ConfigError("an institution user needs the institution's enterprise (CBE) number")
        if known_institutions is not None and institution_id not in known_institutions:
            raise ConfigError(f"{institution_id} is not an institution of senders.yaml")
    elif institution_id:
        raise ConfigError("an operator belongs to no institution")
    secret = pyotp.random_base32()
    with sessions.begin() as session:
        if session.get(WebAccount, username) is not None:
            raise ConfigError(f"there is already an account {username!r}")
        session.add(
            WebAccount(
                username=username,
                role=role,
                institution_id=institution_id,
                password_hash=_hasher.hash(password),
                totp_secret=secret,
                failed_attempts=0,
                created_at=now or datetime.now(UTC),
            )
        )
    return NewAccount(username, secret)


def disable_account(sessions: sessionmaker[Session], username: str, *, now: datetime | None = None) -> bool:
    """Disable an account and end its open sessions, in one transaction; False when there is no such account."""
    with sessions.begin() as session:
        account = session.get(WebAccount, username)
        if account is None:
            return False
        account.disabled_at = now or datetime.now(UTC)
        session.execute(delete(WebSession).where(WebSession.username == username))
        return True


def list_accounts(sessions: sessionmaker[Session]) -> list[WebAccount]:
    with sessions() as session:
        return list(session.scalars(select(WebAccount).order_by(WebAccount.username)))


def totp_step(at: datetime) -> int:
    return int(at.timestamp()) // 30


def _code_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step whose code ``code`` is (within the window), or None."""
    totp = pyotp.TOTP(secret)
    for offset in range(-TOTP_WINDOW, TOTP_WINDOW + 1):
        at = now + timedelta(seconds=30 * offset)
        if secrets.compare_digest(totp.at(at), code):
            return totp_step(at)
    return None


def authenticate(
    sessions: sessionmaker[Session], username: str, password: str, code: str, *, now: datetime | None = None
) -> Principal | None:
    """The account's principal when the password and the code are right, the code not used before and the
    account neither locked nor disabled; else None (the caller says only "wrong", never which part)."""
    now = now or datetime.now(UTC)
    code = code.strip().replace(" ", "")
    if len(password) > MAX_PASSWORD or not USERNAME.fullmatch(username or ""):
        _verify(_DUMMY_HASH, password[:MAX_PASSWORD])
        return None
    with sessions.begin() as session:
        account = session.get(WebAccount, username, with_for_update=True)
        if account is None or account.disabled_at is not None:
            _verify(_DUMMY_HASH, password)
            return None
        if account.locked_until is not None and account.locked_until > now:
            _verify(_DUMMY_HASH, password)
            return None
        step = _code_step(account.totp_secret, code, now) if code.isdigit() and len(code) == 6 else None
        good = _verify(account.password_hash, password) and step is not None
        if good and account.totp_last_step is not None and step is not None and step <= account.totp_last_step:
            good = False  # a code already used (replayed, or read over a shoulder)
        if not good:
            account.failed_attempts = (account.failed_attempts or 0) + 1
            if account.failed_attempts >= MAX_FAILURES:
                account.locked_until = now + timedelta(minutes=LOCK_MINUTES)
                account.failed_attempts = 0
            return None
        account.failed_attempts = 0
        account.locked_until = None
        account.totp_last_step = step
        if _hasher.check_needs_rehash(account.password_hash):
            account.password_hash = _hasher.hash(password)
        return Principal(account.username, account.role, account.institution_id)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
