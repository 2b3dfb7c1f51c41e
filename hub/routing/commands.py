"""``hub recipients``: the operators' side of the recipient directory.

hub recipients import FILE.csv   check every row, import the good ones; bad rows on stderr with their line
                                 and a masked id; exit 1 when any row was refused
hub recipients show KIND ID      everything the directory keeps of one recipient; "unknown" and exit 1

The database is the hub's (``HUB_DATABASE_URL``, default SQLite in the data folder); its schema is
brought up to date first, as ``hub db upgrade`` would.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import click

from hub.errors import ConfigError, Rejected, Unavailable
from hub.routing.directory import Directory, Entry, ImportReport, mask, recipient_key
from hub.routing.recipients import RecipientKind
from hub.settings import Settings


def _settings() -> Settings:
    from hub.settings import load_settings

    try:
        return load_settings()
    except ConfigError as bad:
        raise click.UsageError(str(bad)) from bad


def _known_providers(settings: Settings, given: tuple[str, ...]) -> frozenset[str] | None:
    """The ``--provider`` ids, else those of ``providers.yaml`` when there is one, else ``None`` (any)."""
    if given:
        return frozenset(given)
    path = settings.config_dir / "providers.yaml"
    if not path.exists():
        return None
    from hub.routing.providers import load_providers

    try:
        return frozenset(load_providers(path).ids())
    except ConfigError as bad:
        raise click.UsageError(str(bad)) from bad


@contextmanager
def _directory(settings: Settings) -> Iterator[Directory]:
    from hub.store.db import make_engine, session_factory, upgrade

    engine = make_engine(settings.effective_database_url)
    try:
        upgrade(engine)
        yield Directory(session_factory(engine))
    except Unavailable as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        engine.dispose()


@click.group("recipients")
def recipients_group() -> None:
    """The recipient directory: import it, look a recipient up."""


@recipients_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--provider",
    "providers",
    multiple=True,
    metavar="ID",
    help="A known provider id (repeatable): rows naming another are refused. "
    "Default: the providers of config/providers.yaml, or any well-formed id without one.",
)
@click.option("--batch", default=1000, show_default=True, type=click.IntRange(1, 100_000), help="Rows a transaction.")
def import_command(file: Path, providers: tuple[str, ...], batch: int) -> None:
    """Import FILE.csv (columns kind,id,consent_at,withdrawn_at,exclusive,language,last_connection,providers).

    Dates are ISO 8601 with their zone; exclusive is true/false; providers are separated by '|'.
    Every row is checked; the good ones are imported (a recipient already known is replaced), the
    bad ones are listed with their line number, national numbers masked. Exit 1 if any was refused.
    """
    settings = _settings()
    known = _known_providers(settings, providers)
    with _directory(settings) as directory:
        report = directory.import_csv(file, known_providers=known, batch_size=batch)
        _audit_import(directory, file, report)
    for problem in report.problems:
        click.echo(str(problem), err=True)
    click.echo(
        f"{report.imported} imported, {report.refused} refused, of {report.rows} rows "
        f"in {report.seconds:.2f} s ({report.rate:,.0f} rows/s)"
    )
    if report.problems:  # refused rows, or a header that is not the directory's (nothing imported)
        sys.exit(1)


def _audit_import(directory: Directory, file: Path, report: ImportReport) -> None:
    """The import in the audit trail: the file's name (long digit runs masked), its size and the counts."""
    import re

    from hub.lifecycle.audit import audit_operator_action, operator_actor

    detail = {
        "file": re.sub(r"\d{5,}", lambda run: mask(run.group()), file.name),
        "bytes": file.stat().st_size,
        "rows": report.rows,
        "imported": report.imported,
        "refused": report.refused,
    }
    audit_operator_action(directory.sessions, operator_actor(), "recipients-import", detail)


def _when(moment: datetime | None) -> str:
    return moment.isoformat() if moment is not None else "-"


def describe(entry: Entry) -> list[str]:
    """The lines ``hub recipients show`` prints (the full id: operators may see it)."""
    if entry.consent_at is None:
        consent = "never activated" + (f" (withdrawn {_when(entry.withdrawn_at)})" if entry.withdrawn_at else "")
    elif entry.withdrawn_at is not None:
        consent = f"withdrawn {_when(entry.withdrawn_at)} (activated {_when(entry.consent_at)})"
    else:
        consent = f"activated {_when(entry.consent_at)}"
    lines = [
        f"kind:            {entry.kind.value}",
        f"id:              {entry.id}",
        f"digital post:    {consent}",
        f"exclusive:       {'yes' if entry.exclusive else 'no'}"
        + (f" (since {_when(entry.exclusive_at)})" if entry.exclusive_at else ""),
        f"language:        {entry.language or '-'}",
        f"last connection: {_when(entry.last_connection)}",
    ]
    providers = sorted(entry.links.items())
    if not providers:
        lines.append("providers:       -")
    for n, (provider, link) in enumerate(providers):
        state = f"linked {_when(link.linked_at)}" if link.linked else f"unlinked {_when(link.unlinked_at)}"
        lines.append(f"{'providers:' if n == 0 else '':<17}{provider} ({state})")
    lines.append(f"updated:         {_when(entry.updated_at)}")
    return lines


@recipients_group.command("show")
@click.argument("kind", type=click.Choice([k.value for k in RecipientKind]))
@click.argument("ident", metavar="ID")
def show_command(kind: str, ident: str) -> None:
    """Show what the directory keeps of recipient KIND ID (an SSIN or a CBE number); exit 1 if unknown."""
    try:
        key = recipient_key(kind, ident.strip())
    except Rejected as refused:
        click.echo(str(refused.violations[0]), err=True)
        sys.exit(1)
    with _directory(_settings()) as directory:
        entry = directory.show(*key)
    if entry is None:
        click.echo("unknown")
        sys.exit(1)
    for line in describe(entry):
        click.echo(line)
