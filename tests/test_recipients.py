"""The recipient directory, on SQLite and on PostgreSQL: consent, provider changes in any order,
the operators' CSV import (national numbers masked), the senders' hasAnEbox question, the
providers' subscriptions endpoint, and ``hub recipients``."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import threading
import time
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError
from starlette.testclient import TestClient

from hub.cli import cli
from hub.envelope import examples as ex
from hub.envelope.identifiers import is_valid_cbe, is_valid_ssin
from hub.errors import ErrorCode, Unavailable
from hub.inbound.http import build_app
from hub.routing.directory import Change, Directory, Entry, mask, merge
from hub.routing.recipients import RecipientKind
from hub.safexml import parse
from hub.store.db import make_engine, session_factory, upgrade
from hub.store.models import Base
from tests.kit import NOW, TOKENS
from tests.test_inbound_rest import T

CITIZEN, ENTERPRISE = RecipientKind.CITIZEN, RecipientKind.ENTERPRISE
HEADER = "kind,id,consent_at,withdrawn_at,exclusive,language,last_connection,providers"


def ssin(n: int) -> str:
    """The n-th of a supply of valid SSINs (people born 1950-1999)."""
    born = date(1950, 1, 1) + timedelta(days=n // 997)
    first = f"{born:%y%m%d}{n % 997 + 1:03d}"
    value = f"{first}{97 - int(first) % 97:02d}"
    assert is_valid_ssin(value), value
    return value


def cbe(n: int) -> str:
    first = f"0{2000000 + n:07d}"
    value = f"{first}{97 - int(first) % 97:02d}"
    assert is_valid_cbe(value), value
    return value


def wrong(value: str) -> str:
    """``value`` with its last digit changed so that its check digits are wrong."""
    for step in range(1, 10):
        changed = value[:-1] + str((int(value[-1]) + step) % 10)
        if not (is_valid_ssin(changed) or is_valid_cbe(changed)):
            return changed
    raise AssertionError(value)


def at(hours: float) -> datetime:
    """``hours`` before the tests' clock (NOW)."""
    return NOW - timedelta(hours=hours)


def change(op: str, ident: str, when: datetime, *, kind=CITIZEN, provider: str = "ebox", **more) -> Change:
    return Change(op=op, kind=kind, id=ident, at=when, provider=provider, **more)  # type: ignore[arg-type]


@pytest.fixture()
def engine(database_url):
    engine = make_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture()
def directory(engine) -> Directory:
    return Directory(session_factory(engine), clock=lambda: NOW)


# --- schema --------------------------------------------------------------------------------


def test_the_migration_creates_the_tables_the_models_describe(engine):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with engine.connect() as connection:
        diffs = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata)
    ours = ("recipients", "recipient_providers")
    assert [d for d in diffs if any(f"'{table}'" in repr(d) for table in ours)] == []


# --- consent ---------------------------------------------------------------------------------


def test_consent_given_withdrawn_and_given_again(directory):
    person = ssin(1)
    assert directory.get(CITIZEN, person) is None
    assert directory.apply([change("activate", person, at(30), exclusive=True, language="nl")]) == [True]
    given = directory.get(CITIZEN, person)
    assert given is not None and given.consent_at == at(30) and given.exclusive and given.language == "nl"
    assert not given.digital_at(at(31)) and given.digital_at(at(30)) and given.digital_at(NOW)

    directory.apply([change("withdraw", person, at(20))])
    withdrawn = directory.get(CITIZEN, person)
    assert withdrawn is not None and withdrawn.withdrawn_at == at(20)
    assert withdrawn.digital_at(at(25)) and not withdrawn.digital_at(at(20)) and not withdrawn.digital_at(NOW)

    directory.apply([change("activate", person, at(10))])
    again = directory.get(CITIZEN, person)
    assert again is not None and (again.consent_at, again.withdrawn_at) == (at(10), None)
    assert again.digital_at(NOW) and not again.digital_at(at(15))
    assert again.exclusive and again.language == "nl"  # an activation that does not say keeps them

    # A withdrawal older than the consent given again arrives late: it changes nothing.
    assert directory.apply([change("withdraw", person, at(12))]) == [False]
    assert directory.get(CITIZEN, person) == again


def test_changes_are_idempotent_and_an_older_one_never_undoes_a_newer_one(directory):
    person = ssin(2)
    link = change("link", person, at(5))
    assert directory.apply([link, link]) == [True, False]
    assert directory.apply([link]) == [False]
    assert directory.apply([change("unlink", person, at(6))]) == [False]  # older than the link
    assert directory.get(CITIZEN, person).providers == {"ebox"}  # type: ignore[union-attr]
    assert directory.apply([change("unlink", person, at(4))]) == [True]
    assert directory.get(CITIZEN, person).providers == frozenset()  # type: ignore[union-attr]
    assert directory.apply([change("link", person, at(4.5))]) == [False]  # older than the unlink
    assert directory.get(CITIZEN, person).providers == frozenset()  # type: ignore[union-attr]
    directory.apply(
        [change("activate", person, at(3), exclusive=True), change("activate", person, at(8), exclusive=False)]
    )
    assert directory.get(CITIZEN, person).exclusive is True  # type: ignore[union-attr]


FRESH = itertools.count(100_000)
"""Recipients no other example used."""
TIMES = [at(h) for h in (1, 2, 3, 4)]  # few, so that equal times (ties) are drawn often
changes_strategy = st.lists(
    st.builds(
        lambda op, when, provider, exclusive, language: change(
            op,
            ssin(3),
            when,
            provider=provider,
            exclusive=exclusive if op == "activate" else None,
            language=language if op == "activate" else None,
        ),
        st.sampled_from(["activate", "withdraw", "link", "unlink"]),
        st.sampled_from(TIMES),
        st.sampled_from(["ebox", "doccle"]),
        st.none() | st.booleans(),
        st.none() | st.sampled_from(["fr", "nl", "de", "en"]),
    ),
    max_size=12,
)


def fold(changes: list[Change]) -> Entry | None:
    entry = None
    for item in changes:
        entry = merge(entry, item)
    return entry


@given(changes=changes_strategy, seed=st.integers(0, 2**32))
@settings(max_examples=400, deadline=None)
def test_any_order_of_the_same_changes_gives_the_same_record(changes, seed):
    shuffled = list(changes)
    random.Random(seed).shuffle(shuffled)
    in_time = fold(sorted(changes, key=lambda c: c.at))
    assert fold(shuffled) == in_time
    assert fold(shuffled + shuffled) == in_time  # and repeats change nothing
    if in_time is not None:
        recipient = in_time.recipient()
        assert (
            recipient.withdrawn_at is None
            or recipient.consent_at is None
            or recipient.withdrawn_at >= recipient.consent_at
        )


@given(changes=changes_strategy.filter(bool), seed=st.integers(0, 2**32))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_stored_record_does_not_depend_on_the_order_changes_arrive_in(directory, changes, seed):
    one, other = ssin(next(FRESH)), ssin(next(FRESH))
    shuffled = list(changes)
    random.Random(seed).shuffle(shuffled)
    directory.apply([replace(c, id=one) for c in sorted(changes, key=lambda c: c.at)])
    for item in shuffled:  # one request each, as they might arrive
        directory.apply([replace(item, id=other)])
    first, second = directory.show(CITIZEN, one), directory.show(CITIZEN, other)
    assert first is not None and second is not None
    assert replace(first, id="x") == replace(second, id="x")
    assert first == fold([replace(c, id=one) for c in changes])


def test_get_and_get_many_read_in_one_query(directory, engine):
    directory.apply(
        [
            change("activate", ssin(4), at(3), exclusive=True),
            change("link", ssin(4), at(3)),
            change("link", ssin(4), at(3), provider="doccle"),
            change("activate", cbe(4), at(3), kind=ENTERPRISE),
        ]
    )
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    recipient = directory.get(CITIZEN, ssin(4))
    assert recipient is not None and recipient.providers == {"ebox", "doccle"} and recipient.exclusive
    assert len(statements) == 1
    statements.clear()
    found = directory.get_many([(CITIZEN, ssin(4)), (ENTERPRISE, cbe(4)), (CITIZEN, ssin(5))])
    assert set(found) == {(CITIZEN, ssin(4)), (ENTERPRISE, cbe(4))}
    assert found[(ENTERPRISE, cbe(4))].providers == frozenset()
    assert len(statements) == 2  # one per kind


def test_concurrent_changes_of_the_same_recipients_are_all_kept(directory):
    people = [ssin(90), ssin(91), ssin(92)]
    providers = [f"p{n}" for n in range(6)]
    errors: list[Exception] = []

    def send(n: int, order: list[str]) -> None:
        # Provider n links itself and reports an activation n + 1 hours ago (exclusive when n is even).
        try:
            for round_ in range(ROUNDS):
                directory.apply(
                    [change("link", person, at(1), provider=providers[n]) for person in order]
                    + [change("activate", person, at(n + 1 + round_ / 100), exclusive=n % 2 == 0) for person in order]
                )
        except Exception as exc:  # collected: a thread's exception would otherwise vanish
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(n, people if n % 2 else people[::-1])) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    found = directory.get_many([(CITIZEN, person) for person in people])
    assert [found[(CITIZEN, person)].providers for person in people] == [set(providers)] * 3
    # No lost update: the latest activation (provider 0's, exclusive) is what every record holds.
    assert {(r.consent_at, r.exclusive) for r in found.values()} == {(at(1), True)}


ROUNDS = 10


def test_a_change_waits_for_another_in_flight_on_the_same_recipient(directory, engine):
    from sqlalchemy import select, update

    from hub.store.models import RecipientRecord

    person = ssin(93)
    directory.apply([change("activate", person, at(10))])
    this = (RecipientRecord.kind == "citizen", RecipientRecord.recipient_id == person)
    finished = threading.Event()
    waiter = threading.Thread(target=lambda: (directory.apply([change("activate", person, at(5))]), finished.set()))
    with engine.connect() as holder:  # another transaction holds the record...
        if engine.dialect.name == "postgresql":
            holder.execute(select(RecipientRecord.kind).where(*this).with_for_update())
        else:
            holder.execute(update(RecipientRecord).where(*this).values(updated_at=NOW))
        waiter.start()
        assert not finished.wait(0.5)  # ...so the change waits,
        holder.execute(update(RecipientRecord).where(*this).values(consent_at=at(1)))
        holder.commit()
    waiter.join(10)
    assert finished.is_set()
    # ...and then sees the other's newer activation: its own, older, loses.
    assert directory.get(CITIZEN, person).consent_at == at(1)  # type: ignore[union-attr]


# --- the CSV import --------------------------------------------------------------------------


def write_csv(tmp_path, lines: list[str], name: str = "recipients.csv"):
    path = tmp_path / name
    path.write_text("\n".join([HEADER, *lines]) + "\n", encoding="utf-8")
    return path


GOOD_AND_BAD = [
    f"citizen,{ssin(10)},2026-01-05T10:00:00+01:00,,true,nl,2026-10-30T08:00:00Z,ebox|doccle",  # line 2
    f"enterprise,{cbe(10)},2026-02-01T00:00:00Z,,false,fr,,ebox",  # 3
    f"citizen,{wrong(ssin(11))},2026-01-05T10:00:00Z,,true,,,",  # 4: check digits
    f"enterprise,{wrong(cbe(11))},,,,,,",  # 5: check digits
    f"citizen,{ssin(12)},2026-01-05T10:00:00,,,,,",  # 6: no zone
    f"citizen,{ssin(13)},,,maybe,,,",  # 7: not a boolean
    f"citizen,{ssin(14)},,,,xx,,",  # 8: language
    f"citizen,{ssin(15)},,,,,,ebox|postbox",  # 9: unknown provider
    f"citizen,{ssin(10)},,,,,,",  # 10: the same recipient as line 2
    f"citizen,{ssin(16)},,,",  # 11: too few fields
    f"person,{ssin(17)},,,,,,",  # 12: kind
    f"citizen,{ssin(18)},2099-01-01T00:00:00Z,,,,,",  # 13: future
    f"citizen,{ssin(19)},{ssin(20)},,,,,",  # 14: a national number in the wrong column
    "",  # a blank line is skipped
    f"citizen,{ssin(21)},2026-03-01T00:00:00Z,2026-04-01T00:00:00Z,no,de,,",  # 16: withdrawn
]
CLEAR = [ssin(n) for n in (10, 12, 13, 14, 15, 16, 17, 18, 19, 20)] + [
    cbe(10),
    f"{wrong(ssin(11))}",
    f"{wrong(cbe(11))}",
]


def test_an_import_takes_the_good_rows_and_names_the_bad_ones_by_line_with_masked_ids(directory, tmp_path):
    report = directory.import_csv(write_csv(tmp_path, GOOD_AND_BAD), known_providers={"ebox", "doccle"})
    assert (report.rows, report.imported, report.refused) == (14, 3, 11)
    by_line = {p.line: p.code for p in report.problems}
    assert by_line == {
        4: ErrorCode.SSIN_INVALID,
        5: ErrorCode.CBE_INVALID,
        6: ErrorCode.SCHEMA_INVALID,
        7: ErrorCode.SCHEMA_INVALID,
        8: ErrorCode.SCHEMA_INVALID,
        9: ErrorCode.SCHEMA_INVALID,
        10: ErrorCode.SCHEMA_INVALID,
        11: ErrorCode.SCHEMA_INVALID,
        12: ErrorCode.SCHEMA_INVALID,
        13: ErrorCode.DATE_INCONSISTENT,
        14: ErrorCode.SCHEMA_INVALID,
    }
    text = "\n".join(map(str, report.problems))
    assert "line 10: SCHEMA_INVALID: the same recipient as line 2" in text
    assert mask(f"{wrong(ssin(11))}") in text and "postbox" in text
    for number in CLEAR:
        assert number not in text
    assert mask(ssin(20)) in text  # masked even where it did not belong

    person = directory.get(CITIZEN, ssin(10))
    assert person is not None
    assert person.consent_at == datetime(2026, 1, 5, 9, tzinfo=UTC) and person.exclusive and person.language == "nl"
    assert person.providers == {"ebox", "doccle"} and person.last_connection == datetime(2026, 10, 30, 8, tzinfo=UTC)
    company = directory.get(ENTERPRISE, cbe(10))
    assert company is not None and company.providers == {"ebox"} and not company.exclusive
    withdrawn = directory.get(CITIZEN, ssin(21))
    assert withdrawn is not None and not withdrawn.digital_at(NOW) and withdrawn.language == "de"
    assert directory.get(CITIZEN, ssin(12)) is None


def test_an_import_replaces_what_the_directory_knew_of_its_recipients(directory, tmp_path):
    directory.apply([change("link", ssin(30), at(50)), change("activate", ssin(30), at(50), exclusive=True)])
    report = directory.import_csv(write_csv(tmp_path, [f"citizen,{ssin(30)},2026-01-01T00:00:00Z,,false,,,doccle"]))
    assert (report.imported, report.problems) == (1, [])
    person = directory.get(CITIZEN, ssin(30))
    assert person is not None and person.providers == {"doccle"} and not person.exclusive
    # The import is as of now: a provider change older than it arriving late does not undo it.
    assert directory.apply([change("activate", ssin(30), at(1), exclusive=True)]) == [True]
    assert directory.get(CITIZEN, ssin(30)).exclusive is False  # type: ignore[union-attr]


def test_a_file_without_the_directory_header_imports_nothing(directory, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(f"kind,id,consent\ncitizen,{ssin(40)},\n")
    report = directory.import_csv(path)
    assert report.imported == 0 and [p.line for p in report.problems] == [1]
    assert "missing: consent_at,withdrawn_at," in str(report.problems[0])


def test_ten_thousand_rows(directory, tmp_path, database_url):
    rows = [
        f"citizen,{ssin(n)},2026-01-01T00:00:00Z,,{'true' if n % 3 else 'false'},fr,2026-10-01T00:00:00Z,ebox|doccle"
        for n in range(10_000)
    ]
    path = write_csv(tmp_path, rows)
    report = directory.import_csv(path)
    assert (report.imported, report.refused) == (10_000, 0)
    kind = database_url.split(":")[0]
    print(f"\n10,000-row import on {kind}: {report.seconds:.2f} s ({report.rate:,.0f} rows/s)")
    again = directory.import_csv(path)  # the same file again: every row an update
    print(f"the same file again on {kind}: {again.seconds:.2f} s ({again.rate:,.0f} rows/s)")
    sample = [(CITIZEN, ssin(n)) for n in range(0, 10_000, 7)]
    started = time.perf_counter()
    found = directory.get_many(sample)
    print(f"get_many of {len(sample)}: {time.perf_counter() - started:.3f} s")
    assert len(found) == len(sample) and all(r.providers == {"ebox", "doccle"} for r in found.values())


# --- HTTP: the senders' question and the providers' changes ------------------------------------

PROVIDER_TOKENS = {"ebox": "token-ebox", "doccle": "token-doccle"}


@pytest.fixture()
def client(hub):
    app = build_app(hub)
    app.state.provider_tokens = {p: {hashlib.sha256(t.encode()).hexdigest()} for p, t in PROVIDER_TOKENS.items()}
    with TestClient(app) as test_client:
        yield test_client


def sender(token: str = TOKENS[ex.FINANCE]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def code_of(response) -> str:
    return parse(response.content).findtext(T + "Code")


def test_has_an_ebox_answers_exists_exclusive_and_last_connection_only(hub, client):
    directory = Directory(hub.sessions)
    person = ssin(50)
    unknown = client.get(f"/v1/recipients/citizen/{person}", headers=sender())
    assert unknown.status_code == 200
    assert unknown.json() == {"exists": False, "exclusivelyDigital": False, "lastConnection": None}

    directory.apply(
        [
            change("activate", person, at(48), exclusive=True, language="fr"),
            change("link", person, at(48)),
            change("link", person, at(48), provider="doccle"),
        ]
    )
    from hub.store.models import RecipientRecord

    with hub.sessions.begin() as session:
        session.get(RecipientRecord, ("citizen", person)).last_connection = at(2)  # type: ignore[union-attr]
    answer = client.get(f"/v1/recipients/citizen/{person}", headers=sender(TOKENS[ex.INTEGRATOR]))
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    assert answer.json() == {"exists": True, "exclusivelyDigital": True, "lastConnection": at(2).isoformat()}
    for private in ("ebox", "doccle", "fr", "language", "consent"):
        assert private not in answer.text

    directory.apply([change("withdraw", person, at(1))])
    assert client.get(f"/v1/recipients/citizen/{person}", headers=sender()).json() == {
        "exists": False,
        "exclusivelyDigital": False,
        "lastConnection": None,
    }
    directory.apply([change("activate", cbe(50), at(5), kind=ENTERPRISE)])
    company = client.get(f"/v1/recipients/enterprise/{cbe(50)}", headers=sender()).json()
    assert company == {"exists": True, "exclusivelyDigital": False, "lastConnection": None}


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        (f"/v1/recipients/citizen/{wrong(ssin(51))}", 400, "SSIN_INVALID"),
        (f"/v1/recipients/citizen/{cbe(51)}", 400, "SSIN_INVALID"),
        (f"/v1/recipients/enterprise/{wrong(cbe(51))}", 400, "CBE_INVALID"),
        (f"/v1/recipients/person/{ssin(51)}", 400, "SCHEMA_INVALID"),
    ],
)
def test_has_an_ebox_refuses_invalid_identifiers(client, path, status, code):
    response = client.get(path, headers=sender())
    assert (response.status_code, code_of(response)) == (status, code)
    assert path.rsplit("/", 1)[1] not in response.text


@pytest.mark.parametrize("headers", [{}, sender("nope"), sender(PROVIDER_TOKENS["ebox"]), {"Authorization": "Basic x"}])
def test_has_an_ebox_is_for_authenticated_senders(client, headers):
    response = client.get(f"/v1/recipients/citizen/{ssin(52)}", headers=headers)
    assert (response.status_code, code_of(response)) == (401, "UNAUTHENTICATED")


def test_an_outage_answers_503_and_logs_no_national_number(client, monkeypatch, caplog):
    def down(*args):
        raise Unavailable("the recipient directory cannot be reached; try again shortly")

    monkeypatch.setattr(Directory, "get", down)
    response = client.get(f"/v1/recipients/citizen/{ssin(53)}", headers=sender())
    assert (response.status_code, code_of(response)) == (503, "SERVICE_UNAVAILABLE")
    assert response.headers["retry-after"] == "5"
    assert caplog.records and all(ssin(53) not in str(record.__dict__) for record in caplog.records)


def post_changes(client, changes, provider: str = "ebox", token: str | None = None):
    token = PROVIDER_TOKENS[provider] if token is None else token
    return client.post(
        f"/v1/providers/{provider}/subscriptions",
        json={"changes": changes},
        headers={"Authorization": f"Bearer {token}"},
    )


def test_each_providers_request_that_changes_the_directory_is_in_the_audit_trail_without_a_number(hub, client):
    """Who changed the directory, when, how much: one audit entry per request (provider, counts, a digest of the
    ids), written with the changes; the national numbers themselves stay out of the trail."""
    from hub.store.models import AuditEntry

    person = ssin(61)
    changes = [
        {"op": "activate", "kind": "citizen", "id": person, "at": at(5).isoformat()},
        {"op": "link", "kind": "citizen", "id": person, "at": at(5).isoformat()},
        {"op": "link", "kind": "citizen", "id": wrong(person), "at": at(5).isoformat()},  # refused: not counted
    ]
    assert post_changes(client, changes).status_code == 200
    with hub.sessions() as session:
        [entry] = session.scalars(select(AuditEntry).where(AuditEntry.action == "directory-changes")).all()
    assert entry.actor == "provider:ebox"
    detail = json.loads(entry.detail)
    assert (detail["changes"], detail["changed"], detail["ops"]) == (2, 2, {"activate": 1, "link": 1})
    assert person not in entry.detail and person[:6] not in entry.detail


def test_a_provider_sends_changes_and_gets_one_result_each(hub, client):
    person, company = ssin(60), cbe(60)
    changes = [
        {
            "op": "activate",
            "kind": "citizen",
            "id": person,
            "at": at(5).isoformat(),
            "exclusive": True,
            "language": "nl",
        },
        {"op": "link", "kind": "citizen", "id": person, "at": at(5).isoformat()},
        {"op": "link", "kind": "citizen", "id": person, "at": at(5).isoformat(), "provider": "doccle"},
        {"op": "link", "kind": "citizen", "id": wrong(person), "at": at(5).isoformat()},
        {"op": "activate", "kind": "citizen", "id": person, "at": (NOW + timedelta(days=1)).isoformat()},
        {"op": "subscribe", "kind": "citizen", "id": person, "at": at(5).isoformat()},
        {"op": "activate", "kind": "enterprise", "id": company, "at": "2026-11-01T10:00:00+01:00"},
        {"op": "withdraw", "kind": "citizen", "id": person, "at": at(5).isoformat(), "language": "fr"},
        {"op": "activate", "kind": "citizen", "id": person, "at": at(6).isoformat()},
        {"op": "link", "kind": "citizen", "id": person, "at": "2026-11-01T10:00:00"},
    ]
    response = post_changes(client, changes)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["applied"], body["refused"]) == (4, 6)
    results = [(r["status"], r.get("code"), r.get("changed")) for r in body["results"]]
    assert results == [
        (200, None, True),
        (200, None, True),
        (403, "NOT_AUTHORISED", None),
        (400, "SSIN_INVALID", None),
        (400, "DATE_INCONSISTENT", None),
        (400, "SCHEMA_INVALID", None),
        (200, None, True),
        (400, "SCHEMA_INVALID", None),
        (200, None, False),  # older than the activation already applied
        (400, "SCHEMA_INVALID", None),
    ]
    assert [r["index"] for r in body["results"]] == list(range(10))
    assert wrong(person) not in response.text
    directory = Directory(hub.sessions)
    recipient = directory.get(CITIZEN, person)
    assert recipient is not None and recipient.providers == {"ebox"} and recipient.exclusive
    assert recipient.language == "nl" and recipient.consent_at == at(5)
    assert directory.get(ENTERPRISE, company).consent_at == datetime(2026, 11, 1, 9, tzinfo=UTC)  # type: ignore[union-attr]
    assert directory.get(CITIZEN, wrong(person)) is None

    # The same request again: applied, and changes nothing.
    again = post_changes(client, changes).json()
    assert [r.get("changed") for r in again["results"] if r["status"] == 200] == [False, False, False, False]
    unlink = post_changes(client, [{"op": "unlink", "kind": "citizen", "id": person, "at": at(4).isoformat()}])
    assert unlink.json()["results"][0]["changed"] is True
    assert directory.get(CITIZEN, person).providers == frozenset()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("provider", "token", "status", "code"),
    [
        ("ebox", "", 401, "UNAUTHENTICATED"),
        ("ebox", "wrong", 401, "UNAUTHENTICATED"),
        ("ebox", TOKENS[ex.FINANCE], 401, "UNAUTHENTICATED"),  # a sender is not a provider
        ("ebox", PROVIDER_TOKENS["doccle"], 403, "NOT_AUTHORISED"),  # another provider's token
        ("unknown", PROVIDER_TOKENS["doccle"], 403, "NOT_AUTHORISED"),
    ],
)
def test_providers_are_authenticated_by_their_own_token(client, provider, token, status, code):
    change_ = {"op": "activate", "kind": "citizen", "id": ssin(61), "at": at(1).isoformat()}
    response = post_changes(client, [change_], provider=provider, token=token)
    assert (response.status_code, code_of(response)) == (status, code)


def test_without_configured_provider_tokens_every_provider_call_is_refused(hub):
    with TestClient(build_app(hub)) as client:
        change_ = {"op": "activate", "kind": "citizen", "id": ssin(62), "at": at(1).isoformat()}
        response = post_changes(client, [change_])
        assert (response.status_code, code_of(response)) == (401, "UNAUTHENTICATED")


def test_the_route_builder_takes_the_provider_tokens(hub):
    from starlette.applications import Starlette

    from hub.routing.directory_http import routes

    app = Starlette(routes=routes(provider_tokens={"ebox": {hashlib.sha256(b"builder-token").hexdigest()}}))
    app.state.runtime = hub
    with TestClient(app) as client:
        change_ = {"op": "link", "kind": "citizen", "id": ssin(62), "at": at(1).isoformat()}
        response = post_changes(client, [change_], token="builder-token")
        assert response.status_code == 200 and response.json()["applied"] == 1


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b'{"changes": []}', "application/json", 413, "TOO_LARGE"),
        (b'{"changes": {}}', "application/json", 400, "SCHEMA_INVALID"),
        (b"not json", "application/json", 400, "SCHEMA_INVALID"),
        (b'{"changes": []}', "text/plain", 415, "CONTENT_TYPE_INVALID"),
    ],
)
def test_a_request_that_is_not_a_list_of_changes_is_refused_whole(client, body, content_type, status, code):
    response = client.post(
        "/v1/providers/ebox/subscriptions",
        content=body,
        headers={"Authorization": f"Bearer {PROVIDER_TOKENS['ebox']}", "Content-Type": content_type},
    )
    assert (response.status_code, code_of(response)) == (status, code)


def test_at_most_a_thousand_changes_a_request(client):
    change_ = {"op": "link", "kind": "citizen", "id": ssin(63), "at": at(1).isoformat()}
    assert post_changes(client, [change_] * 1000).status_code == 200
    response = post_changes(client, [change_] * 1001)
    assert (response.status_code, code_of(response)) == (413, "TOO_LARGE")


def test_a_request_is_applied_whole_or_not_at_all(hub, client, monkeypatch):
    write = Directory._write

    def write_then_lose_the_database(self, session, *args):
        write(self, session, *args)
        raise OperationalError("COMMIT", {}, Exception("connection lost"))

    monkeypatch.setattr(Directory, "_write", write_then_lose_the_database)
    changes = [
        {"op": "activate", "kind": "citizen", "id": ssin(64), "at": at(1).isoformat()},
        {"op": "link", "kind": "citizen", "id": ssin(65), "at": at(1).isoformat()},
    ]
    response = post_changes(client, changes)
    assert (response.status_code, code_of(response)) == (503, "SERVICE_UNAVAILABLE")
    monkeypatch.undo()
    directory = Directory(hub.sessions)
    assert directory.show(CITIZEN, ssin(64)) is None and directory.show(CITIZEN, ssin(65)) is None


# --- hub recipients ------------------------------------------------------------------------------


@pytest.fixture()
def run(tmp_path, monkeypatch, database_url):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HUB_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("HUB_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("HUB_DATABASE_URL", database_url)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(cli, list(args), catch_exceptions=False)

    return invoke


def test_import_then_show_from_the_command_line(run, tmp_path):
    good = write_csv(tmp_path, GOOD_AND_BAD[:2], "good.csv")
    result = run("recipients", "import", str(good), "--provider", "ebox", "--provider", "doccle")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("2 imported, 0 refused, of 2 rows in ")
    shown = run("recipients", "show", "citizen", ssin(10))
    assert shown.exit_code == 0
    assert ssin(10) in shown.stdout  # the operator sees the full number
    assert "activated 2026-01-05T09:00:00+00:00" in shown.stdout and "doccle (linked " in shown.stdout
    assert "exclusive:       yes" in shown.stdout and "language:        nl" in shown.stdout


def test_import_exits_1_naming_bad_rows_without_national_numbers(run, tmp_path):
    path = write_csv(tmp_path, GOOD_AND_BAD)
    result = run("recipients", "import", str(path), "--provider", "ebox", "--provider", "doccle")
    assert result.exit_code == 1
    assert "line 4: SSIN_INVALID: " in result.stderr
    assert "line 9: SCHEMA_INVALID: provider 'postbox' is not known" in result.stderr
    assert result.stdout.startswith("3 imported, 11 refused, of 14 rows")
    for number in CLEAR:
        assert number not in result.output


def test_import_knows_the_providers_of_providers_yaml(run, tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "providers.yaml").write_text(
        "providers:\n"
        "  - {id: ebox, name: e-Box, kinds: [citizen, enterprise], delivery: {channel: amqp}}\n"
        "  - {id: doccle, name: Doccle, kinds: [citizen], delivery: {channel: amqp}}\n"
    )
    result = run("recipients", "import", str(write_csv(tmp_path, GOOD_AND_BAD)))
    assert result.exit_code == 1
    assert "line 9: SCHEMA_INVALID: provider 'postbox' is not known" in result.stderr
    assert result.stdout.startswith("3 imported, 11 refused")
    only_ebox = run("recipients", "import", str(write_csv(tmp_path, GOOD_AND_BAD[:2])), "--provider", "ebox")
    assert only_ebox.exit_code == 1 and "line 2: SCHEMA_INVALID: provider 'doccle' is not known" in only_ebox.stderr


def test_show_exit_codes(run):
    unknown = run("recipients", "show", "citizen", ssin(70))
    assert (unknown.exit_code, unknown.stdout.strip()) == (1, "unknown")
    invalid = run("recipients", "show", "enterprise", wrong(cbe(70)))
    assert invalid.exit_code == 1 and invalid.stderr.startswith("CBE_INVALID: ")
    assert run("recipients", "show", "person", ssin(70)).exit_code == 2
    assert run("recipients", "import", "missing.csv").exit_code == 2
