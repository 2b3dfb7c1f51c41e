"""The forward-only state machine of deliveries and messages: tables, then properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.envelope.model import ReplyChoice, ReplyOptions
from hub.errors import ErrorCode, Rejected
from hub.outbound.acks import Event, Reply
from hub.outbound.states import (
    DELIVERY_RANK,
    MESSAGE_FINAL,
    MESSAGE_RANK,
    NOTICES,
    PROVIDER_EVENTS,
    DeliveryState,
    MessageState,
    Outcome,
    advance_delivery,
    may_reply,
    message_state,
    replay,
    reply_fits,
)

D = DeliveryState
M = MessageState

# --- advance_delivery: the whole table ------------------------------------------------------------
#
# One row per current state; one column per provider event. A cell is the new state and its
# effects ("delivered>opened" for moved), or "=" (repeat) or "late".

COLUMNS = ("delivered", "opened", "replied", "failed", "printed", "expired")
TABLE = {
    "pending": ("delivered", "delivered>opened", "delivered>opened>replied", "failed", "printed", "expired"),
    "failed": ("delivered", "delivered>opened", "delivered>opened>replied", "=", "printed", "expired"),
    "printed": ("delivered", "delivered>opened", "delivered>opened>replied", "late", "=", "late"),
    "delivered": ("=", "opened", "opened>replied", "late", "late", "late"),
    "opened": ("late", "=", "replied", "late", "late", "late"),
    "replied": ("late", "late", "=", "late", "late", "late"),
    "expired": ("late", "late", "late", "late", "late", "="),
}

CELLS = [(current, event, cell) for current, row in TABLE.items() for event, cell in zip(COLUMNS, row, strict=True)]


def test_the_table_covers_every_state_and_every_provider_event():
    assert set(TABLE) == {s.value for s in DeliveryState}
    assert set(COLUMNS) == {e.value for e in PROVIDER_EVENTS}


@pytest.mark.parametrize(("current", "event", "cell"), CELLS, ids=[f"{c}+{e}" for c, e, _ in CELLS])
def test_advance_delivery(current: str, event: str, cell: str):
    step = advance_delivery(current, Event(event))
    if cell == "=":
        assert (step.state, step.effects, step.outcome) == (current, (), Outcome.REPEAT)
        assert step.noop and not step.late
    elif cell == "late":
        assert (step.state, step.effects, step.outcome) == (current, (), Outcome.LATE)
        assert step.noop and step.late
    else:
        effects = tuple(Event(e) for e in cell.split(">"))
        assert step.outcome is Outcome.MOVED and not step.noop
        assert step.effects == effects
        assert step.state == event == effects[-1]  # an event that moves leads to its own state


@pytest.mark.parametrize("current", list(DeliveryState))
@pytest.mark.parametrize("notice", sorted(NOTICES))
def test_notices_move_nothing(current: DeliveryState, notice: Event):
    step = advance_delivery(current, notice)
    assert (step.state, step.effects, step.outcome) == (current, (), Outcome.NOTICE)


@pytest.mark.parametrize("current", list(DeliveryState))
@pytest.mark.parametrize("event", ["accepted", "routed", "rejected", "undeliverable", "read", ""])
def test_the_hubs_own_events_and_unknown_ones_are_refused_from_a_provider(current: DeliveryState, event: str):
    with pytest.raises(Rejected) as caught:
        advance_delivery(current, event)
    assert caught.value.code is ErrorCode.ACK_EVENT_NOT_ALLOWED
    assert repr(event) in caught.value.message


def test_an_unknown_delivery_state_is_a_bug_not_a_refusal():
    with pytest.raises(ValueError, match="unknown delivery state"):
        advance_delivery("lost", Event.DELIVERED)


def test_plain_strings_work_as_well_as_enums():
    assert advance_delivery("pending", "opened").state == "opened"
    assert isinstance(advance_delivery("pending", "opened").state, DeliveryState)


def test_replay_returns_every_step():
    final, steps = replay("pending", ["opened", "delivered", "failed", "replied", "replied"])
    assert final is D.REPLIED
    assert [s.outcome for s in steps] == [Outcome.MOVED, Outcome.LATE, Outcome.LATE, Outcome.MOVED, Outcome.REPEAT]
    assert [e for s in steps for e in s.effects] == [Event.DELIVERED, Event.OPENED, Event.REPLIED]


# --- message_state ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "deliveries", "expected"),
    [
        ("accepted", [], "accepted"),
        ("routed", [], "routed"),
        ("accepted", ["pending"], "routed"),
        ("routed", ["pending", "pending"], "routed"),
        ("routed", ["delivered", "pending"], "delivered"),
        ("routed", ["delivered", "opened", "failed"], "opened"),
        ("routed", ["replied", "delivered"], "replied"),
        ("routed", ["failed", "pending"], "routed"),
        ("routed", ["failed"], "failed"),
        ("routed", ["failed", "failed"], "failed"),
        ("routed", ["failed", "expired"], "expired"),
        ("routed", ["expired"], "expired"),
        ("routed", ["printed"], "printed"),
        ("routed", ["printed", "failed"], "printed"),
        ("routed", ["printed", "pending"], "printed"),
        ("routed", ["printed", "delivered"], "delivered"),
        # forward-only: never below the current state
        ("opened", ["delivered"], "opened"),
        ("replied", ["failed"], "replied"),
        ("delivered", ["pending"], "delivered"),
        ("printed", ["failed"], "printed"),
        # a failed message moves on when a delivery proves success after all
        ("failed", ["delivered", "failed"], "delivered"),
        ("failed", ["printed"], "printed"),
        # final states stay
        ("expired", ["opened"], "expired"),
        ("rejected", [], "rejected"),
        ("rejected", ["delivered"], "rejected"),
        ("undeliverable", ["printed"], "undeliverable"),
    ],
)
def test_message_state(current: str, deliveries: list[str], expected: str):
    assert message_state(current, deliveries) == expected
    assert message_state(current, iter(deliveries)) == expected  # any iterable


def test_message_state_refuses_unknown_states():
    with pytest.raises(ValueError, match="unknown message state"):
        message_state("lost", [])
    with pytest.raises(ValueError, match="unknown delivery state"):
        message_state("routed", ["lost"])


# --- replies ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "replies", "code"),
    [
        ("routed", 0, None),
        ("delivered", 0, None),
        ("opened", 0, None),
        ("failed", 0, None),
        ("printed", 0, None),
        ("opened", 1, ErrorCode.REPLY_ALREADY_GIVEN),
        ("replied", 0, ErrorCode.REPLY_ALREADY_GIVEN),
        ("replied", 1, ErrorCode.REPLY_ALREADY_GIVEN),
        ("accepted", 0, ErrorCode.REPLY_NOT_ALLOWED),
        ("undeliverable", 0, ErrorCode.REPLY_NOT_ALLOWED),
        ("expired", 0, ErrorCode.REPLY_NOT_ALLOWED),
        ("rejected", 0, ErrorCode.REPLY_NOT_ALLOWED),
        ("expired", 1, ErrorCode.REPLY_ALREADY_GIVEN),
    ],
)
def test_may_reply(state: str, replies: int, code: ErrorCode | None):
    violation = may_reply(state, replies)
    assert (None if violation is None else violation.code) is code
    if violation is not None:
        with pytest.raises(Rejected) as caught:
            raise Rejected.of([violation])
        assert caught.value.code is code


DEADLINE = datetime(2026, 12, 1, tzinfo=UTC)
CHOICES = ReplyOptions(choices=(ReplyChoice(id="accept", labels=()), ReplyChoice(id="contest", labels=())))
FREE = ReplyOptions(free_text_max_length=10, deadline=DEADLINE)


@pytest.mark.parametrize(
    ("options", "reply", "at", "fits"),
    [
        (CHOICES, Reply(choice_id="contest"), DEADLINE, True),
        (CHOICES, Reply(choice_id="maybe"), DEADLINE, False),
        (CHOICES, Reply(text="contest"), DEADLINE, False),
        (FREE, Reply(text="0123456789"), DEADLINE, True),
        (FREE, Reply(text="0123456789!"), DEADLINE, False),
        (FREE, Reply(choice_id="accept"), DEADLINE, False),
        (FREE, Reply(text="ok"), DEADLINE + timedelta(seconds=1), False),
        (ReplyOptions(), Reply(text="x" * 2000), DEADLINE, True),
        (ReplyOptions(), Reply(text="x" * 2001), DEADLINE, False),
        (None, Reply(choice_id="accept"), DEADLINE, False),
    ],
)
def test_reply_fits_what_the_envelope_asked(options: ReplyOptions | None, reply: Reply, at: datetime, fits: bool):
    violation = reply_fits(options, reply, at)
    assert (violation is None) is fits
    if violation is not None:
        assert violation.code is ErrorCode.REPLY_NOT_ALLOWED


# --- properties ---------------------------------------------------------------------------------

delivery_events = st.sampled_from(sorted(PROVIDER_EVENTS | NOTICES))
event_lists = st.lists(delivery_events, max_size=30)
delivery_states = st.sampled_from(list(DeliveryState))
message_states = st.sampled_from(list(MessageState))


@settings(max_examples=500)
@given(delivery_states, event_lists)
def test_a_delivery_never_moves_back_and_ends_at_the_highest_state_reached(start: DeliveryState, events: list[Event]):
    state, reached = start, [start]
    for event in events:
        step = advance_delivery(state, event)
        assert DELIVERY_RANK[step.state] >= DELIVERY_RANK[state]
        assert (step.state != state) is (step.outcome is Outcome.MOVED)
        if state is D.EXPIRED:
            assert step.state is D.EXPIRED
        state = step.state
        reached.append(state)
    assert DELIVERY_RANK[state] == max(DELIVERY_RANK[s] for s in reached)
    assert state is max(reached, key=DELIVERY_RANK.__getitem__)


@settings(max_examples=500)
@given(delivery_states, event_lists)
def test_applying_the_same_events_again_changes_nothing(start: DeliveryState, events: list[Event]):
    once, _ = replay(start, events)
    twice, steps = replay(once, events)
    assert twice is once
    assert all(step.noop and not step.effects for step in steps)


@settings(max_examples=500)
@given(event_lists)
def test_opened_always_comes_after_delivered(events: list[Event]):
    state, steps = replay(D.PENDING, events)
    effects = [e for step in steps for e in step.effects]
    assert len(effects) == len(set(effects))  # each event takes effect once at most
    for later, earlier in ((Event.OPENED, Event.DELIVERED), (Event.REPLIED, Event.OPENED)):
        if later in effects:
            assert earlier in effects[: effects.index(later)]
    if state in (D.OPENED, D.REPLIED):
        assert Event.DELIVERED in effects and Event.OPENED in effects
    if state is D.DELIVERED:
        assert Event.DELIVERED in effects


@settings(max_examples=500)
@given(delivery_states, event_lists)
def test_the_last_moving_event_names_the_state(start: DeliveryState, events: list[Event]):
    state, steps = replay(start, events)
    moved = [step for step in steps if step.outcome is Outcome.MOVED]
    if moved:
        assert moved[-1].effects[-1].value == state.value
    else:
        assert state is start


@settings(max_examples=500)
@given(message_states, st.lists(delivery_states, max_size=6))
def test_a_message_never_moves_back_and_final_states_stay(current: MessageState, deliveries: list[DeliveryState]):
    result = message_state(current, deliveries)
    assert MESSAGE_RANK[result] >= MESSAGE_RANK[current]
    if current in MESSAGE_FINAL:
        assert result is current
    assert message_state(result, deliveries) is result  # idempotent
    if result is M.FAILED:
        assert (deliveries and all(d is D.FAILED for d in deliveries)) or current is M.FAILED
    if any(d in (D.DELIVERED, D.OPENED, D.REPLIED) for d in deliveries) and current not in MESSAGE_FINAL:
        assert MESSAGE_RANK[result] >= MESSAGE_RANK[M.DELIVERED]


@settings(max_examples=300)
@given(
    st.integers(min_value=1, max_value=4).flatmap(
        lambda n: st.tuples(st.just(n), st.lists(st.tuples(st.integers(0, n - 1), delivery_events), max_size=25))
    )
)
def test_a_message_follows_its_deliveries_forward_whatever_the_interleaving(
    case: tuple[int, list[tuple[int, Event]]],
):
    count, events = case
    deliveries = [D.PENDING] * count
    state = message_state(M.ROUTED, deliveries)
    for index, event in events:
        deliveries[index] = advance_delivery(deliveries[index], event).state
        new = message_state(state, deliveries)
        assert MESSAGE_RANK[new] >= MESSAGE_RANK[state]
        state = new
    best = max(deliveries, key=DELIVERY_RANK.__getitem__)
    if best in (D.DELIVERED, D.OPENED, D.REPLIED) and state not in MESSAGE_FINAL:
        assert state.value == best.value
