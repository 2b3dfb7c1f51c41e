"""The web console's test kit: a hub whose institutions may send from the web, accounts, and sign-in.

``web_hub`` is ``make_hub``'s hub with ``self_service`` set for the tax administration and the social
security institution (the hub signs their users' envelopes with their registered keys); the city has
none. ``make_accounts`` creates a user of each of those institutions, one of the city and an operator.
``sign_in`` goes through the real sign-in form: its CSRF token, the password and a fresh TOTP code.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta

import pyotp
from starlette.testclient import TestClient

from hub.envelope import examples as ex
from hub.envelope.examples import minimal_pdf
from hub.inbound.http import build_app
from hub.inbound.senders import SelfService
from hub.runtime import Runtime
from hub.web.accounts import create_account
from tests.kit import keyring
from tests.test_inbound_rest import make_hub

PASSWORD = "correct horse battery staple"
USERS = {
    "tax.user": ("institution", ex.FINANCE),
    "social.user": ("institution", ex.SOCIAL),
    "city.user": ("institution", ex.CITY),
    "ops": ("operator", None),
}
APPLICATIONS = {ex.FINANCE: "tax-on-web", ex.SOCIAL: "pension-statements"}
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
PDF = minimal_pdf("Avertissement")


def with_self_service(runtime: Runtime) -> Runtime:
    """The runtime's directory, with ``self_service`` for the tax administration and social security."""
    ring = keyring()
    institutions = dict(runtime.directory.institutions)
    for org, application in APPLICATIONS.items():
        institutions[org] = dataclasses.replace(
            institutions[org], self_service=SelfService(application=application, keys=ring.pairs[org])
        )
    runtime.directory = dataclasses.replace(runtime.directory, institutions=institutions)
    runtime.intake.directory = runtime.directory
    return runtime


def web_hub(tmp_path, database_url, **env) -> Runtime:
    return with_self_service(make_hub(tmp_path, database_url, **env))


def make_accounts(runtime: Runtime) -> dict[str, str]:
    """Each of ``USERS``, with ``PASSWORD``; their TOTP secrets by user name."""
    secrets = {}
    for name, (role, institution) in USERS.items():
        secrets[name] = create_account(
            runtime.sessions, name, PASSWORD, role=role, institution_id=institution
        ).totp_secret
    return secrets


class WebClock:
    """The console's clock in tests: real time, moved on 30 s per sign-in so each TOTP code is a new one."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def next_code(self, secret: str) -> str:
        self.offset += timedelta(seconds=30)
        return pyotp.TOTP(secret).at(self())


def web_client(runtime: Runtime) -> tuple[TestClient, WebClock]:
    app = build_app(runtime)
    clock = WebClock()
    from hub.web.app import build_web

    web = build_web(runtime)
    web.clock = clock
    app.state.web = web
    return TestClient(app, base_url="http://testserver"), clock


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def sign_in(client: TestClient, clock: WebClock, secrets: dict[str, str], username: str, *, code: str | None = None):
    """Sign ``username`` in through the form; the response of the POST (303 on success)."""
    form = client.get("/web/signin")
    assert form.status_code == 200, form.text
    return client.post(
        "/web/signin",
        data={
            "csrf": csrf_of(form.text),
            "username": username,
            "password": PASSWORD,
            "code": code or clock.next_code(secrets[username]),
        },
        follow_redirects=False,
    )


def compose(client: TestClient, fields: dict[str, str], document=("aer.pdf", PDF, "application/pdf")):
    """The compose form posted with ``fields`` and ``document`` (None: no file); the answer (303 to the draft)."""
    page = client.get("/web/compose")
    assert page.status_code == 200, page.text
    files = {"document": document} if document else None
    return client.post("/web/compose", data={"csrf": csrf_of(page.text), **fields}, files=files, follow_redirects=False)


def send(client: TestClient, draft: str) -> str:
    """The draft at ``draft`` (its path) sent from its preview page; the hub's message id."""
    preview = client.get(draft)
    sent = client.post(draft + "/send", data={"csrf": csrf_of(preview.text)}, follow_redirects=False)
    assert sent.status_code == 303, sent.text
    return sent.headers["location"].split("/")[3].split("?")[0]


def delivered_and_opened(runtime: Runtime, message_id: str) -> dict[str, int]:
    """The message delivered to and opened at ``myebox``, as the acknowledgement stage records it; event ids by kind."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select

    from hub.store.models import Delivery, Event, Message

    now = datetime.now(UTC)
    with runtime.sessions.begin() as session:
        session.add(
            Delivery(
                id=f"{message_id}:myebox",
                message_id=message_id,
                provider="myebox",
                state="opened",
                priority=4,
                created_at=now,
                updated_at=now,
            )
        )
        for kind, at in (("delivered", now), ("opened", now + timedelta(seconds=1))):
            session.add(
                Event(
                    message_id=message_id, kind=kind, occurred_at=at, source="provider", provider="myebox", detail="{}"
                )
            )
        session.get(Message, message_id).state = "opened"
    with runtime.sessions() as session:
        return {e.kind: e.id for e in session.scalars(select(Event).where(Event.message_id == message_id))}
