"""The web console, served by ``hub serve`` and ``hub run`` under ``/web``.

Self-service sending for institutions' users (``selfservice``, ``batch``) and the operator
console (``console``), server-rendered (Jinja2 templates, a little JavaScript that the pages
work without), in English, French and Dutch, behind the sign-in of ``signin`` and the sessions
of ``sessions``; every action goes to the audit trail. See ``docs/web.md``.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles


def routes() -> list[BaseRoute]:
    from hub.web import batch, console, selfservice, signin

    return [
        Mount(
            "/web",
            routes=[
                Mount("/static", StaticFiles(packages=[("hub.web", "static")]), name="web-static"),
                *signin.routes(),
                *selfservice.routes(),
                *batch.routes(),
                *console.routes(),
            ],
        )
    ]
