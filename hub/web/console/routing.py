"""Routing (/web/console/routing): the routing rules (config/routing.yaml) and "try an envelope": POST
.../routing/try shows what ``hub routes explain`` shows for it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hub.errors import ErrorCode, Rejected
from hub.routing.directory import Directory
from hub.routing.providers import ProviderCatalog
from hub.routing.rules import Decision, Match, RuleSet, check
from hub.safexml import ParseLimits
from hub.store.db import unavailable_on_outage
from hub.web.app import Ctx, Web, _run, field_text
from hub.web.console.common import _operator, _providers, _render, _routing

log = logging.getLogger("hub.web")

ENVELOPE_LIMIT = 1024 * 1024
"""Largest envelope "try an envelope" reads, in bytes (UTF-8)."""


def _match_text(ctx: Ctx, match: Match) -> list[str]:
    """A rule's ``match`` in words, one condition a line (none: every message)."""
    if match.catch_all:
        return [ctx.t("console.routing.every_message")]
    yes, no = ctx.t("console.yes"), ctx.t("console.no")
    lines = []
    if match.message_type:
        lines.append(f"{ctx.t('console.routing.message_type')}: {', '.join(match.message_type)}")
    if match.sender:
        names = ctx.runtime.directory.institutions
        senders = [f"{s} ({names[s].name})" if s in names else s for s in match.sender]
        lines.append(f"{ctx.t('console.routing.sender')}: {', '.join(senders)}")
    if match.recipient_kind is not None:
        lines.append(
            f"{ctx.t('console.routing.recipient_kind')}: {ctx.t(f'console.kind.{match.recipient_kind.value}')}"
        )
    if match.registered is not None:
        lines.append(f"{ctx.t('console.routing.registered')}: {yes if match.registered else no}")
    if match.priority:
        lines.append(f"{ctx.t('console.routing.priority')}: {', '.join(match.priority)}")
    if match.language:
        lines.append(f"{ctx.t('console.routing.language')}: {', '.join(match.language)}")
    return lines


def _rules_shown(ctx: Ctx, rules: RuleSet) -> list[dict[str, Any]]:
    return [
        {
            "name": rule.name,
            "line": rule.line,
            "match": _match_text(ctx, rule.match),
            "deliver": (ctx.t("console.routing.deliver_all") if rule.deliver is None else ", ".join(rule.deliver)),
            "require": ", ".join(sorted(c.value for c in rule.require)) or "-",
            "fallback": ctx.t(f"console.routing.fallback_{rule.fallback.value}"),
            "priority": rule.priority or ctx.t("console.routing.priority_own"),
            "hold": ctx.t("console.yes") if rule.hold else ctx.t("console.no"),
        }
        for rule in rules.rules
    ]


async def routing_page(
    ctx: Ctx, *, status: int = 200, tried: dict[str, Any] | None = None, envelope: str = "", at: str = ""
) -> Response:
    providers = await _run(_providers, ctx)
    routing = await _run(_routing, ctx, providers)  # read without the providers' names when those cannot be
    problems = (
        check(routing.value, providers.value) if routing.value is not None and providers.value is not None else []
    )
    return _render(
        ctx,
        "console/routing.html",
        status=status,
        providers=providers,
        routing=routing,
        rules=_rules_shown(ctx, routing.value) if routing.value is not None else [],
        problems=problems,
        tried=None if tried is None else {**TRIED, **tried},
        envelope=envelope,
        at=at,
        limit=ENVELOPE_LIMIT,
    )


async def routing(ctx: Ctx) -> Response:
    return await routing_page(ctx)


def _envelope_text(ctx: Ctx) -> str:
    value = ctx.form.get("envelope") if ctx.form is not None else None
    return value if isinstance(value, str) else ""


def _moment(text: str) -> datetime:
    """``--at`` of ``hub routes explain``: ISO 8601, UTC when no zone is given; ``ValueError`` otherwise."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if not 1970 <= moment.year <= 9000:  # the rules add and subtract months and years: no overflow
        raise ValueError(f"{text!r} is too far from now")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


TRIED: dict[str, Any] = {
    "refused": None,
    "violations": [],
    "explained": "",
    "outcome": None,
    "rule": None,
    "deliveries": [],
}
"""What a try shows, when it says nothing of its own."""


def try_envelope(ctx: Ctx, data: bytes, now: datetime, providers: ProviderCatalog, rules: RuleSet) -> dict[str, Any]:
    """What ``hub routes explain`` says of the envelope ``data``, or the refusal (blocking)."""
    from hub.envelope.validation import validate_envelope
    from hub.routing.explain import explain
    from hub.routing.rules import MessageFacts, decide
    from hub.safexml import parse

    try:
        envelope = validate_envelope(parse(data, limits=ParseLimits(max_bytes=ENVELOPE_LIMIT)), now=now)
    except Rejected as refused:
        return {"refused": refused.code.value, "violations": [str(v) for v in refused.violations[:50]]}
    except Exception as failed:  # anything else a hostile document provokes: refused, never a 500
        log.warning(
            "try an envelope: unreadable", extra={"event": "web-try-unreadable", "error": type(failed).__name__}
        )
        return {"refused": ErrorCode.XML_MALFORMED.value, "violations": [ctx.t("console.try.unreadable")]}
    facts = MessageFacts.of(envelope)
    with unavailable_on_outage():
        recipient = Directory(ctx.runtime.sessions).get(facts.recipient_kind, facts.recipient_id)
    decision: Decision = decide(facts, recipient, providers, rules, now)
    return {
        "explained": explain(facts, recipient, decision, now),
        "outcome": decision.outcome.value,
        "rule": decision.rule,
        "deliveries": [{"provider": d.provider, "until": d.not_before, "why": d.why_held} for d in decision.deliveries],
    }


async def routing_try(ctx: Ctx) -> Response:
    tried: dict[str, Any]
    text = _envelope_text(ctx)
    at = field_text(ctx.form, "at", limit=40)
    data = text.encode("utf-8", "replace")
    shown = text if len(data) <= ENVELOPE_LIMIT else ""
    now = ctx.web.clock()
    if at:
        try:
            now = _moment(at)
        except ValueError:
            tried = {"refused": "AT_INVALID", "violations": [ctx.t("console.try.bad_at")]}
            return await routing_page(ctx, status=400, tried=tried, envelope=shown, at=at)
    if not data.strip():
        tried = {"refused": ErrorCode.XML_MALFORMED.value, "violations": [ctx.t("console.try.empty")]}
        return await routing_page(ctx, status=400, tried=tried, envelope=shown, at=at)
    providers = await _run(_providers, ctx)
    rules = await _run(_routing, ctx, providers) if providers.value is not None else None
    if rules is None or rules.value is None:
        tried = {"refused": "CONFIG", "violations": [ctx.t("console.try.no_rules")]}
        return await routing_page(ctx, status=409, tried=tried, envelope=shown, at=at)
    tried = await _run(try_envelope, ctx, data, now, providers.value, rules.value)
    detail: dict[str, Any] = {"bytes": len(data)}
    if "refused" in tried:
        detail["refused"] = tried["refused"]
    else:
        detail.update(
            outcome=tried["outcome"], rule=tried["rule"], providers=[d["provider"] for d in tried["deliveries"]]
        )
    await ctx.audit("web-routing-try", detail)
    return await routing_page(ctx, status=422 if "refused" in tried else 200, tried=tried, envelope=shown, at=at)


def _try_form_bytes(web: Web) -> int:
    # Each byte of the UTF-8 text may take three in the form (%XX).
    return 3 * ENVELOPE_LIMIT + 16 * 1024


# -- routes --------------------------------------------------------------------------------------------------


def routes() -> list[BaseRoute]:
    return [
        Route("/console/routing", _operator(routing), methods=["GET"]),
        Route("/console/routing/try", _operator(routing_try, form_bytes=_try_form_bytes), methods=["POST"]),
    ]
