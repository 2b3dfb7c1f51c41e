"""May this submitter send this envelope? A pure decision over the sender directory.

The signature has already shown that ``Sender/OrganizationId`` signed the envelope. Here:
the submitter is a registered institution sending for itself, or an integrator mandated
for the institution named in ``OnBehalfOf``; the application and message type are the
institution's; the envelope's environment matches the institution's and the hub's.
Returns the message type's retention policy for the business rules.
"""

from __future__ import annotations

from hub.envelope.model import Envelope
from hub.envelope.rules import MessageTypePolicy
from hub.errors import ErrorCode, Rejected
from hub.inbound.senders import SenderDirectory

H = "/PublishMessage/Header"


def authorise(envelope: Envelope, directory: SenderDirectory, *, hub_environment: str) -> MessageTypePolicy:
    sender = envelope.header.sender
    submitter, behalf = sender.organization_id, sender.on_behalf_of
    if behalf is None or behalf == submitter:
        institution = directory.institutions.get(submitter)
        if institution is None:
            if submitter in directory.integrators:
                raise Rejected(
                    ErrorCode.NOT_AUTHORISED,
                    f"{submitter} is an integrator: name the institution you send for in Sender/OnBehalfOf.",
                    path=H + "/Sender/OnBehalfOf",
                )
            raise Rejected(
                ErrorCode.INVALID_SENDER,
                f"{submitter} is not a registered sender; ask the hub's operator to register your organisation.",
                path=H + "/Sender/OrganizationId",
            )
    else:
        integrator = directory.integrators.get(submitter)
        if integrator is None:
            raise Rejected(
                ErrorCode.NOT_AUTHORISED,
                f"{submitter} is not a registered integrator and may not send on behalf of {behalf}.",
                path=H + "/Sender/OnBehalfOf",
            )
        institution = directory.institutions.get(behalf)
        if institution is None or behalf not in integrator.mandates:
            raise Rejected(
                ErrorCode.NOT_AUTHORISED,
                f"integrator {submitter} holds no mandate for {behalf}; the institution must grant one "
                "through the hub's operator.",
                path=H + "/Sender/OnBehalfOf",
            )
    if sender.application_id not in institution.applications:
        raise Rejected(
            ErrorCode.INVALID_SENDER,
            f"application {sender.application_id!r} is not registered for {institution.id}; "
            f"registered: {', '.join(sorted(institution.applications))}.",
            path=H + "/Sender/ApplicationId",
        )
    message_type = envelope.header.message_type
    policy = institution.message_types.get(message_type)
    if policy is None:
        raise Rejected(
            ErrorCode.UNKNOWN_MESSAGE_TYPE,
            f"{institution.id} may not send message type {message_type!r}; "
            f"its message types: {', '.join(sorted(institution.message_types))}.",
            path=H + "/MessageType",
        )
    environment = envelope.header.environment.value
    if environment != institution.environment or environment != hub_environment:
        raise Rejected(
            ErrorCode.ENVIRONMENT_MISMATCH,
            f"the envelope is for {environment} but this hub serves {hub_environment} "
            f"and {institution.id} is registered for {institution.environment}.",
            path=H + "/Environment",
        )
    return policy
