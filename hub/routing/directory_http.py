"""The recipient directory over HTTP (routes added to the REST door's ``routes()``).

GET  /v1/recipients/{kind}/{id}                  senders (bearer token or client certificate), like e-Box
                                                 "hasAnEbox": {"exists", "exclusivelyDigital", "lastConnection"}
POST /v1/providers/{provider_id}/subscriptions   a provider's changes (activate, withdraw, link, unlink), up to
                                                 1,000 a request -> 200 with one result per change

The sender's answer says whether the recipient has digital post activated now (``exists``), whether it
chose it exclusively, and its last connection, and nothing else: no provider, no language, no dates of
consent. An unknown recipient is ``exists: false``, as is one who withdrew.

Providers authenticate with ``Authorization: Bearer <token>``; the hub knows the SHA-256 (hex) of each
provider's tokens: ``app.state.provider_tokens`` (``{provider_id: {sha256, ...}}``), or the mapping given
to ``routes(provider_tokens=...)``. Until ``config/providers.yaml`` supplies it, it is empty and every
provider call is refused 401. A provider's valid changes commit in one transaction; invalid ones are
refused one by one with their code (a provider linking or unlinking another provider: NOT_AUTHORISED, 403).

The recipient's number travels in the path, as e-Box's own call has it: these routes never log the
path, but an access log (uvicorn's, a proxy's) records it unless it is configured not to.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Set
from datetime import datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hub.errors import ErrorCode, Rejected, Unavailable
from hub.inbound.http import authenticated_party, http_status, read_body, refusal, unavailable
from hub.routing.directory import Change, Directory, parse_change, recipient_key
from hub.runtime import Runtime

MAX_CHANGES = 1000
MAX_SUBSCRIPTION_BYTES = 1024 * 1024
"""1,000 changes of ~200 bytes fit with room to spare."""
NO_STORE = {"Cache-Control": "no-store"}
RECIPIENT_PATH = "/v1/recipients/{kind}/{id}"

ProviderTokens = Mapping[str, Set[str]]
Handler = Callable[[Runtime, Request], Awaitable[Response]]

log = logging.getLogger("hub.directory")


def _guarded(route: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """The REST door's guard, logging the route and never the path: it holds a national number."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request.app.state.runtime, request)
        except Rejected as refused:
            return refusal(refused)
        except Unavailable as exc:
            log.warning("unavailable", extra={"event": "unavailable", "route": route})
            return unavailable(exc)

    return endpoint


def directory_of(request: Request, runtime: Runtime) -> Directory:
    """The app's directory over the runtime's sessions (made once), on the hub's clock."""
    state = request.app.state
    directory: Directory | None = getattr(state, "recipient_directory", None)
    if directory is None or directory.sessions is not runtime.sessions:
        directory = Directory(runtime.sessions, clock=lambda: runtime.intake.clock())
        state.recipient_directory = directory
    return directory


async def get_recipient(runtime: Runtime, request: Request) -> Response:
    authenticated_party(runtime, request)
    kind, ident = recipient_key(request.path_params["kind"], request.path_params["id"])
    recipient = await run_in_threadpool(directory_of(request, runtime).get, kind, ident)
    exists = recipient is not None and recipient.digital_at(runtime.intake.clock())
    last = recipient.last_connection if exists and recipient is not None else None
    return JSONResponse(
        {
            "exists": exists,
            "exclusivelyDigital": exists and recipient is not None and recipient.exclusive,
            "lastConnection": last.isoformat() if last is not None else None,
        },
        headers=NO_STORE,
    )


def provider_for(tokens: ProviderTokens, provider_id: str, request: Request) -> str:
    """``provider_id`` when the bearer token is one of its tokens; 401 when it is nobody's, 403 another's."""
    return provider_by_token(tokens, provider_id, request.headers.get("authorization", ""))


def provider_by_token(tokens: ProviderTokens, provider_id: str, authorization: str) -> str:
    """``provider_id`` when ``authorization`` (``Bearer <token>``) holds one of its tokens (HTTP and AMQP alike).

    ``Rejected``: UNAUTHENTICATED when there is no bearer token or it is nobody's, NOT_AUTHORISED when
    it is another provider's.
    """
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Rejected(
            ErrorCode.UNAUTHENTICATED, "send 'Authorization: Bearer <token>' with the API token registered for you"
        )
    digest = hashlib.sha256(token.encode()).hexdigest()
    owners = [p for p, hashes in tokens.items() if any(hmac.compare_digest(digest, known) for known in hashes)]
    if not owners:
        raise Rejected(ErrorCode.UNAUTHENTICATED, "the API token is not registered for any provider")
    if provider_id not in owners:
        raise Rejected(ErrorCode.NOT_AUTHORISED, f"this API token is not provider {provider_id[:64]}'s")
    return provider_id


def changes_of(body: bytes) -> list[Any]:
    """The change objects of a ``{"changes": [...]}`` body (1 to ``MAX_CHANGES``), else ``Rejected`` whole."""
    try:
        items = json.loads(body)["changes"]
        if not isinstance(items, list):
            raise TypeError("changes is not a list")
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise Rejected(
            ErrorCode.SCHEMA_INVALID,
            f'the request is not {{"changes": [{{"op": ..., "kind": ..., "id": ..., "at": ...}}, ...]}} '
            f"({exc.__class__.__name__})",
        ) from None
    if not items or len(items) > MAX_CHANGES:
        raise Rejected(ErrorCode.TOO_LARGE, f"a request holds 1 to {MAX_CHANGES} changes, not {len(items)}")
    return items


def apply_changes(directory: Directory, items: list[Any], provider: str, now: datetime) -> dict[str, Any]:
    """Parse ``provider``'s changes, apply the valid ones in one transaction; the answer, one result each.

    ``{"applied": n, "refused": m, "results": [{"index", "status": 200, "changed"} or
    {"index", "status", "code", "message"}, ...]}`` (HTTP and AMQP alike). ``Unavailable`` when the
    database is down (nothing applied).
    """
    parsed: list[Change | Rejected] = []
    for item in items:
        try:
            parsed.append(parse_change(item, provider=provider, now=now))
        except Rejected as refused:
            parsed.append(refused)
    valid = [p for p in parsed if isinstance(p, Change)]
    changed = iter(directory.apply(valid, actor=f"provider:{provider}"))
    results: list[dict[str, Any]] = []
    for index, outcome in enumerate(parsed):
        if isinstance(outcome, Change):
            results.append({"index": index, "status": 200, "changed": next(changed)})
        else:
            results.append(
                {
                    "index": index,
                    "status": http_status(outcome),
                    "code": outcome.code.value,
                    "message": outcome.message,
                }
            )
    return {"applied": len(valid), "refused": len(parsed) - len(valid), "results": results}


def subscriptions_endpoint(provider_tokens: ProviderTokens | None = None) -> Route:
    async def post_subscriptions(runtime: Runtime, request: Request) -> Response:
        tokens = provider_tokens if provider_tokens is not None else getattr(request.app.state, "provider_tokens", {})
        provider = provider_for(tokens or {}, request.path_params["provider_id"], request)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise Rejected(ErrorCode.CONTENT_TYPE_INVALID, 'send application/json: {"changes": [...]}')
        body = await read_body(request, limit=MAX_SUBSCRIPTION_BYTES, timeout=runtime.settings.http_timeout_s)
        items = changes_of(body)
        now = runtime.intake.clock()
        answer = await run_in_threadpool(apply_changes, directory_of(request, runtime), items, provider, now)
        return JSONResponse(answer, headers=NO_STORE)

    path = "/v1/providers/{provider_id}/subscriptions"
    return Route(path, _guarded(path, post_subscriptions), methods=["POST"])


def routes(provider_tokens: ProviderTokens | None = None) -> list[Route]:
    return [
        Route(RECIPIENT_PATH, _guarded(RECIPIENT_PATH, get_recipient), methods=["GET"]),
        subscriptions_endpoint(provider_tokens),
    ]
