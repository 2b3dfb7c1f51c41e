"""The submission receipt: what the hub signs and returns for every accepted envelope."""

from __future__ import annotations

from datetime import datetime

from lxml import etree

from hub.envelope.builder import timestamp, to_bytes
from hub.envelope.model import ACK_NS, TYPES_NS, Sender
from hub.signing.signer import Signer

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
