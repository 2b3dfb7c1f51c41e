"""How a long-running command stops: SIGTERM (docker, systemd) or SIGINT (Ctrl-C) sets an event it polls."""

from __future__ import annotations

import signal
import threading


def stop_on_signals(stop: threading.Event | None = None) -> threading.Event:
    """``stop`` (a new event if none) set by SIGTERM and SIGINT; call from the main thread."""
    event = stop if stop is not None else threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: event.set())
    return event
