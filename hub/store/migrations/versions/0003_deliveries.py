"""Deliveries, and outbox rows held until a moment.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-10

``deliveries``: one row per (message, provider) chosen by routing; the unique pair is what
makes routing idempotent. ``outbox.not_before``: the relay skips a row until then. The
relay's one partial index (unsent rows by id) becomes two: rows ready now (by id) and held
rows (by the time they become due), so held rows are never scanned on the way to ready ones.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.store.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

READY = "sent_at IS NULL AND not_before IS NULL"
HELD = "sent_at IS NULL AND not_before IS NOT NULL"


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("id", sa.String(101), primary_key=True),
        sa.Column("message_id", sa.String(36), sa.ForeignKey("messages.id"), nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("not_before", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("message_id", "provider", name="uq_deliveries_message_provider"),
    )
    op.add_column("outbox", sa.Column("not_before", UTCDateTime(), nullable=True))
    op.drop_index("ix_outbox_unsent", table_name="outbox")
    op.create_index("ix_outbox_ready", "outbox", ["id"], postgresql_where=sa.text(READY), sqlite_where=sa.text(READY))
    op.create_index(
        "ix_outbox_held", "outbox", ["not_before", "id"], postgresql_where=sa.text(HELD), sqlite_where=sa.text(HELD)
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_held", table_name="outbox")
    op.drop_index("ix_outbox_ready", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("not_before")
    op.create_index(
        "ix_outbox_unsent",
        "outbox",
        ["id"],
        postgresql_where=sa.text("sent_at IS NULL"),
        sqlite_where=sa.text("sent_at IS NULL"),
    )
    op.drop_table("deliveries")
