"""Inbound: how envelopes enter the hub (doors, authorisation, idempotency, receipts)."""
