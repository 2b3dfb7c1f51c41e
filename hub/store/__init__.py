"""The store: SQLAlchemy models, sessions, Alembic migrations and the outbox.

The database is the source of truth for each message's state; the broker only carries
what the outbox says must be published.
"""
