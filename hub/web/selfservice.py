"""Placeholder: filled in by the web console work (issue 10)."""

from __future__ import annotations

from starlette.routing import BaseRoute


def routes() -> list[BaseRoute]:
    return []
