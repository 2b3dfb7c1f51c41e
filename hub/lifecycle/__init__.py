"""Lifecycle and operations: retention and expiry, the tamper-evident audit trail, monthly statistics."""
