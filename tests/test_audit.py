# ruff: noqa: F811 - pytest fixtures imported from the routing and acknowledgement tests share their names
"""The tamper-evident audit trail, on SQLite and on PostgreSQL.

Entries are sealed into a hash chain in commit order (a lower id committed last is sealed after);
``verify`` passes on an intact chain and names exactly the entry that was changed, or the gap an
entry removed behind the triggers' back left; the database refuses to delete an entry or to change
a sealed one; operator commands leave entries without personal data; the evidence bundle of a
registered letter holds the receipt and the hub's acknowledgements with their proofs, each of which
``hub envelope verify`` accepts with the bundle's certificate, and no national number anywhere.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hub.cli import cli
from hub.envelope import examples as ex
from hub.lifecycle.audit import (
    GENESIS,
    audit_operator_action,
    canonical,
    entry_hash,
    export_bundle,
    operator_actor,
    record_operator_action,
    seal,
    seal_all,
    seal_forever,
    verify,
)
from hub.outbound.acks import Event, Reply, read_acknowledgement
from hub.safexml import parse
from hub.settings import load_settings
from hub.store.db import alembic_config, make_engine, session_factory, upgrade
from hub.store.models import AuditEntry
from hub.store.models import Event as EventRow
from tests.kit import NOW, example, keyring
from tests.test_acknowledgements import Loop, loop, registered_letter  # noqa: F401 - shared fixture
from tests.test_routing_worker import broker_url, config_dir, database_url  # noqa: F401 - shared fixtures

NATIONAL_NUMBER = ex.CITIZEN_A  # 85073003328: the recipient of the example letters


# -- helpers ------------------------------------------------------------------------------------------


def add(sessions: sessionmaker[Session], count: int = 1, *, action: str = "tested", **more: Any) -> list[int]:
    """``count`` unsealed entries, committed; their ids."""
    with sessions.begin() as session:
        rows = [
            AuditEntry(at=NOW + timedelta(seconds=n), actor="test", action=action, detail=json.dumps({"n": n}), **more)
            for n in range(count)
        ]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def entries(sessions: sessionmaker[Session]) -> list[AuditEntry]:
    with sessions() as session:
        return list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))


def report_of(sessions: sessionmaker[Session], **options: Any):  # type: ignore[no-untyped-def]
    with sessions() as session:
        return verify(session, **options)


def postgres(sessions: sessionmaker[Session]) -> bool:
    with sessions() as session:
        return session.connection().dialect.name == "postgresql"


@contextmanager
def unguarded(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A transaction with the append-only triggers out of the way (what a tamperer with DBA rights does)."""
    with sessions.begin() as session:
        if postgres(sessions):
            session.execute(text("ALTER TABLE audit DISABLE TRIGGER ALL"))
        else:
            session.execute(text("DROP TRIGGER audit_seal_only"))
            session.execute(text("DROP TRIGGER audit_no_delete"))
        yield session


def env(tmp_path: Path, database_url: str) -> dict[str, str]:
    """The settings of the hub ``make_hub`` made (its database, its key in tmp_path/var)."""
    return {
        "HUB_CONFIG_DIR": str(tmp_path / "config"),
        "HUB_DATA_DIR": str(tmp_path / "var"),
        "HUB_DATABASE_URL": database_url,
    }


def hub_cli(tmp_path: Path, database_url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env(tmp_path, database_url))


# -- the hash -----------------------------------------------------------------------------------------


def test_the_hash_is_sha256_over_the_previous_hash_and_the_canonical_entry():
    fields = {
        "id": 7,
        "at": NOW,
        "actor": "0206731645",
        "action": "accepted",
        "message_id": "m-1",
        "detail": '{"door": "rest", "é": 1}',
    }
    body = canonical(fields)
    assert body == (
        '{"action":"accepted","actor":"0206731645","at":"2026-11-02T10:00:00.000000Z",'
        '"detail":"{\\"door\\": \\"rest\\", \\"\\u00e9\\": 1}","id":7,"message_id":"m-1"}'
    ), body
    assert entry_hash(GENESIS, fields) == hashlib.sha256((GENESIS + body).encode("ascii")).hexdigest()
    assert entry_hash(GENESIS, fields) != entry_hash(GENESIS, {**fields, "detail": '{"door": "soap"}'})
    assert entry_hash(GENESIS, fields) != entry_hash("1" * 64, fields)
    assert canonical({**fields, "at": NOW.astimezone(ZoneInfo("Europe/Brussels"))}) == body


# -- sealing ------------------------------------------------------------------------------------------


def test_accepted_messages_are_sealed_into_a_chain_that_verifies(hub):
    for sender_message_id in ("A-1", "A-2", "A-3"):
        envelope = example("citizen-letter")
        envelope = replace(envelope, header=replace(envelope.header, sender_message_id=sender_message_id))
        hub.intake.submit(keyring().sign(envelope), door="test")
    sessions = hub.sessions
    before = report_of(sessions)
    assert before.intact and before.checked == 0 and before.unsealed == 3 and before.head_hash == GENESIS
    assert seal_all(sessions) == 3
    assert seal_all(sessions) == 0  # nothing left
    chain = entries(sessions)
    assert [e.seq for e in chain] == [1, 2, 3]
    assert chain[0].prev_hash == GENESIS
    assert [e.prev_hash for e in chain[1:]] == [e.hash for e in chain[:-1]]
    for entry in chain:
        assert entry.hash == entry_hash(entry.prev_hash or "", entry.__dict__)
        assert NATIONAL_NUMBER not in entry.detail  # no national number in the trail
    after = report_of(sessions)
    assert after.intact and after.checked == 3 and after.unsealed == 0
    assert (after.head_seq, after.head_hash) == (3, chain[-1].hash)
    assert after.missing_guards == ()
    # later entries continue the chain
    add(sessions, 2)
    assert seal_all(sessions, limit=1) == 2
    assert [e.seq for e in entries(sessions)] == [1, 2, 3, 4, 5]
    assert report_of(sessions).intact


def test_an_entry_committed_late_is_sealed_after_those_committed_before_it(hub):
    sessions = hub.sessions
    if not postgres(sessions):
        pytest.skip("SQLite has one writer: no transaction commits while another holds rows")
    early = sessions()
    [late_committed] = [row.id for row in _pending(early)]  # the lower id, not committed yet
    [first_committed] = add(sessions)
    assert late_committed < first_committed
    assert seal_all(sessions) == 1  # the sealer sees only what was committed
    early.commit()
    early.close()
    assert seal_all(sessions) == 1
    by_id = {e.id: e for e in entries(sessions)}
    assert by_id[first_committed].seq == 1 and by_id[late_committed].seq == 2
    assert by_id[late_committed].prev_hash == by_id[first_committed].hash
    assert report_of(sessions).intact


def _pending(session: Session) -> list[AuditEntry]:
    row = AuditEntry(at=NOW, actor="test", action="slow", detail="{}")
    session.add(row)
    session.flush()
    return [row]


def test_sealers_running_at_once_make_one_chain(hub):
    sessions = hub.sessions
    add(sessions, 120)
    errors: list[BaseException] = []

    def sealer() -> None:
        try:
            for _ in range(20):
                with sessions.begin() as session:
                    seal(session, limit=7)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sealer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    seal_all(sessions)
    assert sorted(e.seq for e in entries(sessions)) == list(range(1, 121))
    report = report_of(sessions)
    assert report.intact and report.checked == 120


def test_the_hub_seals_every_second(hub):
    stop = threading.Event()
    thread = threading.Thread(target=seal_forever, args=(hub.sessions, stop), kwargs={"every": 0.05}, daemon=True)
    thread.start()
    try:
        add(hub.sessions, 3)
        for _ in range(100):
            if all(e.hash for e in entries(hub.sessions)):
                break
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join(10)
    assert [e.seq for e in entries(hub.sessions)] == [1, 2, 3]


# -- append-only -----------------------------------------------------------------------------------------


def test_the_database_refuses_to_delete_an_entry_or_change_a_sealed_one(hub):
    sessions = hub.sessions
    add(sessions, 3)
    with sessions.begin() as session:
        seal(session, limit=2)
    sealed, _, unsealed = entries(sessions)
    statements = [
        ("DELETE FROM audit WHERE id = :id", sealed.id),
        ("DELETE FROM audit WHERE id = :id", unsealed.id),
        ("UPDATE audit SET detail = '{\"n\": 9}' WHERE id = :id", sealed.id),
        ("UPDATE audit SET hash = :zeros, prev_hash = :zeros, seq = 99 WHERE id = :id", sealed.id),  # a reseal
        ("UPDATE audit SET detail = '{}' WHERE id = :id", unsealed.id),  # unsealed, but not a seal
        ("UPDATE audit SET detail = '{}', seq = 3, prev_hash = :zeros, hash = :zeros WHERE id = :id", unsealed.id),
        ("UPDATE audit SET seq = 3 WHERE id = :id", unsealed.id),  # half a seal
    ]
    if postgres(sessions):
        statements.append(("TRUNCATE audit", 0))
    for statement, ident in statements:
        with pytest.raises(IntegrityError, match="append-only"), sessions.begin() as session:
            session.execute(text(statement), {"id": ident, "zeros": GENESIS})
    assert [(e.id, e.detail, e.hash) for e in entries(sessions)] == [
        (e.id, e.detail, e.hash) for e in (sealed, _, unsealed)
    ]
    assert report_of(sessions).intact


def test_a_changed_entry_is_named_exactly(hub, tmp_path, database_url):
    sessions = hub.sessions
    add(sessions, 10)
    seal_all(sessions)
    target = next(e for e in entries(sessions) if e.seq == 7)
    with unguarded(sessions) as session:
        session.execute(text("UPDATE audit SET detail = :d WHERE id = :id"), {"d": '{"n": 600}', "id": target.id})
    report = report_of(sessions, page=3)  # the walk goes by pages: 7 is on the third
    assert report.broken is not None
    assert (report.broken.seq, report.broken.id, report.broken.problem) == (7, target.id, "hash mismatch")
    assert (report.checked, report.head_seq) == (6, 6)
    assert report.missing_guards  # the triggers are off: verify says so
    result = hub_cli(tmp_path, database_url, "audit", "verify")
    assert result.exit_code == 1, result.output
    assert f"BROKEN: entry seq 7 (id {target.id}): hash mismatch" in result.output
    assert "missing or disabled" in result.output


def test_a_rehashed_entry_breaks_the_link_to_the_next(hub):
    sessions = hub.sessions
    add(sessions, 5)
    seal_all(sessions)
    chain = entries(sessions)
    forged = {**chain[2].__dict__, "detail": '{"n": "forged"}'}
    with unguarded(sessions) as session:
        session.execute(
            text("UPDATE audit SET detail = :d, hash = :h WHERE id = :id"),
            {"d": forged["detail"], "h": entry_hash(chain[2].prev_hash or "", forged), "id": chain[2].id},
        )
    broken = report_of(sessions).broken
    assert broken is not None and (broken.seq, broken.id, broken.problem) == (4, chain[3].id, "prev_hash mismatch")


def test_a_removed_entry_leaves_a_gap_that_verify_reports(hub):
    sessions = hub.sessions
    add(sessions, 5)
    seal_all(sessions)
    chain = entries(sessions)
    with unguarded(sessions) as session:
        session.execute(text("DELETE FROM audit WHERE id = :id"), {"id": chain[1].id})
    broken = report_of(sessions).broken
    assert broken is not None and (broken.seq, broken.id, broken.problem) == (3, chain[2].id, "gap")
    assert "seq 2 missing" in broken.explanation


def test_the_migration_adds_and_removes_the_triggers(database_url):
    from alembic import command

    engine = make_engine(database_url)
    try:
        upgrade(engine)
        sessions = session_factory(engine)
        add(sessions)
        config = alembic_config(engine)
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0006")
        with sessions.begin() as session:
            session.execute(text("UPDATE audit SET detail = '{}'"))  # nothing stops it now
        upgrade(engine)
        with pytest.raises(IntegrityError), sessions.begin() as session:
            session.execute(text("DELETE FROM audit"))
    finally:
        engine.dispose()


# -- operator actions -----------------------------------------------------------------------------------------


def test_an_operator_action_is_an_entry_of_its_own(hub):
    audit_operator_action(hub.sessions, "operator:alice", "dlq-purge", {"removed": 3})
    with hub.sessions.begin() as session:
        audit_operator_action(session, operator_actor(), "dlq-replay", {"replayed": ["0a1b2c3d4e5f"]})
    first, second = entries(hub.sessions)
    assert (first.actor, first.action, json.loads(first.detail)) == ("operator:alice", "dlq-purge", {"removed": 3})
    assert second.actor.startswith("operator:") and second.message_id is None and second.hash is None


def test_hub_recipients_import_is_audited_without_a_national_number(hub, tmp_path, database_url):
    csv = tmp_path / f"import-{NATIONAL_NUMBER}.csv"
    csv.write_text(
        "kind,id,consent_at,withdrawn_at,exclusive,language,last_connection,providers\n"
        f"citizen,{NATIONAL_NUMBER},2026-01-05T10:00:00Z,,true,nl,,ebox\n"
        "citizen,85073003329,,,,,,\n"  # refused: check digits
    )
    result = hub_cli(tmp_path, database_url, "recipients", "import", str(csv), "--provider", "ebox")
    assert result.exit_code == 1, result.output  # one row refused
    [entry] = [e for e in entries(hub.sessions) if e.action == "recipients-import"]
    detail = json.loads(entry.detail)
    assert {k: detail[k] for k in ("rows", "imported", "refused")} == {"rows": 2, "imported": 1, "refused": 1}
    assert entry.actor == operator_actor()
    assert NATIONAL_NUMBER not in entry.detail and "8507300332" not in entry.detail
    assert detail["file"] == "import-85*******28.csv"


def test_hub_dlq_purge_and_replay_are_audited(hub, tmp_path, database_url, monkeypatch):
    from tests.test_broker import _delete_hub_queues, declared
    from tests.test_deadletters import bury

    url = f"memory://localhost/{uuid.uuid4().hex}"
    for name, value in env(tmp_path, database_url).items():
        monkeypatch.setenv(name, value)
    _delete_hub_queues(url)
    try:
        declared(url)
        dead_id = bury(url, "m-1", body=f"SSIN {NATIONAL_NUMBER}".encode())
        replayed = CliRunner().invoke(cli, ["dlq", "replay", dead_id, "--url", url])
        assert replayed.exit_code == 0, replayed.output
        bury(url, "m-2")
        purged = CliRunner().invoke(cli, ["dlq", "purge", "--yes", "--url", url])
        assert purged.exit_code == 0, purged.output
    finally:
        _delete_hub_queues(url)
    replay, purge = entries(hub.sessions)
    assert (replay.action, json.loads(replay.detail)["replayed"]) == ("dlq-replay", [dead_id])
    assert (purge.action, json.loads(purge.detail)) == ("dlq-purge", {"removed": 1})
    assert all(NATIONAL_NUMBER not in e.detail for e in (replay, purge))


def test_an_operator_action_without_a_database_says_it_was_not_audited(tmp_path):
    settings = load_settings(tmp_path / "config", {"HUB_DATA_DIR": str(tmp_path / "nowhere")})
    problem = record_operator_action("dlq-purge", {"removed": 1}, settings=settings)
    assert problem is not None and problem.startswith("not audited: no hub database")
    assert not (tmp_path / "nowhere").exists()  # and none was made


# -- the command line -------------------------------------------------------------------------------------


def test_hub_audit_seal_and_verify(hub, tmp_path, database_url):
    add(hub.sessions, 4)
    sealed = hub_cli(tmp_path, database_url, "audit", "seal")
    assert sealed.exit_code == 0 and "sealed 4 entries" in sealed.output, sealed.output
    add(hub.sessions, 1)
    verified = hub_cli(tmp_path, database_url, "audit", "verify")
    assert verified.exit_code == 0, verified.output
    assert verified.output.startswith("OK: 4 entries chained, head seq 4") and "1 not sealed yet" in verified.output
    unknown = hub_cli(tmp_path, database_url, "audit", "export", "--message", "nope", "--out", str(tmp_path / "b"))
    assert unknown.exit_code == 1 and "no message 'nope'" in unknown.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    refused = hub_cli(tmp_path, database_url, "audit", "export", "--message", "m", "--out", str(tmp_path / "full"))
    assert refused.exit_code == 2 and "not empty" in refused.output


# -- the evidence bundle ------------------------------------------------------------------------------------


def test_the_evidence_of_a_registered_letter_is_checked_with_hub_envelope_verify(loop: Loop, tmp_path, database_url):
    message_id = registered_letter(loop)
    loop.report("myebox", message_id, Event.DELIVERED, minutes=1)
    loop.report("irisbox", message_id, Event.DELIVERED, minutes=2)
    loop.report("myebox", message_id, Event.OPENED, minutes=3)
    loop.report("myebox", message_id, Event.REPLIED, minutes=4, reply=Reply(choice_id="accept"))
    out = tmp_path / "bundle"
    exported = hub_cli(tmp_path, database_url, "audit", "export", "--message", message_id, "--out", str(out))
    assert exported.exit_code == 0, exported.output

    names = sorted(p.name for p in out.iterdir())
    acks = [n for n in names if n.startswith("ack-")]
    assert acks == [
        "ack-01-accepted.xml",
        "ack-02-routed.xml",
        "ack-03-delivered-myebox.xml",
        "ack-04-delivered-irisbox.xml",
        "ack-05-opened-myebox.xml",
        "ack-06-replied-myebox.xml",
    ]
    assert {
        "receipt.xml",
        "events.json",
        "audit.json",
        "message.json",
        "hub.cert.pem",
        "README.txt",
        "SHA256SUMS",
    } <= set(names)
    # each signed document holds, with the bundle's certificate, as README.txt says
    readme = (out / "README.txt").read_text()
    for name in ["receipt.xml", *acks]:
        assert f"hub envelope verify {name} --cert hub.cert.pem" in readme
        checked = CliRunner().invoke(cli, ["envelope", "verify", str(out / name), "--cert", str(out / "hub.cert.pem")])
        assert checked.exit_code == 0 and checked.output.startswith("OK: signed by"), (name, checked.output)
    # the proofs of registered mail carry the digest of the envelope as received
    digest = loop.message(message_id).envelope_sha256
    assert json.loads((out / "message.json").read_text())["envelope_sha256"] == digest
    assert digest in readme and f">{digest}<" in (out / "receipt.xml").read_text()
    read = {name: read_acknowledgement(parse((out / name).read_bytes())) for name in acks}
    for name in acks[2:5]:  # delivered x2, opened
        proof = read[name].proof
        assert proof is not None and proof.envelope_digest.hex() == digest and proof.provider == read[name].provider
    assert read["ack-05-opened-myebox.xml"].proof.opened_at == NOW + timedelta(minutes=3)  # type: ignore[union-attr]
    assert all(a.issuer == "hub" and a.hub_message_id == message_id for a in read.values())
    # the audit entries can be re-hashed by anyone, as README.txt says; the chain in the hub holds
    trail = json.loads((out / "audit.json").read_text())
    assert [e["action"] for e in trail["entries"]] == ["accepted", "routed"] + ["acknowledged"] * 4
    assert [e["seq"] for e in trail["entries"]] == sorted(e["seq"] for e in trail["entries"])  # all sealed
    for e in trail["entries"]:
        fields = {k: e[k] for k in ("id", "at", "actor", "action", "message_id", "detail")}
        body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        assert hashlib.sha256((e["prev_hash"] + body).encode("ascii")).hexdigest() == e["hash"]
    assert report_of(loop.sessions).intact
    assert read["ack-06-replied-myebox.xml"].reply == Reply(choice_id="accept")
    events = json.loads((out / "events.json").read_text())
    assert [e["kind"] for e in events] == ["accepted", "routed", "delivered", "delivered", "opened", "replied"]
    assert [e["acknowledgement"] for e in events] == acks
    # every file as SHA256SUMS says; no national number anywhere, in the bundle nor in the trail
    sums = dict(reversed(line.split("  ")) for line in (out / "SHA256SUMS").read_text().splitlines())
    for name in names:
        data = (out / name).read_bytes()
        assert NATIONAL_NUMBER.encode() not in data and b"85.07.30" not in data, name
        if name != "SHA256SUMS":
            assert sums[name] == hashlib.sha256(data).hexdigest()
    assert all(NATIONAL_NUMBER not in e.detail for e in entries(loop.sessions))
    # the export itself is in the trail
    assert any(e.action == "evidence-exported" and e.message_id == message_id for e in entries(loop.sessions))
    # a changed document no longer holds
    forged = out / "ack-03-delivered-myebox.xml"
    forged.write_bytes(forged.read_bytes().replace(b"myebox", b"otherbox"))
    refused = CliRunner().invoke(cli, ["envelope", "verify", str(forged), "--cert", str(out / "hub.cert.pem")])
    assert refused.exit_code == 1


def test_a_free_text_reply_is_left_out_of_the_bundle(hub, tmp_path):
    message_id = hub.intake.submit(keyring().sign(example("citizen-letter")), door="test").message_id
    reply = f"OK, my number is {NATIONAL_NUMBER[:6]}-{NATIONAL_NUMBER[6:9]}.{NATIONAL_NUMBER[9:]}"  # anything
    with hub.sessions.begin() as session:
        session.add(
            EventRow(
                message_id=message_id,
                kind="replied",
                occurred_at=NOW,
                source="myebox",
                provider="myebox",
                detail=json.dumps({"ack_id": "r-1", "reply": {"choice_id": None, "text": reply}}),
            )
        )
    bundle = export_bundle(hub.sessions, hub.hub_keys, message_id, tmp_path / "b")
    assert bundle.acknowledgements == ["ack-01-accepted.xml"]
    assert any("free-text reply" in why for why in bundle.withheld.values())
    events = json.loads((tmp_path / "b" / "events.json").read_text())
    assert events[-1]["detail"]["reply"] == {
        "choice_id": None,
        "text_sha256": hashlib.sha256(reply.encode()).hexdigest(),
    }
    assert "free-text reply" in (tmp_path / "b" / "README.txt").read_text()
    for path in (tmp_path / "b").iterdir():
        assert NATIONAL_NUMBER[6:9] + "." + NATIONAL_NUMBER[9:] not in path.read_text(), path.name


def test_a_bundle_never_holds_the_recipients_number(hub, tmp_path):
    envelope = example("citizen-letter")  # a careless sender puts the number in its own message id
    envelope = replace(envelope, header=replace(envelope.header, sender_message_id=f"LTR-{NATIONAL_NUMBER}"))
    message_id = hub.intake.submit(keyring().sign(envelope), door="test").message_id
    bundle = export_bundle(hub.sessions, hub.hub_keys, message_id, tmp_path / "b")
    assert {"receipt.xml", "ack-01-accepted.xml", "audit.json", "message.json"} <= set(bundle.withheld)
    for path in (tmp_path / "b").iterdir():
        assert NATIONAL_NUMBER not in path.read_text(), path.name


def test_hub_audit_seal_every_runs_as_a_service_until_sigterm(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from datetime import UTC, datetime

    url = f"sqlite:///{tmp_path / 'hub.db'}"
    engine = make_engine(url)
    upgrade(engine)
    sessions = session_factory(engine)
    with sessions() as session:
        session.add(AuditEntry(at=datetime.now(UTC), actor="test", action="probe", detail="{}"))
        session.commit()
    env = {**os.environ, "HUB_DATABASE_URL": url, "HUB_DATA_DIR": str(tmp_path), "HUB_CONFIG_DIR": str(tmp_path)}
    hub = str(Path(sys.executable).parent / "hub")
    process = subprocess.Popen([hub, "audit", "seal", "--every", "0.1"], env=env, stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with sessions() as session:
                if session.scalar(select(AuditEntry.hash).where(AuditEntry.action == "probe")):
                    break
            time.sleep(0.1)
        else:
            pytest.fail("the entry was not sealed")
        with sessions() as session:  # a later entry is sealed too: it keeps sealing
            session.add(AuditEntry(at=datetime.now(UTC), actor="test", action="later", detail="{}"))
            session.commit()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with sessions() as session:
                if session.scalar(select(AuditEntry.hash).where(AuditEntry.action == "later")):
                    break
            time.sleep(0.1)
        else:
            pytest.fail("the later entry was not sealed")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
        engine.dispose()
