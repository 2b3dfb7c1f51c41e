"""The recipient directory: recipients and the providers they read with.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03

Lookups are by recipient (kind, id): the primary keys serve them, for ``recipient_providers``
as the prefix of (kind, recipient_id, provider_id). No other index is needed yet.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.store.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recipients",
        sa.Column("kind", sa.String(10), primary_key=True),
        sa.Column("recipient_id", sa.String(11), primary_key=True),
        sa.Column("consent_at", UTCDateTime(), nullable=True),
        sa.Column("withdrawn_at", UTCDateTime(), nullable=True),
        sa.Column("exclusive", sa.Boolean(), nullable=False),
        sa.Column("exclusive_at", UTCDateTime(), nullable=True),
        sa.Column("language", sa.String(2), nullable=True),
        sa.Column("language_at", UTCDateTime(), nullable=True),
        sa.Column("last_connection", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "recipient_providers",
        sa.Column("kind", sa.String(10), primary_key=True),
        sa.Column("recipient_id", sa.String(11), primary_key=True),
        sa.Column("provider_id", sa.String(64), primary_key=True),
        sa.Column("linked_at", UTCDateTime(), nullable=True),
        sa.Column("unlinked_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["kind", "recipient_id"],
            ["recipients.kind", "recipients.recipient_id"],
            name="fk_recipient_providers_recipient",
        ),
    )


def downgrade() -> None:
    op.drop_table("recipient_providers")
    op.drop_table("recipients")
