"""Mailbox providers from ``config/providers.yaml``: what each serves, can do, and when it rests.

A provider serves citizens and/or enterprises, declares capabilities (registered mail,
replies, payments, the highest eIDAS level it enforces, paper), how deliveries reach it
(its AMQP queue or an HTTPS push), its certificates (for its acknowledgements), and
maintenance windows during which deliveries wait.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from hub.configfile import Section, load_yaml
from hub.errors import ConfigError
from hub.routing.recipients import RecipientKind
from hub.signing.truststore import TrustedCertificate

RESERVED_ID = "hub"
"""Not a provider id: acknowledgements issued by ``hub`` are the hub's own (``hub.outbound.acks``)."""


class Capability(StrEnum):
    REGISTERED = "registered"
    """Proof of delivery and of opening (registered mail)."""
    REPLIES = "replies"
    PAYMENTS = "payments"
    EIDAS_HIGH = "eidas_high"
    """Enforces eIDAS level high at sign-in when a message asks for it."""
    PAPER = "paper"
    """Prints and posts: the fallback when the recipient has no digital consent."""


@dataclass(frozen=True, kw_only=True)
class Maintenance:
    start: datetime
    end: datetime

    def covers(self, when: datetime) -> bool:
        return self.start <= when < self.end


@dataclass(frozen=True, kw_only=True)
class Provider:
    id: str
    name: str
    kinds: frozenset[RecipientKind] = frozenset(RecipientKind)
    capabilities: frozenset[Capability] = frozenset()
    universal: bool = False
    """Every recipient of its kinds reads with it (e.g. the enterprise inbox, or paper)."""
    channel: str = "amqp"
    url: str | None = None
    maintenance: tuple[Maintenance, ...] = ()
    certificates: tuple[TrustedCertificate, ...] = field(default=(), repr=False)
    token_hashes: frozenset[str] = frozenset()
    """SHA-256 (hex) of the API tokens the provider calls the hub with (subscriptions, acknowledgements)."""

    def resting_until(self, when: datetime) -> datetime | None:
        """The end of the maintenance window covering ``when``, if any (windows may chain)."""
        end = None
        moment = when
        for _ in range(len(self.maintenance) + 1):
            covering = [m for m in self.maintenance if m.covers(moment)]
            if not covering:
                break
            end = moment = max(m.end for m in covering)
        return end


@dataclass(frozen=True)
class ProviderCatalog:
    providers: dict[str, Provider]

    def __contains__(self, provider_id: object) -> bool:
        return provider_id in self.providers

    def __getitem__(self, provider_id: str) -> Provider:
        return self.providers[provider_id]

    def ids(self) -> list[str]:
        return sorted(self.providers)

    def tokens(self) -> dict[str, set[str]]:
        """``{provider id: {sha256 of a token, ...}}`` for the provider endpoints."""
        return {p.id: set(p.token_hashes) for p in self.providers.values()}


def _moment(section: Section, key: str) -> datetime:
    value = section.get(key, (str, datetime), required=True)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise section.error(f"{value!r} is not an ISO 8601 date-time", key) from None
    if value.tzinfo is None:
        raise section.error("give the time zone (Z or +01:00)", key)
    return value


def load_providers(path: Path) -> ProviderCatalog:
    """Read ``providers.yaml``; every mistake names the file and the line."""
    from hub.inbound.senders import _certificates, _tokens  # the same entries as for senders

    top = load_yaml(path)
    top.expect("providers")
    providers: dict[str, Provider] = {}
    for entry in top.sections("providers"):
        entry.expect(
            "id",
            "name",
            "kinds",
            "capabilities",
            "universal",
            "delivery",
            "maintenance",
            "certificates",
            "api_token_sha256",
        )
        ident = entry.get("id", str, required=True)
        if not ident.replace("-", "").replace("_", "").isalnum() or len(ident) > 64:
            raise entry.error("use letters, digits, '-' and '_' (it names a queue)", "id")
        if ident in providers:
            raise entry.error(f"provider {ident!r} is listed twice", "id")
        if ident == RESERVED_ID:
            raise entry.error(f"{RESERVED_ID!r} is the hub's own name (the issuer of its acknowledgements)", "id")
        kinds = entry.get("kinds", list, ["citizen", "enterprise"])
        for kind in kinds:
            if kind not in RecipientKind.__members__.values():
                raise entry.error(f"unknown recipient kind {kind!r}; use citizen and/or enterprise", "kinds")
        capabilities = entry.get("capabilities", list, [])
        known = [c.value for c in Capability]
        for capability in capabilities:
            if capability not in known:
                import difflib

                hint = difflib.get_close_matches(str(capability), known, n=1)
                suggestion = f"; did you mean {hint[0]!r}?" if hint else f"; known: {', '.join(known)}"
                raise entry.error(f"unknown capability {capability!r}{suggestion}", "capabilities")
        delivery = entry.section("delivery")
        delivery.expect("channel", "url")
        channel = delivery.get("channel", str, "amqp")
        if channel not in ("amqp", "http"):
            raise delivery.error("must be amqp or http", "channel")
        url = delivery.get("url", str)
        if channel == "http" and not (url and url.startswith("https://")):
            raise delivery.error("an http push needs an https:// url", "url")
        delivery.finish()
        windows = []
        for window in entry.sections("maintenance"):
            window.expect("from", "until")
            start, end = _moment(window, "from"), _moment(window, "until")
            window.finish()
            if end <= start:
                raise window.error("'until' must come after 'from'", "until")
            windows.append(Maintenance(start=start, end=end))
        providers[ident] = Provider(
            id=ident,
            name=entry.get("name", str, required=True),
            kinds=frozenset(RecipientKind(k) for k in kinds),
            capabilities=frozenset(Capability(c) for c in capabilities),
            universal=entry.get("universal", bool, False),
            channel=channel,
            url=url,
            maintenance=tuple(windows),
            certificates=_certificates(entry, ident, path.parent),
            token_hashes=_tokens(entry),
        )
        entry.finish()
    top.finish()
    if not providers:
        raise ConfigError("no providers: list at least one (and a paper provider for the fallback)", file=str(path))
    return ProviderCatalog(providers)
