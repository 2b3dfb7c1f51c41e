"""``hub demo``: the whole hub at work on the embedded default, with nothing installed beyond the package.

In a temporary folder it creates keys for three institutions, an integrator, five mailbox
providers and the hub, writes the providers' and routing configuration, starts every stage
of the hub in this process (``hub.service``: SQLite and the in-process broker) and the five
simulated providers (``hub.outbound.simulated``), fills the recipient directory (citizens
reading with one provider, with two, and one who never activated digital post; an
enterprise), then sends a realistic mix of signed envelopes and forged or broken ones.
While the messages travel it shows progress; at the end, a table of every message's
journey and the acknowledgements each sender received (signed by the hub, each checked).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from hub.envelope import examples as ex
from hub.envelope import model as m
from hub.envelope.builder import build_envelope, to_bytes
from hub.envelope.model import Envelope
from hub.envelope.rules import MessageTypePolicy
from hub.errors import Rejected
from hub.inbound.acceptance import Intake
from hub.inbound.senders import AckChannel, Institution, Integrator, SenderDirectory
from hub.outbound.acks import open_acknowledgements, read_acknowledgement
from hub.outbound.feed import acknowledgement, read, sequence
from hub.outbound.simulated import Behaviour, SimulatedProvider
from hub.routing.directory import Change, Directory, mask
from hub.routing.recipients import RecipientKind
from hub.runtime import Runtime, build_runtime
from hub.safexml import parse
from hub.settings import load_settings
from hub.signing.keys import KeyPair, generate_key, self_signed_certificate, write_key_pair
from hub.signing.signer import Signer
from hub.signing.truststore import TrustedCertificate, TrustStore, trusted
from hub.signing.verifier import Verifier
from hub.store.db import make_engine, upgrade
from hub.store.models import Delivery, Message
from hub.store.models import Event as EventRow

INSTITUTIONS = {
    ex.FINANCE: "tax administration",
    ex.SOCIAL: "social security",
    ex.CITY: "city",
    ex.INTEGRATOR: "integrator",
}
ACK_CHANNELS = {ex.FINANCE: "polling", ex.SOCIAL: "amqp", ex.CITY: "polling", ex.INTEGRATOR: "amqp"}
APPLICATIONS = {
    ex.FINANCE: ("tax-on-web", ("GENERAL_INFORMATION", "TAX_ASSESSMENT")),
    ex.SOCIAL: (
        "pension-statements inspection employer-declarations",
        ("PENSION_STATEMENT", "FORMAL_NOTICE", "EMPLOYER_NOTICE"),
    ),
    ex.CITY: ("population citizen-portal", ("INFORMATION_REQUEST", "PARKING_PERMIT")),
}
PROVIDERS = {
    "myebox": ("My eBox portal", "[citizen, enterprise]", "[registered, replies, payments, eidas_high]", False),
    "doccle": ("Doccle-like app", "[citizen]", "[payments, replies]", False),
    "irisbox": ("IRISbox-like portal", "[citizen]", "[registered, replies, eidas_high]", False),
    "enterprise": ("e-Box Enterprise-like business inbox", "[enterprise]", "[registered, replies, payments]", True),
    "paper": ("Print and post centre", "[citizen, enterprise]", "[paper, registered, payments]", True),
}
ROUTING = """\
rules:
  - name: registered-mail
    match: {registered: true}
    deliver: all
    fallback: paper
    priority: high
  - name: enterprises
    match: {recipient_kind: enterprise}
    deliver: [enterprise]
    fallback: paper
  - name: default
    match: {}
    deliver: all
    fallback: paper
"""
READERS = {  # who reads with which providers
    ex.CITIZEN_A: ("myebox",),
    ex.CITIZEN_B: ("myebox", "doccle"),
}
NO_CONSENT = ex.CITIZEN_C
SETTLED = {"opened", "replied", "printed", "undeliverable", "failed", "expired", "delivered"}
TIME_LIMIT_S = 45.0


def key_pair_for(name: str, org: str | None, now: datetime) -> KeyPair:
    key = generate_key("ec")
    return KeyPair(key, self_signed_certificate(key, name, organization=org, not_before=now - timedelta(hours=1)))


def _senders(pairs: dict[str, KeyPair]) -> SenderDirectory:
    def certs(org: str) -> tuple[TrustedCertificate, ...]:
        return (trusted(org, pairs[org].certificate),)

    def tokens(org: str) -> frozenset[str]:
        return frozenset({hashlib.sha256(f"demo-token-{org}".encode()).hexdigest()})

    institutions = {
        org: Institution(
            id=org,
            name=INSTITUTIONS[org],
            applications=frozenset(apps.split()),
            message_types={t: MessageTypePolicy() for t in types},
            certificates=certs(org),
            token_hashes=tokens(org),
            acknowledgements=AckChannel(kind=ACK_CHANNELS[org]),
        )
        for org, (apps, types) in APPLICATIONS.items()
    }
    integrator = Integrator(
        id=ex.INTEGRATOR,
        name=INSTITUTIONS[ex.INTEGRATOR],
        mandates=frozenset({ex.CITY}),
        certificates=certs(ex.INTEGRATOR),
        token_hashes=tokens(ex.INTEGRATOR),
        acknowledgements=AckChannel(kind=ACK_CHANNELS[ex.INTEGRATOR]),
    )
    return SenderDirectory(institutions, {ex.INTEGRATOR: integrator})


def write_config(folder: Path, provider_pairs: dict[str, KeyPair]) -> Path:
    config = folder / "config"
    keys = config / "keys"
    lines = ["providers:"]
    for pid, (name, kinds, capabilities, universal) in PROVIDERS.items():
        write_key_pair(provider_pairs[pid], keys, pid)
        lines += [
            f"  - id: {pid}",
            f"    name: {name}",
            f"    kinds: {kinds}",
            f"    capabilities: {capabilities}",
            f"    universal: {'true' if universal else 'false'}",
            "    certificates:",
            f"      - file: keys/{pid}.cert.pem",
        ]
    (config / "providers.yaml").write_text("\n".join(lines) + "\n")
    (config / "routing.yaml").write_text(ROUTING)
    return config


def _mix(now: datetime) -> list[tuple[str, Envelope]]:
    """Every example kind, plus a letter to a citizen without digital post (paper)."""
    created = now - timedelta(minutes=1)
    mix = [(kind, ex.example(kind, created=created)) for kind in sorted(ex.KINDS)]
    letter = ex.example("citizen-letter", created=created)
    to_paper = replace(
        letter,
        header=replace(
            letter.header,
            sender_message_id="TAX-LETTER-PAPER",
            recipient=m.Recipient(ebox_type=m.EboxType.CITIZEN, id=NO_CONSENT),
        ),
    )
    return [*mix, ("letter, no digital post", to_paper)]


def run_demo(folder: Path, echo: Callable[[str], None] = click.echo) -> int:
    """Run the demo in ``folder``; return the number of outcomes that were not as expected."""
    from hub.service import Service  # the service imports every stage: late, so `hub --help` stays quick

    now = datetime.now(UTC).replace(microsecond=0)
    pairs = {org: key_pair_for(name, org, now) for org, name in INSTITUTIONS.items()}
    for org, pair in pairs.items():
        write_key_pair(pair, folder / "keys", org)
    provider_pairs = {pid: key_pair_for(f"provider {pid}", None, now) for pid in PROVIDERS}
    config = write_config(folder, provider_pairs)
    settings = load_settings(
        config, environ={"HUB_DATA_DIR": str(folder / "var"), "HUB_BROKER_URL": "memory://", "HUB_DATABASE_URL": ""}
    )
    upgrade(make_engine(settings.effective_database_url))
    runtime = build_runtime(settings, directory=_senders(pairs))
    service = Service(runtime, http=False, check_every=3600)
    echo(f"Hub in {folder}: SQLite {settings.effective_database_url.split('///')[-1]}, in-process broker.")
    echo(f"Keys for {len(pairs)} senders and {len(provider_pairs)} providers; the hub signs with its own key.")

    directory = Directory(runtime.sessions)
    at = now - timedelta(days=30)
    changes = []
    for citizen, providers in READERS.items():
        for provider in providers:
            changes.append(Change(op="activate", kind=RecipientKind.CITIZEN, id=citizen, at=at, provider=provider))
            changes.append(Change(op="link", kind=RecipientKind.CITIZEN, id=citizen, at=at, provider=provider))
    directory.apply(changes)
    echo(
        f"Directory: citizen {mask(ex.CITIZEN_A)} reads with myebox; {mask(ex.CITIZEN_B)} with myebox and doccle; "
        f"{mask(NO_CONSENT)} has no digital post; enterprise {mask(ex.ENTERPRISE)} uses the business inbox.\n"
    )

    service.start()
    # Everyone opens what reaches them, except on the Doccle-like app where half stays unread; a reply
    # wherever the envelope asks for one. Seeded: a run can be replayed.
    readers = {pid: 0.5 if pid == "doccle" else 1.0 for pid in PROVIDERS}
    simulated = [
        SimulatedProvider(
            pid,
            settings.broker_url,
            provider_pairs[pid],
            behaviour=Behaviour(
                open_probability=readers[pid], open_delay_s=0.4, reply_probability=1.0, jitter=0.5, seed=2026
            ),
            poll=0.05,
        )
        for pid in PROVIDERS
    ]
    for simulator in simulated:
        simulator.start()
    surprises = 0
    try:
        sent: dict[str, str] = {}
        echo(f"{'sending':<34} outcome")
        for label, envelope in _mix(now):
            org = envelope.header.sender.organization_id
            data = to_bytes(Signer(pairs[org]).sign(build_envelope(envelope)))
            try:
                receipt = runtime.intake.submit(data, door="demo")
            except Rejected as refused:
                surprises += 1
                echo(f"{label:<34} UNEXPECTED {refused}")
                continue
            sent[receipt.message_id] = label
            echo(f"{label:<34} accepted: receipt {receipt.message_id[:8]}… signed by the hub")
        surprises += _hostile(runtime.intake, pairs, now, echo)
        echo("")
        surprises += _wait(runtime.sessions, list(sent), echo)
    finally:
        for simulator in simulated:
            simulator.stop()
        service.stop()
    surprises += _journeys(runtime, sent, echo)
    surprises += _acknowledgements(runtime, settings.broker_url, sent, echo)
    runtime.close()
    return surprises


def _hostile(intake: Intake, pairs: dict[str, KeyPair], now: datetime, echo: Callable[[str], None]) -> int:
    letter = ex.example("payment", created=now - timedelta(minutes=1))
    assert letter.content.payment is not None

    def sign(model: Envelope, org: str | None = None) -> bytes:
        return to_bytes(Signer(pairs[org or model.header.sender.organization_id]).sign(build_envelope(model)))

    letter = replace(letter, header=replace(letter.header, sender_message_id="AER-HOSTILE"))
    payment = letter.content.payment
    assert payment is not None
    good = sign(letter)
    forged_sender = replace(
        letter, header=replace(letter.header, sender=replace(letter.header.sender, organization_id=ex.SOCIAL))
    )
    bad_iban = replace(letter, content=replace(letter.content, payment=replace(payment, iban="BE71096123456768")))
    hostile: dict[str, tuple[bytes, str]] = {
        "amount changed after signing": (good.replace(b"1234.56", b"9234.56"), "SIGNATURE_INVALID"),
        "signed by the city, claims to be social security": (sign(forged_sender, ex.CITY), "UNKNOWN_SIGNER"),
        "unsigned": (to_bytes(build_envelope(letter)), "SIGNATURE_MISSING"),
        "external entity (XXE)": (
            b'<!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]><m>&x;</m>',
            "XML_FORBIDDEN",
        ),
        "invalid IBAN, properly signed": (sign(bad_iban), "IBAN_INVALID"),
    }
    surprises = 0
    for label, (data, expected) in hostile.items():
        try:
            intake.submit(data, door="demo")
            outcome, ok = "ACCEPTED (should have been refused)", False
        except Rejected as refused:
            outcome, ok = f"refused {refused.code}", refused.code == expected
        surprises += not ok
        echo(f"{label:<50} {outcome}")
    return surprises


def _wait(sessions: sessionmaker[Session], ids: list[str], echo: Callable[[str], None]) -> int:
    """Show progress until every delivery was handled and the events stop coming; 1 if time ran out."""
    start = time.monotonic()
    last_count, quiet_since, shown = -1, time.monotonic(), ""
    while True:
        with sessions() as session:
            states = Counter(session.scalars(select(Message.state).where(Message.id.in_(ids))))
            waiting = session.execute(
                select(Delivery.not_before).where(Delivery.message_id.in_(ids), Delivery.state == "pending")
            ).all()
            now = datetime.now(UTC)
            held = sum(1 for (until,) in waiting if until is not None and until > now)  # effective date: tomorrow
            pending = len(waiting) - held
            events = len(list(session.scalars(select(EventRow.id).where(EventRow.message_id.in_(ids)))))
        line = "progress: " + ", ".join(f"{state} {n}" for state, n in sorted(states.items()))
        line += f"; {pending} deliveries pending, {held} held until their effective date; {events} events"
        if line != shown:
            echo(line)
            shown = line
        if events != last_count:
            last_count, quiet_since = events, time.monotonic()
        settled = pending == 0 and set(states) <= SETTLED | ({"routed"} if held else set())
        if settled and time.monotonic() - quiet_since > 1.5:
            return 0
        if time.monotonic() - start > TIME_LIMIT_S:
            echo(f"UNEXPECTED: not settled after {TIME_LIMIT_S:.0f} s")
            return 1
        time.sleep(0.25)


def _journeys(runtime: Runtime, sent: dict[str, str], echo: Callable[[str], None]) -> int:
    echo(f"\n{'message':<26} {'from':<20} {'to':<15} {'state':<13} journey")
    surprises = 0
    with runtime.sessions() as session:
        for message_id, label in sent.items():
            message = session.get(Message, message_id)
            assert message is not None
            events = session.scalars(
                select(EventRow).where(EventRow.message_id == message_id).order_by(EventRow.id)
            ).all()
            journey = " > ".join(f"{e.kind}{'@' + e.provider if e.provider else ''}" for e in events)
            held = session.scalars(
                select(Delivery.not_before).where(Delivery.message_id == message_id, Delivery.not_before.is_not(None))
            ).first()
            if held is not None and message.state == "routed":
                journey += f" (held until {held:%Y-%m-%d %H:%M} UTC, its effective date)"
            echo(
                f"{label:<26} {INSTITUTIONS[message.institution_id]:<20} "
                f"{message.recipient_kind + ' ' + mask(message.recipient_id)[-4:]:<15} {message.state:<13} {journey}"
            )
            if message.state == "accepted" or (message.state == "routed" and held is None):
                surprises += 1
    return surprises


def _acknowledgements(runtime: Runtime, broker_url: str, sent: dict[str, str], echo: Callable[[str], None]) -> int:
    """What each sender received: its AMQP queue, or its polling feed; every acknowledgement's signature checked."""
    from hub.broker.connection import connect

    verifier = Verifier(TrustStore([trusted("hub", runtime.hub_keys.certificate)]))
    now = datetime.now(UTC)
    with runtime.sessions() as session:
        sequence(session)
        session.commit()
        rows = session.execute(
            select(Message.institution_id, Message.submitter_id)
            .join(EventRow, EventRow.message_id == Message.id)
            .where(Message.id.in_(sent))
        ).all()
    # AMQP: the submitter's queue; the polling feed: every message the reader sent or had sent for it
    expected = {
        org: sum(
            1
            for institution, submitter in rows
            if org == submitter or (ACK_CHANNELS[org] == "polling" and org == institution)
        )
        for org in INSTITUTIONS
    }
    echo("\nacknowledgements each sender received (all signed by the hub, each signature checked):")
    surprises = 0
    for org, name in INSTITUTIONS.items():
        kinds: Counter[str] = Counter()
        if ACK_CHANNELS[org] == "amqp":
            connection = connect(broker_url)
            try:
                queue = connection.SimpleQueue(f"sender.{org}.acks", no_ack=True)
                while True:
                    try:
                        message = queue.get(timeout=0.2)
                    except Exception:  # Empty: the queue is drained
                        break
                    root = parse(message.body)
                    verifier.verify(root, now=now, parties=["hub"])
                    kinds[read_acknowledgement(root).event.value] += 1
                queue.close()
            finally:
                connection.release()
            how = f"queue sender.{org}.acks"
        else:
            with runtime.sessions() as session:
                items = read(session, after=0, limit=1000, parties=[org])
            if items:
                from hub.outbound.acks import signed_acknowledgements

                document = signed_acknowledgements(Signer(runtime.hub_keys), [acknowledgement(i) for i in items])
                acks, _ = open_acknowledgements(document, verifier, now, issuers=["hub"])
                kinds.update(a.event.value for a in acks)
            how = "GET /v1/acks feed"
        total = sum(kinds.values())
        ok = total == expected.get(org, 0)
        surprises += not ok
        detail = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items(), key=lambda kv: kv[0]))
        echo(f"  {name:<20} {total:>3} via {how:<32} {detail}{'' if ok else '  UNEXPECTED: missing some'}")
    return surprises


@click.command("demo")
@click.option("--keep", type=click.Path(file_okay=False), help="Work in this folder and keep it.")
def demo(keep: str | None) -> None:
    """Run the whole hub on the embedded default: senders, routing, simulated providers, acknowledgements."""
    root = logging.getLogger()
    level = root.level
    if "HUB_LOG_LEVEL" not in os.environ:  # the story is told on stdout: the stages' logs only when asked for
        root.setLevel(logging.ERROR)
    started = time.monotonic()
    try:
        if keep:
            folder = Path(keep)
            folder.mkdir(parents=True, exist_ok=True)
            surprises = run_demo(folder)
            click.echo(f"\nKeys, configuration and the database are in {folder}.")
        else:
            with tempfile.TemporaryDirectory(prefix="hub-demo-") as tmp:
                surprises = run_demo(Path(tmp))
    finally:
        root.setLevel(level)  # run in-process (tests, an embedding program): leave logging as it was
    click.echo(f"\nDone in {time.monotonic() - started:.1f} s{'' if not surprises else f'; {surprises} surprise(s)'}.")
    click.echo(
        "The same hub with a web console for institutions' users and operators: `hub run`, then "
        "http://127.0.0.1:8080/web (accounts: `hub web account create`; README, docs/web.md)."
    )
    if surprises:
        raise SystemExit(1)
