"""Open a signed envelope: the checks every door applies before anything is stored.

parse safely -> verify the signature (whole document, registered signer, valid now)
-> validate against the schema -> read the model -> business rules.

The signature is checked before the content is read, and the content is read from the
very tree that was verified: the hub acts only on what the signer signed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from hub.envelope import model as m
from hub.envelope.rules import DEFAULT_POLICY, DEFAULT_RULE_LIMITS, MessageTypePolicy, RuleLimits
from hub.envelope.schema import check_root
from hub.envelope.validation import PolicyResolver, validate_envelope
from hub.safexml import DEFAULT_LIMITS, ParseLimits, parse
from hub.signing.verifier import Verified, Verifier

_SUBMITTER = f"{{{m.ENVELOPE_NS}}}Header/{{{m.ENVELOPE_NS}}}Sender/{{{m.TYPES_NS}}}OrganizationId"


@dataclass(frozen=True)
class OpenedEnvelope:
    envelope: m.Envelope
    verified: Verified
    digest: bytes
    """SHA-256 of the envelope document as received (the receipt quotes it): the request body on
    REST and AMQP; on SOAP, the PublishMessage element taken out of the Body as its own document."""


def open_envelope(
    data: bytes,
    *,
    verifier: Verifier,
    now: datetime,
    policy: MessageTypePolicy | PolicyResolver = DEFAULT_POLICY,
    parse_limits: ParseLimits = DEFAULT_LIMITS,
    rule_limits: RuleLimits = DEFAULT_RULE_LIMITS,
) -> OpenedEnvelope:
    """Return the verified, valid envelope, or raise ``Rejected`` with a stable code.

    The signer must be the organisation named in ``Header/Sender/OrganizationId`` (the
    submitter: the institution itself, or the integrator sending on its behalf).
    """
    root = parse(data, limits=parse_limits)
    check_root(root, expect=m.ENVELOPE_NS, name="PublishMessage")
    submitter = (root.findtext(_SUBMITTER) or "").strip()
    verified = verifier.verify(root, now=now, parties=[submitter])
    envelope = validate_envelope(root, now=now, policy=policy, limits=rule_limits)
    return OpenedEnvelope(envelope=envelope, verified=verified, digest=hashlib.sha256(data).digest())
