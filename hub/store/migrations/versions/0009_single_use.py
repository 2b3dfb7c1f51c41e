"""Single-use values remembered in the store, so that a replay is refused by whichever process it reaches.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26

``single_use``: the SHA-256 of a value a request may carry once (the signature of a WS-Security
request, the ``jti`` of a JWT assertion), its scope and until when it matters (``hub.store.single_use``).
Before, each HTTP worker process kept its own memory of them: with ``hub serve --workers 2`` a
replay reaching the other worker was not recognised.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.store.models import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "single_use",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("until", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_single_use_until", "single_use", ["until"])


def downgrade() -> None:
    op.drop_index("ix_single_use_until", "single_use")
    op.drop_table("single_use")
