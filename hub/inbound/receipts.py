"""The submission receipt: what the hub signs and returns for every accepted envelope."""

from __future__ import annotations

from datetime import datetime

from lxml import etree

from hub.envelope.builder import timestamp, to_bytes
from hub.envelope.model import ACK_NS, TYPES_NS, Sender
from hub.signing.signer import Signer, SigningTemplate

_A = "{" + ACK_NS + "}"
_T = "{" + TYPES_NS + "}"


def build_receipt(
    *, message_id: str, sender_message_id: str, sender: Sender, accepted_at: datetime, digest: bytes, environment: str
) -> etree._Element:
    root = etree.Element(_A + "SubmissionReceipt", nsmap={None: ACK_NS, "t": TYPES_NS})
    etree.SubElement(root, _A + "HubMessageId").text = message_id
    etree.SubElement(root, _A + "SenderMessageId").text = sender_message_id
    party = etree.SubElement(root, _A + "Sender")
    etree.SubElement(party, _T + "OrganizationId").text = sender.organization_id
    etree.SubElement(party, _T + "ApplicationId").text = sender.application_id
    if sender.on_behalf_of:
        etree.SubElement(party, _T + "OnBehalfOf").text = sender.on_behalf_of
    etree.SubElement(root, _A + "AcceptedAt").text = timestamp(accepted_at)
    etree.SubElement(root, _A + "EnvelopeDigest", algorithm="sha_256").text = digest.hex()
    etree.SubElement(root, _A + "Environment").text = environment
    return root


def signed_receipt(signer: Signer, **fields: object) -> bytes:
    return to_bytes(signer.sign(build_receipt(**fields)))  # type: ignore[arg-type]


class ReceiptSigner:
    """Signs receipts with one ``Signer``: the same bytes as ``signed_receipt``, without building a tree.

    Receipts differ only in their texts, so each is cut from a template (``SigningTemplate``, one
    with ``OnBehalfOf`` and one without); a receipt with a text that is not plain printable ASCII
    is built and signed as a tree. Thread-safe: nothing changes after it is built.
    """

    def __init__(self, signer: Signer) -> None:
        self.signer = signer
        fast = signer.backend == "fast"
        self._templates = {on_behalf: self._build(on_behalf) if fast else None for on_behalf in (False, True)}

    def _build(self, on_behalf: bool) -> SigningTemplate:
        specimen = build_receipt(
            message_id="@@message_id@@",
            sender_message_id="@@sender_message_id@@",
            sender=Sender(
                organization_id="@@organization_id@@",
                application_id="@@application_id@@",
                on_behalf_of="@@on_behalf_of@@" if on_behalf else None,
            ),
            accepted_at=datetime.now().astimezone(),
            digest=b"",
            environment="@@environment@@",
        )
        specimen[-3].text = "@@accepted_at@@"
        specimen[-2].text = "@@digest@@"
        return self.signer.template(specimen, to_bytes)

    def sign(
        self,
        *,
        message_id: str,
        sender_message_id: str,
        sender: Sender,
        accepted_at: datetime,
        digest: bytes,
        environment: str,
    ) -> bytes:
        template = self._templates[bool(sender.on_behalf_of)]
        if template is not None:
            values = {
                "message_id": message_id,
                "sender_message_id": sender_message_id,
                "organization_id": sender.organization_id,
                "application_id": sender.application_id,
                "accepted_at": timestamp(accepted_at),
                "digest": digest.hex(),
                "environment": environment,
            }
            if sender.on_behalf_of:
                values["on_behalf_of"] = sender.on_behalf_of
            signed = template.sign(values)
            if signed is not None:
                return signed
        return signed_receipt(
            self.signer,
            message_id=message_id,
            sender_message_id=sender_message_id,
            sender=sender,
            accepted_at=accepted_at,
            digest=digest,
            environment=environment,
        )
