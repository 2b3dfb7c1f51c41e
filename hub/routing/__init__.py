"""Routing: who reads with which providers, and which queues each accepted message goes to."""
