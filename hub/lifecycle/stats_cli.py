"""``hub stats``: the monthly figures the e-Box sends each organisation.

hub stats [--month YYYY-MM] [--sender CBE] [--format table|csv|json]
    the month's figures (default: last month, UTC) per institution: totals, by message type,
    by provider, refusals by code
hub stats report [--month YYYY-MM] [--sender CBE] --out DIR
    per institution ``<cbe>-<month>.csv`` (the figures) and ``<cbe>-<month>.png`` (a bar chart of
    sent / delivered / opened / replied per message type)

The database is the hub's (``HUB_DATABASE_URL``, default SQLite in the data folder), read only.
Paper providers (their deliveries count as paper) come from ``config/providers.yaml``, the
institutions' names from ``config/senders.yaml``, when there.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from hub.errors import ConfigError, Unavailable
from hub.lifecycle.stats import Figures, InstitutionStats, Month, MonthlyStats, ProviderFigures, monthly_stats
from hub.settings import Settings

CSV_COLUMNS = (
    "month",
    "institution",
    "dimension",
    "key",
    "sent",
    "refused",
    "delivered",
    "opened",
    "open_rate",
    "median_open_seconds",
    "replied",
    "paper",
    "undeliverable",
    "expired_unread",
    "deliveries",
    "printed",
    "failed",
)
"""One row per figure set: ``dimension`` is ``total`` (key empty), ``message_type``, ``provider`` or
``refusal_code``; a column that does not apply to the dimension is empty."""

CHART_SERIES = (("sent", "#4e79a7"), ("delivered", "#59a14f"), ("opened", "#f28e2b"), ("replied", "#b07aa1"))


# --- reading ----------------------------------------------------------------------------------------


def _settings() -> Settings:
    from hub.settings import load_settings

    try:
        return load_settings()
    except ConfigError as bad:
        raise click.UsageError(str(bad)) from bad


def _paper_providers(settings: Settings) -> frozenset[str]:
    path = settings.config_dir / "providers.yaml"
    if not path.exists():
        return frozenset()
    from hub.routing.providers import Capability, load_providers

    try:
        catalog = load_providers(path)
    except ConfigError as bad:
        raise click.UsageError(str(bad)) from bad
    return frozenset(p.id for p in catalog.providers.values() if Capability.PAPER in p.capabilities)


def _names(settings: Settings) -> dict[str, str]:
    """The institutions' names from senders.yaml (none when it is missing or unreadable: names are a nicety)."""
    if not settings.senders_file.exists():
        return {}
    from hub.inbound.senders import load_senders

    try:
        directory = load_senders(settings.senders_file)
    except (ConfigError, OSError):
        return {}
    return {institution.id: institution.name for institution in directory.institutions.values()}


def read_stats(settings: Settings, month: Month, sender: str | None) -> MonthlyStats:
    from sqlalchemy.exc import SQLAlchemyError

    from hub.store.db import make_engine, unavailable_on_outage

    engine = make_engine(settings.effective_database_url)
    try:
        with unavailable_on_outage():
            return monthly_stats(engine, month, sender=sender, paper_providers=_paper_providers(settings))
    except Unavailable as exc:
        raise click.ClickException(str(exc)) from exc
    except SQLAlchemyError as exc:
        raise click.ClickException(
            f"the statistics could not be read ({exc.__class__.__name__}); is the schema up to date (hub db upgrade)?"
        ) from exc
    finally:
        engine.dispose()


# --- formats ----------------------------------------------------------------------------------------


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def duration(seconds: float | None) -> str:
    """A median time to open for people: ``45s``, ``12m``, ``3h 20m``, ``2d 4h``; ``-`` for none."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def _grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns: the first left-aligned, the others right-aligned, two spaces apart."""
    widths = [max(len(str(line[i])) for line in (header, *rows)) for i in range(len(header))]
    out = []
    for line in (header, *rows):
        cells = [str(line[0]).ljust(widths[0])] + [str(c).rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)]
        out.append("  ".join(cells).rstrip())
    return out


def _figure_cells(f: Figures) -> list[str]:
    return [
        str(f.sent),
        str(f.refused),
        str(f.delivered),
        str(f.opened),
        _percent(f.open_rate),
        duration(f.median_open_seconds),
        str(f.replied),
        str(f.paper),
        str(f.undeliverable),
        str(f.expired_unread),
    ]


def _provider_cells(f: ProviderFigures) -> list[str]:
    return [
        str(f.deliveries),
        str(f.delivered),
        str(f.opened),
        _percent(f.open_rate),
        duration(f.median_open_seconds),
        str(f.replied),
        str(f.printed),
        str(f.failed),
    ]


def table(stats: MonthlyStats, names: Mapping[str, str] | None = None) -> str:
    if not stats.institutions:
        return f"no message accepted and no envelope refused in {stats.month}\n"
    names = names or {}
    blocks = []
    for institution in stats.institutions:
        name = names.get(institution.institution_id)
        title = f"{institution.institution_id}{f' {name}' if name else ''}, {stats.month}"
        lines = [title, "=" * len(title)]
        header = ["message type", "sent", "refused", "delivered", "opened", "open rate", "median to open"]
        header += ["replied", "paper", "undeliverable", "expired unread"]
        rows = [[kind, *_figure_cells(f)] for kind, f in institution.by_type.items()]
        rows.append(["total", *_figure_cells(institution.totals)])
        lines += _grid(header, rows)
        if institution.by_provider:
            header = ["provider", "deliveries", "delivered", "opened", "open rate", "median to open"]
            header += ["replied", "printed", "failed"]
            lines.append("")
            lines += _grid(header, [[p, *_provider_cells(f)] for p, f in institution.by_provider.items()])
        if institution.refusals_by_code:
            codes = ", ".join(f"{code} {count}" for code, count in institution.refusals_by_code.items())
            lines += ["", f"refused: {codes}"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _number(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def csv_rows(institution: InstitutionStats) -> Iterator[dict[str, Any]]:
    """The rows of one institution (see ``CSV_COLUMNS``)."""
    base = {"month": str(institution.month), "institution": institution.institution_id}

    def figures(dimension: str, key: str, f: Figures) -> dict[str, Any]:
        values = f.as_dict()
        values["open_rate"] = _number(f.open_rate, 4)
        values["median_open_seconds"] = _number(f.median_open_seconds, 1)
        return {**base, "dimension": dimension, "key": key, **values}

    yield figures("total", "", institution.totals)
    for name, f in institution.by_type.items():
        yield figures("message_type", name, f)
    for provider, p in institution.by_provider.items():
        values = p.as_dict()
        values["open_rate"] = _number(p.open_rate, 4)
        values["median_open_seconds"] = _number(p.median_open_seconds, 1)
        yield {**base, "dimension": "provider", "key": provider, **values}
    for code, count in institution.refusals_by_code.items():
        yield {**base, "dimension": "refusal_code", "key": code, "refused": count}


def to_csv(institutions: Sequence[InstitutionStats]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, restval="", lineterminator="\n")
    writer.writeheader()
    for institution in institutions:
        writer.writerows(csv_rows(institution))
    return buffer.getvalue()


def to_json(stats: MonthlyStats) -> str:
    return json.dumps(stats.as_dict(), indent=2) + "\n"


# --- the report -------------------------------------------------------------------------------------


def chart_png(institution: InstitutionStats, title: str) -> bytes:
    """A grouped bar chart of sent / delivered / opened / replied per message type sent, as PNG bytes."""
    # Imported here: matplotlib takes a moment to load, and only the report draws.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    types = [name for name, f in institution.by_type.items() if f.sent] or ["(nothing sent)"]
    width = 0.8 / len(CHART_SERIES)
    figure = Figure(figsize=(max(6.0, 1.2 * len(types) + 2), 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)  # Agg, whatever the process's default backend
    axes = figure.add_subplot()
    peak = 0
    for index, (series, colour) in enumerate(CHART_SERIES):
        values = [getattr(institution.by_type.get(name, Figures()), series) for name in types]
        peak = max(peak, *values)
        positions = [i + (index - (len(CHART_SERIES) - 1) / 2) * width for i in range(len(types))]
        bars = axes.bar(positions, values, width, label=series, color=colour)
        axes.bar_label(bars, fontsize=7, padding=1)
    slanted = len(types) > 3
    axes.set_xticks(range(len(types)), types, rotation=20 if slanted else 0, ha="right" if slanted else "center")
    axes.set_ylabel("messages")
    axes.set_ylim(0, max(peak, 1) * 1.1)  # room for the labels; 0 to 1 when nothing was sent
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title(title)
    axes.legend(loc="upper right", fontsize=8)
    axes.spines[["top", "right"]].set_visible(False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def write_report(stats: MonthlyStats, out: Path, names: Mapping[str, str] | None = None) -> list[Path]:
    """``<cbe>-<month>.csv`` and ``<cbe>-<month>.png`` per institution in ``out``; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    names = names or {}
    written = []
    for institution in stats.institutions:
        stem = f"{institution.institution_id}-{stats.month}"
        csv_path, png_path = out / f"{stem}.csv", out / f"{stem}.png"
        csv_path.write_text(to_csv([institution]), encoding="utf-8")
        name = names.get(institution.institution_id)
        title = f"{institution.institution_id}{f' {name}' if name else ''}, {stats.month}"
        png_path.write_bytes(chart_png(institution, title))
        written += [csv_path, png_path]
    return written


# --- the commands -----------------------------------------------------------------------------------


def _month(value: str | None) -> Month:
    if value is None:
        return Month.of(datetime.now(UTC)).previous()
    try:
        return Month.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--month") from exc


def _sender(value: str | None) -> str | None:
    if value is not None and not (len(value) == 10 and value.isdigit()):
        raise click.BadParameter(f"{value!r} is not an institution's number (10 digits)", param_hint="--sender")
    return value


MONTH_OPTION = click.option("--month", metavar="YYYY-MM", help="The month (UTC). Default: last month.")
SENDER_OPTION = click.option("--sender", metavar="CBE", help="One institution only (its CBE number).")


@click.group("stats", invoke_without_command=True)
@MONTH_OPTION
@SENDER_OPTION
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="table: for people; csv: one row per figure set; json: nested.",
)
@click.pass_context
def stats_group(ctx: click.Context, month: str | None, sender: str | None, fmt: str) -> None:
    """Monthly figures per institution: sent, refused, delivered, opened, open rate, median time
    to open, replied, paper, undeliverable, expired unread; by message type and by provider.

    Messages count in the month they were accepted (UTC).
    """
    if ctx.invoked_subcommand is not None:
        return
    settings = _settings()
    stats = read_stats(settings, _month(month), _sender(sender))
    if fmt == "json":
        click.echo(to_json(stats), nl=False)
    elif fmt == "csv":
        click.echo(to_csv(stats.institutions), nl=False)
    else:
        click.echo(table(stats, _names(settings)), nl=False)


@stats_group.command("report")
@MONTH_OPTION
@SENDER_OPTION
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write <cbe>-<month>.csv and <cbe>-<month>.png into (created if needed).",
)
@click.pass_context
def stats_report(ctx: click.Context, month: str | None, sender: str | None, out: Path) -> None:
    """Write each institution's figures (CSV) and chart (PNG) for the month."""
    parent = ctx.parent.params if ctx.parent is not None else {}
    settings = _settings()
    stats = read_stats(settings, _month(month or parent.get("month")), _sender(sender or parent.get("sender")))
    written = write_report(stats, out, _names(settings))
    for path in written:
        click.echo(str(path))
    if not written:
        click.echo(f"no message accepted and no envelope refused in {stats.month}: nothing written", err=True)
