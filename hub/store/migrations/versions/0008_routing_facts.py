"""Routing facts kept beside the envelope, so that routing never parses the envelope again.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26

``messages.routing_facts``: what the routing decision needs of an accepted envelope (its type,
sender, recipient, flags: ``hub.routing.rules.MessageFacts.to_json``), written by acceptance,
which has the envelope parsed already, and cleared when the message is routed. Before, the
routing worker read the whole stored envelope (up to 15 MB; 140 KB on average in
``bench/e2e.py``'s realistic mix) and parsed it once more. Messages accepted before this
migration have none: routing reads their envelope as it did.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("routing_facts", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("routing_facts")
