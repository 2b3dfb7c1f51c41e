"""Acknowledgements over HTTP (routes added to the REST door's ``routes()``).

POST /v1/acks    a provider's signed Acknowledgement (or Acknowledgements batch), bearer token of the
                 provider: 200 with the outcome (single), 207 with one result per acknowledgement (batch);
                 a refused document answers its error document and code (401 forged, 403 another's, ...)
GET  /v1/acks    a sender's feed: ?after=CURSOR&limit=N (N <= 1000): the events of its messages after the
                 cursor, as one ``Acknowledgements`` document signed by the hub; ``X-Hub-Cursor`` is the
                 cursor to ask with next (204 and the same cursor when there is nothing new). Following
                 the cursor never skips nor repeats an event (``hub.outbound.feed``).
GET  /v1/deliveries/{delivery_id}/envelope
                 a claim-checked delivery's envelope (``hub.broker.relay.ClaimCheck``), bearer token of the
                 provider the delivery is for: 200 with the envelope exactly as the sender signed it
                 (``X-Hub-Envelope-Sha256``, ``ETag``); 404 ``MESSAGE_NOT_FOUND`` for a delivery that is
                 not this provider's (whether or not it exists); 410 ``CONTENT_EXPIRED`` once retention
                 removed the content.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from pathlib import Path
from typing import Any

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hub.errors import ErrorCode, Rejected, Unavailable
from hub.inbound.http import HUB_MESSAGE_ID, XML, authenticated_party, http_status, read_body, refusal, unavailable
from hub.outbound.acks import signed_acknowledgements
from hub.outbound.feed import acknowledgement, read, sequence
from hub.outbound.intake import MAX_ACK_BYTES, AckIntake, Applied
from hub.routing.providers import ProviderCatalog, load_providers
from hub.runtime import Runtime
from hub.safexml import ParseLimits
from hub.store.db import unavailable_on_outage
from hub.store.models import Delivery, Message

log = logging.getLogger("hub.acks")

MAX_FEED = 1000
DELIVERY_ID = re.compile(HUB_MESSAGE_ID.pattern + r":[A-Za-z0-9_-]{1,64}")
"""The form of a delivery's id: ``<hub message id>:<provider id>`` (``hub.routing.deliveries``)."""


def intake_of(request: Request, runtime: Runtime) -> AckIntake:
    """The app's acknowledgement intake (made once), with the providers of ``providers.yaml``."""
    state = request.app.state
    intake: AckIntake | None = getattr(state, "ack_intake", None)
    if intake is None:
        catalog: ProviderCatalog | None = getattr(state, "providers", None)
        if catalog is None:
            path = Path(runtime.settings.config_dir) / "providers.yaml"
            catalog = load_providers(path) if path.exists() else ProviderCatalog({})
        intake = AckIntake(
            runtime.sessions,
            catalog,
            clock=lambda: runtime.intake.clock(),
            parse_limits=ParseLimits(max_bytes=MAX_ACK_BYTES),
        )
        state.ack_intake = intake
    return intake


def provider_of_token(request: Request, intake: AckIntake) -> str:
    """The provider whose API token this is (``Authorization: Bearer``), else UNAUTHENTICATED."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token:
        digest = hashlib.sha256(token.encode()).hexdigest()
        catalog, _ = intake.verifier()
        for provider in catalog.providers.values():
            if any(hmac.compare_digest(digest, known) for known in provider.token_hashes):
                return provider.id
    raise Rejected(ErrorCode.UNAUTHENTICATED, "send 'Authorization: Bearer <token>' with your provider API token")


async def post_acks(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    try:
        intake = intake_of(request, runtime)
        provider = provider_of_token(request, intake)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in ("application/xml", "text/xml"):
            raise Rejected(ErrorCode.CONTENT_TYPE_INVALID, "send the signed acknowledgement as application/xml")
        body = await read_body(request, limit=MAX_ACK_BYTES, timeout=runtime.settings.http_timeout_s)
        results = await run_in_threadpool(intake.receive, body, issuers=[provider])
    except Rejected as refused:
        return refusal(refused)
    except Unavailable as exc:
        log.warning("unavailable", extra={"event": "unavailable", "route": "POST /v1/acks"})
        return unavailable(exc)
    answers: list[dict[str, Any]] = [
        r.as_json() | {"status": 200}
        if isinstance(r, Applied)
        else {"status": http_status(r), "code": r.code.value, "message": r.message}
        for r in results
    ]
    if len(answers) == 1:
        if isinstance(results[0], Rejected):
            return refusal(results[0])
        return JSONResponse(answers[0])
    return JSONResponse({"results": answers}, status_code=207)


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise Rejected(ErrorCode.SCHEMA_INVALID, f"{name} is a whole number from {low} to {high}")
    return int(raw)


async def get_acks(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    try:
        party = authenticated_party(runtime, request)
        after = _int(request, "after", 0, 0, 2**62)
        limit = _int(request, "limit", 100, 1, MAX_FEED)
        integrator = runtime.directory.integrators.get(party)
        mandates = sorted(integrator.mandates) if integrator is not None else []

        def page() -> list[Any]:
            with unavailable_on_outage(), runtime.sessions() as session:
                sequence(session)
                session.commit()
                return read(session, after=after, limit=limit, parties=[party], mandates=mandates)

        items = await run_in_threadpool(page)
    except Rejected as refused:
        return refusal(refused)
    except Unavailable as exc:
        log.warning("unavailable", extra={"event": "unavailable", "route": "GET /v1/acks"})
        return unavailable(exc)
    if not items:
        return Response(status_code=204, headers={"X-Hub-Cursor": str(after), "Cache-Control": "no-store"})
    document = await run_in_threadpool(
        signed_acknowledgements, runtime.intake.receipt_signer, [acknowledgement(i) for i in items]
    )
    cursor = str(items[-1].seq)
    return Response(
        document,
        media_type=XML,
        headers={
            "X-Hub-Cursor": cursor,
            "Link": f'</v1/acks?after={cursor}&limit={limit}>; rel="next"',
            "Cache-Control": "no-store",
        },
    )


async def get_delivery_envelope(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    try:
        provider = provider_of_token(request, intake_of(request, runtime))
        delivery_id = request.path_params["delivery_id"]
        row = None
        if DELIVERY_ID.fullmatch(delivery_id):  # only an id of the hub's form goes to the database (not a NUL byte)
            row = await run_in_threadpool(_envelope_of, runtime, delivery_id)
        if row is None or row.provider != provider:
            raise Rejected(ErrorCode.MESSAGE_NOT_FOUND, "no delivery of that id is yours.")
        if row.envelope is None:
            raise Rejected(ErrorCode.CONTENT_EXPIRED, "the message expired: retention removed its content.")
    except Rejected as refused:
        return refusal(refused)
    except Unavailable as exc:
        log.warning("unavailable", extra={"event": "unavailable", "route": "GET /v1/deliveries/{id}/envelope"})
        return unavailable(exc)
    return Response(
        row.envelope,
        media_type=XML,
        headers={
            "X-Hub-Envelope-Sha256": row.envelope_sha256,
            "ETag": f'"sha256:{row.envelope_sha256}"',
            "Cache-Control": "private, no-store",
        },
    )


def _envelope_of(runtime: Runtime, delivery_id: str) -> Any:
    with unavailable_on_outage(), runtime.sessions() as session:
        query = (
            select(Delivery.provider, Message.envelope, Message.envelope_sha256)
            .join(Message, Message.id == Delivery.message_id)
            .where(Delivery.id == delivery_id)
        )
        return session.execute(query).first()


def routes() -> list[Route]:
    return [
        Route("/v1/deliveries/{delivery_id:path}/envelope", get_delivery_envelope, methods=["GET"]),
        Route("/v1/acks", post_acks, methods=["POST"]),
        Route("/v1/acks", get_acks, methods=["GET"]),
    ]
