"""``hub routes explain``: what routing would do with a message, in words, without sending it."""

from __future__ import annotations

from datetime import datetime

from hub.routing.recipients import Recipient
from hub.routing.rules import Decision, MessageFacts


def explain(facts: MessageFacts, recipient: Recipient | None, decision: Decision, now: datetime) -> str:
    who = (
        "unknown to the directory"
        if recipient is None
        else (
            f"digital post {'active' if recipient.digital_at(now) else 'not active'}, "
            f"reads with {', '.join(sorted(recipient.providers)) or 'no provider'}"
        )
    )
    lines = [
        f"message:   {facts.message_type} from {facts.sender} to a {facts.recipient_kind}"
        f"{', registered' if facts.registered else ''}, priority {facts.priority}",
        f"recipient: {who}",
        f"needs:     {', '.join(sorted(facts.needs())) or 'no particular capability'}",
        "",
        *(f"- {reason}" for reason in decision.reasons),
        *(f"- skipped {provider}: {why}" for provider, why in decision.skipped),
        "",
        f"outcome:   {decision.outcome} (rule {decision.rule or 'none'}, priority {decision.priority})",
    ]
    for delivery in decision.deliveries:
        held = f", held until {delivery.not_before.isoformat()} ({delivery.why_held})" if delivery.not_before else ""
        lines.append(f"  -> provider.{delivery.provider}{held}")
    return "\n".join(lines)
