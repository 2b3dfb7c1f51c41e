"""Routing rules from ``config/routing.yaml``, and the routing decision as a pure function.

Rules are evaluated in order; the first whose ``match`` fits the message wins. A rule
delivers to every provider the recipient reads with (``deliver: all``) or to named
providers, keeping only those that serve the recipient's kind and have every capability
the message needs (registered mail, replies, payments, eIDAS high — implied by the
message — plus what the rule ``require``s). Without digital consent, or when no provider
is left, the rule's ``fallback`` applies: ``paper`` (a provider with the paper capability)
or ``undeliverable`` (the sender is told to use another channel). Deliveries wait for a
provider's maintenance window to end and, unless ``hold: false``, for the message's
effective date.

``decide`` does no I/O: the message's facts, the recipient, the providers, the rules and
``now`` go in; one ``Decision`` comes out, with the reasons ``hub routes explain`` prints.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from hub.configfile import Section, load_yaml
from hub.envelope.model import Envelope
from hub.errors import ConfigError
from hub.routing.providers import Capability, ProviderCatalog
from hub.routing.recipients import Recipient, RecipientKind

MATCH_KEYS = ("message_type", "sender", "recipient_kind", "registered", "priority", "language")
RULE_KEYS = ("name", "match", "deliver", "require", "fallback", "priority", "hold")
PRIORITIES = ("low", "normal", "high")


class Outcome(StrEnum):
    DELIVER = "deliver"
    PAPER = "paper"
    UNDELIVERABLE = "undeliverable"


@dataclass(frozen=True, kw_only=True)
class MessageFacts:
    """What routing needs to know of an accepted message (no content)."""

    message_type: str
    sender: str
    """The institution (CBE) the recipient sees."""
    recipient_kind: RecipientKind
    recipient_id: str
    registered: bool = False
    priority: str = "normal"
    languages: frozenset[str] = frozenset()
    assurance_high: bool = False
    replies: bool = False
    payment: bool = False
    effective_date: datetime | None = None

    @classmethod
    def of(cls, envelope: Envelope) -> MessageFacts:
        h, c = envelope.header, envelope.content
        return cls(
            message_type=h.message_type,
            sender=h.sender.institution_id,
            recipient_kind=RecipientKind(h.recipient.ebox_type.value),
            recipient_id=h.recipient.id,
            registered=h.registered,
            priority=h.priority.value,
            languages=frozenset(t.lang.value for t in c.subjects),
            assurance_high=h.assurance_level.value == "high",
            replies=c.reply_options is not None,
            payment=c.payment is not None,
            effective_date=h.effective_date,
        )

    def to_json(self) -> str:
        """The facts as the store keeps them (``messages.routing_facts``), so routing never re-reads the envelope."""
        return json.dumps(
            {
                "message_type": self.message_type,
                "sender": self.sender,
                "recipient_kind": self.recipient_kind.value,
                "recipient_id": self.recipient_id,
                "registered": self.registered,
                "priority": self.priority,
                "languages": sorted(self.languages),
                "assurance_high": self.assurance_high,
                "replies": self.replies,
                "payment": self.payment,
                "effective_date": self.effective_date.isoformat() if self.effective_date else None,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> MessageFacts:
        """``to_json`` read back; ``ValueError`` (or ``KeyError``) when it is not what ``to_json`` wrote."""
        data = json.loads(text)
        effective = data["effective_date"]
        return cls(
            message_type=str(data["message_type"]),
            sender=str(data["sender"]),
            recipient_kind=RecipientKind(data["recipient_kind"]),
            recipient_id=str(data["recipient_id"]),
            registered=bool(data["registered"]),
            priority=str(data["priority"]),
            languages=frozenset(str(lang) for lang in data["languages"]),
            assurance_high=bool(data["assurance_high"]),
            replies=bool(data["replies"]),
            payment=bool(data["payment"]),
            effective_date=datetime.fromisoformat(effective) if effective else None,
        )

    def needs(self) -> frozenset[Capability]:
        """The capabilities any provider chosen for this message must have."""
        needed = set()
        if self.registered:
            needed.add(Capability.REGISTERED)
        if self.replies:
            needed.add(Capability.REPLIES)
        if self.payment:
            needed.add(Capability.PAYMENTS)
        if self.assurance_high:
            needed.add(Capability.EIDAS_HIGH)
        return frozenset(needed)


@dataclass(frozen=True, kw_only=True)
class Match:
    message_type: tuple[str, ...] = ()
    """Globs (``TAX_*``); empty: any."""
    sender: tuple[str, ...] = ()
    recipient_kind: RecipientKind | None = None
    registered: bool | None = None
    priority: tuple[str, ...] = ()
    language: tuple[str, ...] = ()

    @property
    def catch_all(self) -> bool:
        return self == Match()

    def fits(self, facts: MessageFacts) -> bool:
        return (
            (not self.message_type or any(fnmatch.fnmatchcase(facts.message_type, g) for g in self.message_type))
            and (not self.sender or facts.sender in self.sender)
            and (self.recipient_kind is None or facts.recipient_kind == self.recipient_kind)
            and (self.registered is None or facts.registered == self.registered)
            and (not self.priority or facts.priority in self.priority)
            and (not self.language or bool(facts.languages & set(self.language)))
        )


@dataclass(frozen=True, kw_only=True)
class Rule:
    name: str
    match: Match = Match()
    deliver: tuple[str, ...] | None = None
    """Named providers; ``None``: every provider the recipient reads with."""
    require: frozenset[Capability] = frozenset()
    fallback: Outcome = Outcome.PAPER
    priority: str | None = None
    hold: bool = True
    """Hold deliveries until the message's effective date."""
    line: int | None = None


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    source: str = "<rules>"


@dataclass(frozen=True, kw_only=True)
class Delivery:
    provider: str
    not_before: datetime | None = None
    """Held until then (maintenance, or the message's effective date)."""
    why_held: str | None = None


@dataclass(frozen=True, kw_only=True)
class Decision:
    outcome: Outcome
    rule: str | None
    deliveries: tuple[Delivery, ...] = ()
    priority: str = "normal"
    reasons: tuple[str, ...] = ()
    """Why: each step of the decision, for ``hub routes explain`` and the routed event."""
    skipped: tuple[tuple[str, str], ...] = field(default=())
    """Providers considered and left out, with the reason."""

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(d.provider for d in self.deliveries)


def decide(
    facts: MessageFacts, recipient: Recipient | None, providers: ProviderCatalog, rules: RuleSet, now: datetime
) -> Decision:
    rule = next((r for r in rules.rules if r.match.fits(facts)), None)
    if rule is None:
        return Decision(
            outcome=Outcome.UNDELIVERABLE,
            rule=None,
            priority=facts.priority,
            reasons=("no rule matches this message; add a catch-all rule (match: {}) at the end",),
        )
    reasons = [f"rule {rule.name!r} matches (first in order)"]
    priority = rule.priority or facts.priority

    def fall_back(why: str, skipped: tuple[tuple[str, str], ...] = ()) -> Decision:
        reasons.append(why)
        if rule.fallback is Outcome.PAPER:
            paper = _paper_provider(providers, facts)
            if paper is not None:
                reasons.append(f"fallback: paper, through {paper!r}")
                held = _held(providers, paper, facts, rule, now)
                return Decision(
                    outcome=Outcome.PAPER,
                    rule=rule.name,
                    deliveries=(held,),
                    priority=priority,
                    reasons=tuple(reasons),
                    skipped=skipped,
                )
            reasons.append("fallback paper, but no paper provider serves this recipient")
        else:
            reasons.append("fallback: undeliverable (the sender must use another channel)")
        return Decision(
            outcome=Outcome.UNDELIVERABLE, rule=rule.name, priority=priority, reasons=tuple(reasons), skipped=skipped
        )

    # Universal providers (e.g. the enterprise inbox) serve every recipient of their kinds; the
    # others only recipients who activated digital post and read with them. Paper is never a
    # digital delivery: it is only the fallback.
    digital = {p.id for p in providers.providers.values() if Capability.PAPER not in p.capabilities}
    reads_with = {
        p.id for p in providers.providers.values() if p.universal and facts.recipient_kind in p.kinds
    } & digital
    if recipient is not None and recipient.digital_at(now):
        reads_with |= {p for p in recipient.providers if p in digital or p not in providers}
    elif not reads_with:
        state = "unknown to the directory" if recipient is None else "without digital consent now"
        return fall_back(f"the recipient is {state}")
    else:
        reasons.append("no digital consent: only the providers that serve every such recipient")
    if rule.deliver is None:
        candidates = sorted(reads_with)
        reasons.append(f"deliver to every provider the recipient reads with: {', '.join(candidates) or 'none'}")
    else:
        candidates = [p for p in rule.deliver if p in reads_with]
        left = [p for p in rule.deliver if p not in reads_with]
        reasons.append(
            f"deliver to the named providers the recipient reads with: {', '.join(candidates) or 'none'}"
            + (f" (not read with: {', '.join(left)})" if left else "")
        )
    needed = facts.needs() | rule.require
    chosen: list[Delivery] = []
    skipped: list[tuple[str, str]] = []
    for provider_id in candidates:
        if provider_id not in providers:
            skipped.append((provider_id, "not a configured provider"))
            continue
        provider = providers[provider_id]
        if facts.recipient_kind not in provider.kinds:
            skipped.append((provider_id, f"does not serve {facts.recipient_kind} recipients"))
            continue
        missing = needed - provider.capabilities
        if missing:
            skipped.append((provider_id, f"lacks {', '.join(sorted(missing))}"))
            continue
        chosen.append(_held(providers, provider_id, facts, rule, now))
    if not chosen:
        return fall_back("no provider the recipient reads with can take this message", tuple(skipped))
    return Decision(
        outcome=Outcome.DELIVER,
        rule=rule.name,
        deliveries=tuple(chosen),
        priority=priority,
        reasons=tuple(reasons),
        skipped=tuple(skipped),
    )


def _paper_provider(providers: ProviderCatalog, facts: MessageFacts) -> str | None:
    needed = facts.needs() & {Capability.REGISTERED}
    for provider in sorted(providers.providers.values(), key=lambda p: p.id):
        paper = Capability.PAPER in provider.capabilities
        if paper and facts.recipient_kind in provider.kinds and needed <= provider.capabilities:
            return provider.id
    return None


def _held(providers: ProviderCatalog, provider_id: str, facts: MessageFacts, rule: Rule, now: datetime) -> Delivery:
    waits: list[tuple[datetime, str]] = []
    resting = providers[provider_id].resting_until(now)
    if resting is not None:
        waits.append((resting, "provider in maintenance"))
    if rule.hold and facts.effective_date is not None and facts.effective_date > now:
        waits.append((facts.effective_date, "until the message's effective date"))
    if not waits:
        return Delivery(provider=provider_id)
    until, why = max(waits)
    return Delivery(provider=provider_id, not_before=until, why_held=why)


# -- reading and checking routing.yaml ---------------------------------------------------------


def _strings(section: Section, key: str) -> tuple[str, ...]:
    value = section.get(key, (str, list))
    if value is None:
        return ()
    values = [value] if isinstance(value, str) else value
    if not all(isinstance(v, str) and v for v in values):
        raise section.error("give text or a list of texts", key)
    return tuple(values)


def _match(section: Section) -> Match:
    section.expect(*MATCH_KEYS)
    kind = section.get("recipient_kind", str)
    if kind is not None and kind not in ("citizen", "enterprise"):
        raise section.error("must be citizen or enterprise", "recipient_kind")
    priority = _strings(section, "priority")
    for value in priority:
        if value not in PRIORITIES:
            raise section.error(f"unknown priority {value!r}; use {', '.join(PRIORITIES)}", "priority")
    match = Match(
        message_type=_strings(section, "message_type"),
        sender=tuple(str(s) for s in _strings(section, "sender")),
        recipient_kind=RecipientKind(kind) if kind else None,
        registered=section.get("registered", bool),
        priority=priority,
        language=_strings(section, "language"),
    )
    section.finish()
    return match


def load_rules(path: Path, providers: ProviderCatalog | None = None) -> RuleSet:
    """Read ``routing.yaml``; mistakes name the file and line. With ``providers``, names are checked too."""
    top = load_yaml(path)
    top.expect("rules")
    rules: list[Rule] = []
    names: set[str] = set()
    for entry in top.sections("rules"):
        entry.expect(*RULE_KEYS)
        name = entry.get("name", str, required=True)
        if name in names:
            raise entry.error(f"rule {name!r} is named twice", "name")
        names.add(name)
        deliver = entry.get("deliver", (str, list), "all")
        if isinstance(deliver, str) and deliver != "all":
            raise entry.error("use 'all' or a list of provider ids", "deliver")
        named = None if deliver == "all" else tuple(str(p) for p in deliver)
        if providers is not None and named:
            for provider_id in named:
                if provider_id not in providers:
                    raise entry.error(
                        f"unknown provider {provider_id!r}{_hint(provider_id, providers.ids())}", "deliver"
                    )
        require = []
        for capability in entry.get("require", list, []):
            known = [c.value for c in Capability]
            if capability not in known:
                raise entry.error(f"unknown capability {capability!r}{_hint(str(capability), known)}", "require")
            require.append(Capability(capability))
        fallback = entry.get("fallback", str, "paper")
        if fallback not in ("paper", "undeliverable"):
            raise entry.error("must be paper or undeliverable", "fallback")
        priority = entry.get("priority", str)
        if priority is not None and priority not in PRIORITIES:
            raise entry.error(f"must be one of {', '.join(PRIORITIES)}", "priority")
        rules.append(
            Rule(
                name=name,
                match=_match(entry.section("match")),
                deliver=named,
                require=frozenset(require),
                fallback=Outcome(fallback),
                priority=priority,
                hold=entry.get("hold", bool, True),
                line=entry.line,
            )
        )
        entry.finish()
    top.finish()
    return RuleSet(tuple(rules), source=str(path))


def _hint(value: str, known: list[str]) -> str:
    close = difflib.get_close_matches(value, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"


def check(rules: RuleSet, providers: ProviderCatalog) -> list[str]:
    """Problems an operator should fix: unreachable rules, no catch-all, no paper provider."""
    problems = []
    catch_all: Rule | None = None
    seen: dict[Match, Rule] = {}
    for rule in rules.rules:
        where = f"{rules.source}:{rule.line}" if rule.line else rules.source
        if catch_all is not None:
            problems.append(
                f"{where}: rule {rule.name!r} can never match: rule {catch_all.name!r} "
                f"(line {catch_all.line}) matches every message before it"
            )
        elif rule.match in seen:
            earlier = seen[rule.match]
            problems.append(
                f"{where}: rule {rule.name!r} can never match: rule {earlier.name!r} "
                f"(line {earlier.line}) has the same match"
            )
        seen.setdefault(rule.match, rule)
        if rule.match.catch_all and catch_all is None:
            catch_all = rule
        if rule.fallback is Outcome.PAPER and not any(
            Capability.PAPER in p.capabilities for p in providers.providers.values()
        ):
            problems.append(f"{where}: rule {rule.name!r} falls back to paper but no provider has the paper capability")
    if catch_all is None:
        problems.append(
            f"{rules.source}: no catch-all rule (match: {{}}) at the end: some messages match no rule "
            "and are undeliverable"
        )
    return problems


def load_routing(config_dir: Path) -> tuple[ProviderCatalog, RuleSet]:
    from hub.routing.providers import load_providers

    providers = load_providers(config_dir / "providers.yaml")
    rules = load_rules(config_dir / "routing.yaml", providers)
    if not rules.rules:
        raise ConfigError("no rules", file=str(config_dir / "routing.yaml"))
    return providers, rules
