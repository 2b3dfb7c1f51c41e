"""The web console's accounts, sessions and drafts (``hub.web``).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26

``web_accounts``: people who sign in with a password (Argon2id hash) and a TOTP code, created by
an operator (``hub web account create``). ``web_sessions``: signed-in browsers, by the SHA-256 of
their cookie, with their CSRF token. ``web_drafts``: signed envelopes previewed and not yet sent.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.store.models import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

Id64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "web_accounts",
        sa.Column("username", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("institution_id", sa.String(10)),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("totp_secret", sa.String(64), nullable=False),
        sa.Column("totp_last_step", Id64),
        sa.Column("failed_attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("locked_until", UTCDateTime()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("disabled_at", UTCDateTime()),
    )
    op.create_table(
        "web_sessions",
        sa.Column("id_sha256", sa.String(64), primary_key=True),
        sa.Column("username", sa.String(80), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("institution_id", sa.String(10)),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("seen_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_web_sessions_seen_at", "web_sessions", ["seen_at"])
    op.create_table(
        "web_drafts",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("session_sha256", sa.String(64), nullable=False),
        sa.Column("institution_id", sa.String(10), nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_web_drafts_created_at", "web_drafts", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_web_drafts_created_at", "web_drafts")
    op.drop_table("web_drafts")
    op.drop_index("ix_web_sessions_seen_at", "web_sessions")
    op.drop_table("web_sessions")
    op.drop_table("web_accounts")
