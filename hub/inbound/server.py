"""``hub serve``: the HTTP doors behind uvicorn, with N worker processes and optional TLS."""

from __future__ import annotations

import ssl

from hub import metrics
from hub.errors import ConfigError
from hub.settings import Settings


def serve(settings: Settings, *, workers: int | None = None, reload: bool = False) -> None:
    import uvicorn

    options: dict[str, object] = {}
    if settings.tls_key or settings.tls_certificate:
        if not (settings.tls_key and settings.tls_certificate):
            raise ConfigError("http.tls_key and http.tls_certificate go together: set both or neither")
        options.update(ssl_keyfile=str(settings.tls_key), ssl_certfile=str(settings.tls_certificate))
        if settings.client_ca:
            options.update(ssl_ca_certs=str(settings.client_ca), ssl_cert_reqs=ssl.CERT_REQUIRED)
    elif settings.client_ca:
        raise ConfigError("http.client_ca needs TLS: set http.tls_key and http.tls_certificate too")
    if settings.log_format == "json":
        options["log_config"] = None  # uvicorn's own records go to the hub's handler (hub.logs), as JSON too
    workers = workers or settings.http_workers
    metrics.multiprocess_dir(workers)  # N processes: their counters in files a scrape adds up (hub.metrics)
    if settings.tls_key:
        # Hands the client certificate to the doors (ASGI TLS extension).
        options["http"] = "hub.inbound.tls:TLSHttpToolsProtocol"
    uvicorn.run(
        "hub.inbound.http:create_app",
        factory=True,
        host=settings.http_host,
        port=settings.http_port,
        workers=workers,
        timeout_keep_alive=5,
        limit_concurrency=1000,
        proxy_headers=False,
        server_header=False,
        log_level="info",
        # Request paths carry national numbers (GET /v1/recipients/citizen/<SSIN>): no access log.
        # The doors log structured events without personal data instead.
        access_log=False,
        **options,  # type: ignore[arg-type]
    )
