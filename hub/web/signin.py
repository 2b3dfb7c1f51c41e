"""Signing in and out of the web console, and the language switch."""

from __future__ import annotations

import logging
import re

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from hub.errors import Rejected
from hub.inbound.http import certificate_party
from hub.web.accounts import Principal, authenticate
from hub.web.app import Ctx, _run, field_text, page
from hub.web.i18n import LANGUAGES
from hub.web.sessions import LANG_COOKIE, PATH

log = logging.getLogger("hub.web")

_LOCAL = re.compile(r"/web(/[A-Za-z0-9._~/-]*)?")


def safe_next(value: str | None, principal: Principal | None = None) -> str:
    """Where to go after sign-in: a path of the console's own (never another site: an open redirect), else home."""
    if (
        value
        and _LOCAL.fullmatch(value)
        and "//" not in value
        and value not in ("/web", "/web/")
        and not (value.startswith(("/web/signin", "/web/static", "/web/lang")))
    ):
        return value
    if principal is None:
        return "/web/"
    return "/web/console" if principal.operator else "/web/messages"


async def home(ctx: Ctx) -> Response:
    return RedirectResponse(safe_next(None, ctx.principal), status_code=303)


def _certificate_institution(ctx: Ctx) -> str | None:
    """The institution of the registered TLS client certificate the browser presented, if any."""
    try:
        party = certificate_party(ctx.runtime, ctx.request)
    except Rejected:
        return None
    return party if party in ctx.runtime.directory.institutions else None


async def signin_form(ctx: Ctx) -> Response:
    if ctx.session is not None:
        return RedirectResponse(safe_next(None, ctx.principal), status_code=303)
    return ctx.render(
        "signin.html",
        next=safe_next(ctx.request.query_params.get("next")),
        certificate=_certificate_institution(ctx),
        failed=False,
    )


async def signin(ctx: Ctx) -> Response:
    username = field_text(ctx.form, "username", limit=64).lower()
    password = ctx.form.get("password") if ctx.form is not None else None
    password = password[:2048] if isinstance(password, str) else ""
    code = field_text(ctx.form, "code", limit=16)
    principal = await _run(lambda: authenticate(ctx.runtime.sessions, username, password, code, now=ctx.web.clock()))
    target = safe_next(field_text(ctx.form, "next", limit=300))
    if principal is None:
        await ctx.audit("web-signin-refused", {"username": username[:64]})
        log.info("web sign-in refused", extra={"event": "web-signin-refused"})
        return ctx.render(
            "signin.html", status=401, next=target, certificate=_certificate_institution(ctx), failed=True
        )
    return await _start(ctx, principal, target, method="password")


async def signin_certificate(ctx: Ctx) -> Response:
    institution = _certificate_institution(ctx)
    if institution is None:
        return ctx.render("signin.html", status=401, next="/web/", certificate=None, failed=True)
    principal = Principal(f"cert:{institution}", "institution", institution)
    return await _start(ctx, principal, safe_next(field_text(ctx.form, "next", limit=300)), method="certificate")


async def _start(ctx: Ctx, principal: Principal, target: str, *, method: str) -> Response:
    response = RedirectResponse(safe_next(target, principal), status_code=303)
    await _run(ctx.web.store.start, response, ctx.request, principal)
    actor = ("web:" + principal.username)[:64]
    await ctx.audit("web-signin", {"method": method, "role": principal.role}, actor=actor)
    return response


async def signout(ctx: Ctx) -> Response:
    response = RedirectResponse("/web/signin", status_code=303)
    await ctx.audit("web-signout", {})
    await _run(ctx.web.store.end, response, ctx.request)
    return response


async def language(request: Request) -> Response:
    """``/web/lang/<code>?next=...``: remember the language, go back to the page."""
    code = request.path_params["code"]
    response = RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    if code in LANGUAGES:
        response.set_cookie(LANG_COOKIE, code, max_age=365 * 86400, path=PATH, httponly=True, samesite="strict")
    return response


def routes() -> list[BaseRoute]:
    return [
        Route("/", page(home, role=None), methods=["GET"]),
        Route("/signin", page(signin_form, role=None, public=True), methods=["GET"]),
        Route("/signin", page(signin, role=None, public=True), methods=["POST"]),
        Route("/signin/certificate", page(signin_certificate, role=None, public=True), methods=["POST"]),
        Route("/signout", page(signout, role=None), methods=["POST"]),
        Route("/lang/{code}", language, methods=["GET"]),
    ]
