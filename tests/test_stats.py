"""Monthly statistics (``hub stats``): a hand-counted fixture, on SQLite and on PostgreSQL.

Twelve messages with chosen events and times, written with SQLAlchemy Core, and the figures
counted by hand beside them; the month's boundaries; the sender filter; the three formats and
the report's files; refusals counted by a real intake refusal, none for forged input.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import insert, select

from hub.envelope import examples as ex
from hub.errors import ErrorCode, Rejected
from hub.inbound.acceptance import Receipt
from hub.lifecycle.stats import Figures, Month, ProviderFigures, monthly_stats
from hub.lifecycle.stats_cli import CSV_COLUMNS, duration, stats_group
from hub.routing.deliveries import detail
from hub.routing.rules import Decision, Outcome
from hub.routing.rules import Delivery as Chosen
from hub.store.db import make_engine, session_factory, upgrade
from hub.store.models import AuditEntry, Delivery, Event, Message, Refusal
from tests.kit import NOW, example, keyring

FIN, SOC, CITY = ex.FINANCE, ex.SOCIAL, ex.CITY
TAX, INFO, PENSION = "TAX_ASSESSMENT", "GENERAL_INFORMATION", "PENSION_STATEMENT"
PAPER_PROVIDERS = ("paper",)
OCTOBER = Month(2026, 10)


def at(day: int, hour: int = 0, minute: int = 0, second: int = 0, month: int = 10) -> datetime:
    return datetime(2026, month, day, hour, minute, second, tzinfo=UTC)


H = timedelta(hours=1)


def routed_to(*providers: str) -> str:
    """A routed event's detail, as routing writes it."""
    chosen = tuple(Chosen(provider=p) for p in providers)
    return json.dumps(detail(Decision(outcome=Outcome.DELIVER, rule="default", deliveries=chosen)))


PAPER_FALLBACK = json.dumps(
    detail(
        Decision(outcome=Outcome.PAPER, rule="default", deliveries=(Chosen(provider="paper"),), reasons=("paper",))
    )
)

# id: (institution, type, accepted, state, expired_at, [(kind, provider, when, detail)], {provider: delivery state})
FIXTURE = {
    # FIN, TAX_ASSESSMENT
    "m1": (FIN, TAX, at(5, 10), "replied", None,
           [("routed", None, at(5, 10), routed_to("myebox")), ("delivered", "myebox", at(5, 10, 1), None),
            ("opened", "myebox", at(5, 12), None), ("replied", "myebox", at(6), None)], {"myebox": "replied"}),
    # routed to two providers, opened on both: counted once, first opening 30 min after acceptance
    "m2": (FIN, TAX, at(10, 8), "opened", None,
           [("routed", None, at(10, 8), routed_to("myebox", "doccle")), ("delivered", "myebox", at(10, 8, 5), None),
            ("delivered", "doccle", at(10, 8, 6), None), ("opened", "doccle", at(10, 8, 30), None),
            ("opened", "myebox", at(11, 8), None)], {"myebox": "opened", "doccle": "opened"}),
    "m3": (FIN, TAX, at(12, 9), "delivered", None,
           [("routed", None, at(12, 9), routed_to("myebox")), ("delivered", "myebox", at(12, 9, 1), None)],
           {"myebox": "delivered"}),
    # routed to the paper provider by a rule, which proves delivery of the letter: paper, not a digital delivery
    "m9": (FIN, TAX, at(18), "delivered", None,
           [("routed", None, at(18), routed_to("paper")), ("delivered", "paper", at(20), None)],
           {"paper": "delivered"}),
    # FIN, GENERAL_INFORMATION; the first instant of the month counts
    "m4": (FIN, INFO, at(1), "opened", None,
           [("routed", None, at(1), routed_to("myebox")), ("delivered", "myebox", at(1, 0, 1), None),
            ("opened", "myebox", at(1, 4), None)], {"myebox": "opened"}),
    # the last second of the month counts; the paper fallback, printed (expired since: paper, not "expired unread")
    "m5": (FIN, INFO, at(31, 23, 59, 59), "printed", at(20, month=11),
           [("routed", None, at(31, 23, 59, 59), PAPER_FALLBACK), ("printed", "paper", at(2, 9, month=11), None)],
           {"paper": "printed"}),
    # undeliverable, expired by retention since: undeliverable, not "expired unread"
    "m6": (FIN, INFO, at(20), "undeliverable", at(27), [("undeliverable", None, at(20), "{}")], {}),
    # never read, expired: expired unread
    "m7": (FIN, INFO, at(15), "expired", at(25),
           [("routed", None, at(15), routed_to("myebox")), ("expired", "myebox", at(25), None)], {"myebox": "expired"}),
    # read after a day, then retention removed its content: not "expired unread"
    "m8": (FIN, INFO, at(16), "opened", at(30),
           [("routed", None, at(16), routed_to("myebox")), ("delivered", "myebox", at(16, 1), None),
            ("opened", "myebox", at(17), None)], {"myebox": "opened"}),
    # outside the month: the first instant of November, the last second of September (opened in October)
    "m10": (FIN, TAX, at(1, month=11), "opened", None,
            [("routed", None, at(1, month=11), routed_to("myebox")), ("delivered", "myebox", at(1, 1, month=11), None),
             ("opened", "myebox", at(1, 2, month=11), None)], {"myebox": "opened"}),
    "m11": (FIN, TAX, datetime(2026, 9, 30, 23, 59, 59, tzinfo=UTC), "opened", None,
            [("delivered", "myebox", at(1, 1), None), ("opened", "myebox", at(1, 2), None)], {"myebox": "opened"}),
    # SOC
    "s1": (SOC, PENSION, at(7), "replied", None,
           [("routed", None, at(7), routed_to("myebox")), ("delivered", "myebox", at(7, 0, 5), None),
            ("opened", "myebox", at(7, 0, 10), None), ("replied", "myebox", at(8), None)], {"myebox": "replied"}),
    "s2": (SOC, PENSION, at(8), "failed", None,
           [("routed", None, at(8), routed_to("doccle")), ("failed", "doccle", at(8, 1), None)], {"doccle": "failed"}),
}

# (at, sender, submitter, message type, code)
REFUSALS = [
    (at(3), FIN, FIN, TAX, "IBAN_INVALID"),
    (at(4), FIN, FIN, TAX, "IBAN_INVALID"),
    (at(9), FIN, FIN, "NOPE", "UNKNOWN_MESSAGE_TYPE"),
    (at(9, 1), FIN, FIN, None, "SCHEMA_INVALID"),
    (at(1, month=11), FIN, FIN, TAX, "IBAN_INVALID"),  # November
    (at(11), CITY, ex.INTEGRATOR, "PARKING_PERMIT", "ENVIRONMENT_MISMATCH"),
]

# Counted by hand from FIXTURE and REFUSALS.
FIN_TAX = Figures(sent=4, refused=2, delivered=3, opened=2, replied=1, paper=1, median_open_seconds=4500.0)
FIN_INFO = Figures(
    sent=5, delivered=2, opened=2, paper=1, undeliverable=1, expired_unread=1, median_open_seconds=50400.0
)
FIN_TOTAL = Figures(
    sent=9, refused=4, delivered=5, opened=4, replied=1, paper=2, undeliverable=1, expired_unread=1,
    median_open_seconds=10800.0,  # of 2h, 30m, 4h, 24h
)
FIN_PROVIDERS = {
    "doccle": ProviderFigures(deliveries=1, delivered=1, opened=1, median_open_seconds=1800.0),
    "myebox": ProviderFigures(deliveries=6, delivered=5, opened=4, replied=1, median_open_seconds=50400.0),
    "paper": ProviderFigures(deliveries=2, delivered=1, printed=1),
}
SOC_TOTAL = Figures(sent=2, delivered=1, opened=1, replied=1, median_open_seconds=600.0)


def load_fixture(url: str) -> None:
    engine = make_engine(url)
    upgrade(engine)
    messages, events, deliveries = [], [], []
    for ident, (institution, kind, accepted, state, expired_at, happened, reached) in FIXTURE.items():
        messages.append(
            {
                "id": ident, "institution_id": institution, "submitter_id": institution, "application_id": "app",
                "sender_message_id": ident, "message_type": kind, "recipient_kind": "citizen",
                "recipient_id": ex.CITIZEN_A, "registered": False, "priority": "normal", "environment": "PROD",
                "state": state, "created_at": accepted, "accepted_at": accepted, "expires_at": None,
                "envelope_sha256": "0" * 64, "envelope": None, "receipt": b"", "expired_at": expired_at,
            }
        )
        happened = [("accepted", None, accepted, '{"door": "rest"}'), *happened]
        for kind_, provider, when, said in happened:
            events.append(
                {
                    "message_id": ident, "kind": kind_, "occurred_at": when, "source": provider or "hub",
                    "provider": provider, "detail": said or json.dumps({"ack_id": f"{ident}-{kind_}"}),
                }
            )
        for provider, delivery_state in reached.items():
            deliveries.append(
                {
                    "id": f"{ident}:{provider}", "message_id": ident, "provider": provider, "state": delivery_state,
                    "priority": 4, "created_at": accepted, "updated_at": accepted,
                }
            )
    refusals = [
        {"at": when, "sender_id": sender, "submitter_id": submitter, "message_type": kind, "code": code, "door": "rest"}
        for when, sender, submitter, kind, code in REFUSALS
    ]
    with engine.begin() as connection:
        connection.execute(insert(Message.__table__), messages)
        connection.execute(insert(Event.__table__), events)
        connection.execute(insert(Delivery.__table__), deliveries)
        connection.execute(insert(Refusal.__table__), refusals)
    engine.dispose()


@pytest.fixture()
def store(database_url):
    load_fixture(database_url)
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


# --- the figures --------------------------------------------------------------------------------


def test_every_figure_matches_the_hand_count(store):
    stats = monthly_stats(store, "2026-10", paper_providers=PAPER_PROVIDERS)
    assert stats.month == OCTOBER
    assert [i.institution_id for i in stats.institutions] == sorted([FIN, SOC, CITY])
    fin = stats.institution(FIN)
    assert fin.totals == FIN_TOTAL
    assert fin.totals.open_rate == pytest.approx(0.8)
    assert dict(fin.by_type) == {
        "(unknown)": Figures(refused=1),
        INFO: FIN_INFO,
        "NOPE": Figures(refused=1),
        TAX: FIN_TAX,
    }
    assert list(fin.by_type) == ["(unknown)", INFO, "NOPE", TAX]  # sorted
    assert fin.by_type[TAX].open_rate == pytest.approx(2 / 3)
    assert fin.by_type["NOPE"].open_rate is None
    assert dict(fin.by_provider) == FIN_PROVIDERS
    assert fin.by_provider["myebox"].open_rate == pytest.approx(0.8)
    assert dict(fin.refusals_by_code) == {"IBAN_INVALID": 2, "SCHEMA_INVALID": 1, "UNKNOWN_MESSAGE_TYPE": 1}

    soc = stats.institution(SOC)
    assert soc.totals == SOC_TOTAL and dict(soc.by_type) == {PENSION: SOC_TOTAL}
    assert dict(soc.by_provider) == {
        "doccle": ProviderFigures(deliveries=1, failed=1),
        "myebox": ProviderFigures(deliveries=1, delivered=1, opened=1, replied=1, median_open_seconds=600.0),
    }
    assert soc.refusals_by_code == {}

    city = stats.institution(CITY)  # refusals only: an institution with nothing accepted still hears of them
    assert city.totals == Figures(refused=1)
    assert dict(city.by_type) == {"PARKING_PERMIT": Figures(refused=1)}


def test_without_the_paper_providers_a_paper_providers_delivery_counts_as_delivered(store):
    fin = monthly_stats(store, OCTOBER).institution(FIN)
    # m9 (delivered by the paper provider) is now a delivery, no longer paper; the fallback and printed stay paper.
    assert fin.by_type[TAX] == replace(FIN_TAX, delivered=4, paper=0)
    assert fin.by_type[INFO] == FIN_INFO


def test_the_month_runs_from_its_first_instant_to_the_last_second_in_utc(store):
    october = monthly_stats(store, OCTOBER, paper_providers=PAPER_PROVIDERS).institution(FIN)
    # m4 (00:00:00 on the 1st) and m5 (23:59:59 on the 31st) in; m10 (1 November) and m11 (30 September) out
    assert october.totals.sent == 9
    november = monthly_stats(store, "2026-11", paper_providers=PAPER_PROVIDERS).institution(FIN)
    assert november.totals == Figures(sent=1, refused=1, delivered=1, opened=1, median_open_seconds=7200.0)
    september = monthly_stats(store, "2026-09", paper_providers=PAPER_PROVIDERS).institution(FIN)
    # m11 was opened in October, but it counts with September, when it was accepted
    assert september.totals == Figures(sent=1, delivered=1, opened=1, median_open_seconds=7201.0)
    assert monthly_stats(store, "2026-08").institutions == ()


def test_the_sender_filter_keeps_one_institution(store):
    stats = monthly_stats(store, OCTOBER, sender=FIN, paper_providers=PAPER_PROVIDERS)
    assert [i.institution_id for i in stats.institutions] == [FIN]
    assert stats.institutions[0].totals == FIN_TOTAL
    assert dict(stats.institutions[0].by_provider) == FIN_PROVIDERS
    assert monthly_stats(store, OCTOBER, sender="0406798006").institutions == ()


def test_months_are_written_yyyy_mm():
    assert (OCTOBER.start, OCTOBER.end) == (at(1), at(1, month=11))
    assert (Month(2026, 12).end, Month(2026, 1).previous()) == (datetime(2027, 1, 1, tzinfo=UTC), Month(2025, 12))
    assert str(Month.parse("2026-10")) == "2026-10"
    for bad in ("2026-13", "2026-1", "10-2026", "2026/10", ""):
        with pytest.raises(ValueError):
            Month.parse(bad)
    assert [duration(s) for s in (None, 44.6, 600, 4500, 50400, 200000)] == ["-", "45s", "10m", "1h 15m", "14h 00m",
                                                                          "2d 7h"]


# --- the command ---------------------------------------------------------------------------------


@pytest.fixture()
def run(store, tmp_path, database_url):
    config = tmp_path / "config"
    config.mkdir()
    (config / "providers.yaml").write_text(
        "providers:\n"
        "  - {id: myebox, name: My eBox, kinds: [citizen], delivery: {channel: amqp}}\n"
        "  - {id: doccle, name: Doccle, kinds: [citizen], delivery: {channel: amqp}}\n"
        "  - {id: paper, name: Print, kinds: [citizen], capabilities: [paper], universal: true,"
        " delivery: {channel: amqp}}\n"
    )
    env = {"HUB_CONFIG_DIR": str(config), "HUB_DATABASE_URL": database_url, "HUB_DATA_DIR": str(tmp_path / "var")}

    def invoke(*args: str):
        result = CliRunner().invoke(stats_group, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout  # what a script reads; log records (a library's included) go to stderr

    return invoke


def test_the_table_shows_each_institution_its_types_providers_and_refusals(run):
    output = run("--month", "2026-10", "--sender", FIN)
    lines = output.splitlines()
    assert lines[0] == f"{FIN}, 2026-10"
    header = lines[2].split()
    assert header[:4] == ["message", "type", "sent", "refused"]
    rows = {line.split()[0]: line.split() for line in lines[3:8]}
    assert rows["TAX_ASSESSMENT"] == ["TAX_ASSESSMENT", "4", "2", "3", "2", "66.7%", "1h", "15m", "1", "1", "0", "0"]
    assert rows["total"] == ["total", "9", "4", "5", "4", "80.0%", "3h", "00m", "1", "2", "1", "1"]
    assert rows["NOPE"][1:6] == ["0", "1", "0", "0", "-"]
    assert any(line.split()[:4] == ["paper", "2", "1", "0"] for line in lines)
    assert lines[-1] == "refused: IBAN_INVALID 2, SCHEMA_INVALID 1, UNKNOWN_MESSAGE_TYPE 1"
    assert SOC not in output
    assert run("--month", "2026-07") == "no message accepted and no envelope refused in 2026-07\n"


def test_csv_has_one_row_per_figure_set(run):
    rows = list(csv.DictReader(io.StringIO(run("--month", "2026-10", "--format", "csv"))))
    assert tuple(rows[0]) == CSV_COLUMNS
    fin = {(r["dimension"], r["key"]): r for r in rows if r["institution"] == FIN}
    assert set(fin) == {
        ("total", ""), ("message_type", "(unknown)"), ("message_type", INFO), ("message_type", "NOPE"),
        ("message_type", TAX), ("provider", "doccle"), ("provider", "myebox"), ("provider", "paper"),
        ("refusal_code", "IBAN_INVALID"), ("refusal_code", "SCHEMA_INVALID"), ("refusal_code", "UNKNOWN_MESSAGE_TYPE"),
    }
    total = fin[("total", "")]
    assert {k: total[k] for k in CSV_COLUMNS[4:14]} == {
        "sent": "9", "refused": "4", "delivered": "5", "opened": "4", "open_rate": "0.8000",
        "median_open_seconds": "10800.0", "replied": "1", "paper": "2", "undeliverable": "1", "expired_unread": "1",
    }
    assert total["deliveries"] == total["printed"] == ""
    assert fin[("provider", "paper")]["printed"] == "1" and fin[("provider", "paper")]["sent"] == ""
    assert fin[("refusal_code", "IBAN_INVALID")]["refused"] == "2"
    assert {r["institution"] for r in rows} == {FIN, SOC, CITY}
    assert all(r["month"] == "2026-10" for r in rows)


def test_json_nests_the_figures(run):
    data = json.loads(run("--month", "2026-10", "--format", "json"))
    assert data["month"] == "2026-10"
    fin = next(i for i in data["institutions"] if i["institution"] == FIN)
    assert fin["totals"] == {
        "sent": 9, "refused": 4, "delivered": 5, "opened": 4, "open_rate": 0.8, "median_open_seconds": 10800.0,
        "replied": 1, "paper": 2, "undeliverable": 1, "expired_unread": 1,
    }
    assert fin["by_message_type"][TAX]["median_open_seconds"] == 4500.0
    assert fin["by_provider"]["doccle"] == {
        "deliveries": 1, "delivered": 1, "opened": 1, "open_rate": 1.0, "median_open_seconds": 1800.0,
        "replied": 0, "printed": 0, "failed": 0,
    }
    assert fin["refusals_by_code"] == {"IBAN_INVALID": 2, "SCHEMA_INVALID": 1, "UNKNOWN_MESSAGE_TYPE": 1}
    only = json.loads(run("--month", "2026-10", "--sender", SOC, "--format", "json"))
    assert [i["institution"] for i in only["institutions"]] == [SOC]


def test_the_report_writes_a_csv_and_a_chart_per_institution(run, tmp_path):
    out = tmp_path / "report"
    written = run("report", "--month", "2026-10", "--out", str(out)).split()
    names = sorted(f"{who}-2026-10.{ext}" for who in (FIN, SOC, CITY) for ext in ("csv", "png"))
    assert sorted(p.rsplit("/", 1)[-1] for p in written) == names
    assert sorted(p.name for p in out.iterdir()) == names
    rows = list(csv.DictReader((out / f"{FIN}-2026-10.csv").open()))
    assert {r["institution"] for r in rows} == {FIN}
    assert next(r for r in rows if r["dimension"] == "total")["sent"] == "9"
    png = (out / f"{FIN}-2026-10.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (png[12:16], 400 <= width <= 3000, 200 <= height <= 2000) == (b"IHDR", True, True)
    assert 5_000 < len(png) < 500_000
    # the group's options reach the report too; one institution only
    again = run("--month", "2026-10", "--sender", SOC, "report", "--out", str(tmp_path / "soc")).split()
    assert [p.rsplit("/", 1)[-1] for p in again] == [f"{SOC}-2026-10.csv", f"{SOC}-2026-10.png"]


def test_bad_options_are_usage_errors():
    runner = CliRunner()
    assert runner.invoke(stats_group, ["--month", "October"]).exit_code == 2
    assert runner.invoke(stats_group, ["--month", "2026-10", "--sender", "FIN"]).exit_code == 2
    assert runner.invoke(stats_group, ["--format", "xml"]).exit_code == 2


# --- refusals, counted at intake -----------------------------------------------------------------


def refusal_rows(hub) -> list[tuple]:
    with hub.sessions() as session:
        return [
            (r.at, r.sender_id, r.submitter_id, r.message_type, r.code, r.door)
            for r in session.scalars(select(Refusal).order_by(Refusal.id))
        ]


def refused_audit(hub) -> list[tuple]:
    with hub.sessions() as session:
        return [(a.actor, a.action, a.message_id, json.loads(a.detail)) for a in session.scalars(select(AuditEntry))]


def bad_iban() -> bytes:
    letter = example("payment")
    payment = replace(letter.content.payment, iban="BE71096123456760")  # a wrong check digit
    return keyring().sign(replace(letter, content=replace(letter.content, payment=payment)))


def expect(code: ErrorCode, call) -> None:
    with pytest.raises(Rejected) as refused:
        call()
    assert refused.value.code is code


def test_a_signed_envelope_refused_for_a_business_rule_is_counted_and_forged_input_is_not(hub):
    ring, letter = keyring(), example("payment")
    expect(ErrorCode.IBAN_INVALID, lambda: hub.intake.submit(bad_iban(), door="rest"))
    assert refusal_rows(hub) == [(NOW, FIN, FIN, TAX, "IBAN_INVALID", "rest")]
    assert refused_audit(hub) == [
        ("hub.inbound", "refused", None, {"code": "IBAN_INVALID", "door": "rest", "message_type": TAX})
    ]
    # Forged, unsigned, garbage: nothing more, whatever they claim to be.
    tampered = ring.sign(letter).replace(b"1234.56", b"9234.56")
    unsigned = ring.sign(letter).split(b"<ds:Signature")[0] + b"</PublishMessage>"
    for data, code in ((tampered, ErrorCode.SIGNATURE_INVALID), (unsigned, ErrorCode.SIGNATURE_MISSING),
                       (b"<PublishMessage", ErrorCode.XML_MALFORMED)):
        expect(code, lambda data=data: hub.intake.submit(data, door="soap"))
    assert len(refusal_rows(hub)) == 1 and len(refused_audit(hub)) == 1
    # And the statistics of the month count it.
    stats = monthly_stats(make_engine(hub.settings.effective_database_url), Month.of(NOW), sender=FIN)
    assert stats.institutions[0].totals == Figures(refused=1)
    assert dict(stats.institutions[0].by_type) == {TAX: Figures(refused=1)}


def test_who_a_refusal_is_counted_for(hub):
    ring = keyring()
    mandated = example("integrator")  # the integrator, for the city
    header = mandated.header
    bad_ssin = replace(header, recipient=replace(header.recipient, id="85073003329"))
    data = ring.sign(replace(mandated, header=bad_ssin))
    expect(ErrorCode.SSIN_INVALID, lambda: hub.intake.submit(data, door="amqp"))
    # for an institution that gave no mandate: counted for the integrator itself, not the institution it named
    unmandated = replace(header, sender=replace(header.sender, on_behalf_of=FIN))
    data = ring.sign(replace(mandated, header=unmandated))
    expect(ErrorCode.NOT_AUTHORISED, lambda: hub.intake.submit(data, door="rest"))
    # a TLS client certificate of another party: counted for that party, whatever it sent
    signed = ring.sign(example("payment"))
    expect(ErrorCode.NOT_AUTHORISED, lambda: hub.intake.submit(signed, door="rest", client_party=SOC))
    expect(ErrorCode.XML_MALFORMED, lambda: hub.intake.submit(b"<oops", door="rest", client_party=SOC))
    assert [row[1:5] for row in refusal_rows(hub)] == [
        (CITY, ex.INTEGRATOR, header.message_type, "SSIN_INVALID"),
        (ex.INTEGRATOR, ex.INTEGRATOR, header.message_type, "NOT_AUTHORISED"),
        (SOC, SOC, None, "NOT_AUTHORISED"),
        (SOC, SOC, None, "XML_MALFORMED"),
    ]


def test_a_batch_counts_its_identified_refusals_and_a_reused_sender_message_id(hub):
    ring, letter = keyring(), example("payment")
    good = ring.sign(letter)
    other = replace(letter, content=replace(letter.content, subjects=(replace(letter.content.subjects[0], value="x"),)))
    forged = good.replace(b"1234.56", b"9234.56")
    outcomes = hub.intake.submit_many([good, bad_iban(), forged, ring.sign(other)], door="rest-batch")
    assert isinstance(outcomes[0], Receipt)
    assert [o.code for o in outcomes[1:]] == [ErrorCode.IBAN_INVALID, ErrorCode.SIGNATURE_INVALID,
                                              ErrorCode.DUPLICATE_MESSAGE_ID]
    assert sorted(row[4] for row in refusal_rows(hub)) == ["DUPLICATE_MESSAGE_ID", "IBAN_INVALID"]
    assert {row[5] for row in refusal_rows(hub)} == {"rest-batch"}
    # the same through the single door: the duplicate is counted too
    expect(ErrorCode.DUPLICATE_MESSAGE_ID, lambda: hub.intake.submit(ring.sign(other), door="rest"))
    assert len(refusal_rows(hub)) == 3


def test_a_database_lost_while_counting_a_refusal_still_answers_the_refusal(hub, caplog):
    nowhere = make_engine("postgresql://postgres@127.0.0.1:9/none")
    hub.intake.sessions = session_factory(nowhere)
    expect(ErrorCode.IBAN_INVALID, lambda: hub.intake.submit(bad_iban(), door="rest"))
    outcomes = hub.intake.submit_many([bad_iban()], door="rest-batch")
    assert [o.code for o in outcomes] == [ErrorCode.IBAN_INVALID]
    nowhere.dispose()
    assert any(getattr(r, "event", None) == "refusal_not_recorded" for r in caplog.records)


def test_no_personal_data_in_what_a_refusal_leaves(hub):
    expect(ErrorCode.IBAN_INVALID, lambda: hub.intake.submit(bad_iban(), door="rest"))
    with hub.sessions() as session:
        written = json.dumps([a.detail for a in session.scalars(select(AuditEntry))])
    for secret in (ex.CITIZEN_A, "BE71096123456760", "1234.56"):
        assert secret not in written
