"""The message model: typed, immutable values read from (or built into) an envelope.

Names follow the envelope schema (``schemas/envelope-1.xsd``); where the public e-Box
contract has the same concept its name is given in the field's docstring.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

ENVELOPE_NS = "urn:ebox-hub:envelope:1"
TYPES_NS = "urn:ebox-hub:types:1"
ACK_NS = "urn:ebox-hub:acknowledgement:1"


class Language(StrEnum):
    FR = "fr"
    NL = "nl"
    DE = "de"
    EN = "en"


class EboxType(StrEnum):
    CITIZEN = "citizen"
    ENTERPRISE = "enterprise"


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


class AssuranceLevel(StrEnum):
    """eIDAS level of assurance the recipient must have used to read the message."""

    SUBSTANTIAL = "substantial"
    HIGH = "high"


class Environment(StrEnum):
    INT = "INT"
    PROD = "PROD"


@dataclass(frozen=True, kw_only=True)
class Text:
    """A string in one language (e-Box TranslatedString item)."""

    lang: Language
    value: str


@dataclass(frozen=True, kw_only=True)
class Sender:
    organization_id: str
    """CBE number of the organisation that submits and signs (e-Box senderOrganizationId)."""
    application_id: str
    """e-Box senderApplicationId."""
    on_behalf_of: str | None = None
    """CBE number of the institution an integrator sends for; ``None`` when it sends itself."""

    @property
    def institution_id(self) -> str:
        """The sender the recipient sees: the institution, whoever submitted."""
        return self.on_behalf_of or self.organization_id


@dataclass(frozen=True, kw_only=True)
class ForTheAttentionOf:
    ssin: str | None = None
    name: str | None = None


@dataclass(frozen=True, kw_only=True)
class Recipient:
    ebox_type: EboxType
    """e-Box eboxType."""
    id: str
    """SSIN for a citizen, CBE number for an enterprise (e-Box eboxIdValue)."""
    sub_entity_id: str | None = None
    for_the_attention_of: ForTheAttentionOf | None = None


@dataclass(frozen=True, kw_only=True)
class Header:
    sender_message_id: str
    """The sender's idempotency key, unique per sender."""
    sender: Sender
    recipient: Recipient
    message_type: str
    """e-Box messageTypeId."""
    created: datetime
    expires_at: datetime | None = None
    """e-Box expirationDate; ``None``: the message type's default, or indefinitely (below)."""
    retain_indefinitely: bool = False
    effective_date: datetime | None = None
    registered: bool = False
    """e-Box registeredMail: proof of delivery and of opening wanted."""
    opening_receipt: bool = False
    assurance_level: AssuranceLevel = AssuranceLevel.SUBSTANTIAL
    priority: Priority = Priority.NORMAL
    correlation_id: str | None = None
    original_message_id: str | None = None
    environment: Environment = Environment.PROD


@dataclass(frozen=True, kw_only=True)
class Attachment:
    file_name: str
    media_type: str
    size: int
    """Declared size in bytes of the decoded content."""
    digest: bytes
    """Declared SHA-256 of the decoded content (32 bytes)."""
    content: bytes = field(repr=False)
    titles: tuple[Text, ...] = ()
    signed: bool = False
    """e-Box attachmentSigned: the file carries its own signature."""


@dataclass(frozen=True, kw_only=True)
class Payment:
    """e-Box paymentData."""

    iban: str
    amount: Decimal
    currency: str
    due_date: date
    bic: str | None = None
    beneficiary: str | None = None
    vat_amount: Decimal | None = None
    structured_reference: str | None = None
    free_reference: str | None = None


@dataclass(frozen=True, kw_only=True)
class ReplyChoice:
    id: str
    labels: tuple[Text, ...]


@dataclass(frozen=True, kw_only=True)
class ReplyOptions:
    """e-Box replyAuthorized, with what may be answered: fixed choices or free text."""

    choices: tuple[ReplyChoice, ...] = ()
    free_text_max_length: int | None = None
    deadline: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class BusinessDataEntry:
    key: str
    values: tuple[Text | str, ...]
    names: tuple[Text, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Link:
    url: str
    labels: tuple[Text, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Contact:
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    url: str | None = None
    address: str | None = None


@dataclass(frozen=True, kw_only=True)
class Content:
    subjects: tuple[Text, ...]
    titles: tuple[Text, ...] = ()
    bodies: tuple[Text, ...] = ()
    document: Attachment | None = None
    """The main document when it is a file; else the body is the main content."""
    annexes: tuple[Attachment, ...] = ()
    payment: Payment | None = None
    reply_options: ReplyOptions | None = None
    business_data: tuple[BusinessDataEntry, ...] = ()
    link: Link | None = None
    contact: Contact | None = None

    @property
    def body_main_content(self) -> bool:
        """e-Box bodyMainContent: the body is the main content (no main document file)."""
        return self.document is None and bool(self.bodies)

    @property
    def attachments(self) -> tuple[Attachment, ...]:
        return ((self.document,) if self.document else ()) + self.annexes


@dataclass(frozen=True, kw_only=True)
class Envelope:
    """A whole envelope: what a sender asked the hub to deliver."""

    header: Header
    content: Content
    id: str | None = None
    """The root's Id attribute, when the sender set one."""
