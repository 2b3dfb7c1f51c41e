"""Reading what is not yours: another sender's status and feed, with missing, forged or foreign tokens.

The world's hub holds a message of SOCIAL's and one of FINANCE's. Each attack gets its stable
code; a message of another sender looks exactly like one that does not exist (no existence leak);
nothing is written by any of them (the feed's sequencer numbers events, which adds no row).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from hub.envelope import examples as ex
from hub.inbound.soap import HUB_SOAP_NS
from tests.hostile.answers import Answer, rest, soap, soap_request
from tests.hostile.attacks import Attack, Door, attacks, params
from tests.hostile.stack import World, bearer, grown, provider, sender
from tests.kit import TOKENS

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


def status(world: World, message_id: str, headers: dict[str, str]) -> Answer:
    return rest(world.client.get(f"/v1/messages/{message_id}", headers=headers))


def soap_status(world: World, message_id: str, headers: dict[str, str]) -> Answer:
    entry = (
        f'<h:GetMessageStatus xmlns:h="{HUB_SOAP_NS}"><h:HubMessageId>{message_id}</h:HubMessageId>'
        "</h:GetMessageStatus>"
    ).encode()
    return soap(
        world.client.post("/soap", content=soap_request(entry), headers={"Content-Type": "text/xml", **headers})
    )


def feed(world: World, query: str, headers: dict[str, str]) -> Answer:
    return rest(world.client.get(f"/v1/acks{query}", headers=headers))


HOW: dict[str, Callable[[World], Answer]] = {
    "status/another-senders-message": lambda w: status(w, w.message_id, sender(ex.FINANCE)),
    "status/unknown-message": lambda w: status(w, UNKNOWN_ID, sender(ex.FINANCE)),
    "status/nul-in-the-id": lambda w: status(w, "%00", sender(ex.FINANCE)),
    "status/no-token": lambda w: status(w, w.message_id, {}),
    "status/unknown-token": lambda w: status(w, w.message_id, bearer("guessed-token")),
    "status/basic-auth": lambda w: status(w, w.message_id, {"Authorization": f"Basic {TOKENS[ex.SOCIAL]}"}),
    "status/provider-token": lambda w: status(w, w.message_id, provider("myebox")),
    "soap_status/another-senders-message": lambda w: soap_status(w, w.message_id, sender(ex.FINANCE)),
    "soap_status/no-token": lambda w: soap_status(w, w.message_id, {}),
    "soap_status/not-a-message-id": lambda w: soap_status(w, "%00", sender(ex.SOCIAL)),
    # FINANCE's feed holds its own message's events, never SOCIAL's; CITY has none at all
    "feed/another-senders-events": lambda w: feed(w, "?after=0", sender(ex.CITY)),
    "feed/asks-for-another-sender": lambda w: feed(
        w, f"?after=0&sender={ex.SOCIAL}&party={ex.SOCIAL}&institution={ex.SOCIAL}", sender(ex.CITY)
    ),
    "feed/no-token": lambda w: feed(w, "?after=0", {}),
    "feed/provider-token": lambda w: feed(w, "?after=0", provider("myebox")),
    "feed/negative-cursor": lambda w: feed(w, "?after=-1", sender(ex.SOCIAL)),
}

DOORS = (Door.STATUS, Door.SOAP_STATUS, Door.FEED)


@pytest.mark.parametrize("attack", params(*DOORS))
def test_nobody_reads_what_is_not_theirs(world: World, attack: Attack):
    before = world.footprint()
    answer = HOW[attack.id](world)
    answer.expect(attack.code, attack.status)
    assert grown(before, world.footprint()) == {}


def test_the_table_and_these_ways_are_the_same_list():
    assert set(HOW) == {a.id for a in attacks(*DOORS)}


def test_another_senders_message_is_answered_as_if_it_did_not_exist(world: World):
    # Given SOCIAL's message, which its owner reads
    assert status(world, world.message_id, sender(ex.SOCIAL)).status == 200
    # When FINANCE asks for it, and for an id nobody was given
    theirs = world.client.get(f"/v1/messages/{world.message_id}", headers=sender(ex.FINANCE))
    unknown = world.client.get(f"/v1/messages/{UNKNOWN_ID}", headers=sender(ex.FINANCE))
    # Then both answers are the same but for the id they quote
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.content.replace(world.message_id.encode(), UNKNOWN_ID.encode()) == unknown.content
    assert theirs.headers == unknown.headers
    # And over SOAP too
    soap_theirs = soap_status(world, world.message_id, sender(ex.FINANCE))
    soap_unknown = soap_status(world, UNKNOWN_ID, sender(ex.FINANCE))
    assert soap_theirs.body.replace(world.message_id.encode(), UNKNOWN_ID.encode()) == soap_unknown.body


def test_a_sender_reads_its_own_feed_and_only_its_own(world: World):
    # The control group: FINANCE's feed holds its own message's events, none of SOCIAL's message
    answer = world.client.get("/v1/acks?after=0", headers=sender(ex.FINANCE))
    assert answer.status_code == 200, answer.text
    assert world.finance_message_id.encode() in answer.content
    assert world.message_id.encode() not in answer.content
    # and SOCIAL's holds its own
    own = world.client.get("/v1/acks?after=0", headers=sender(ex.SOCIAL))
    assert own.status_code == 200 and world.message_id.encode() in own.content
    assert world.finance_message_id.encode() not in own.content
