"""Dead letters (/web/console/dead-letters): the dead-letter queue (hub.dead); POST .../replay puts one
or all back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from hub.broker.deadletters import AUDITED_IDS, Ambiguous, DeadLetter, DeadLetters, NotFound, NotReplayable
from hub.errors import ConfigError
from hub.routing.directory import mask
from hub.web.app import Ctx, _run, field_text
from hub.web.console.common import _NUMBERS, _number, _operator, _render

log = logging.getLogger("hub.web")

DEAD_LETTERS_SHOWN = 200


def _dead_letters(ctx: Ctx) -> DeadLetters:
    return DeadLetters(ctx.runtime.settings.broker_url)


def death_count(letter: DeadLetter) -> int | None:
    """How many times it died: the hub's attempts, else the broker's ``x-death`` counts."""
    if letter.attempts is not None:
        return letter.attempts
    deaths = letter.headers.get("x-death")
    if not isinstance(deaths, list):
        return None
    counted = [d.get("count") for d in deaths if isinstance(d, Mapping)]
    return sum(int(c) for c in counted if isinstance(c, int)) or None


def read_dead_letters(ctx: Ctx) -> tuple[list[dict[str, Any]], int, str | None]:
    """The first dead letters, how many are ready in all, or why they cannot be read (blocking)."""
    reader = _dead_letters(ctx)
    try:
        letters = reader.list(limit=DEAD_LETTERS_SHOWN)
        total = reader.count()
    except ConfigError as bad:
        return [], 0, str(bad)
    shown = [
        {
            "id": letter.id,
            "queue": letter.queue,
            "reason": _NUMBERS.sub(lambda m: mask(m.group()), letter.reason),
            "deaths": death_count(letter),
            "dead_at": letter.dead_at,
            "message_id": letter.message_id,
            "hub_message_id": letter.hub_message_id,
            "size": letter.body_size,
        }
        for letter in letters
    ]
    return shown, max(total, len(shown)), None


async def dead_letters_page(ctx: Ctx, *, status: int = 200, outcome: dict[str, Any] | None = None) -> Response:
    letters, total, problem = await _run(read_dead_letters, ctx)
    params = ctx.request.query_params
    if outcome is None and "replayed" in params:
        outcome = {
            "replayed": _number(params.get("replayed"), 0, 0, 10**9),
            "kept": _number(params.get("kept"), 0, 0, 10**9),
        }
    return _render(
        ctx,
        "console/dead_letters.html",
        status=status,
        letters=letters,
        total=total,
        problem=problem,
        outcome=None if outcome is None else {"error": None, "why": None, "replayed": 0, "kept": 0, **outcome},
        memory=ctx.runtime.settings.broker_url.startswith("memory:"),
        limit=DEAD_LETTERS_SHOWN,
    )


async def dead_letters(ctx: Ctx) -> Response:
    return await dead_letters_page(ctx)


def _replay(ctx: Ctx, ident: str | None) -> tuple[list[DeadLetter], list[tuple[DeadLetter, str]]]:
    reader = _dead_letters(ctx)
    if ident is not None:
        return [reader.replay(ident)], []
    report = reader.replay_all()
    return report.replayed, report.skipped


async def replay(ctx: Ctx) -> Response:
    ident = field_text(ctx.form, "id", limit=64) or None
    everything = field_text(ctx.form, "all", limit=8) == "1"
    if (ident is None) == (not everything):
        return await dead_letters_page(ctx, status=400, outcome={"error": ctx.t("console.dlq.choose")})
    try:
        replayed, kept = await _run(_replay, ctx, ident)
    except (NotFound, Ambiguous) as missing:
        await ctx.audit("web-dlq-replay", {"replayed": [], "replayed_count": 0, "asked": ident, "found": False})
        log.info("web dlq replay: not found", extra={"event": "web-dlq-replay-missing"})
        return await dead_letters_page(
            ctx, status=404, outcome={"error": ctx.t("console.dlq.not_found"), "why": str(missing)}
        )
    except (NotReplayable, ConfigError) as refused:  # no queue named, or the queue is gone (Unroutable)
        await ctx.audit("web-dlq-replay", {"replayed": [], "replayed_count": 0, "kept": [ident], "kept_count": 1})
        return await dead_letters_page(
            ctx, status=409, outcome={"error": ctx.t("console.dlq.not_replayable"), "why": str(refused)}
        )
    await ctx.audit(
        "web-dlq-replay",
        {
            "replayed": [letter.id for letter in replayed][:AUDITED_IDS],
            "replayed_count": len(replayed),
            "kept": [letter.id for letter, _ in kept][:AUDITED_IDS],
            "kept_count": len(kept),
            "queues": sorted({str(letter.queue) for letter in replayed}),
            "all": everything,
        },
    )
    return RedirectResponse(f"/web/console/dead-letters?replayed={len(replayed)}&kept={len(kept)}", status_code=303)


# -- routes --------------------------------------------------------------------------------------------------


def routes() -> list[BaseRoute]:
    return [
        Route("/console/dead-letters", _operator(dead_letters), methods=["GET"]),
        Route("/console/dead-letters/replay", _operator(replay), methods=["POST"]),
    ]
