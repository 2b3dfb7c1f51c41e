"""The web console's frame: templates, the session of each request, CSRF, roles, errors, security headers.

Each page is an ``async def page(ctx: Ctx) -> Response`` wrapped by ``page(...)``, which

- finds the session (else sends the browser to sign in), and checks the role the page needs;
- on POST, reads the form (up to a size limit) and checks its CSRF token before the page runs;
- turns a ``Rejected`` into the error page with its code and status, and ``Unavailable`` into 503;
- adds the security headers (CSP without inline script, no framing, no caching of signed-in pages).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from python_multipart.multipart import parse_options_header
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import Message

from hub.errors import ErrorCode, Rejected, Unavailable
from hub.inbound.http import http_status
from hub.lifecycle.audit import audit_operator_action
from hub.runtime import Runtime
from hub.web import i18n
from hub.web.accounts import Principal
from hub.web.sessions import (
    CSRF_FIELD,
    CSRF_HEADER,
    LANG_COOKIE,
    PRE_COOKIE,
    SessionStore,
    WebSessionInfo,
    check_csrf,
    read_cookie,
)

log = logging.getLogger("hub.web")

MAX_FORM_BYTES = 64 * 1024
"""A form without files: larger is refused before it is parsed."""

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


@dataclass
class Web:
    """What every page shares: the runtime, the session store and the templates."""

    runtime: Runtime
    store: SessionStore
    templates: Environment
    extras: dict[str, Any] = field(default_factory=dict)
    """Objects the pages of an area keep (the provider catalog, a dead-letter reader, ...)."""
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    """The console's clock (sign-in codes, sessions); tests set it."""

    @property
    def settings(self) -> Any:
        return self.runtime.settings


def build_web(runtime: Runtime) -> Web:
    settings = runtime.settings
    templates = Environment(
        loader=PackageLoader("hub.web", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    store = SessionStore(
        runtime.sessions, idle_minutes=settings.web_session_minutes, secure_cookies=settings.web_secure_cookies
    )
    return Web(runtime, store, templates)


@dataclass
class Ctx:
    """One request to a page: who asks (``session`` is None before sign-in), in which language, with what form."""

    request: Request
    web: Web
    session: WebSessionInfo | None
    lang: str
    form: FormData | None = None

    @property
    def runtime(self) -> Runtime:
        return self.web.runtime

    @property
    def principal(self) -> Principal:
        assert self.session is not None
        return self.session.principal

    @property
    def actor(self) -> str:
        """Who did it, in the audit trail: ``web:`` and the account (``web:cert:<party>``)."""
        return ("web:" + self.principal.username)[:64] if self.session else "web:anonymous"

    def t(self, key: str, **values: Any) -> str:
        return i18n.translate(self.lang, key, **values)

    def render(self, template: str, status: int = 200, **context: Any) -> Response:
        csrf = self.session.csrf if self.session else self.web.store.pre_token(self.request)
        page = self.web.templates.get_template(template).render(
            t=self.t,
            known=lambda key: key in i18n.catalog(),
            lang=self.lang,
            languages=i18n.NAMES,
            csrf=csrf,
            csrf_field=CSRF_FIELD,
            principal=self.session.principal if self.session else None,
            path=self.request.url.path,
            here=quote(self.request.url.path),
            **context,
        )
        response = HTMLResponse(page, status_code=status)
        self.web.store.set_pre_token(self.request, response)
        return response

    async def audit(
        self, action: str, detail: Mapping[str, Any], *, message_id: str | None = None, actor: str | None = None
    ) -> None:
        """Write this action to the audit trail, off the event loop (counts and ids: no personal data).
        ``actor``: who, when not this request's session (a sign-in, before the session exists)."""
        await _run(
            audit_operator_action,
            self.runtime.sessions,
            actor or self.actor,
            action,
            {"door": "web", **detail},
            message_id=message_id,
        )


def _web(request: Request) -> Web:
    web: Web | None = getattr(request.app.state, "web", None)
    if web is None:
        web = build_web(request.app.state.runtime)
        request.app.state.web = web
    return web


def language_of(request: Request) -> str:
    return i18n.negotiate(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"))


async def read_form(request: Request, *, max_bytes: int, max_files: int = 0) -> FormData:
    """The request's form, refused beyond ``max_bytes`` (declared, then counted as it arrives), and a multipart
    body that does not end with its closing boundary (a form cut short is not taken for a shorter one)."""
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit():
        raise Rejected(ErrorCode.CONTENT_TYPE_INVALID, "send the form with its length (Content-Length).")
    if int(declared) > max_bytes:
        raise Rejected(ErrorCode.TOO_LARGE, f"the form is {declared} bytes; the limit is {max_bytes}.")
    content_type = request.headers.get("content-type", "")
    kind = content_type.split(";")[0].strip().lower()
    if kind not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise Rejected(ErrorCode.CONTENT_TYPE_INVALID, "send the page's form as the browser does.")
    seen, tail = 0, b""

    async def receive() -> Message:
        nonlocal seen, tail
        message = await request.receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > max_bytes:
                raise Rejected(ErrorCode.TOO_LARGE, f"the form exceeds the limit of {max_bytes} bytes.")
            tail = (tail + chunk)[-256:]
        return message

    try:
        form = await Request(request.scope, receive).form(max_files=max_files, max_fields=200, max_part_size=max_bytes)
    except Rejected:
        raise
    except Exception as exc:  # multipart's parse errors (too many parts or fields, a broken header): unreadable
        raise Rejected(
            ErrorCode.CONTENT_TYPE_INVALID, f"the form could not be read ({exc.__class__.__name__})."
        ) from exc
    if kind == "multipart/form-data":
        boundary = parse_options_header(content_type)[1].get(b"boundary", b"")
        if not boundary or not tail.rstrip(b"\r\n").endswith(b"--" + boundary + b"--"):
            raise Rejected(ErrorCode.CONTENT_TYPE_INVALID, "the form arrived incomplete; send it again.")
    return form


Handler = Callable[[Ctx], Awaitable[Response]]


def page(
    handler: Handler,
    *,
    role: str | None,
    form_bytes: Callable[[Web], int] | None = None,
    max_files: int = 0,
    public: bool = False,
) -> Callable[[Request], Awaitable[Response]]:
    """A page for ``role`` (``institution``, ``operator``, None: any signed-in user; ``public``: anyone)."""

    async def endpoint(request: Request) -> Response:
        web = _web(request)
        lang = language_of(request)
        ctx = Ctx(request, web, None, lang)
        try:
            ctx.session = await _run(web.store.current, request)
            if ctx.session is None and not public:
                return _secured(RedirectResponse(f"/web/signin?next={quote(request.url.path)}", status_code=303))
            if ctx.session is not None and role is not None and ctx.session.principal.role != role:
                raise Rejected(ErrorCode.NOT_AUTHORISED, ctx.t("error.role"))
            if request.method == "POST":
                limit = form_bytes(web) if form_bytes else MAX_FORM_BYTES
                ctx.form = await read_form(request, max_bytes=limit, max_files=max_files)
                given = request.headers.get(CSRF_HEADER) or _text(ctx.form.get(CSRF_FIELD))
                expected = (
                    ctx.session.csrf if ctx.session else read_cookie(request, PRE_COOKIE, web.store.secure_cookies)
                )
                check_csrf(expected, given)
            response = await handler(ctx)
        except Rejected as refused:
            log.info(
                "web refused", extra={"event": "web-refused", "code": refused.code.value, "path": request.url.path}
            )
            response = ctx.render(
                "error.html", status=http_status(refused), code=refused.code.value, message=refused.message
            )
        except (Unavailable, OperationalError, InterfaceError):  # the database (or broker) is away: nothing was done
            log.warning("unavailable", extra={"event": "unavailable", "path": request.url.path})
            response = ctx.render(
                "error.html", status=503, code="SERVICE_UNAVAILABLE", message=ctx.t("error.unavailable")
            )
            response.headers["Retry-After"] = "5"
        return _secured(response)

    return endpoint


def _secured(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Cache-Control", "no-store")
    return response


_run = run_in_threadpool
"""Blocking work (the database, the broker) off the event loop: ``await _run(function, *args, **kwargs)``."""


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def field_text(form: FormData | None, name: str, *, limit: int = 4000) -> str:
    """A text field of the form, stripped, at most ``limit`` characters (a file or nothing: "")."""
    value = form.get(name) if form is not None else None
    return value.strip()[:limit] if isinstance(value, str) else ""


def now() -> datetime:
    return datetime.now(UTC)
