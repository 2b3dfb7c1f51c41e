"""Provider acknowledgements, and the senders' event feed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26

``events.seq``: each event's place in the feed, given in commit order by the sequencer
(``hub.outbound.feed``); NULL until then (a partial index finds those). ``provider_acks``:
every provider acknowledgement once, by (issuer, acknowledgement id). ``cursors``: how far
each feed reader (the forwarder) has got.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.store.models import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Id64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UNSEQUENCED = "seq IS NULL"


def upgrade() -> None:
    op.add_column("events", sa.Column("seq", Id64, nullable=True))
    op.create_index("ix_events_seq", "events", ["seq"], unique=True)
    op.create_index(
        "ix_events_unsequenced",
        "events",
        ["id"],
        postgresql_where=sa.text(UNSEQUENCED),
        sqlite_where=sa.text(UNSEQUENCED),
    )
    op.create_table(
        "provider_acks",
        sa.Column("issuer", sa.String(64), primary_key=True),
        sa.Column("ack_id", sa.String(64), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("delivery_id", sa.String(101), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(8), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_provider_acks_message_id", "provider_acks", ["message_id"])
    op.create_table(
        "cursors",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("position", Id64, nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cursors")
    op.drop_index("ix_provider_acks_message_id", table_name="provider_acks")
    op.drop_table("provider_acks")
    op.drop_index("ix_events_unsequenced", table_name="events")
    op.drop_index("ix_events_seq", table_name="events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("seq")
