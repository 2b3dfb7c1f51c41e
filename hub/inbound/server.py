"""``hub serve``: the HTTP doors behind uvicorn, with N worker processes and optional TLS."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

from hub import metrics
from hub.configfile import load_toml
from hub.errors import ConfigError
from hub.settings import Settings


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options from ``[http]``, for ``hub serve`` and ``hub run`` alike: TLS (and client
    certificates), limits, and no access log (request paths carry national numbers:
    ``GET /v1/recipients/citizen/<SSIN>``; the doors log structured events without personal data)."""
    options: dict[str, Any] = {
        "host": settings.http_host,
        "port": settings.http_port,
        "timeout_keep_alive": 5,
        "limit_concurrency": 1000,
        "proxy_headers": False,
        "server_header": False,
        "access_log": False,
        # A deadline for each request's line and headers, which uvicorn has not (slowloris): hub.inbound.deadline.
        "http": "hub.inbound.deadline:DeadlineHttpToolsProtocol",
    }
    if settings.tls_key or settings.tls_certificate:
        if not (settings.tls_key and settings.tls_certificate):
            raise ConfigError("http.tls_key and http.tls_certificate go together: set both or neither")
        options.update(
            ssl_keyfile=_file(settings, "tls_key", settings.tls_key),
            ssl_certfile=_file(settings, "tls_certificate", settings.tls_certificate),
        )
        if settings.client_ca:
            ca = _file(settings, "client_ca", settings.client_ca)
            options.update(ssl_ca_certs=ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
        # Hands the client certificate to the doors (ASGI TLS extension).
        options["http"] = "hub.inbound.tls:TLSHttpToolsProtocol"
    elif settings.client_ca:
        raise ConfigError("http.client_ca needs TLS: set http.tls_key and http.tls_certificate too")
    if settings.log_format == "json":
        options["log_config"] = None  # uvicorn's own records go to the hub's handler (hub.logs), as JSON too
    return options


def _file(settings: Settings, key: str, path: Path) -> str:
    """``[http] key``'s file, once it is known to exist: uvicorn's own error would name no file."""
    if path.is_file():
        return str(path)
    variable = f"HUB_HTTP_{key.upper()}"
    if variable in os.environ:
        raise ConfigError(f"environment variable {variable} names {path}, which is not a file")
    toml = settings.config_dir / "hub.toml"
    section = load_toml(toml).section("http") if toml.is_file() else None
    if section is not None and key in section.data:
        raise section.error(f"no such file: {path}", key)
    raise ConfigError(f"http.{key}: no such file: {path}")


def serve(settings: Settings, *, workers: int | None = None, reload: bool = False) -> None:
    import uvicorn

    options = server_options(settings)
    workers = workers or settings.http_workers
    metrics.multiprocess_dir(workers)  # N processes: their counters in files a scrape adds up (hub.metrics)
    uvicorn.run("hub.inbound.http:create_app", factory=True, workers=workers, log_level="info", **options)
