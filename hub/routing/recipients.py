"""The recipient directory's values: what the hub knows of a citizen's or enterprise's mailbox.

A recipient has activated digital post (consent, given at a time, possibly withdrawn
later), may have chosen e-Box exclusively (no paper), reads with zero or more providers,
and has a preferred language and a last connection. Providers keep this up to date;
operators import it. Decisions (``hub.routing.rules``) read these values and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class RecipientKind(StrEnum):
    CITIZEN = "citizen"
    ENTERPRISE = "enterprise"


@dataclass(frozen=True, kw_only=True)
class Recipient:
    kind: RecipientKind
    id: str
    """SSIN for a citizen, CBE number for an enterprise."""
    consent_at: datetime | None = None
    """When digital post was activated; ``None``: never."""
    withdrawn_at: datetime | None = None
    """When it was withdrawn (after ``consent_at``); ``None``: not withdrawn."""
    exclusive: bool = False
    """The recipient chose e-Box exclusively: no paper."""
    providers: frozenset[str] = frozenset()
    """The providers the recipient reads with (provider ids of config/providers.yaml)."""
    language: str | None = None
    last_connection: datetime | None = None

    def digital_at(self, when: datetime) -> bool:
        """Whether digital post is active at ``when`` (consent given, not withdrawn since)."""
        if self.consent_at is None or self.consent_at > when:
            return False
        return self.withdrawn_at is None or self.withdrawn_at > when or self.withdrawn_at < self.consent_at


UNKNOWN = None
"""A recipient the directory does not know is treated as one with no digital consent."""
