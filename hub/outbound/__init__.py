"""Outbound: acknowledgements from providers and to senders, and the forward-only delivery states."""
