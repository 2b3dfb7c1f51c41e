"""Providers (/web/console/providers): config/providers.yaml: capabilities, maintenance, queue depth,
deliveries.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import func, select
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hub.outbound.states import DeliveryState
from hub.routing.providers import ProviderCatalog
from hub.store.db import unavailable_on_outage
from hub.store.models import Delivery
from hub.web.app import Ctx, _run
from hub.web.console.common import _operator, _providers, _queues, _render, _state_labels


def deliveries_by_provider(ctx: Ctx) -> dict[str, dict[str, int]]:
    """Deliveries by provider and state (blocking)."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    with unavailable_on_outage(), ctx.runtime.sessions() as session:
        for provider, state, n in session.execute(
            select(Delivery.provider, Delivery.state, func.count()).group_by(Delivery.provider, Delivery.state)
        ):
            out[provider][state] = int(n)
    return dict(out)


async def providers_page(ctx: Ctx) -> Response:
    now = ctx.web.clock()
    loaded = await _run(_providers, ctx)
    counts = await _run(deliveries_by_provider, ctx)
    queues = await _queues(ctx)
    catalog: ProviderCatalog | None = loaded.value
    shown: list[dict[str, Any]] = []
    for provider in catalog.providers.values() if catalog is not None else ():
        resting = provider.resting_until(now)
        shown.append(
            {
                "id": provider.id,
                "name": provider.name,
                "kinds": [ctx.t(f"console.kind.{k.value}") for k in sorted(provider.kinds)],
                "capabilities": sorted(c.value for c in provider.capabilities),
                "universal": provider.universal,
                "channel": provider.channel,
                "url": provider.url,
                "queue": f"provider.{provider.id}",
                "windows": [
                    {"start": w.start, "end": w.end, "now": w.covers(now), "past": w.end <= now}
                    for w in sorted(provider.maintenance, key=lambda w: w.start)
                ],
                "resting_until": resting,
            }
        )
    known = {p["id"] for p in shown}
    used_states = sorted({state for by_state in counts.values() for state in by_state}, key=_state_rank)
    table = [
        {
            "provider": provider,
            "configured": provider in known,
            "counts": counts.get(provider, {}),
            "total": sum(counts.get(provider, {}).values()),
        }
        for provider in [*(p["id"] for p in shown), *sorted(set(counts) - known)]
    ]
    return _render(
        ctx,
        "console/providers.html",
        loaded=loaded,
        providers=shown,
        table=table,
        used_states=used_states,
        queues=queues,
        states=_state_labels(ctx),
    )


def _state_rank(state: str) -> tuple[int, str]:
    order = [s.value for s in DeliveryState]
    return (order.index(state), state) if state in order else (len(order), state)


# -- routes --------------------------------------------------------------------------------------------------


def routes() -> list[BaseRoute]:
    return [
        Route("/console/providers", _operator(providers_page), methods=["GET"]),
    ]
