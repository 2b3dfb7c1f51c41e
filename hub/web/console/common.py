"""What the console's pages share: rendering, the audit trail, the configuration files, queue depths."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.responses import Response

from hub.errors import ConfigError
from hub.metrics import QueueDepths, hub_queues
from hub.outbound.states import DeliveryState, MessageState
from hub.routing.providers import load_providers
from hub.routing.rules import load_rules
from hub.web.app import Ctx, _run, page

OPERATOR = "operator"
DEPTHS = "console.depths"
_NUMBERS = re.compile(r"\d(?:[./-]?\d){8,}")
"""Long digit runs (a national number, in any spelling) in event details: masked."""


# -- shared helpers ------------------------------------------------------------------------------------------


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _percent(lang: str, rate: float | None) -> str:
    if rate is None:
        return "-"
    text = f"{rate * 100:.1f}"
    return f"{text.replace('.', ',')} %" if lang in ("fr", "nl") else f"{text}%"


def _render(ctx: Ctx, template: str, status: int = 200, **context: Any) -> Response:
    return ctx.render(template, status=status, when=_when, **context)


def _state_labels(ctx: Ctx) -> dict[str, str]:
    """Message and delivery states (and the events of the same names), in the page's language."""
    names = {*(s.value for s in MessageState), *(s.value for s in DeliveryState)}
    return {name: ctx.t(f"console.state.{name}") for name in sorted(names)}


def _config_file(ctx: Ctx, name: str) -> Path:
    return Path(ctx.runtime.settings.config_dir) / name


@dataclass
class Loaded:
    """A configuration file read for a page: what it holds, or why not (``missing`` or a problem)."""

    path: Path
    value: Any = None
    missing: bool = False
    problem: str | None = None


def _providers(ctx: Ctx) -> Loaded:
    path = _config_file(ctx, "providers.yaml")
    if not path.exists():
        return Loaded(path, missing=True)
    try:
        return Loaded(path, load_providers(path))
    except ConfigError as bad:
        return Loaded(path, problem=str(bad))


def _routing(ctx: Ctx, providers: Loaded) -> Loaded:
    path = _config_file(ctx, "routing.yaml")
    if not path.exists():
        return Loaded(path, missing=True)
    try:
        rules = load_rules(path, providers.value)
    except ConfigError as bad:
        return Loaded(path, problem=str(bad))
    if not rules.rules:
        return Loaded(path, problem=str(ConfigError("no rules", file=str(path))))
    return Loaded(path, rules)


def _number(text: str | None, default: int, low: int, high: int) -> int:
    try:
        value = int(text or default)
    except ValueError:
        return default
    return min(max(value, low), high)


# -- queue depths (RabbitMQ) ---------------------------------------------------------------------------------


def _queue_depths(ctx: Ctx) -> QueueDepths | None:
    """The console's queue-depth reader (cached a few seconds by ``QueueDepths``); None on ``memory://``."""
    url = ctx.runtime.settings.broker_url
    if url.startswith("memory:"):
        return None
    depths: QueueDepths | None = ctx.web.extras.get(DEPTHS)
    if depths is None:
        app, runtime, config_dir = ctx.request.app, ctx.runtime, Path(ctx.runtime.settings.config_dir)

        def names() -> list[str]:
            catalog = getattr(app.state, "providers", None)  # the running hub's catalog, unless the file reads
            with contextlib.suppress(ConfigError):
                catalog = load_providers(config_dir / "providers.yaml")
            directory = runtime.directory
            channels = [(i.id, i.acknowledgements) for i in directory.institutions.values()]
            channels += [(i.id, i.acknowledgements) for i in directory.integrators.values()]
            pushed = [party for party, channel in channels if channel.kind in ("amqp", "webhook")]
            return hub_queues(catalog.ids() if catalog is not None else [], pushed)

        depths = ctx.web.extras[DEPTHS] = QueueDepths(url, names)
    return depths


@dataclass
class Queues:
    """Queue depths as a page shows them: ``kind`` is ``memory`` (not available), ``down`` or ``ok``."""

    kind: str
    depths: dict[str, tuple[int, int]] = field(default_factory=dict)


async def _queues(ctx: Ctx) -> Queues:
    reader = _queue_depths(ctx)
    if reader is None:
        return Queues("memory")
    depths = await _run(reader.depths)
    return Queues("down") if depths is None else Queues("ok", dict(sorted(depths.items())))


# -- routes --------------------------------------------------------------------------------------------------


def _operator(handler: Callable[[Ctx], Any], **options: Any) -> Any:
    return page(handler, role=OPERATOR, **options)
