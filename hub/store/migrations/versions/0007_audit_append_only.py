"""The audit trail is append-only: the database refuses to delete an entry or change a sealed one.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27

Triggers on ``audit``: DELETE (and TRUNCATE on PostgreSQL) is refused; UPDATE is refused unless
it seals an entry that was not sealed yet (``OLD.hash IS NULL``), setting ``seq``, ``prev_hash``
and ``hash`` and changing nothing else. That is the one write the audit sealer
(``hub.lifecycle.audit``) makes. PostgreSQL: one plpgsql function behind three triggers;
SQLite: ``BEFORE`` triggers that ``RAISE(ABORT)``.

The triggers are not columns: the models do not describe them. On SQLite a later migration that
rebuilds ``audit`` with ``batch_alter_table`` drops them and must create them again
(``create_triggers``); ``hub audit verify`` warns when they are missing.
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TRIGGERS = ("audit_no_delete", "audit_seal_only", "audit_no_truncate")
"""The triggers' names (``audit_no_truncate`` on PostgreSQL only)."""

_SAME = ("id", "at", "actor", "action", "message_id", "detail")

_PG_FUNCTION = f"""
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND OLD.hash IS NULL
       AND NEW.hash IS NOT NULL AND NEW.prev_hash IS NOT NULL AND NEW.seq IS NOT NULL
       AND ({", ".join("NEW." + c for c in _SAME)}) IS NOT DISTINCT FROM ({", ".join("OLD." + c for c in _SAME)})
    THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'the audit trail is append-only: only sealing an unsealed entry may update it (id %)', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RAISE EXCEPTION 'the audit trail is append-only: % refused', TG_OP
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$
"""

_SQLITE_SEALING = " AND ".join(
    ["OLD.hash IS NULL", "NEW.hash IS NOT NULL", "NEW.prev_hash IS NOT NULL", "NEW.seq IS NOT NULL"]
    + [f"NEW.{c} IS OLD.{c}" for c in _SAME]
)


def create_triggers() -> None:
    """Create the triggers on the current connection's back end."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(
            "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit FOR EACH ROW EXECUTE FUNCTION audit_append_only()"
        )
        op.execute(
            "CREATE TRIGGER audit_seal_only BEFORE UPDATE ON audit FOR EACH ROW EXECUTE FUNCTION audit_append_only()"
        )
        op.execute(
            "CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()"
        )
    else:
        op.execute(
            "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit "
            "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only: DELETE refused'); END"
        )
        op.execute(
            f"CREATE TRIGGER audit_seal_only BEFORE UPDATE ON audit WHEN NOT ({_SQLITE_SEALING}) BEGIN "
            "SELECT RAISE(ABORT, 'the audit trail is append-only: only sealing an unsealed entry may update it'); END"
        )


def upgrade() -> None:
    create_triggers()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON audit")
        op.execute("DROP FUNCTION IF EXISTS audit_append_only()")
    else:
        for name in TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
