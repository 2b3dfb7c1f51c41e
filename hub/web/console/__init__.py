"""The operator console: what the hub is doing, where each message is, and the operator's tools.

/web/console                     dashboard: events of the last minute and hour (accepted, routed, delivered,
                                 opened), the outbox backlog, deliveries by state, RabbitMQ queue depths;
                                 its figures refresh from /web/console/live.json
/web/console/messages            search by hub message id, sender message id, sender (CBE) and state, newest
                                 first (never by national number; recipients' numbers shown masked)
/web/console/messages/{id}       one message: metadata, deliveries, events (its journey)
/web/console/dead-letters        the dead-letter queue (hub.dead); POST .../replay puts one or all back
/web/console/routing             the routing rules (config/routing.yaml) and "try an envelope": POST
                                 .../routing/try shows what ``hub routes explain`` shows for it
/web/console/providers           config/providers.yaml: capabilities, maintenance, queue depth, deliveries
/web/console/stats?month=        monthly statistics per institution as charts (inline SVG) and tables;
                                 /web/console/stats.csv is ``hub stats --format csv``

Every page is for the ``operator`` role. Searches, message views, replays, tries and CSV
downloads are written to the audit trail with counts and ids only.

One module a page area: ``dashboard``, ``messages``, ``deadletters``, ``routing``, ``providers``,
``stats`` (its bar charts in ``charts``); what they share (rendering, audit, configuration files,
queue depths) is in ``common``.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from hub.web.console import dashboard, deadletters, messages, providers, routing, stats


def routes() -> list[BaseRoute]:
    return [
        *dashboard.routes(),
        *messages.routes(),
        *deadletters.routes(),
        *routing.routes(),
        *providers.routes(),
        *stats.routes(),
    ]
