"""Outbox rows may refer to the message's stored envelope instead of copying it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26

A delivery's outbox row used to carry its own copy of the envelope: a message routed to
three providers wrote the envelope three more times. ``outbox.body`` may now be NULL,
meaning "the envelope of ``outbox.message_id``", which the relay reads when it publishes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column("body", existing_type=sa.LargeBinary(), nullable=True)


def downgrade() -> None:
    op.execute(
        "UPDATE outbox SET body = (SELECT envelope FROM messages WHERE messages.id = outbox.message_id) "
        "WHERE body IS NULL"
    )
    op.execute("UPDATE outbox SET body = ''  WHERE body IS NULL")
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column("body", existing_type=sa.LargeBinary(), nullable=False)
