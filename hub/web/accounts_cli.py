"""``hub web account ...``: the operator creates, lists and disables web console accounts.

hub web account create NAME --institution CBE | --operator   (password asked twice, or --password-stdin)
hub web account list
hub web account disable NAME

``create`` prints the TOTP secret and its ``otpauth://`` URI once, for the user's authenticator
app; the hub keeps the password only as an Argon2id hash. Each action is audited.
"""

from __future__ import annotations

import sys

import click

from hub.errors import ConfigError


def _runtime_parts() -> tuple[object, object, frozenset[str]]:
    from hub.inbound.senders import load_senders
    from hub.settings import load_settings
    from hub.store.db import make_engine, session_factory, upgrade

    settings = load_settings()
    if not settings.database_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    institutions = (
        frozenset(load_senders(settings.senders_file).institutions) if settings.senders_file.exists() else None
    )
    return engine, session_factory(engine), institutions  # type: ignore[return-value]


@click.group("web")
def web_group() -> None:
    """The web console (/web): its accounts."""


@web_group.group("account")
def account_group() -> None:
    """Accounts that sign in with a password and a TOTP code."""


@account_group.command("create")
@click.argument("username")
@click.option("--institution", metavar="CBE", help="The institution this user sends for (self-service).")
@click.option("--operator", is_flag=True, help="An operator (the console), not an institution user.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (scripts).")
def account_create(username: str, institution: str | None, operator: bool, password_stdin: bool) -> None:
    """Create an account; prints its TOTP secret once."""
    from hub.lifecycle.audit import audit_operator_action, operator_actor
    from hub.web.accounts import create_account

    if operator == bool(institution):
        raise click.UsageError("give either --institution CBE or --operator")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    engine, sessions, institutions = _runtime_parts()
    try:
        created = create_account(
            sessions,  # type: ignore[arg-type]
            username,
            password,
            role="operator" if operator else "institution",
            institution_id=institution,
            known_institutions=institutions,
        )
        audit_operator_action(
            sessions,  # type: ignore[arg-type]
            operator_actor(),
            "web-account-created",
            {"username": username, "role": "operator" if operator else "institution", "institution": institution},
        )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        engine.dispose()  # type: ignore[attr-defined]
    click.echo(f"account {created.username} created")
    click.echo(f"TOTP secret (for the authenticator app, shown once): {created.totp_secret}")
    click.echo(f"otpauth URI: {created.provisioning_uri}")


@account_group.command("list")
def account_list() -> None:
    """The accounts: name, role, institution, state."""
    from hub.web.accounts import list_accounts

    engine, sessions, _ = _runtime_parts()
    try:
        for account in list_accounts(sessions):  # type: ignore[arg-type]
            state = "disabled" if account.disabled_at else "active"
            click.echo(f"{account.username:<32} {account.role:<12} {account.institution_id or '-':<11} {state}")
    finally:
        engine.dispose()  # type: ignore[attr-defined]


@account_group.command("disable")
@click.argument("username")
def account_disable(username: str) -> None:
    """Disable an account (its sessions end at their next request)."""
    from hub.lifecycle.audit import audit_operator_action, operator_actor
    from hub.web.accounts import disable_account

    engine, sessions, _ = _runtime_parts()
    try:
        if not disable_account(sessions, username):  # type: ignore[arg-type]
            raise click.ClickException(f"no account {username!r}")
        audit_operator_action(sessions, operator_actor(), "web-account-disabled", {"username": username})  # type: ignore[arg-type]
    finally:
        engine.dispose()  # type: ignore[attr-defined]
    click.echo(f"account {username} disabled")
