"""The forward-only states of deliveries and messages: pure functions, no I/O, no clock.

A delivery (one message to one provider)::

    pending -> delivered -> opened -> replied        exits: failed, printed, expired

A message::

    accepted -> routed -> delivered -> opened -> replied
                exits: undeliverable, printed, failed, expired, rejected

States only move forward. Each state has a rank; an event moves a delivery only to a state
of higher rank, so the state after any sequence of events is the highest-ranked state that
sequence reached, and applying the same events again changes nothing. An event that would
move nothing is still recorded by the caller (``DeliveryStep.outcome`` says why: a repeat,
or late).

Delivery ranks, lowest first: ``pending`` < ``failed`` < ``printed`` < ``delivered`` <
``opened`` < ``replied`` < ``expired``. Decisions this encodes:

- ``opened`` implies ``delivered``, and ``replied`` implies ``delivered`` and ``opened`` (a
  recipient answers what it opened): on a ``pending`` delivery, ``replied`` takes effect as
  (delivered, opened, replied), so "opened" is never recorded without "delivered" before it.
- ``failed`` is an exit that signed proof of success overrides: ``delivered`` (``opened``,
  ``replied``, ``printed``) after ``failed`` moves on; ``failed`` after any of them is late.
- ``printed`` is the paper provider's "delivered"; a later ``delivered`` (e.g. the post's proof
  of delivery of a registered letter) still moves it on.
- ``expired`` ends a delivery that never reached the recipient (``pending`` or ``failed``);
  once it is ``expired`` nothing moves it. After ``printed`` / ``delivered`` / ``opened`` /
  ``replied``, ``expired`` is late: the state keeps the best outcome reached.
- ``accepted``, ``routed``, ``rejected``, ``undeliverable`` are the hub's own message events:
  a delivery refuses them (``ACK_EVENT_NOT_ALLOWED``). ``newDocumentReminder`` and
  ``documentExpirationAlert`` are notices: recorded, they move nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from hub.envelope.model import ReplyOptions
from hub.errors import ErrorCode, Rejected, Violation
from hub.outbound.acks import Event, Reply


class DeliveryState(StrEnum):
    PENDING = "pending"
    FAILED = "failed"
    PRINTED = "printed"
    DELIVERED = "delivered"
    OPENED = "opened"
    REPLIED = "replied"
    EXPIRED = "expired"


class MessageState(StrEnum):
    ACCEPTED = "accepted"
    ROUTED = "routed"
    FAILED = "failed"
    PRINTED = "printed"
    DELIVERED = "delivered"
    OPENED = "opened"
    REPLIED = "replied"
    UNDELIVERABLE = "undeliverable"
    EXPIRED = "expired"
    REJECTED = "rejected"


class Outcome(StrEnum):
    """What an event did to a delivery."""

    MOVED = "moved"
    """The state moved forward; ``effects`` lists the events that took effect."""
    REPEAT = "repeat"
    """The delivery is already in the state the event leads to."""
    LATE = "late"
    """The delivery is already further (or ``expired``): recorded, moves nothing."""
    NOTICE = "notice"
    """A notice (reminder, expiration alert): recorded, moves nothing."""


D = DeliveryState
M = MessageState

DELIVERY_RANK: dict[DeliveryState, int] = {state: rank for rank, state in enumerate(DeliveryState)}
"""Rank of each delivery state (the order ``DeliveryState`` lists them in)."""

MESSAGE_RANK: dict[MessageState, int] = {
    M.ACCEPTED: 0,
    M.ROUTED: 1,
    M.FAILED: 2,
    M.PRINTED: 3,
    M.DELIVERED: 4,
    M.OPENED: 5,
    M.REPLIED: 6,
    M.UNDELIVERABLE: 7,
    M.EXPIRED: 7,
    M.REJECTED: 7,
}
"""Rank of each message state; the three of rank 7 are final (nothing moves out of them)."""

MESSAGE_FINAL = frozenset({M.UNDELIVERABLE, M.EXPIRED, M.REJECTED})

PROVIDER_EVENTS = frozenset({Event.DELIVERED, Event.OPENED, Event.REPLIED, Event.FAILED, Event.PRINTED, Event.EXPIRED})
"""The events that move a delivery (a provider reports them; the hub may also expire a delivery)."""

NOTICES = frozenset({Event.NEW_DOCUMENT_REMINDER, Event.DOCUMENT_EXPIRATION_ALERT})

_TARGET: dict[Event, DeliveryState] = {
    Event.FAILED: D.FAILED,
    Event.PRINTED: D.PRINTED,
    Event.DELIVERED: D.DELIVERED,
    Event.OPENED: D.OPENED,
    Event.REPLIED: D.REPLIED,
    Event.EXPIRED: D.EXPIRED,
}

_SUCCESS_CHAIN = (Event.DELIVERED, Event.OPENED, Event.REPLIED)
_REACHED_BY: dict[DeliveryState, frozenset[Event]] = {
    # The success events a state implies were recorded.
    D.DELIVERED: frozenset({Event.DELIVERED}),
    D.OPENED: frozenset({Event.DELIVERED, Event.OPENED}),
    D.REPLIED: frozenset(_SUCCESS_CHAIN),
}
_EXPIRES_FROM = frozenset({D.PENDING, D.FAILED})


@dataclass(frozen=True)
class DeliveryStep:
    """The result of one event on one delivery."""

    state: DeliveryState
    """The delivery's state after the event (unchanged unless ``outcome`` is ``MOVED``)."""
    effects: tuple[Event, ...]
    """The events that take effect, in order: ``(delivered, opened)`` for ``opened`` on a
    ``pending`` delivery; empty when nothing moves."""
    outcome: Outcome

    @property
    def noop(self) -> bool:
        return self.outcome is not Outcome.MOVED

    @property
    def late(self) -> bool:
        return self.outcome is Outcome.LATE


def delivery_state(value: str) -> DeliveryState:
    """``value`` as a ``DeliveryState``; ``ValueError`` for a state the machine does not know."""
    try:
        return DeliveryState(value)
    except ValueError:
        raise ValueError(f"unknown delivery state {value!r}; one of {', '.join(DeliveryState)}") from None


def message_state_of(value: str) -> MessageState:
    """``value`` as a ``MessageState``; ``ValueError`` for a state the machine does not know."""
    try:
        return MessageState(value)
    except ValueError:
        raise ValueError(f"unknown message state {value!r}; one of {', '.join(MessageState)}") from None


def _event(event: str) -> Event:
    try:
        found = Event(event)
    except ValueError:
        found = None
    if found is None or (found not in PROVIDER_EVENTS and found not in NOTICES):
        allowed = ", ".join(sorted(PROVIDER_EVENTS | NOTICES))
        raise Rejected(
            ErrorCode.ACK_EVENT_NOT_ALLOWED,
            f"the event {event!r} cannot be reported for a delivery (accepted, routed, rejected and "
            f"undeliverable are the hub's own); report one of: {allowed}.",
        )
    return found


def advance_delivery(current: str, event: str) -> DeliveryStep:
    """Apply ``event`` to a delivery in state ``current`` (see the module's doc for the rules).

    Raises ``Rejected(ACK_EVENT_NOT_ALLOWED)`` for an event that is not a delivery's (the
    hub's message events, or a value outside ``Event``), and ``ValueError`` for an unknown
    ``current`` state (a bug or a corrupt row, not the provider's fault).
    """
    state = delivery_state(current)
    kind = _event(event)
    if kind in NOTICES:
        return DeliveryStep(state, (), Outcome.NOTICE)
    target = _TARGET[kind]
    if target is state:
        return DeliveryStep(state, (), Outcome.REPEAT)
    if state is D.EXPIRED or DELIVERY_RANK[target] < DELIVERY_RANK[state]:
        return DeliveryStep(state, (), Outcome.LATE)
    if target is D.EXPIRED and state not in _EXPIRES_FROM:
        return DeliveryStep(state, (), Outcome.LATE)
    already = _REACHED_BY.get(state, frozenset())
    implied = _REACHED_BY.get(target)
    effects = (kind,) if implied is None else tuple(e for e in _SUCCESS_CHAIN if e in implied and e not in already)
    return DeliveryStep(target, effects, Outcome.MOVED)


def replay(current: str, events: Iterable[str]) -> tuple[DeliveryState, list[DeliveryStep]]:
    """Apply ``events`` in order from ``current``: the final state and every step."""
    state = delivery_state(current)
    steps = []
    for event in events:
        step = advance_delivery(state, event)
        steps.append(step)
        state = step.state
    return state, steps


_SUCCESS_OF_DELIVERY: dict[DeliveryState, MessageState] = {
    D.DELIVERED: M.DELIVERED,
    D.OPENED: M.OPENED,
    D.REPLIED: M.REPLIED,
}


def _derived(delivery_states: Iterable[str]) -> MessageState | None:
    """What the deliveries alone say of their message; ``None`` when there are none."""
    states = [delivery_state(s) for s in delivery_states]
    if not states:
        return None
    successes = [_SUCCESS_OF_DELIVERY[s] for s in states if s in _SUCCESS_OF_DELIVERY]
    if successes:
        return max(successes, key=MESSAGE_RANK.__getitem__)
    if D.PRINTED in states:
        return M.PRINTED
    if D.PENDING in states:
        return M.ROUTED
    if all(s is D.FAILED for s in states):
        return M.FAILED
    return M.EXPIRED  # none reached the recipient, and at least one expired


def message_state(current: str, delivery_states: Iterable[str]) -> MessageState:
    """The message's state from its deliveries' states, never lower than ``current``.

    The most advanced successful delivery wins (delivered < opened < replied); otherwise
    ``printed`` when the only successful outcome is a paper print; ``routed`` while a
    delivery is still pending; ``failed`` only when every delivery failed; ``expired`` when
    none reached the recipient and some expired. ``undeliverable``, ``expired`` and
    ``rejected`` are final: nothing moves a message out of them. A message without
    deliveries keeps ``current``. ``ValueError`` for an unknown state.
    """
    now = message_state_of(current)
    derived = _derived(delivery_states)
    if now in MESSAGE_FINAL or derived is None:
        return now
    return derived if MESSAGE_RANK[derived] > MESSAGE_RANK[now] else now


DEFAULT_FREE_TEXT_LENGTH = 2000
"""``ReplyOptions/FreeText/@maxLength`` when the envelope does not say (as the envelope builder writes it)."""

_REPLY_OPEN = frozenset({M.ROUTED, M.FAILED, M.PRINTED, M.DELIVERED, M.OPENED})
"""Message states a reply may arrive in (``replied`` implies delivered and opened, so a reply
may overtake the delivered / opened acknowledgements)."""


def may_reply(message_state: str, replies_so_far: int) -> Violation | None:
    """``None`` when the message may take a reply now, else why not (one reply per message).

    ``REPLY_ALREADY_GIVEN`` once a reply was recorded (``replies_so_far`` > 0, or the message
    is ``replied``); ``REPLY_NOT_ALLOWED`` when the message never reached anyone or is over
    (accepted, undeliverable, expired, rejected). Raise it with ``Rejected.of([violation])``.
    """
    state = message_state_of(message_state)
    if replies_so_far > 0 or state is M.REPLIED:
        return Violation(
            ErrorCode.REPLY_ALREADY_GIVEN,
            "this message already has its reply; a message takes one reply only.",
        )
    if state not in _REPLY_OPEN:
        return Violation(
            ErrorCode.REPLY_NOT_ALLOWED,
            f"the message is {state.value}; it cannot take a reply.",
        )
    return None


def reply_fits(options: ReplyOptions | None, reply: Reply, at: datetime) -> Violation | None:
    """``None`` when ``reply`` answers what the envelope asked (``options``) by its deadline.

    ``REPLY_NOT_ALLOWED``: the envelope asked for no reply; the deadline passed at ``at``; a
    choice that is not one of the envelope's choices; free text where choices were asked (or
    the reverse); free text longer than the envelope allows.
    """
    if options is None:
        return Violation(ErrorCode.REPLY_NOT_ALLOWED, "the message asks for no reply.")
    if options.deadline is not None and at > options.deadline:
        return Violation(
            ErrorCode.REPLY_NOT_ALLOWED, f"the reply deadline was {options.deadline.isoformat()}; it has passed."
        )
    if options.choices:
        ids = [choice.id for choice in options.choices]
        if reply.choice_id is None:
            return Violation(ErrorCode.REPLY_NOT_ALLOWED, f"the message asks for one of the choices {ids}, not text.")
        if reply.choice_id not in ids:
            return Violation(
                ErrorCode.REPLY_NOT_ALLOWED, f"{reply.choice_id!r} is not one of the message's choices {ids}."
            )
        return None
    if reply.text is None:
        return Violation(ErrorCode.REPLY_NOT_ALLOWED, "the message asks for free text, not a choice.")
    limit = options.free_text_max_length or DEFAULT_FREE_TEXT_LENGTH
    if len(reply.text) > limit:
        return Violation(
            ErrorCode.REPLY_NOT_ALLOWED, f"the reply is {len(reply.text)} characters; the message allows {limit}."
        )
    return None
