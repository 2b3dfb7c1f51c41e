"""The list of attacks itself: every door has its attacks and a module that carries them out."""

from __future__ import annotations

from tests.hostile import (
    test_amqp,
    test_configuration,
    test_http_doors,
    test_providers,
    test_reading,
    test_server,
)
from tests.hostile.attacks import ATTACKS, KNOWN_BUGS, SUBMISSION_DOORS, SUBMISSIONS, Door, Leaves, attacks, render

WAYS = {
    **{a.id: test_http_doors for a in attacks(*test_http_doors.SEND)},
    **{a.id: test_reading for a in attacks(*test_reading.DOORS)},
    **{a.id: test_providers for a in attacks(*test_providers.DOORS)},
    **{a.id: test_amqp for a in attacks(Door.AMQP, Door.AMQP_ACKS)},
    **{a.id: test_server for a in attacks(Door.SERVER)},
    **{a.id: test_configuration for a in attacks(Door.CONFIG)},
}
"""Which module carries out each attack (each module checks that it has a way for each of its own)."""


def test_every_attack_is_carried_out_by_one_module():
    ids = [attack.id for attack in ATTACKS]
    assert len(ids) == len(set(ids)), "attack ids must be unique"
    assert set(WAYS) == set(ids)
    assert {attack.door for attack in ATTACKS} == set(Door)
    assert set(KNOWN_BUGS) <= set(ids)


def test_every_door_that_takes_an_envelope_meets_every_hostile_envelope_with_one_code():
    for name, code, *_ in SUBMISSIONS:
        found = [a for a in ATTACKS if a.name == name]
        assert {a.door for a in found} == set(SUBMISSION_DOORS), name
        assert {a.code for a in found} == {code}, name  # SOAP carries the REST door's code in its fault


def test_what_an_attack_may_leave_is_the_count_of_a_known_senders_refusal_or_nothing():
    counted = {a.name for a in ATTACKS if a.leaves is Leaves.COUNTED}
    assert counted == {
        "same-id-other-content",
        "integrator-without-mandate",
        "institution-for-another",
        "wrong-environment",
        "message-type-not-allowed",
        "application-not-registered",
    }
    # Forged, unsigned or unreadable input is not even counted
    assert all(a.leaves is Leaves.NOTHING for a in ATTACKS if a.code in (None, *_UNIDENTIFIED))


_UNIDENTIFIED = {a.code for a in ATTACKS if a.name in ("signed-by-another-sender", "unregistered-signer", "xxe")}


def test_the_table_prints_one_line_per_attack():
    lines = render().splitlines()
    assert len(lines) == len(ATTACKS) + 1
    assert lines[1].split()[-1] == "nothing" and "DUPLICATE_MESSAGE_ID" in lines[2]
