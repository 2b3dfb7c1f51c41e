"""Placeholder: filled in by the compatibility work (issue 9)."""

from __future__ import annotations

from starlette.routing import BaseRoute


def routes() -> list[BaseRoute]:
    return []
