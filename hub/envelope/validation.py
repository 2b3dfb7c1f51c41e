"""Schema + business rules for an envelope tree: the one entry point every door uses.

``validate_envelope`` takes a parsed (and, at intake, signature-verified) tree, checks it
against ``envelope-1.xsd``, reads it into the model, applies the business rules, and
raises :class:`Rejected` carrying every violation, each located by line and path.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from lxml import etree

from hub.envelope import model as m
from hub.envelope import schema
from hub.envelope.reader import read_envelope
from hub.envelope.rules import DEFAULT_POLICY, DEFAULT_RULE_LIMITS, MessageTypePolicy, RuleLimits, check_rules
from hub.errors import Rejected, Violation

PolicyResolver = Callable[[m.Envelope], MessageTypePolicy]


def validate_envelope(
    root: etree._Element,
    *,
    now: datetime,
    policy: MessageTypePolicy | PolicyResolver = DEFAULT_POLICY,
    limits: RuleLimits = DEFAULT_RULE_LIMITS,
) -> m.Envelope:
    """Return the envelope's model, or raise ``Rejected`` with every violation found."""
    schema.validate(root, expect=m.ENVELOPE_NS)
    envelope = read_envelope(root)
    resolved = policy(envelope) if callable(policy) else policy
    violations = check_rules(envelope, now=now, policy=resolved, limits=limits)
    if violations:
        raise Rejected.of([_with_line(root, v) for v in violations])
    return envelope


def _with_line(root: etree._Element, violation: Violation) -> Violation:
    if violation.path is None or violation.line is not None:
        return violation
    element = locate(root, violation.path)
    if element is None:
        return violation
    return Violation(violation.code, violation.message, violation.path, element.sourceline)


def locate(root: etree._Element, path: str) -> etree._Element | None:
    """The element at a path like ``/PublishMessage/Content/Annex[2]/Digest`` (local names)."""
    steps = [s for s in path.split("/") if s]
    if not steps or etree.QName(root).localname != steps[0]:
        return None
    node = root
    for step in steps[1:]:
        name, _, rest = step.partition("[")
        index = int(rest.rstrip("]")) - 1 if rest else 0
        matches = [child for child in node if isinstance(child.tag, str) and etree.QName(child).localname == name]
        if index >= len(matches):
            return None
        node = matches[index]
    return node
