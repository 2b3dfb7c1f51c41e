"""How the web sends for an institution: the hub signs with the institution's self-service key, then the
envelope goes through the same intake as every other door (``Intake.open`` to check it before the
preview, ``Intake.submit`` to accept it)."""

from __future__ import annotations

import uuid

from hub.envelope import model as m
from hub.envelope.builder import build_envelope, to_bytes
from hub.errors import ErrorCode, Rejected
from hub.inbound.senders import Institution, SelfService
from hub.runtime import Runtime
from hub.signing.signer import Signer
from hub.web.accounts import Principal


def self_service_of(runtime: Runtime, principal: Principal) -> tuple[Institution, SelfService]:
    """The user's institution and its self-service key; ``NOT_AUTHORISED`` when the operator configured none."""
    institution = runtime.directory.institutions.get(principal.institution_id or "")
    if institution is None or institution.self_service is None:
        raise Rejected(
            ErrorCode.NOT_AUTHORISED,
            "your institution has no self-service key: an operator sets self_service in senders.yaml.",
        )
    return institution, institution.self_service


def new_sender_message_id() -> str:
    """The sender's message id of a message written on the web: unique, and recognisable as the web's."""
    return f"web-{uuid.uuid4().hex}"


def sign_for(service: SelfService, envelope: m.Envelope) -> bytes:
    """The envelope signed with the institution's self-service key (XML-DSig, as the institution would)."""
    return to_bytes(Signer(service.keys).sign(build_envelope(envelope)))
