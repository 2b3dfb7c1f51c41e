"""The REST door (Starlette, served by uvicorn): thin adapters around the intake.

POST /v1/messages        one envelope (application/xml) -> 201 receipt, 200 repeat, 4xx error document
GET  /v1/messages/{id}   state and events (Authorization: Bearer <token>; own messages only)
POST /v1/batches         up to ``max_batch`` envelopes (JSON, base64) -> one result each
GET  /healthz            the process answers
GET  /readyz             the database (and broker, when configured) answer
GET  /metrics            Prometheus metrics (``hub.metrics``): the stages' counters, queue depths on RabbitMQ

Bodies are read with a hard size limit (cut off before parsing) and a per-chunk timeout
(slow clients get 408); a database outage answers 503 and never a receipt.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from hub import metrics as hub_metrics
from hub.errors import ErrorCode, Rejected, Unavailable
from hub.inbound.acceptance import Receipt
from hub.inbound.documents import error_document, status_document, unavailable_document
from hub.inbound.tls import client_party
from hub.runtime import Runtime
from hub.store.db import ping

log = logging.getLogger("hub.http")

XML = "application/xml"
XML_TYPES = ("application/xml", "text/xml")
HUB_MESSAGE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""The form of the ids the hub gives messages (``str(uuid4())``)."""

STATUS_BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.CONTENT_TYPE_INVALID: 415,
    ErrorCode.SIGNATURE_MISSING: 401,
    ErrorCode.SIGNATURE_INVALID: 401,
    ErrorCode.SIGNATURE_SCOPE: 401,
    ErrorCode.SIGNATURE_ALGORITHM: 401,
    ErrorCode.UNKNOWN_SIGNER: 401,
    ErrorCode.CERT_EXPIRED: 401,
    ErrorCode.CERT_NOT_YET_VALID: 401,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.INVALID_SENDER: 403,
    ErrorCode.NOT_AUTHORISED: 403,
    ErrorCode.UNKNOWN_MESSAGE_TYPE: 403,
    ErrorCode.ENVIRONMENT_MISMATCH: 403,
    ErrorCode.MESSAGE_NOT_FOUND: 404,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.CSRF_INVALID: 403,
    ErrorCode.DUPLICATE_MESSAGE_ID: 409,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.ACK_UNKNOWN_DELIVERY: 404,
    ErrorCode.CONTENT_EXPIRED: 410,
    ErrorCode.ACK_NOT_YOURS: 403,
    ErrorCode.ACK_EVENT_NOT_ALLOWED: 422,
    ErrorCode.REPLY_ALREADY_GIVEN: 409,
    ErrorCode.REPLY_NOT_ALLOWED: 422,
}


def http_status(refused: Rejected) -> int:
    return STATUS_BY_CODE.get(refused.code, 400)


UNREAD_BODY = frozenset({ErrorCode.TOO_LARGE, ErrorCode.REQUEST_TIMEOUT})
"""Refusals that may leave the request body unread: the connection cannot carry another request."""


def closing(refused: Rejected) -> dict[str, str] | None:
    """``Connection: close`` for a refusal that may leave the body unread: else the rest of it (a slow
    client's next bytes) would be read as the body of a request already answered, for as long as it trickles."""
    return {"Connection": "close"} if refused.code in UNREAD_BODY else None


def refusal(refused: Rejected) -> Response:
    return Response(error_document(refused), status_code=http_status(refused), media_type=XML, headers=closing(refused))


def unavailable(exc: Unavailable) -> Response:
    return Response(unavailable_document(str(exc)), status_code=503, media_type=XML, headers={"Retry-After": "5"})


MIN_BODY_RATE = 500
"""Bytes per second a body must keep up, beyond ``timeout`` (Apache's ``mod_reqtimeout`` MinRate): a client
that sends a byte now and then, each within ``timeout``, cannot hold a request open for ever."""


async def read_body(request: Request, *, limit: int, timeout: float) -> bytes:
    """The request body, refused beyond ``limit`` bytes, and when a chunk takes longer than ``timeout`` or the
    whole body longer than ``timeout`` plus a second per ``MIN_BODY_RATE`` bytes received."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Rejected(ErrorCode.CONTENT_TYPE_INVALID, "Content-Length must be a number of bytes.")
        if int(declared) > limit:
            raise Rejected(ErrorCode.TOO_LARGE, f"the request is {declared} bytes; the limit is {limit}.")
    chunks, size = [], 0
    stream = request.stream().__aiter__()
    clock = asyncio.get_running_loop().time
    deadline = clock() + timeout
    while True:
        try:
            wait = min(timeout, deadline + size / MIN_BODY_RATE - clock())
            if wait <= 0:
                raise TimeoutError
            chunk = await asyncio.wait_for(stream.__anext__(), wait)
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise Rejected(
                ErrorCode.REQUEST_TIMEOUT,
                f"the request body did not arrive within {timeout:g} s (or slower than {MIN_BODY_RATE} bytes/s); "
                "send it again.",
            ) from None
        except ClientDisconnect:  # gone half-way: nobody reads the answer, but it is a refusal, not a crash
            raise Rejected(ErrorCode.REQUEST_TIMEOUT, "the client went away before the request body ended.") from None
        size += len(chunk)
        if size > limit:
            raise Rejected(ErrorCode.TOO_LARGE, f"the request exceeds the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def _require_xml(request: Request) -> None:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in XML_TYPES:
        raise Rejected(
            ErrorCode.CONTENT_TYPE_INVALID,
            f"send the envelope as application/xml (Content-Type was {kind or 'missing'!r}).",
        )


def _guarded(handler: Callable[[Runtime, Request], Any]) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime
        try:
            return await handler(runtime, request)
        except Rejected as refused:
            return refusal(refused)
        except Unavailable as exc:
            log.warning("unavailable", extra={"event": "unavailable", "path": request.url.path})
            return unavailable(exc)

    return endpoint


def _receipt_response(receipt: Receipt) -> Response:
    return Response(
        receipt.xml,
        status_code=201 if receipt.created else 200,
        media_type=XML,
        headers={"Location": f"/v1/messages/{receipt.message_id}", "X-Hub-Message-Id": receipt.message_id},
    )


async def post_message(runtime: Runtime, request: Request) -> Response:
    _require_xml(request)
    settings = runtime.settings
    party = certificate_party(runtime, request)
    data = await read_body(request, limit=settings.max_envelope_bytes, timeout=settings.http_timeout_s)
    receipt = await run_in_threadpool(runtime.intake.submit, data, door="rest", client_party=party)
    return _receipt_response(receipt)


def certificate_party(runtime: Runtime, request: Request) -> str | None:
    """The party of the TLS client certificate (None without one); an unregistered one is refused, and
    one outside its registered window (``valid_from`` / ``valid_until``) too (CERT_EXPIRED, ...)."""
    presented, registered = client_party(request.scope, runtime.intake.verifier.trust)
    if not presented:
        return None
    if registered is None:
        raise Rejected(
            ErrorCode.UNAUTHENTICATED,
            "the TLS client certificate is not registered for any sender; use the certificate registered for you.",
        )
    registered.check_valid(runtime.intake.clock())
    return registered.party


def authenticated_party(runtime: Runtime, request: Request) -> str:
    """Who reads: the registered TLS client certificate, else the bearer token."""
    by_certificate = certificate_party(runtime, request)
    if by_certificate is not None:
        return by_certificate
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    party = runtime.directory.party_for_token(token.strip()) if scheme.lower() == "bearer" and token else None
    if party is None:
        raise Rejected(
            ErrorCode.UNAUTHENTICATED,
            "send 'Authorization: Bearer <token>' with an API token registered for your organisation.",
        )
    return party


async def get_message(runtime: Runtime, request: Request) -> Response:
    party = authenticated_party(runtime, request)
    message_id = request.path_params["message_id"]
    if not HUB_MESSAGE_ID.fullmatch(message_id):  # no id of the hub's (a NUL byte, ...): never sent to the database
        raise Rejected(ErrorCode.MESSAGE_NOT_FOUND, f"no message {message_id[:64]!r} of yours is known to the hub.")
    message, events = await run_in_threadpool(runtime.intake.status, message_id, requester=party)
    return Response(status_document(message, events), media_type=XML)


async def post_batch(runtime: Runtime, request: Request) -> Response:
    settings = runtime.settings
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise Rejected(
            ErrorCode.CONTENT_TYPE_INVALID,
            'send a batch as application/json: {"envelopes": ["<base64 of each envelope>", ...]}.',
        )
    body = await read_body(request, limit=settings.max_batch_bytes, timeout=settings.http_timeout_s)
    try:
        items = json.loads(body)["envelopes"]
        if not isinstance(items, list):
            raise TypeError("envelopes is not a list")
        envelopes = [base64.b64decode(item, validate=True) for item in items]
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError) as exc:  # JSON nested too deep
        raise Rejected(
            ErrorCode.SCHEMA_INVALID,
            f'the batch is not {{"envelopes": [base64, ...]}} ({exc.__class__.__name__}: {exc}).',
        ) from exc
    if not envelopes or len(envelopes) > settings.max_batch:
        raise Rejected(ErrorCode.TOO_LARGE, f"a batch holds 1 to {settings.max_batch} envelopes, not {len(envelopes)}.")
    party = certificate_party(runtime, request)
    outcomes = await run_in_threadpool(runtime.intake.submit_many, envelopes, door="rest-batch", client_party=party)
    results: list[dict[str, Any]] = []
    for outcome in outcomes:
        if isinstance(outcome, Receipt):
            results.append(
                {
                    "status": 201 if outcome.created else 200,
                    "message_id": outcome.message_id,
                    "receipt": base64.b64encode(outcome.xml).decode(),
                }
            )
        else:
            results.append(
                {
                    "status": http_status(outcome),
                    "code": outcome.code.value,
                    "message": outcome.message,
                    "error": base64.b64encode(error_document(outcome)).decode(),
                }
            )
    accepted = sum(1 for r in results if r["status"] < 300)
    return JSONResponse({"accepted": accepted, "refused": len(results) - accepted, "results": results}, status_code=207)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(runtime: Runtime, request: Request) -> Response:
    checks: dict[str, str] = {}
    try:
        await run_in_threadpool(ping, runtime.engine)
        checks["database"] = "ok"
    except Unavailable as exc:
        checks["database"] = str(exc)
    probe = getattr(request.app.state, "broker_probe", None)
    if probe is not None:
        try:
            await run_in_threadpool(probe)
            checks["broker"] = "ok"
        except Unavailable as exc:
            checks["broker"] = str(exc)
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


async def metrics(request: Request) -> Response:
    body = await run_in_threadpool(hub_metrics.exposition, request.app.state.metrics)
    return Response(body, media_type=hub_metrics.CONTENT_TYPE)


def routes() -> list[BaseRoute]:
    from hub.compat import routes as compat_routes  # the e-Box compatibility doors, likewise
    from hub.inbound.soap import routes as soap_routes  # the SOAP door builds on this module: imported late
    from hub.outbound.http import routes as ack_routes  # and the acknowledgements
    from hub.routing.directory_http import routes as directory_routes  # so does the recipient directory

    return [
        Route("/v1/messages", _guarded(post_message), methods=["POST"]),
        Route("/v1/messages/{message_id}", _guarded(get_message), methods=["GET"]),
        Route("/v1/batches", _guarded(post_batch), methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", _guarded(readyz), methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *soap_routes(),
        *directory_routes(),
        *ack_routes(),
        *compat_routes(),
    ]


def build_app(runtime: Runtime, *, broker_probe: Callable[[], None] | None = None) -> Starlette:
    web: list[BaseRoute] = []
    if runtime.settings.web_enabled:
        from hub.web import routes as web_routes  # the web console (/web): self-service sending, operators

        web = web_routes()
    app = Starlette(routes=routes() + web)
    app.state.runtime = runtime
    app.state.broker_probe = broker_probe
    app.state.metrics = hub_metrics.scrape_registry(*queue_depths(app, runtime))
    return app


def queue_depths(app: Starlette, runtime: Runtime) -> list[hub_metrics.QueueDepths]:
    """The queue-depth collector of ``/metrics`` (RabbitMQ only; none for ``memory://``).

    Its queues: the topology's, for the providers of ``app.state.providers`` and the senders
    whose acknowledgements go to a queue (asked at each query: a reload shows up).
    """
    url = runtime.settings.broker_url
    if url.startswith("memory://"):
        return []

    def names() -> list[str]:
        providers = getattr(app.state, "providers", None)
        directory = runtime.directory
        channels = [(i.id, i.acknowledgements) for i in directory.institutions.values()]
        channels += [(i.id, i.acknowledgements) for i in directory.integrators.values()]
        pushed = [party for party, channel in channels if channel.kind in ("amqp", "webhook")]
        return hub_metrics.hub_queues(providers.ids() if providers is not None else [], pushed)

    return [hub_metrics.QueueDepths(url, names)]


def create_app() -> Starlette:
    """Factory for ``uvicorn --factory`` (``hub serve``): settings from the environment."""
    from hub.logs import configure_from_settings
    from hub.runtime import build_runtime
    from hub.settings import load_settings

    settings = load_settings()
    configure_from_settings(settings)  # a worker process of `hub serve` starts here, not in the `hub` command
    app = build_app(build_runtime(settings), broker_probe=broker_probe(settings.broker_url))
    providers_file = settings.config_dir / "providers.yaml"
    if providers_file.exists():
        from hub.routing.providers import load_providers

        catalog = load_providers(providers_file)
        app.state.provider_tokens = catalog.tokens()
        app.state.providers = catalog
    return app


def broker_probe(url: str) -> Callable[[], None] | None:
    """A check that the broker answers (``/readyz``); none for the in-process transport."""
    if url.startswith("memory://"):
        return None

    def probe() -> None:
        from hub.broker.connection import RetryPolicy, connect

        connect(url, retry=RetryPolicy(attempts=1)).release()

    return probe
