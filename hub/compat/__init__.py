"""Drop-in compatibility with the real Belgian e-Box sender contracts.

Institutions whose back offices already talk to the e-Box point them at the hub unchanged:

- ``hub.compat.ebox_soap``: EBoxMessage v1 (SOAP 1.1, WS-Security, attachments by swaRef);
- ``hub.compat.ebox_rest``: Message Registry REST v2.1, sender side (OAuth2 client credentials
  with a private-key JWT assertion).

Both map each request onto the hub's own message model and hand it to
``Intake.submit_on_behalf``: from there on (routing, providers, acknowledgements, audit,
statistics) such a message is like any other. ``docs/ebox-compatibility.md`` lists every
operation and field, supported or not.
"""

from __future__ import annotations

from starlette.routing import BaseRoute


def routes() -> list[BaseRoute]:
    """The compatibility doors' routes, served by ``hub serve`` and ``hub run`` beside the hub's own."""
    from hub.compat.ebox_rest import routes as rest_routes
    from hub.compat.ebox_soap import routes as soap_routes

    return [*soap_routes(), *rest_routes()]
