"""Web sessions: a random cookie, kept server-side by its SHA-256, with a CSRF token of its own.

- Sign-in always starts a new session (a fresh random id): a cookie planted before sign-in
  (session fixation) is never promoted; sign-out deletes the session.
- The cookie is ``HttpOnly``, ``SameSite=Strict``, scoped to ``/web``; over HTTPS (or with
  ``[web] secure_cookies``) it is ``Secure`` and named with the ``__Host-`` prefix.
- Every state-changing request (POST) carries the session's CSRF token (a form field or the
  ``X-CSRF-Token`` header); before sign-in, a double-submit token (a cookie and the same value
  in the form) guards the sign-in form itself (login CSRF).
- A session idle longer than ``[web] session_minutes`` is over.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request
from starlette.responses import Response

from hub.errors import ErrorCode, Rejected
from hub.store.models import WebDraft, WebSession
from hub.web.accounts import Principal

COOKIE = "hub_session"
PRE_COOKIE = "hub_csrf"
LANG_COOKIE = "hub_lang"
PATH = "/web"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
SEEN_EVERY = timedelta(seconds=60)
"""``seen_at`` is written at most this often: a page view is not a database write."""


@dataclass(frozen=True)
class WebSessionInfo:
    """A live session: whose, its CSRF token, and the SHA-256 of its cookie (its key)."""

    key: str
    principal: Principal
    csrf: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def secure(request: Request, always: bool) -> bool:
    return always or request.url.scheme == "https"


def cookie_name(name: str, is_secure: bool) -> str:
    """``__Host-`` names on HTTPS: the browser then accepts the cookie only Secure, from this host, on path /."""
    return f"__Host-{name}" if is_secure else name


def _set(response: Response, request: Request, always: bool, name: str, value: str, max_age: int | None) -> None:
    is_secure = secure(request, always)
    response.set_cookie(
        cookie_name(name, is_secure),
        value,
        max_age=max_age,
        path="/" if is_secure else PATH,  # __Host- cookies must have path /
        secure=is_secure,
        httponly=True,
        samesite="strict",
    )


def read_cookie(request: Request, name: str, always: bool) -> str | None:
    return request.cookies.get(cookie_name(name, secure(request, always)))


class SessionStore:
    def __init__(self, sessions: sessionmaker[Session], *, idle_minutes: int, secure_cookies: bool) -> None:
        self.sessions = sessions
        self.idle = timedelta(minutes=idle_minutes)
        self.secure_cookies = secure_cookies

    def start(self, response: Response, request: Request, principal: Principal, *, now: datetime | None = None) -> str:
        """A new session for ``principal``: a fresh id whatever cookie came in (which is ended); its CSRF token."""
        now = now or datetime.now(UTC)
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        old = read_cookie(request, COOKIE, self.secure_cookies)
        with self.sessions.begin() as session:
            if old:
                session.execute(delete(WebSession).where(WebSession.id_sha256 == _digest(old)))
            self._prune(session, now)
            session.add(
                WebSession(
                    id_sha256=_digest(token),
                    username=principal.username,
                    role=principal.role,
                    institution_id=principal.institution_id,
                    csrf=csrf,
                    created_at=now,
                    seen_at=now,
                )
            )
        _set(response, request, self.secure_cookies, COOKIE, token, None)
        return csrf

    def current(self, request: Request, *, now: datetime | None = None) -> WebSessionInfo | None:
        token = read_cookie(request, COOKIE, self.secure_cookies)
        if not token or len(token) > 128:
            return None
        now = now or datetime.now(UTC)
        key = _digest(token)
        with self.sessions.begin() as session:
            row = session.get(WebSession, key)
            if row is None:
                return None
            if now - row.seen_at > self.idle:
                session.delete(row)
                return None
            if now - row.seen_at > SEEN_EVERY:
                row.seen_at = now
            return WebSessionInfo(key, Principal(row.username, row.role, row.institution_id), row.csrf)

    def end(self, response: Response, request: Request) -> None:
        token = read_cookie(request, COOKIE, self.secure_cookies)
        if token:
            with self.sessions.begin() as session:
                key = _digest(token)
                session.execute(delete(WebDraft).where(WebDraft.session_sha256 == key))
                session.execute(delete(WebSession).where(WebSession.id_sha256 == key))
        is_secure = secure(request, self.secure_cookies)
        response.delete_cookie(
            cookie_name(COOKIE, is_secure),
            path="/" if is_secure else PATH,
            secure=is_secure,
            httponly=True,
            samesite="strict",
        )

    def _prune(self, session: Session, now: datetime) -> None:
        session.execute(delete(WebSession).where(WebSession.seen_at < now - self.idle))
        session.execute(delete(WebDraft).where(WebDraft.created_at < now - timedelta(days=1)))

    # -- CSRF -----------------------------------------------------------------------------------

    def pre_token(self, request: Request) -> str:
        """The double-submit token of a signed-out browser (its cookie's value, made when it has none)."""
        token = read_cookie(request, PRE_COOKIE, self.secure_cookies)
        if token and 20 <= len(token) <= 64:
            return token
        token = secrets.token_urlsafe(24)
        request.state.new_pre_token = token
        return token

    def set_pre_token(self, request: Request, response: Response) -> None:
        token = getattr(request.state, "new_pre_token", None)
        if token:
            _set(response, request, self.secure_cookies, PRE_COOKIE, token, None)


def check_csrf(expected: str | None, given: str | None) -> None:
    """Refuse a state-changing request without the right token (``CSRF_INVALID``)."""
    if not expected or not given or not secrets.compare_digest(expected.encode(), given.encode()):
        raise Rejected(
            ErrorCode.CSRF_INVALID,
            "this form has expired or did not come from the hub's own page; reload the page and try again.",
        )
