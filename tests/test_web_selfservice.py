"""Self-service sending: write, check, preview, send through the intake, follow, download proofs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from hub.outbound.acks import open_acknowledgement
from hub.routing.directory import Change, Directory
from hub.routing.recipients import RecipientKind
from hub.safexml import parse
from hub.signing.truststore import TrustStore, trusted
from hub.signing.verifier import Verifier
from hub.store.models import AuditEntry, Message, WebDraft
from tests.kit import keyring
from tests.web_kit import compose, csrf_of, delivered_and_opened, make_accounts, send, sign_in, web_client, web_hub

CITIZEN = "85073003328"


@pytest.fixture()
def site(tmp_path, database_url):
    runtime = web_hub(tmp_path, database_url)
    runtime.intake.clock = lambda: datetime.now(UTC)  # the web writes envelopes dated now
    secrets = make_accounts(runtime)
    client, clock = web_client(runtime)
    with client:
        yield runtime, client, clock, secrets
    runtime.close()


def form(**changes):
    fields = {
        "recipient_kind": "citizen",
        "recipient_id": "85.07.30-033.28",
        "message_type": "TAX_ASSESSMENT",
        "subject_fr": "Votre avertissement-extrait de rôle",
        "body_fr": "Madame, Monsieur,\nVoici votre avertissement.",
        "subject_nl": "Uw aanslagbiljet",
        "registered": "on",
        "reply": "none",
    }
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not None}


def signed_in(site, user="tax.user"):
    runtime, client, clock, secrets = site
    assert sign_in(client, clock, secrets, user).status_code == 303
    return runtime, client


def test_a_message_written_on_the_web_is_signed_for_the_institution_previewed_and_accepted(site):
    runtime, client = signed_in(site)
    drafted = compose(client, form())
    assert drafted.status_code == 303, drafted.text
    preview = client.get(drafted.headers["location"])
    assert "Votre avertissement-extrait de rôle" in preview.text and 'id="send"' in preview.text
    assert CITIZEN not in preview.text  # the national number is masked, even to its sender
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 0  # nothing sent before "Send"
    sent = client.post(
        drafted.headers["location"] + "/send", data={"csrf": csrf_of(preview.text)}, follow_redirects=False
    )
    assert sent.status_code == 303
    message_id = sent.headers["location"].split("/")[3].split("?")[0]
    with runtime.sessions() as session:
        message = session.get(Message, message_id)
        assert message.institution_id == "0308357159" and message.registered and message.recipient_id == CITIZEN
        assert session.scalar(select(func.count()).select_from(WebDraft)) == 0
        audit = [(e.actor, e.action) for e in session.scalars(select(AuditEntry))]
    assert ("web:tax.user", "web-sent") in audit
    # the stored envelope is signed with the institution's own key, as if it had sent it itself
    verified = Verifier(keyring().trust).verify(parse(message.envelope), now=datetime.now(UTC))
    assert verified.signer.party == "0308357159"
    page = client.get(sent.headers["location"])
    assert 'data-state="accepted"' in page.text and "data-refresh" in page.text


def test_sending_a_draft_twice_gives_one_message(site):
    runtime, client = signed_in(site)
    drafted = compose(client, form())
    preview = client.get(drafted.headers["location"])
    token = csrf_of(preview.text)
    first = client.post(drafted.headers["location"] + "/send", data={"csrf": token}, follow_redirects=False)
    second = client.post(drafted.headers["location"] + "/send", data={"csrf": token}, follow_redirects=False)
    assert first.status_code == 303 and second.status_code == 404
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 1


@pytest.mark.parametrize(
    ("changes", "field", "text"),
    [
        ({"recipient_id": "85073003329"}, "recipient_id", "not a valid national number"),
        (
            {"recipient_kind": "enterprise", "recipient_id": "0308357158"},
            "recipient_id",
            "not a valid enterprise number",
        ),
        ({"subject_fr": "", "subject_nl": "", "body_fr": ""}, "subject_fr", "a subject in at least one language"),
        (
            {"payment_iban": "BE00 0000 0000 0000", "payment_amount": "12.50", "payment_due_date": "2099-01-01"},
            "payment_iban",
            "not a valid IBAN",
        ),
        (
            {"payment_iban": "BE71096123456769", "payment_amount": "-3", "payment_due_date": "2099-01-01"},
            "payment_amount",
            "above 0",
        ),
        (
            {
                "payment_iban": "BE71096123456769",
                "payment_amount": "3",
                "payment_due_date": "2099-01-01",
                "payment_reference": "+++010/8068/17184+++",
            },
            "payment_reference",
            "structured reference",
        ),
        ({"reply": "choices", "reply_choices": "only one"}, "reply_choices", "2 to 10"),
        ({"expires_on": "2001-01-01"}, "expires_on", "in the future"),
        ({"message_type": "PENSION_STATEMENT"}, "message_type", "Choose one"),
    ],
)
def test_a_wrong_field_is_named_with_why_and_nothing_is_drafted(site, changes, field, text):
    runtime, client = signed_in(site)
    answer = compose(client, form(**changes))
    assert answer.status_code == 422
    assert f'id="{field}-error"' in answer.text and text in answer.text
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(WebDraft)) == 0


def test_what_the_intake_would_refuse_is_said_before_the_preview(site):
    """Beyond the form's own checks, the signed envelope goes through the intake's: here, an expiry past
    the message type's maximum retention (36 months for TAX_ASSESSMENT in the test directory's default)."""
    _runtime, client = signed_in(site)
    far = (datetime.now(UTC) + timedelta(days=365 * 30)).date().isoformat()
    answer = compose(client, form(expires_on=far))
    assert answer.status_code == 422 and "EXPIRY_OUT_OF_RANGE" in answer.text


def test_a_document_that_is_not_a_pdf_is_refused_whatever_its_name(site):
    _runtime, client = signed_in(site)
    answer = compose(client, form(), document=("aer.pdf", b"MZ\x90\x00 not a pdf", "application/pdf"))
    assert answer.status_code == 422 and "not a PDF" in answer.text


def test_the_live_check_answers_check_digits_and_digital_post(site):
    runtime, client = signed_in(site)
    Directory(runtime.sessions).apply(
        [
            Change(
                op="activate",
                kind=RecipientKind.CITIZEN,
                id=CITIZEN,
                at=datetime.now(UTC) - timedelta(days=1),
                provider="myebox",
            )
        ]
    )
    token = csrf_of(client.get("/web/compose").text)

    def ask(ident):
        return client.post(
            "/web/api/recipient", data={"kind": "citizen", "id": ident}, headers={"X-CSRF-Token": token}
        ).json()

    assert ask(CITIZEN) == {"valid": True, "digital": True}
    assert ask("85073003329") == {"valid": False, "digital": None}
    assert ask("90010100132") in ({"valid": True, "digital": False}, {"valid": False, "digital": None})
    assert client.post("/web/api/recipient", data={"kind": "citizen", "id": CITIZEN}).status_code == 403


def test_registered_mail_offers_hub_signed_proofs_of_delivery_and_opening(site):
    runtime, client = signed_in(site)
    drafted = compose(client, form())
    message_id = send(client, drafted.headers["location"])
    delivered_and_opened(runtime, message_id)
    page = client.get(f"/web/messages/{message_id}")
    assert 'data-state="opened"' in page.text and "data-refresh" not in page.text
    for kind in ("delivered", "opened"):
        link = page.text.split(f'id="proof-{kind}-myebox" href="')[1].split('"')[0]
        proof = client.get(link)
        assert proof.status_code == 200 and "attachment" in proof.headers["content-disposition"]
        ack, _ = open_acknowledgement(
            proof.content,
            verifier=Verifier(TrustStore([trusted("hub", runtime.hub_keys.certificate)])),
            now=datetime.now(UTC),
            issuers=["hub"],
        )
        assert ack.event.value == kind and ack.proof is not None and ack.hub_message_id == message_id


def test_another_institutions_user_sees_no_trace_of_the_message(site):
    runtime, client, clock, secrets = site
    sign_in(client, clock, secrets, "tax.user")
    drafted = compose(client, form())
    message_id = send(client, drafted.headers["location"])
    event_id = delivered_and_opened(runtime, message_id)["opened"]
    other, _ = web_client(runtime)
    other.app.state.web.clock = clock
    with other:
        sign_in(other, clock, secrets, "social.user")
        for path in (
            f"/web/messages/{message_id}",
            f"/web/messages/{message_id}/proofs/{event_id}",
            drafted.headers["location"],
        ):
            answer = other.get(path)
            assert answer.status_code == 404 and message_id not in answer.text.replace(path, "")
        assert message_id not in other.get("/web/messages").text


def test_an_institution_without_a_self_service_key_is_told_so(site):
    _runtime, client = signed_in(site, "city.user")
    answer = client.get("/web/compose")
    assert answer.status_code == 403 and "self-service key" in answer.text


def test_an_operator_cannot_send(site):
    _runtime, client = signed_in(site, "ops")
    assert client.get("/web/compose").status_code == 403
