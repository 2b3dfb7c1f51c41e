"""``hub audit``: seal the audit trail, verify its chain, export the evidence of a message.

hub audit seal                           chain the entries committed since the last seal (``hub run``: every second)
hub audit verify                         walk the chain: exit 0 when it holds, 1 naming the first broken entry
hub audit export --message ID --out DIR  the evidence bundle of one message (see DIR/README.txt)

The database is the hub's (``HUB_DATABASE_URL``, default SQLite in the data folder); the bundle's
acknowledgements are signed with the hub's key (``[signing]``, or the one in the data folder).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from sqlalchemy.orm import Session, sessionmaker

from hub.errors import ConfigError, Unavailable
from hub.lifecycle.audit import UnknownMessage, export_bundle, record_operator_action, seal_all, seal_forever, verify
from hub.settings import Settings


def _settings() -> Settings:
    from hub.settings import load_settings

    try:
        return load_settings()
    except ConfigError as bad:
        raise click.UsageError(str(bad)) from bad


@contextmanager
def _sessions(settings: Settings, *, migrate: bool = True) -> Iterator[sessionmaker[Session]]:
    """The hub's database, its schema brought up to date first (as ``hub db upgrade``) unless not ``migrate``."""
    from hub.store.db import make_engine, session_factory, unavailable_on_outage, upgrade

    engine = make_engine(settings.effective_database_url)
    try:
        with unavailable_on_outage():
            if migrate:
                upgrade(engine)
            yield session_factory(engine)
    except Unavailable as down:
        raise click.ClickException(str(down)) from down
    finally:
        engine.dispose()


def operator_audit(action: str, detail: Mapping[str, Any]) -> None:
    """Audit an operator command that acted elsewhere (``hub dlq``); a warning on stderr when it cannot be."""
    problem = record_operator_action(action, detail)
    if problem:
        click.echo(f"warning: {problem}", err=True)


@click.group("audit")
def audit_group() -> None:
    """The tamper-evident audit trail: seal, verify, export a message's evidence."""


@audit_group.command("seal")
@click.option(
    "--every",
    type=click.FloatRange(0),
    default=0.0,
    help="Keep sealing every this many seconds until SIGTERM (a service: docker-compose's audit-sealer); 0: once.",
)
def audit_seal(every: float) -> None:
    """Chain the entries committed since the last seal (in commit order)."""
    with _sessions(_settings()) as sessions:
        if every > 0:
            from hub.signals import stop_on_signals

            click.echo(f"sealing the audit trail every {every:g} s")
            seal_forever(sessions, stop_on_signals(), every=every)
            return
        sealed = seal_all(sessions)
    click.echo(f"sealed {sealed} entr{'y' if sealed == 1 else 'ies'}")


@audit_group.command("verify")
def audit_verify() -> None:
    """Walk the chain: exit 0 when every entry holds, 1 naming the first broken one."""
    with _sessions(_settings(), migrate=False) as sessions, sessions() as session:
        report = verify(session)  # reads only: the schema is left as it is
    for name in report.missing_guards:
        click.echo(f"warning: trigger {name} on audit is missing or disabled: the trail is not append-only", err=True)
    if report.broken is not None:
        click.echo(f"BROKEN: {report.broken}", err=True)
        click.echo(f"the chain holds up to seq {report.head_seq} ({report.checked} entries checked)", err=True)
        sys.exit(1)
    click.echo(
        f"OK: {report.checked} entries chained, head seq {report.head_seq} hash {report.head_hash}; "
        f"{report.unsealed} not sealed yet"
    )


@audit_group.command("export")
@click.option("--message", "message_id", required=True, metavar="ID", help="The hub message id.")
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder to write."
)
def audit_export(message_id: str, out_dir: Path) -> None:
    """Write the evidence bundle of message ID into --out (a new or empty folder): see its README.txt."""
    from hub.lifecycle.audit import audit_operator_action, operator_actor
    from hub.runtime import hub_key_pair

    if out_dir.exists() and any(out_dir.iterdir()):
        raise click.UsageError(f"{out_dir} is not empty; give a new folder")
    settings = _settings()
    try:
        keys = hub_key_pair(settings)
    except ConfigError as bad:
        raise click.UsageError(str(bad)) from bad
    with _sessions(settings) as sessions:
        seal_all(sessions)  # the message's newest entries too
        try:
            bundle = export_bundle(sessions, keys, message_id, out_dir)
        except UnknownMessage as unknown:
            raise click.ClickException(str(unknown)) from unknown
        audit_operator_action(
            sessions,
            operator_actor(),
            "evidence-exported",
            {"files": len(bundle.files), "withheld": sorted(bundle.withheld)},
            message_id=message_id,
        )
    click.echo(f"{len(bundle.files)} files in {out_dir}: {', '.join(bundle.files)}")
    for what, why in bundle.withheld.items():
        click.echo(f"left out {what}: {why}")
    click.echo(f"check them as {out_dir / 'README.txt'} says")
