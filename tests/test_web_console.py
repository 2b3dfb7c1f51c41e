"""The operator console (/web/console): dashboard, message search, dead letters, routing, providers, statistics.

On SQLite and PostgreSQL (and, for the dead letters, on the in-process broker and RabbitMQ), through
the real sign-in form: only operators get in; searches never offer nor show a national number; a
replayed dead letter leaves hub.dead and is back on its queue, and without the CSRF token nothing
happens; "try an envelope" shows what ``hub routes explain`` shows, and refuses hostile input on the
page; the statistics CSV is the CLI's; every action is in the audit trail, without personal data.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import insert, select
from starlette.testclient import TestClient

from hub.broker.deadletters import DeadLetters
from hub.cli import cli
from hub.envelope import examples as ex
from hub.lifecycle.stats_cli import stats_group
from hub.routing.directory import Change, Directory
from hub.routing.recipients import RecipientKind
from hub.runtime import Runtime
from hub.store.models import AuditEntry, Delivery, Event, Message
from hub.web import i18n
from tests import test_broker
from tests.kit import NOW, example, keyring, unsigned
from tests.test_broker import declared, drain
from tests.test_deadletters import bury
from tests.test_stats import load_fixture
from tests.web_kit import WebClock, csrf_of, make_accounts, sign_in, web_client, web_hub

broker = test_broker.broker  # the shared fixtures: a broker URL with none of the hub's queues left over
rabbitmq_vhost = test_broker.rabbitmq_vhost

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config"
CITIZEN = ex.CITIZEN_A
"""A national number: it must never appear on a console page."""
TEMPLATES = Path(__file__).resolve().parent.parent / "hub" / "web" / "templates" / "console"
CONSOLE_PAGES = [
    "/web/console",
    "/web/console/live.json",
    "/web/console/messages",
    "/web/console/messages/00000000-0000-4000-8000-000000000000",
    "/web/console/dead-letters",
    "/web/console/routing",
    "/web/console/providers",
    "/web/console/stats?month=2026-10",
    "/web/console/stats.csv?month=2026-10",
]


def write_config(runtime, *names: str) -> Path:
    folder = Path(runtime.settings.config_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(REPO_CONFIG / name, folder / name)
    return folder


def open_site(tmp_path, database_url, **env):
    runtime = web_hub(tmp_path, database_url, **env)
    write_config(runtime, "providers.yaml", "routing.yaml")
    secrets = make_accounts(runtime)
    client, clock = web_client(runtime)
    return runtime, client, clock, secrets


@dataclass
class Site:
    runtime: Runtime
    client: TestClient
    clock: WebClock
    secrets: dict[str, str]


@pytest.fixture()
def site(tmp_path, database_url):
    runtime, client, clock, secrets = open_site(tmp_path, database_url)
    with client:
        yield Site(runtime, client, clock, secrets)
    runtime.close()


@pytest.fixture()
def ops(site):
    """The site with the operator signed in."""
    assert sign_in(site.client, site.clock, site.secrets, "ops").status_code == 303
    return site


def submit(client, kind: str) -> str:
    answer = client.post(
        "/v1/messages", content=keyring().sign(example(kind)), headers={"Content-Type": "application/xml"}
    )
    assert answer.status_code == 201, answer.text
    return answer.headers["location"].rsplit("/", 1)[-1]


def audit(runtime, action: str) -> list[AuditEntry]:
    with runtime.sessions() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))


def no_national_number(text: str) -> None:
    for number in (ex.CITIZEN_A, ex.CITIZEN_B, ex.CITIZEN_C):
        assert number not in text and number not in re.sub(r"[\s.-]", "", text)


# -- who may come in -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", CONSOLE_PAGES)
def test_an_institution_user_gets_403_on_every_console_page(site, path):
    client, clock, secrets = site.client, site.clock, site.secrets
    assert sign_in(client, clock, secrets, "tax.user").status_code == 303
    answer = client.get(path, follow_redirects=False)
    assert answer.status_code == 403 and "NOT_AUTHORISED" in answer.text


def test_an_institution_user_cannot_replay_nor_try_either(site):
    runtime, client, clock, secrets = site.runtime, site.client, site.clock, site.secrets
    sign_in(client, clock, secrets, "tax.user")
    token = csrf_of(client.get("/web/messages").text)
    for path, data in (
        ("/web/console/dead-letters/replay", {"all": "1"}),
        ("/web/console/routing/try", {"envelope": unsigned().decode()}),
    ):
        answer = client.post(path, data={"csrf": token, **data}, follow_redirects=False)
        assert answer.status_code == 403 and "NOT_AUTHORISED" in answer.text
    assert audit(runtime, "web-routing-try") == [] and audit(runtime, "web-dlq-replay") == []


def test_without_a_session_the_console_sends_to_sign_in(site):
    client = site.client
    answer = client.get("/web/console/messages", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/web/signin")


# -- the dashboard -------------------------------------------------------------------------------------------


def test_the_dashboard_counts_the_last_minute_and_hour_the_backlog_and_the_deliveries(ops):
    runtime, client = ops.runtime, ops.client
    ids = [submit(client, kind) for kind in ("citizen-letter", "payment", "registered")]  # accepted at NOW
    moment = NOW + timedelta(minutes=10)
    client.app.state.web.clock = lambda: moment
    old = moment - timedelta(hours=3)
    with runtime.sessions.begin() as session:
        session.execute(
            insert(Event),
            [
                {
                    "message_id": ids[0],
                    "kind": "routed",
                    "occurred_at": moment - timedelta(seconds=20),
                    "source": "hub",
                },
                {
                    "message_id": ids[1],
                    "kind": "routed",
                    "occurred_at": moment - timedelta(minutes=30),
                    "source": "hub",
                },
                {
                    "message_id": ids[0],
                    "kind": "delivered",
                    "occurred_at": moment - timedelta(seconds=5),
                    "source": "myebox",
                    "provider": "myebox",
                },
                {"message_id": ids[0], "kind": "opened", "occurred_at": old, "source": "myebox", "provider": "myebox"},
            ],
        )
        session.execute(
            insert(Delivery),
            [
                {
                    "id": f"{ids[0]}:myebox",
                    "message_id": ids[0],
                    "provider": "myebox",
                    "state": "delivered",
                    "priority": 4,
                    "created_at": moment,
                    "updated_at": moment,
                },
                {
                    "id": f"{ids[1]}:doccle",
                    "message_id": ids[1],
                    "provider": "doccle",
                    "state": "pending",
                    "priority": 4,
                    "created_at": moment,
                    "updated_at": moment,
                },
            ],
        )
    live = client.get("/web/console/live.json")
    assert live.status_code == 200 and live.headers["content-type"].startswith("application/json")
    figures = live.json()
    assert (figures["accepted.minute"], figures["accepted.hour"]) == (0, 3)
    assert (figures["routed.minute"], figures["routed.hour"]) == (1, 2)
    assert (figures["delivered.minute"], figures["delivered.hour"]) == (1, 1)
    assert (figures["opened.minute"], figures["opened.hour"]) == (0, 0)  # three hours ago
    assert (figures["outbox.ready"], figures["outbox.held"]) == (3, 0)  # each accepted message's row to hub.route
    assert (figures["deliveries.delivered"], figures["deliveries.pending"], figures["deliveries.total"]) == (1, 1, 2)

    page = client.get("/web/console")
    assert page.status_code == 200
    assert 'data-live="/web/console/live.json"' in page.text
    keys = set(re.findall(r'data-key="([^"]+)"', page.text))
    assert keys and keys <= set(figures), keys - set(figures)  # every figure on the page is refreshed
    assert "memory://" in page.text and "not available" in page.text  # queue depths: in-process broker


def test_the_last_hour_is_found_among_many_events_without_reading_them_all(ops):
    runtime, client = ops.runtime, ops.client
    ident = submit(client, "citizen-letter")
    moment = NOW + timedelta(days=1)
    client.app.state.web.clock = lambda: moment
    times = [moment - timedelta(minutes=5 * k) for k in range(200, -1, -1)]  # written in time order, oldest first
    with runtime.sessions.begin() as session:
        session.execute(
            insert(Event), [{"message_id": ident, "kind": "routed", "occurred_at": t, "source": "hub"} for t in times]
        )
    figures = client.get("/web/console/live.json").json()
    assert (figures["routed.minute"], figures["routed.hour"]) == (1, 13)  # now, and every 5 minutes back to 60


def test_the_dashboard_of_an_empty_hub(ops):
    client = ops.client
    figures = client.get("/web/console/live.json").json()
    assert figures["accepted.hour"] == 0 and figures["outbox.ready"] == 0 and figures["deliveries.total"] == 0
    assert "No deliveries yet." in client.get("/web/console").text


# -- messages ------------------------------------------------------------------------------------------------


def rows_of(page: str) -> list[str]:
    return re.findall(r'href="/web/console/messages/([0-9a-f-]{36})"', page)


def test_search_finds_by_each_key_and_never_shows_the_national_number(ops):
    runtime, client = ops.runtime, ops.client
    letter, payment, pension = (submit(client, kind) for kind in ("citizen-letter", "payment", "citizen-pdf"))
    with runtime.sessions() as session:
        smid = session.get(Message, payment).sender_message_id
        pension_sender = session.get(Message, pension).institution_id
        session.query(Message).filter(Message.id == letter).update({"state": "opened"})
        session.commit()

    everything = client.get("/web/console/messages")
    assert everything.status_code == 200
    assert rows_of(everything.text) == sorted([letter, payment, pension], key=rows_of(everything.text).index)
    assert set(rows_of(everything.text)) == {letter, payment, pension}
    assert rows_of(client.get(f"/web/console/messages?id={payment}").text) == [payment]
    assert rows_of(client.get(f"/web/console/messages?id={payment.upper()}").text) == [payment]
    assert rows_of(client.get("/web/console/messages", params={"sender_message_id": smid}).text) == [payment]
    by_sender = client.get("/web/console/messages", params={"sender": pension_sender}).text
    assert rows_of(by_sender) == [pension]
    assert set(rows_of(client.get("/web/console/messages", params={"sender": ex.FINANCE}).text)) == {letter, payment}
    assert rows_of(client.get("/web/console/messages?state=opened").text) == [letter]
    assert set(rows_of(client.get("/web/console/messages?state=accepted").text)) == {payment, pension}
    assert rows_of(client.get(f"/web/console/messages?state=opened&sender={ex.FINANCE}").text) == [letter]
    assert rows_of(client.get(f"/web/console/messages?sender={pension_sender}&id={payment}").text) == []

    for page in (everything.text, by_sender):
        no_national_number(page)
    assert CITIZEN[:2] + "*******" + CITIZEN[-2:] in everything.text  # masked
    # No search by national number: the form has no such field, and the parameter is ignored.
    assert 'name="recipient' not in everything.text and "SSIN" not in everything.text
    sneaky = client.get(
        "/web/console/messages", params={"recipient_id": CITIZEN, "recipient": CITIZEN, "ssin": CITIZEN}
    )
    assert set(rows_of(sneaky.text)) == {letter, payment, pension}
    no_national_number(sneaky.text)
    for entry in audit(runtime, "web-console-search"):
        no_national_number(entry.detail)
    searched = [json.loads(e.detail) for e in audit(runtime, "web-console-search")]
    assert {"by": ["sender"], "results": 1, "page": 1, "sender": pension_sender, "door": "web"} in searched
    assert any(e.message_id == payment for e in audit(runtime, "web-console-search"))


def test_search_pages_newest_first_and_refuses_bad_keys(ops):
    runtime, client = ops.runtime, ops.client
    first = submit(client, "citizen-letter")
    runtime.intake.clock = lambda: NOW + timedelta(minutes=1)
    second = submit(client, "payment")
    one = client.get("/web/console/messages?size=1")
    assert rows_of(one.text) == [second] and 'rel="next"' in one.text and 'rel="prev"' not in one.text
    two = client.get("/web/console/messages?size=1&page=2")
    assert rows_of(two.text) == [first] and 'rel="next"' not in two.text and 'rel="prev"' in two.text
    assert len(rows_of(client.get("/web/console/messages?size=1000").text)) == 2  # at most 100 a page
    for query, field in (
        ("id=12345", "search-id-error"),
        ("sender=12", "search-sender-error"),
        ("state=nonsense", "search-state-error"),
        ("id=%00", "search-id-error"),
    ):
        bad = client.get(f"/web/console/messages?{query}")
        assert bad.status_code == 400 and f'id="{field}"' in bad.text and rows_of(bad.text) == []


def test_one_message_shows_its_metadata_deliveries_and_journey(ops):
    runtime, client = ops.runtime, ops.client
    ident = submit(client, "citizen-letter")
    with runtime.sessions.begin() as session:
        session.execute(
            insert(Event),
            [
                {
                    "message_id": ident,
                    "kind": "routed",
                    "occurred_at": NOW,
                    "source": "hub",
                    "detail": json.dumps({"rule": "default", "providers": ["myebox"], "note": f"for {CITIZEN}"}),
                },
                {
                    "message_id": ident,
                    "kind": "replied",
                    "occurred_at": NOW,
                    "source": "myebox",
                    "provider": "myebox",
                    "detail": json.dumps({"ack_id": "a-1", "reply": {"text": "my private answer"}}),
                },
            ],
        )
        session.execute(
            insert(Delivery),
            [
                {
                    "id": f"{ident}:myebox",
                    "message_id": ident,
                    "provider": "myebox",
                    "state": "replied",
                    "priority": 4,
                    "created_at": NOW,
                    "updated_at": NOW,
                }
            ],
        )
    page = client.get(f"/web/console/messages/{ident}")
    assert page.status_code == 200
    for expected in (ident, ex.FINANCE, "LETTER-2026-000001", "GENERAL_INFORMATION", "myebox", "default", "a-1"):
        assert expected in page.text, expected
    assert '<li class="done">accepted' in page.text and '<li class="done">routed' in page.text
    assert "my private answer" not in page.text  # a recipient's reply is not the operator's to read
    no_national_number(page.text)
    assert [e.message_id for e in audit(runtime, "web-console-message")] == [ident]


@pytest.mark.parametrize("ident", ["not-a-hub-id", "00000000-0000-4000-8000-000000000000", "1%27%20OR%201=1"])
def test_an_id_that_is_not_a_message_of_the_hub_is_a_404_page(ops, ident):
    client = ops.client
    page = client.get(f"/web/console/messages/{ident}")
    assert page.status_code == 404 and "MESSAGE_NOT_FOUND" in page.text and "<html" in page.text


def eventually(read, patience: float = 5.0):
    """What ``read`` returns once it is something: on RabbitMQ, a dead letter browsed (held unacked) by the
    page just before is back in the queue a moment after that connection closed."""
    deadline = time.monotonic() + patience
    while not (value := read()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


# -- dead letters --------------------------------------------------------------------------------------------


@pytest.fixture()
def dlq_site(tmp_path, database_url, broker):
    runtime, client, clock, secrets = open_site(tmp_path, database_url, HUB_BROKER_URL=broker)
    declared(broker)
    with client:
        assert sign_in(client, clock, secrets, "ops").status_code == 303
        yield runtime, client, broker
    runtime.close()


def test_a_replayed_dead_letter_leaves_the_queue_and_is_back_on_its_own(dlq_site):
    runtime, client, url = dlq_site
    ident = bury(url, "poison-1", hub_message_id="hm-1")
    page = client.get("/web/console/dead-letters")
    assert page.status_code == 200
    for expected in (ident, "hub.routing", "SERVICE_UNAVAILABLE", "poison-1", "1 dead letter(s)"):
        assert expected in page.text, expected

    refused = client.post("/web/console/dead-letters/replay", data={"id": ident}, follow_redirects=False)
    assert refused.status_code == 403 and "CSRF_INVALID" in refused.text
    forged = client.post("/web/console/dead-letters/replay", data={"id": ident, "csrf": "x" * 43})
    assert forged.status_code == 403 and "CSRF_INVALID" in forged.text
    assert eventually(DeadLetters(url).count) == 1 and audit(runtime, "web-dlq-replay") == []  # nothing changed

    answer = client.post("/web/console/dead-letters/replay", data={"id": ident, "csrf": csrf_of(page.text)})
    assert answer.status_code == 200 and "Replayed: 1. Left in the dead-letter queue: 0." in answer.text
    assert "No dead letters" in answer.text
    assert DeadLetters(url).count() == 0
    [back] = drain(url, "hub.routing", expect=1)
    assert back.properties["message_id"] == "poison-1" and back.headers["hub_message_id"] == "hm-1"
    [entry] = audit(runtime, "web-dlq-replay")
    detail = json.loads(entry.detail)
    assert detail["replayed"] == [ident] and detail["replayed_count"] == 1 and detail["queues"] == ["hub.routing"]
    assert entry.actor == "web:ops"


def test_replay_all_and_what_cannot_be_replayed(dlq_site):
    runtime, client, url = dlq_site
    bury(url, "a-1")
    bury(url, "a-2", queue="hub.acks")
    orphan = bury(url, "no-queue", queue=None)
    page = client.get("/web/console/dead-letters")
    assert "3 dead letter(s)" in page.text
    token = csrf_of(page.text)
    gone = client.post("/web/console/dead-letters/replay", data={"id": "ffffffffffff", "csrf": token})
    assert gone.status_code == 404 and "no longer in the queue" in gone.text
    answer = client.post("/web/console/dead-letters/replay", data={"all": "1", "csrf": token})
    assert "Replayed: 2. Left in the dead-letter queue: 1." in answer.text
    assert eventually(lambda: [letter.id for letter in DeadLetters(url).list()]) == [orphan]
    assert len(drain(url, "hub.routing", expect=1)) == 1 and len(drain(url, "hub.acks", expect=1)) == 1
    details = [json.loads(e.detail) for e in audit(runtime, "web-dlq-replay")]
    assert details[-1]["replayed_count"] == 2 and details[-1]["kept"] == [orphan]
    assert client.post("/web/console/dead-letters/replay", data={"csrf": token}).status_code == 400


def test_the_dashboard_shows_rabbitmq_queue_depths(dlq_site):
    _, client, url = dlq_site
    if url.startswith("memory:"):
        assert "not available" in client.get("/web/console").text
        return
    bury(url, "depth-1")
    page = client.get("/web/console")
    assert 'data-key="queue.hub.dead.ready">1<' in page.text
    assert client.get("/web/console/live.json").json()["queue.hub.dead.ready"] == 1
    providers = client.get("/web/console/providers").text
    assert "0 waiting, 0 consumer(s)" in providers  # provider.myebox, declared by the test broker's topology


def test_dead_letters_before_the_topology_exists_say_so(site):
    client, clock, secrets = site.client, site.clock, site.secrets
    sign_in(client, clock, secrets, "ops")
    page = client.get("/web/console/dead-letters")
    assert page.status_code == 200 and "hub broker declare" in page.text


# -- routing ------------------------------------------------------------------------------------------------


def link(runtime, *providers: str) -> None:
    at = NOW - timedelta(days=30)
    directory = Directory(runtime.sessions)
    changes = [Change(op="activate", kind=RecipientKind.CITIZEN, id=CITIZEN, at=at, provider=providers[0])]
    changes += [Change(op="link", kind=RecipientKind.CITIZEN, id=CITIZEN, at=at, provider=p) for p in providers]
    directory.apply(changes)


def try_envelope(client, envelope: str | bytes, **extra):
    page = client.get("/web/console/routing")
    text = envelope.decode() if isinstance(envelope, bytes) else envelope
    return client.post("/web/console/routing/try", data={"csrf": csrf_of(page.text), "envelope": text, **extra})


def test_the_routing_page_shows_the_rules_in_order(ops):
    client = ops.client
    page = client.get("/web/console/routing")
    assert page.status_code == 200
    names = re.findall(r'<th scope="row">([a-z-]+)', page.text)
    assert names == ["registered-mail", "enterprises", "city-information-requests", "default"]
    assert "every message" in page.text and "hub routes check finds no problem." in page.text
    assert "message type: INFORMATION_*" in page.text and "undeliverable (the sender is told)" in page.text


def test_try_an_envelope_shows_what_hub_routes_explain_shows(ops, database_url):
    runtime, client = ops.runtime, ops.client
    link(runtime, "myebox", "doccle")
    answer = try_envelope(client, unsigned(), at=NOW.isoformat())
    assert answer.status_code == 200, answer.text
    chosen = re.search(r'<ul class="chosen">(.*?)</ul>', answer.text, re.S).group(1)
    assert re.findall(r"<strong>(\w+)</strong>", chosen) == ["doccle", "myebox"]
    shown = html.unescape(re.search(r"<pre>(.*?)</pre>", answer.text, re.S).group(1))

    envelope = Path(runtime.settings.data_dir) / "letter.xml"
    envelope.parent.mkdir(parents=True, exist_ok=True)
    envelope.write_bytes(unsigned())
    env = {
        "HUB_CONFIG_DIR": str(runtime.settings.config_dir),
        "HUB_DATABASE_URL": database_url,
        "HUB_DATA_DIR": str(runtime.settings.data_dir),
    }
    result = CliRunner().invoke(cli, ["routes", "explain", str(envelope), "--at", NOW.isoformat()], env=env)
    assert result.exit_code == 0, result.output
    assert shown == result.stdout.rstrip("\n")
    no_national_number(re.sub(r"<textarea.*?</textarea>", "", answer.text, flags=re.S))  # only as pasted
    [entry] = audit(runtime, "web-routing-try")
    assert json.loads(entry.detail) == {
        "door": "web",
        "bytes": len(unsigned()),
        "outcome": "deliver",
        "rule": "default",
        "providers": ["doccle", "myebox"],
    }


def test_try_an_unknown_recipient_falls_back_to_paper(ops):
    client = ops.client
    answer = try_envelope(client, unsigned())
    assert answer.status_code == 200
    assert "unknown to the directory" in answer.text and "<strong>paper</strong>" in answer.text


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<PublishMessage xmlns="urn:ebox-hub:envelope:1">&lol3;</PublishMessage>"""


@pytest.mark.parametrize(
    ("envelope", "code"),
    [
        ("<PublishMessage><Header>", "XML_MALFORMED"),
        ("not xml at all", "XML_MALFORMED"),
        (BILLION_LAUGHS, "XML_FORBIDDEN"),
        ('<?xml version="1.0"?><!DOCTYPE x SYSTEM "file:///etc/passwd"><x/>', "XML_FORBIDDEN"),
        ("<a>" * 100 + "</a>" * 100, "TOO_LARGE"),
        ('<PublishMessage xmlns="urn:ebox-hub:envelope:1"/>', "SCHEMA_INVALID"),
        ("<x>" + "A" * (1024 * 1024) + "</x>", "TOO_LARGE"),
        ("   ", "XML_MALFORMED"),
    ],
    ids=["truncated", "text", "billion-laughs", "external-entity", "deep", "schema", "oversized", "empty"],
)
def test_try_refuses_malformed_hostile_and_oversized_input_on_the_page(ops, envelope, code):
    runtime, client = ops.runtime, ops.client
    answer = try_envelope(client, envelope)
    assert answer.status_code in (400, 422), answer.status_code
    assert '<div class="error" role="alert">' in answer.text and f'<strong class="code">{code}</strong>' in answer.text
    assert 'id="envelope"' in answer.text  # the page, with its form, not an error page
    if code != "XML_MALFORMED" or envelope.strip():
        assert json.loads(audit(runtime, "web-routing-try")[-1].detail)["refused"] == code


def test_try_refuses_a_form_beyond_its_limit_and_a_bad_moment(ops):
    client = ops.client
    huge = try_envelope(client, "<x>" + "A" * (4 * 1024 * 1024) + "</x>")
    assert huge.status_code == 413 and "TOO_LARGE" in huge.text
    bad_at = try_envelope(client, unsigned(), at="next tuesday")
    assert bad_at.status_code == 400 and "not an ISO 8601 date-time" in bad_at.text
    assert try_envelope(client, unsigned(), at="0001-01-01T00:00:00Z").status_code == 400
    no_token = client.post("/web/console/routing/try", data={"envelope": unsigned().decode()})
    assert no_token.status_code == 403 and "CSRF_INVALID" in no_token.text


def test_missing_routing_and_provider_files_are_said_plainly(ops):
    runtime, client = ops.runtime, ops.client
    (Path(runtime.settings.config_dir) / "routing.yaml").unlink()
    page = client.get("/web/console/routing")
    assert page.status_code == 200 and "routing.yaml does not exist" in page.text
    assert "cannot be read" in try_envelope(client, unsigned()).text
    (Path(runtime.settings.config_dir) / "providers.yaml").write_text("providers:\n  - {id: x}\n")
    broken = client.get("/web/console/providers")
    assert broken.status_code == 200 and "cannot be used as it is" in broken.text and "providers.yaml:2" in broken.text
    (Path(runtime.settings.config_dir) / "providers.yaml").unlink()
    assert "providers.yaml does not exist" in client.get("/web/console/providers").text
    assert "providers.yaml does not exist" in client.get("/web/console/routing").text


# -- providers ----------------------------------------------------------------------------------------------


def test_providers_show_capabilities_maintenance_and_deliveries_by_state(ops):
    runtime, client = ops.runtime, ops.client
    ident = submit(client, "citizen-letter")
    with runtime.sessions.begin() as session:
        session.execute(
            insert(Delivery),
            [
                {
                    "id": f"{ident}:{p}",
                    "message_id": ident,
                    "provider": p,
                    "state": s,
                    "priority": 4,
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for p, s in (("myebox", "delivered"), ("doccle", "pending"), ("retired", "failed"))
            ],
        )
    client.app.state.web.clock = lambda: datetime(2026, 12, 24, 22, 0, tzinfo=UTC)
    page = client.get("/web/console/providers")
    assert page.status_code == 200
    for expected in (
        "myebox",
        "My eBox portal",
        "eidas_high, payments, registered, replies",
        "provider.irisbox",
        "2026-12-24 20:00:00 UTC – 2026-12-25 06:00:00 UTC",
        "in maintenance until 2026-12-25 06:00:00 UTC",
        "not in providers.yaml",
    ):
        assert expected in page.text, expected
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r'<th scope="row">(\w+)[^<]*(?:<span[^>]*>[^<]*</span>)?</th>(.*?)</tr>', page.text, re.S)
    }
    cells = {name: re.findall(r"<td>(\d+)</td>", rest) for name, rest in rows.items()}
    # columns: pending, failed, delivered, total (delivery states in their order, those present only)
    assert cells["myebox"] == ["0", "0", "1", "1"] and cells["doccle"] == ["1", "0", "0", "1"]
    assert cells["retired"] == ["0", "1", "0", "1"]
    client.app.state.web.clock = lambda: datetime(2026, 12, 26, tzinfo=UTC)
    assert "in maintenance until" not in client.get("/web/console/providers").text


# -- statistics ---------------------------------------------------------------------------------------------


def test_stats_are_charts_with_their_numbers_and_the_csv_is_the_clis(ops, database_url):
    runtime, client = ops.runtime, ops.client
    load_fixture(database_url)
    page = client.get("/web/console/stats?month=2026-10")
    assert page.status_code == 200
    svgs = re.findall(r"<svg .*?</svg>", page.text, re.S)
    assert len(svgs) == 1 + 2  # the overview, FIN and SOC (the city only had an envelope refused)
    assert "Nothing sent this month (refusals only)." in page.text
    for svg in svgs:
        ident = re.search(r'aria-labelledby="([\w-]+)-title \1-desc"', svg).group(1)
        assert f'<title id="{ident}-title">' in svg and f'<desc id="{ident}-desc">' in svg and 'role="img"' in svg
    assert "<title>TAX_ASSESSMENT, sent: 4</title>" in page.text
    fin = re.search(rf'<section aria-labelledby="inst-{ex.FINANCE}">(.*?)</section>', page.text, re.S).group(1)
    total = re.search(r'<th scope="row">Total</th>(.*?)</tr>', fin, re.S).group(1)
    assert re.findall(r"<td>([^<]*)</td>", total) == ["9", "4", "5", "4", "80.0%", "3h 00m", "1", "2", "1", "1"]
    assert "https://" not in page.text.split("</header>", 1)[1] and "<script" not in page.text.split("</head>", 1)[1]

    csv = client.get("/web/console/stats.csv?month=2026-10")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert 'filename="hub-stats-2026-10.csv"' in csv.headers["content-disposition"]
    env = {
        "HUB_CONFIG_DIR": str(runtime.settings.config_dir),
        "HUB_DATABASE_URL": database_url,
        "HUB_DATA_DIR": str(runtime.settings.data_dir),
    }
    cli_csv = CliRunner().invoke(
        stats_group, ["--month", "2026-10", "--format", "csv"], env=env, catch_exceptions=False
    )
    assert cli_csv.exit_code == 0 and csv.text == cli_csv.stdout
    [entry] = audit(runtime, "web-stats-csv")
    assert json.loads(entry.detail)["month"] == "2026-10" and json.loads(entry.detail)["institutions"] == 3

    french = client.get("/web/lang/fr?next=/web/console/stats?month=2026-10", follow_redirects=True)
    assert "80,0 %" in client.get("/web/console/stats?month=2026-10").text and french.status_code == 200


def test_stats_of_a_quiet_month_and_a_bad_month(ops):
    client = ops.client
    quiet = client.get("/web/console/stats?month=2026-07")
    assert quiet.status_code == 200 and "No message accepted and no envelope refused in 2026-07" in quiet.text
    assert "<svg" not in quiet.text
    bad = client.get("/web/console/stats?month=July")
    assert bad.status_code == 400 and "is not a month" in bad.text
    assert client.get("/web/console/stats.csv?month=2026-13").status_code == 400
    default = client.get("/web/console/stats")  # last month
    assert default.status_code == 200 and 'type="month"' in default.text


# -- languages ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "title"), [("en", "Dead letters"), ("fr", "Lettres mortes"), ("nl", "Onbestelbare berichten")]
)
def test_the_console_speaks_the_chosen_language(ops, lang, title):
    client = ops.client
    page = client.get(f"/web/lang/{lang}?next=/web/console/dead-letters", follow_redirects=True)
    assert f'<html lang="{lang}">' in page.text and f"<h1>{title}</h1>" in page.text


def test_every_word_of_the_console_is_there_in_three_languages():
    catalog = i18n.catalog()
    asked = set()
    for template in TEMPLATES.glob("*.html"):
        asked |= set(re.findall(r"""\bt\(\s*["']([\w.]+)["']""", template.read_text()))
    source = "\n".join(path.read_text() for path in sorted((TEMPLATES.parent.parent / "console").glob("*.py")))
    asked |= set(re.findall(r"""\bt\(\s*["'](console\.[\w.]+)["']""", source))
    assert asked and not asked - set(catalog), asked - set(catalog)
    own = json.loads((TEMPLATES.parent.parent / "translations" / "console.json").read_text())
    for key, texts in own.items():
        assert key.startswith("console.") and set(texts) == {"en", "fr", "nl"} and all(texts.values()), key
        fields = [set(re.findall(r"\{(\w+)\}", text)) for text in texts.values()]
        assert fields[0] == fields[1] == fields[2], key  # the same placeholders in each language
