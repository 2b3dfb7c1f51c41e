"""Statistics (/web/console/stats?month=): monthly statistics per institution as charts (inline SVG) and
tables; /web/console/stats.csv is ``hub stats --format csv``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hub.errors import ErrorCode, Rejected
from hub.lifecycle.stats import Figures, InstitutionStats, Month, MonthlyStats, monthly_stats
from hub.lifecycle.stats_cli import CHART_SERIES, duration, to_csv
from hub.routing.providers import Capability, ProviderCatalog
from hub.store.db import unavailable_on_outage
from hub.web.app import Ctx, _run
from hub.web.console.charts import bar_chart
from hub.web.console.common import _operator, _percent, _providers, _render


def _paper(catalog: ProviderCatalog | None) -> frozenset[str]:
    if catalog is None:
        return frozenset()
    return frozenset(p.id for p in catalog.providers.values() if Capability.PAPER in p.capabilities)


def _month(ctx: Ctx) -> tuple[Month | None, str]:
    given = (ctx.request.query_params.get("month") or "").strip()[:20]
    if not given:
        return Month.of(ctx.web.clock()).previous(), ""
    try:
        return Month.parse(given), given
    except ValueError:
        return None, given


def read_stats(ctx: Ctx, month: Month, paper: Iterable[str]) -> MonthlyStats:
    with unavailable_on_outage():
        return monthly_stats(ctx.runtime.engine, month, paper_providers=frozenset(paper))


def _series(ctx: Ctx) -> list[tuple[str, str, str]]:
    return [(key, ctx.t(f"console.stats.{key}"), colour) for key, colour in CHART_SERIES]


def _institution_view(ctx: Ctx, institution: InstitutionStats, month: Month, index: int) -> dict[str, Any]:
    name = _institution_name(ctx, institution.institution_id)
    types = [(kind, f) for kind, f in institution.by_type.items() if f.sent]
    chart = bar_chart(
        f"chart-{index}",
        ctx.t("console.stats.chart_title", institution=name, month=str(month)),
        ctx.t("console.stats.chart_desc", institution=name, month=str(month), types=len(types)),
        [(kind, f.as_dict()) for kind, f in types],
        _series(ctx),
    )

    def cells(f: Figures) -> dict[str, Any]:
        return {
            **f.as_dict(),
            "open_rate": _percent(ctx.lang, f.open_rate),
            "median": duration(f.median_open_seconds),
        }

    return {
        "id": institution.institution_id,
        "name": name,
        "chart": chart,
        "types": [(kind, cells(f)) for kind, f in institution.by_type.items()],
        "totals": cells(institution.totals),
        "providers": [
            (
                provider,
                {
                    **p.as_dict(),
                    "open_rate": _percent(ctx.lang, p.open_rate),
                    "median": duration(p.median_open_seconds),
                },
            )
            for provider, p in institution.by_provider.items()
        ],
        "refusals": list(institution.refusals_by_code.items()),
    }


def _institution_name(ctx: Ctx, ident: str) -> str:
    institution = ctx.runtime.directory.institutions.get(ident)
    return f"{ident} {institution.name}" if institution is not None else ident


async def stats_page(ctx: Ctx) -> Response:
    month, given = _month(ctx)
    if month is None:
        return _render(
            ctx,
            "console/stats.html",
            status=400,
            month=None,
            given=given,
            stats=None,
            overview=None,
            institutions=[],
            warning=None,
        )
    loaded = await _run(_providers, ctx)
    stats = await _run(read_stats, ctx, month, _paper(loaded.value))
    overview = bar_chart(
        "chart-overview",
        ctx.t("console.stats.overview_title", month=str(month)),
        ctx.t("console.stats.overview_desc", month=str(month), institutions=len(stats.institutions)),
        [(i.institution_id, i.totals.as_dict()) for i in stats.institutions],
        _series(ctx),
    )
    warning = None
    if loaded.problem is not None or loaded.missing:
        warning = ctx.t("console.stats.no_paper")
    return _render(
        ctx,
        "console/stats.html",
        month=month,
        given=str(month),
        previous=str(month.previous()),
        following=str(month.next()),
        stats=stats,
        overview=overview if stats.institutions else None,
        institutions=[_institution_view(ctx, i, month, n) for n, i in enumerate(stats.institutions)],
        warning=warning,
    )


async def stats_csv(ctx: Ctx) -> Response:
    month, given = _month(ctx)
    if month is None:
        raise Rejected(ErrorCode.SCHEMA_INVALID, ctx.t("console.stats.bad_month", month=given))
    loaded = await _run(_providers, ctx)
    if loaded.problem is not None:  # as `hub stats` does: figures without the paper providers would differ
        raise Rejected(ErrorCode.SCHEMA_INVALID, loaded.problem)
    stats = await _run(read_stats, ctx, month, _paper(loaded.value))
    text = to_csv(stats.institutions)
    await ctx.audit(
        "web-stats-csv",
        {"month": str(month), "institutions": len(stats.institutions), "rows": text.count("\n") - 1},
    )
    return Response(
        text.encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="hub-stats-{month}.csv"'},
    )


# -- routes --------------------------------------------------------------------------------------------------


def routes() -> list[BaseRoute]:
    return [
        Route("/console/stats", _operator(stats_page), methods=["GET"]),
        Route("/console/stats.csv", _operator(stats_csv), methods=["GET"]),
    ]
