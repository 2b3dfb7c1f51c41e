"""The e-Box Message Registry REST v2.1 door, sender side: a thin HTTP adapter.

POST /ebox/oauth2/token                          OAuth2 client credentials, private-key JWT assertion
                                                 (``hub.compat.ebox_rest_auth``) -> a bearer access token
POST {BASE}/publishMessage                       multipart: ``messageToPublish`` (JSON) + up to six file
                                                 parts -> 201 ``PublicationStatusMessage``
POST {BASE}/searchMessageStatus                  ``MessagesStatusRequest`` -> 201 ``MessagesStatusList``
GET  {BASE}/referenceData/messageTypes           the sender's registered message types (paged)
GET  {BASE}/referenceData/messageTypes/{id}      one of them

``BASE`` is ``/ebox/rest/v2`` (the contract's basePath is a template). Errors are the contract's
``StatusMessage`` (``code`` is the hub's stable error code) with the contract's statuses: 400 for
invalid data, 401 for authentication and authorisation, 404 for nothing found; 503 when the hub
cannot serve now (retry). Headers: ``Authorization: Bearer``; ``On-Behalf-Of: <CBE>`` for an
integrator sending for an institution it holds a mandate for; ``Idempotency-Key`` (e-Box v3): a
repeat with the same content gets the original answer, with other content DUPLICATE_MESSAGE_ID.

Mapping (``hub.compat.ebox_rest_mapping``) builds the hub's message; ``Intake.submit_on_behalf``
accepts it through the checks and the transaction every door shares. Nothing here logs a national
number, a message's content or a token.
"""

from __future__ import annotations

import functools
import logging
import urllib.parse
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from hub.compat import ebox_rest_auth as auth
from hub.compat import ebox_rest_mapping as mapping
from hub.envelope import model as m
from hub.errors import ErrorCode, Rejected, Unavailable
from hub.inbound.acceptance import Receipt
from hub.inbound.http import HUB_MESSAGE_ID, read_body
from hub.routing.directory_http import directory_of
from hub.runtime import Runtime
from hub.store.db import unavailable_on_outage
from hub.store.models import Message
from hub.store.single_use import SingleUse

log = logging.getLogger("hub.compat.ebox_rest")

BASE = "/ebox/rest/v2"
TOKEN_PATH = "/ebox/oauth2/token"  # noqa: S105 - a path, not a password
DOOR = "ebox-rest"
MAX_TOKEN_REQUEST = 64 * 1024
MAX_STATUS_REQUEST = 256 * 1024
MAX_JSON_PART = 1024 * 1024
NO_STORE = {"Cache-Control": "no-store"}

UNAUTHORISED = frozenset(
    {
        ErrorCode.UNAUTHENTICATED,
        ErrorCode.NOT_AUTHORISED,
        ErrorCode.INVALID_SENDER,
        ErrorCode.ENVIRONMENT_MISMATCH,
        ErrorCode.UNKNOWN_SIGNER,
        ErrorCode.CERT_EXPIRED,
        ErrorCode.CERT_NOT_YET_VALID,
        ErrorCode.SIGNATURE_INVALID,
        ErrorCode.SIGNATURE_ALGORITHM,
    }
)
"""Codes answered 401 ("Invalid authorization"): who calls, or what it may send, is wrong."""


def contract_status(code: ErrorCode) -> int:
    """The contract's HTTP status for a refusal: 401, 404, 503, else 400 ("Invalid data supplied")."""
    if code in UNAUTHORISED:
        return 401
    if code is ErrorCode.MESSAGE_NOT_FOUND:
        return 404
    if code is ErrorCode.SERVICE_UNAVAILABLE:
        return 503
    return 400


def _error(runtime: Runtime, code: str, message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    body = mapping.status_message(code, message, environment=runtime.intake.environment)
    return JSONResponse(body, status_code=status, headers={**NO_STORE, **(headers or {})})


Handler = Callable[[Runtime, Request], Awaitable[Response]]


def _guarded(route: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime
        try:
            return await handler(runtime, request)
        except Rejected as refused:
            log.info("refused", extra={"event": "refused", "door": DOOR, "route": route, "code": refused.code.value})
            headers = {"WWW-Authenticate": "Bearer"} if refused.code is ErrorCode.UNAUTHENTICATED else None
            return _error(runtime, refused.code.value, _described(refused), contract_status(refused.code), headers)
        except Unavailable as exc:
            log.warning("unavailable", extra={"event": "unavailable", "door": DOOR, "route": route})
            return _error(runtime, ErrorCode.SERVICE_UNAVAILABLE.value, str(exc), 503, {"Retry-After": "5"})

    return endpoint


def _described(refused: Rejected) -> str:
    """The refusal's message and where (a contract field, or the hub envelope's element the mapping
    wrote it to); no line number: the sender never saw that envelope."""
    first = refused.violations[0]
    return f"{first.message} (at {first.path})" if first.path else first.message


def _caller(runtime: Runtime, request: Request) -> auth.Caller:
    return auth.authenticate(
        request.headers.get("authorization", ""),
        keys=runtime.hub_keys,
        trust=runtime.intake.verifier.trust,
        now=runtime.intake.clock(),
    )


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


# -- the token endpoint ---------------------------------------------------------------------------------


def _replays(request: Request, runtime: Runtime) -> SingleUse:
    """The register of used assertions (``jti``): in the store, shared by every worker process."""
    state = request.app.state
    register: SingleUse | None = getattr(state, "ebox_rest_replays", None)
    if register is None:
        register = SingleUse(runtime.sessions)
        state.ebox_rest_replays = register
    return register


def _token_error(error: str, description: str, status: int) -> Response:
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers=NO_STORE)


def audiences(request: Request, public_url: str | None = None) -> list[str]:
    """The token endpoint's URLs an assertion may name as its audience: under ``[http] public_url`` when
    the operator set it (the address senders are given; a Host header cannot widen it), else as this
    request reached it, over https and http (TLS may end at a proxy)."""
    if public_url:
        return [public_url.rstrip("/") + TOKEN_PATH]
    host = request.headers.get("host", request.url.netloc)
    return [f"https://{host}{TOKEN_PATH}", f"http://{host}{TOKEN_PATH}"]


async def token(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    if _content_type(request) != "application/x-www-form-urlencoded":
        return _token_error("invalid_request", "send the token request as application/x-www-form-urlencoded.", 400)
    try:
        body = await read_body(request, limit=MAX_TOKEN_REQUEST, timeout=runtime.settings.http_timeout_s)
        form = urllib.parse.parse_qs(body.decode("ascii"), strict_parsing=True, max_num_fields=10)
    except (Rejected, UnicodeDecodeError, ValueError):
        return _token_error("invalid_request", "the token request is not a form of at most 64 KiB.", 400)
    fields = {name: values[0] for name, values in form.items() if len(values) == 1}
    if len(fields) != len(form):
        return _token_error("invalid_request", "give each parameter once.", 400)
    if fields.get("grant_type") != auth.GRANT_TYPE:
        return _token_error("unsupported_grant_type", "grant_type must be client_credentials.", 400)
    if fields.get("client_assertion_type") != auth.ASSERTION_TYPE or not fields.get("client_assertion"):
        return _token_error(
            "invalid_request",
            f"authenticate with client_assertion_type={auth.ASSERTION_TYPE} and a client_assertion (a JWT).",
            400,
        )
    now = runtime.intake.clock()
    try:
        credential = await run_in_threadpool(
            functools.partial(
                auth.verify_assertion,
                fields["client_assertion"],
                trust=runtime.intake.verifier.trust,
                audiences=audiences(request, runtime.settings.public_url),
                now=now,
                replays=_replays(request, runtime),
                client_id=fields.get("client_id"),
            )
        )
    except Unavailable:
        return _token_error("temporarily_unavailable", "the hub cannot check assertions now; retry shortly.", 503)
    except auth.AuthError as refused:
        log.info("token refused", extra={"event": "token_refused", "door": DOOR, "code": refused.code.value})
        return _token_error(refused.error, refused.message, 401)
    access_token, lifetime = auth.issue_access_token(runtime.hub_keys, credential, now=now)
    log.info("token issued", extra={"event": "token_issued", "door": DOOR, "party": credential.party})
    return JSONResponse(
        {"access_token": access_token, "token_type": "Bearer", "expires_in": lifetime}, headers=NO_STORE
    )


# -- publishMessage ----------------------------------------------------------------------------------------


async def _parts(request: Request, body: bytes) -> tuple[bytes, list[mapping.FilePart]]:
    """The ``messageToPublish`` JSON (a field or a file part) and the file parts of a multipart body."""

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    parser = MultiPartParser(
        request.headers, stream(), max_files=mapping.MAX_FILES + 1, max_fields=2, max_part_size=MAX_JSON_PART
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        too_large = "Too many" in exc.message or "maximum size" in exc.message
        raise Rejected(
            ErrorCode.TOO_LARGE if too_large else ErrorCode.SCHEMA_INVALID,
            f"the multipart body cannot be read: {exc.message} (one messageToPublish part of at most "
            f"{MAX_JSON_PART // 1024} KiB and at most {mapping.MAX_FILES} files).",
        ) from None
    try:
        message_json: bytes | None = None
        files: list[mapping.FilePart] = []
        for name, value in form.multi_items():
            if name == "messageToPublish" and message_json is None:
                message_json = (await value.read()) if isinstance(value, UploadFile) else value.encode()
            elif isinstance(value, UploadFile) and value.filename:
                content = await value.read()
                files.append(mapping.FilePart(name, value.filename, value.content_type or "", content))
            else:
                raise Rejected(
                    ErrorCode.SCHEMA_INVALID,
                    f"the part {name[:64]!r} is neither messageToPublish nor a file with a filename.",
                    path=mapping.ROOT,
                )
    finally:
        await form.close()
    if message_json is None:
        raise Rejected(ErrorCode.SCHEMA_INVALID, "the request has no messageToPublish part.", path=mapping.ROOT)
    if len(files) > mapping.MAX_FILES:
        raise Rejected(ErrorCode.TOO_LARGE, f"a message carries at most {mapping.MAX_FILES} files, not {len(files)}.")
    if len({f.name for f in files}) != len(files):
        raise Rejected(ErrorCode.SCHEMA_INVALID, "two file parts have the same name.", path=mapping.ROOT)
    return message_json, files


def _institution(caller: auth.Caller, on_behalf_of: str | None, named: str | None) -> str:
    """The institution the message is sent for: the On-Behalf-Of header, else senderOrganizationId,
    else the caller. Whether the caller may send for it is the intake's decision (mandates)."""
    if on_behalf_of is not None:
        if not mapping.CBE.fullmatch(on_behalf_of):
            raise Rejected(ErrorCode.SCHEMA_INVALID, "On-Behalf-Of is the CBE number of an institution: 10 digits.")
        if named is not None and named != on_behalf_of:
            raise Rejected(
                ErrorCode.NOT_AUTHORISED,
                "senderOrganizationId and the On-Behalf-Of header name different institutions.",
                path=mapping.ROOT + "/senderOrganizationId",
            )
        return on_behalf_of
    return named or caller.party


def _application(runtime: Runtime, institution: str, named: str | None) -> str:
    if named is not None:
        return named
    registered = runtime.directory.institutions.get(institution)
    if registered is not None and len(registered.applications) == 1:
        return next(iter(registered.applications))
    raise Rejected(
        ErrorCode.INVALID_SENDER,
        "name the sending application in senderApplicationId (your organisation has several, or none).",
        path=mapping.ROOT + "/senderApplicationId",
    )


def _idempotency_key(request: Request) -> str:
    key = request.headers.get("idempotency-key")
    if key is None:
        return f"ebox-rest-{uuid.uuid4().hex}"
    if not mapping.TOKEN64.fullmatch(key):
        raise Rejected(
            ErrorCode.SCHEMA_INVALID,
            "Idempotency-Key: 1 to 64 letters, digits and . _ : / - (a UUID fits), starting with a letter or digit.",
        )
    return key


def _answer(runtime: Runtime, request: Request, receipt: Receipt) -> dict[str, Any]:
    """The PublicationStatusMessage of a stored message (the same for the original and a repeat)."""
    with unavailable_on_outage(), runtime.sessions() as session:
        row = session.execute(
            select(Message.expires_at, Message.accepted_at, Message.recipient_kind, Message.recipient_id).where(
                Message.id == receipt.message_id
            )
        ).one()
    expires, accepted, kind, ident = row
    recipient = directory_of(request, runtime).get(kind, ident)
    digital = recipient is not None and recipient.digital_at(accepted)
    return mapping.publication_status(receipt.message_id, expires or accepted, digital=digital)


def _read(message_json: bytes, files: list[mapping.FilePart]) -> mapping.Publication:
    return mapping.read_publication(mapping.parse_json(message_json), {f.name: f for f in files})


async def publish_message(runtime: Runtime, request: Request) -> Response:
    caller = _caller(runtime, request)
    if _content_type(request) != "multipart/form-data":
        raise Rejected(ErrorCode.CONTENT_TYPE_INVALID, "send publishMessage as multipart/form-data.")
    settings = runtime.settings
    body = await read_body(request, limit=settings.max_envelope_bytes, timeout=settings.http_timeout_s)
    message_json, files = await _parts(request, body)
    publication = await run_in_threadpool(_read, message_json, files)  # hashing megabytes: off the event loop
    institution = _institution(caller, request.headers.get("on-behalf-of"), publication.sender_organization_id)
    sender = m.Sender(
        organization_id=caller.party,
        application_id=_application(runtime, institution, publication.sender_application_id),
        on_behalf_of=institution if institution != caller.party else None,
    )
    envelope = mapping.to_envelope(
        publication,
        sender=sender,
        sender_message_id=_idempotency_key(request),
        created=runtime.intake.clock().replace(microsecond=0),
        environment=m.Environment(runtime.intake.environment),
    )
    digest = mapping.request_digest(message_json, files, sender.on_behalf_of)
    receipt = await run_in_threadpool(
        runtime.intake.submit_on_behalf, envelope, credential=caller.credential, door=DOOR, request_digest=digest
    )
    answer = await run_in_threadpool(_answer, runtime, request, receipt)
    headers = {**NO_STORE, "X-Hub-Message-Id": receipt.message_id}
    if not receipt.created:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(answer, status_code=201, headers=headers)


# -- searchMessageStatus ------------------------------------------------------------------------------------


def _statuses(runtime: Runtime, party: str, couples: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    ids = sorted({c[0] for c in couples if HUB_MESSAGE_ID.fullmatch(c[0])})
    if not ids:
        return []
    columns = (
        Message.id,
        Message.institution_id,
        Message.submitter_id,
        Message.recipient_kind,
        Message.recipient_id,
        Message.state,
        Message.expires_at,
    )
    with unavailable_on_outage(), runtime.sessions() as session:
        rows = {row[0]: row for row in session.execute(select(*columns).where(Message.id.in_(ids)))}
    found = []
    for message_id, kind, ident in couples:
        row = rows.get(message_id)
        if row is None or not runtime.directory.may_read(party, row.institution_id, row.submitter_id):
            continue  # another sender's message is as unknown as one that does not exist
        if (row.recipient_kind, row.recipient_id) != (kind, ident):
            continue
        found.append(mapping.message_status(message_id, kind, ident, state=row.state, expires_at=row.expires_at))
    return found


async def search_message_status(runtime: Runtime, request: Request) -> Response:
    caller = _caller(runtime, request)
    if _content_type(request) != "application/json":
        raise Rejected(ErrorCode.CONTENT_TYPE_INVALID, "send searchMessageStatus as application/json.")
    body = await read_body(request, limit=MAX_STATUS_REQUEST, timeout=runtime.settings.http_timeout_s)
    couples = mapping.read_status_request(mapping.parse_json(body, "messagesStatusRequest"))
    found = await run_in_threadpool(_statuses, runtime, caller.party, couples)
    if not found:
        raise Rejected(ErrorCode.MESSAGE_NOT_FOUND, "none of these messages of yours is known to the hub.")
    return JSONResponse(found, status_code=201, headers=NO_STORE)


# -- referenceData/messageTypes ----------------------------------------------------------------------------


def _types_for(runtime: Runtime, caller: auth.Caller, request: Request) -> list[dict[str, Any]]:
    """The message types the caller may send: its own, or those of the institutions it holds a mandate
    for (one of them with On-Behalf-Of)."""
    directory = runtime.directory
    integrator = directory.integrators.get(caller.party)
    allowed = sorted(integrator.mandates) if integrator is not None else [caller.party]
    behalf = request.headers.get("on-behalf-of")
    if behalf is not None and behalf != caller.party:
        if behalf not in allowed:
            raise Rejected(ErrorCode.NOT_AUTHORISED, "you hold no mandate for the institution in On-Behalf-Of.")
        allowed = [behalf]
    merged: dict[str, dict[str, Any]] = {}
    for institution_id in allowed:
        institution = directory.institutions.get(institution_id)
        if institution is None:
            continue
        for type_id, policy in sorted(institution.message_types.items()):
            item = merged.get(type_id)
            if item is None:
                merged[type_id] = mapping.message_type(
                    type_id, policy, organizations=[institution.id], applications=sorted(institution.applications)
                )
            else:
                item["senderOrganizationIds"] = sorted({*item["senderOrganizationIds"], institution.id})
                item["senderApplicationIds"] = sorted({*item["senderApplicationIds"], *institution.applications})
    return [merged[k] for k in sorted(merged)]


def _page_parameter(request: Request, name: str, default: int, maximum: int | None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or int(raw) < 1 or (maximum is not None and int(raw) > maximum):
        bound = f" and {maximum}" if maximum is not None else ""
        raise Rejected(ErrorCode.SCHEMA_INVALID, f"{name} must be a whole number between 1{bound}.")
    return int(raw)


async def message_types(runtime: Runtime, request: Request) -> Response:
    caller = _caller(runtime, request)
    page = _page_parameter(request, "page", 1, None)
    size = _page_parameter(request, "pageSize", 25, 100)
    items = _types_for(runtime, caller, request)
    start = (page - 1) * size
    return JSONResponse({"items": items[start : start + size], "totalItems": len(items)}, headers=NO_STORE)


async def message_type(runtime: Runtime, request: Request) -> Response:
    caller = _caller(runtime, request)
    wanted = request.path_params["message_type_id"]
    for item in _types_for(runtime, caller, request):
        if item["messageTypeId"] == wanted:
            return JSONResponse(item, headers=NO_STORE)
    raise Rejected(ErrorCode.MESSAGE_NOT_FOUND, f"no message type {wanted[:64]!r} is registered for you.")


def routes() -> list[BaseRoute]:
    paths: list[tuple[str, Handler, str]] = [
        ("/publishMessage", publish_message, "POST"),
        ("/searchMessageStatus", search_message_status, "POST"),
        ("/referenceData/messageTypes", message_types, "GET"),
        ("/referenceData/messageTypes/{message_type_id}", message_type, "GET"),
    ]
    return [
        Route(TOKEN_PATH, token, methods=["POST"]),
        *(Route(BASE + path, _guarded(path, handler), methods=[method]) for path, handler, method in paths),
    ]
