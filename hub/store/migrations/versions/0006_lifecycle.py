"""Lifecycle: retention marks on messages, the audit chain's order, refusals counted for statistics.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26

``messages.warned_at`` / ``reminded_at`` / ``expired_at``: what the retention scheduler did, so
that each warning, reminder and expiry happens once. ``audit.seq``: the entry's place in the hash
chain, given by the sealer in commit order. ``refusals``: envelopes refused at intake, per sender,
message type and code, without content (monthly statistics). Indexes for the scheduler's scan and
the statistics' aggregation.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.store.models import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

Id64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UNSEALED = "hash IS NULL"


def upgrade() -> None:
    # --- retention ------------------------------------------------------------------------
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("warned_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("reminded_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("expired_at", UTCDateTime(), nullable=True))
    op.create_index("ix_messages_expires_at", "messages", ["expires_at"])

    # --- audit chain -----------------------------------------------------------------------
    with op.batch_alter_table("audit") as batch:
        batch.add_column(sa.Column("seq", Id64, nullable=True))
    op.create_index("ix_audit_seq", "audit", ["seq"], unique=True)
    op.create_index(
        "ix_audit_unsealed", "audit", ["id"], postgresql_where=sa.text(UNSEALED), sqlite_where=sa.text(UNSEALED)
    )

    # --- statistics ------------------------------------------------------------------------
    op.create_table(
        "refusals",
        sa.Column("id", Id64, primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("sender_id", sa.String(10), nullable=False),
        sa.Column("submitter_id", sa.String(10), nullable=True),
        sa.Column("message_type", sa.String(64), nullable=True),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("door", sa.String(16), nullable=False),
    )
    op.create_index("ix_refusals_sender_at", "refusals", ["sender_id", "at"])


def downgrade() -> None:
    # --- statistics ------------------------------------------------------------------------
    op.drop_index("ix_refusals_sender_at", table_name="refusals")
    op.drop_table("refusals")

    # --- audit chain -----------------------------------------------------------------------
    op.drop_index("ix_audit_unsealed", table_name="audit")
    op.drop_index("ix_audit_seq", table_name="audit")
    with op.batch_alter_table("audit") as batch:
        batch.drop_column("seq")

    # --- retention ------------------------------------------------------------------------
    op.drop_index("ix_messages_expires_at", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("expired_at")
        batch.drop_column("reminded_at")
        batch.drop_column("warned_at")
