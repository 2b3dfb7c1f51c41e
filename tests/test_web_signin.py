"""Signing in to the web console: password + TOTP, one use per code, lock-out, sessions, CSRF, languages."""

from __future__ import annotations

import pyotp
import pytest
from sqlalchemy import func, select

from hub.store.models import AuditEntry, WebAccount, WebSession
from tests.web_kit import PASSWORD, csrf_of, make_accounts, sign_in, web_client, web_hub


@pytest.fixture()
def site(tmp_path, database_url):
    runtime = web_hub(tmp_path, database_url)
    secrets = make_accounts(runtime)
    client, clock = web_client(runtime)
    with client:
        yield runtime, client, clock, secrets
    runtime.close()


def test_a_user_signs_in_with_password_and_code_and_lands_on_their_messages(site):
    runtime, client, clock, secrets = site
    answer = sign_in(client, clock, secrets, "tax.user")
    assert answer.status_code == 303 and answer.headers["location"] == "/web/messages"
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/web" in cookie
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(WebSession)) == 1
        actions = [e.action for e in session.scalars(select(AuditEntry))]
    assert "web-signin" in actions


def test_an_operator_lands_on_the_console(site):
    _runtime, client, clock, secrets = site
    answer = sign_in(client, clock, secrets, "ops")
    assert answer.headers["location"] == "/web/console"


@pytest.mark.parametrize("what", ["password", "code", "user"])
def test_a_wrong_password_code_or_user_is_refused_alike(site, what):
    _runtime, client, clock, secrets = site
    form = client.get("/web/signin")
    data = {
        "csrf": csrf_of(form.text),
        "username": "tax.user",
        "password": PASSWORD,
        "code": clock.next_code(secrets["tax.user"]),
    }
    if what == "password":
        data["password"] = "not the password at all"
    elif what == "code":
        data["code"] = "000000" if data["code"] != "000000" else "111111"
    else:
        data["username"] = "nobody"
    answer = client.post("/web/signin", data=data, follow_redirects=False)
    assert answer.status_code == 401
    assert "is not right" in answer.text
    assert "hub_session" not in answer.headers.get("set-cookie", "")


def test_a_code_is_good_once(site):
    _runtime, client, clock, secrets = site
    code = clock.next_code(secrets["tax.user"])
    assert sign_in(client, clock, secrets, "tax.user", code=code).status_code == 303
    client.cookies.clear()
    assert sign_in(client, clock, secrets, "tax.user", code=code).status_code == 401


def test_five_failures_lock_the_account_even_for_the_right_password(site):
    runtime, client, clock, secrets = site
    for _ in range(5):
        form = client.get("/web/signin")
        client.post(
            "/web/signin",
            data={
                "csrf": csrf_of(form.text),
                "username": "tax.user",
                "password": "wrong-wrong-wrong",
                "code": "123456",
            },
        )
    assert sign_in(client, clock, secrets, "tax.user").status_code == 401
    with runtime.sessions() as session:
        assert session.get(WebAccount, "tax.user").locked_until is not None


def test_the_sign_in_form_needs_its_csrf_token(site):
    _runtime, client, clock, secrets = site
    client.get("/web/signin")
    answer = client.post(
        "/web/signin", data={"username": "tax.user", "password": PASSWORD, "code": clock.next_code(secrets["tax.user"])}
    )
    assert answer.status_code == 403 and "CSRF_INVALID" in answer.text


def test_a_planted_session_cookie_is_never_promoted(site):
    """Session fixation: a cookie set before sign-in is replaced by a new random one."""
    runtime, client, clock, secrets = site
    client.cookies.set("hub_session", "attacker-chosen-value-0123456789", path="/web")
    answer = sign_in(client, clock, secrets, "tax.user")
    assert answer.status_code == 303
    assert "attacker-chosen-value-0123456789" not in answer.headers["set-cookie"]
    fixed = web_client(runtime)[0]
    fixed.cookies.set("hub_session", "attacker-chosen-value-0123456789", path="/web")
    assert fixed.get("/web/messages", follow_redirects=False).status_code == 303  # to sign-in


def test_signing_out_ends_the_session_on_the_server(site):
    runtime, client, clock, secrets = site
    sign_in(client, clock, secrets, "tax.user")
    token = client.cookies.get("hub_session")
    page = client.get("/web/messages")
    client.post("/web/signout", data={"csrf": csrf_of(page.text)})
    replay = web_client(runtime)[0]
    replay.cookies.set("hub_session", token, path="/web")
    assert replay.get("/web/messages", follow_redirects=False).headers["location"].startswith("/web/signin")


def test_pages_say_no_framing_no_inline_script_and_no_caching(site):
    _runtime, client, _clock, _secrets = site
    page = client.get("/web/signin")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(("lang", "word"), [("fr", "Connexion"), ("nl", "Aanmelden"), ("en", "Sign in")])
def test_the_sign_in_page_speaks_the_chosen_language(site, lang, word):
    _runtime, client, _clock, _secrets = site
    switched = client.get(f"/web/lang/{lang}?next=/web/signin")
    assert f'<html lang="{lang}">' in switched.text and f"<h1>{word}</h1>" in switched.text


def test_the_browser_language_is_used_until_one_is_chosen(site):
    _runtime, client, _clock, _secrets = site
    page = client.get("/web/signin", headers={"Accept-Language": "nl-BE,nl;q=0.9,fr;q=0.5"})
    assert '<html lang="nl">' in page.text


def test_after_sign_in_the_browser_never_goes_to_another_site(site):
    _runtime, client, clock, secrets = site
    form = client.get("/web/signin?next=//evil.example/")
    assert "evil" not in form.text
    answer = client.post(
        "/web/signin",
        data={
            "csrf": csrf_of(form.text),
            "username": "tax.user",
            "password": PASSWORD,
            "code": clock.next_code(secrets["tax.user"]),
            "next": "https://evil.example/",
        },
        follow_redirects=False,
    )
    assert answer.headers["location"] == "/web/messages"


def test_totp_secret_is_a_real_authenticator_secret(site):
    _runtime, _client, _clock, secrets = site
    assert len(pyotp.TOTP(secrets["ops"]).now()) == 6


class WithClientCertificate:
    """The ASGI TLS extension as ``hub serve`` fills it when the browser presents a client certificate."""

    def __init__(self, app, pem: str) -> None:
        self.app, self.pem = app, pem

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            scope = {**scope, "extensions": {"tls": {"client_cert_chain": [self.pem]}}}
        await self.app(scope, receive, send)


def certificate_client(runtime, certificate):
    from cryptography.hazmat.primitives.serialization import Encoding
    from starlette.testclient import TestClient

    client, _ = web_client(runtime)
    return TestClient(WithClientCertificate(client.app, certificate.public_bytes(Encoding.PEM).decode()))


def test_an_institutions_registered_client_certificate_signs_its_user_in(site):
    from tests.kit import keyring

    runtime, _, _, _ = site
    with certificate_client(runtime, keyring().pairs["0308357159"].certificate) as client:
        form = client.get("/web/signin")
        assert "Sign in with this certificate" in form.text and "0308357159" in form.text
        answer = client.post("/web/signin/certificate", data={"csrf": csrf_of(form.text)}, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"] == "/web/messages"
        assert client.get("/web/compose").status_code == 200
    with runtime.sessions() as session:
        assert session.scalars(select(WebSession.username)).all() == ["cert:0308357159"]


def test_an_unregistered_or_integrator_certificate_offers_no_certificate_sign_in(site):
    from tests.kit import key_pair, keyring

    runtime, _, _, _ = site
    for certificate in (key_pair("a stranger").certificate, keyring().pairs["0202239951"].certificate):
        with certificate_client(runtime, certificate) as client:
            form = client.get("/web/signin")
            assert "Sign in with this certificate" not in form.text
            answer = client.post("/web/signin/certificate", data={"csrf": csrf_of(form.text)}, follow_redirects=False)
            assert answer.status_code == 401
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(WebSession)) == 0
