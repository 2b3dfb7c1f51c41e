"""The hub's settings: built-in defaults, then ``config/hub.toml``, then ``HUB_*`` variables.

Every key of ``hub.toml`` can be overridden by an environment variable named
``HUB_<SECTION>_<KEY>`` (``HUB_DATABASE_URL``, ``HUB_BROKER_URL``, ``HUB_HTTP_PORT``, ...);
keys of the ``[hub]`` section by ``HUB_<KEY>`` (``HUB_ENVIRONMENT``). The configuration
folder is ``HUB_CONFIG_DIR`` (default ``./config``); relative paths in it are relative to it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.broker.connection import RetryPolicy
from hub.configfile import load_toml
from hub.errors import ConfigError

ENVIRONMENTS = ("INT", "PROD")

DEFAULTS: dict[str, dict[str, Any]] = {
    "hub": {"environment": "PROD", "data_dir": "var"},
    "database": {"url": ""},  # empty: SQLite file in data_dir
    "broker": {
        "url": "memory://",
        "confirm_timeout_s": 10.0,
        "relay_batch": 500,
        "claim_check_bytes": 256 * 1024,
        "gather_s": 0.05,
        "keep_sent_hours": 24.0,
    },
    "signing": {"key": "", "certificate": ""},  # empty: a hub key created in data_dir on first start
    "limits": {"max_envelope_bytes": 15 * 1024 * 1024, "max_batch": 1000, "max_batch_bytes": 64 * 1024 * 1024},
    "retry": {"attempts": 8, "first_delay_s": 1.0, "factor": 2.5, "max_delay_s": 300.0, "jitter": 0.2},
    "http": {
        "host": "127.0.0.1",
        "port": 8080,
        "workers": 2,
        "timeout_s": 30.0,
        "tls_key": "",
        "tls_certificate": "",
        "client_ca": "",
        "public_url": "",  # empty: http(s)://host:port
    },
    "web": {
        "enabled": True,
        "secure_cookies": False,  # true: Secure cookies over plain HTTP too (TLS ended by a proxy); HTTPS always
        "session_minutes": 30,
        "max_pdf_bytes": 10 * 1024 * 1024,
        "max_batch_rows": 50,
    },
    "lifecycle": {"warn_days": 7, "reminder_days": 15, "check_every_s": 60.0},
    "metrics": {"host": "127.0.0.1", "port": 0},  # port 0: no metrics server (the HTTP app has /metrics)
    "log": {"format": "text", "level": "INFO"},
}
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True, kw_only=True)
class Settings:
    config_dir: Path
    environment: str = "PROD"
    data_dir: Path = Path("var")
    database_url: str = ""
    broker_url: str = "memory://"
    confirm_timeout_s: float = 10.0
    relay_batch: int = 500
    claim_check_bytes: int = 256 * 1024
    gather_s: float = 0.05
    keep_sent_hours: float = 24.0
    """Hours a published outbox row stays (for operators to look at) before the relay removes it."""
    """Seconds the relay and the forwarder, woken by a commit, wait for more work to gather (``hub.store.wakeup``)."""
    """Envelopes larger than this go to providers by reference (claim check), not through the broker; 0: never."""
    signing_key: Path | None = None
    signing_certificate: Path | None = None
    max_envelope_bytes: int = 15 * 1024 * 1024
    max_batch: int = 1000
    max_batch_bytes: int = 64 * 1024 * 1024
    retry_attempts: int = 8
    retry_first_delay_s: float = 1.0
    retry_factor: float = 2.5
    retry_max_delay_s: float = 300.0
    retry_jitter: float = 0.2
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    http_workers: int = 2
    http_timeout_s: float = 30.0
    tls_key: Path | None = None
    tls_certificate: Path | None = None
    client_ca: Path | None = None
    public_url: str = ""
    """Where providers reach this hub's HTTP door (claim-checked envelopes); empty: from host and port."""
    web_enabled: bool = True
    """Serve the web console (``/web``): self-service sending and the operator console (``hub.web``)."""
    web_secure_cookies: bool = False
    web_session_minutes: int = 30
    web_max_pdf_bytes: int = 10 * 1024 * 1024
    web_max_batch_rows: int = 50
    lifecycle_warn_days: int = 7
    lifecycle_reminder_days: int = 15
    lifecycle_check_every_s: float = 60.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    log_format: str = "text"
    log_level: str = "INFO"
    raw: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, repr=False)

    @property
    def senders_file(self) -> Path:
        return self.config_dir / "senders.yaml"

    @property
    def redelivery(self) -> RetryPolicy:
        """How the consume loops retry a message that failed for a transient reason (``[retry]``)."""
        return RetryPolicy(
            attempts=self.retry_attempts,
            start=self.retry_first_delay_s,
            factor=self.retry_factor,
            step=0.0,
            max=self.retry_max_delay_s,
            jitter=self.retry_jitter,
        )

    @property
    def effective_public_url(self) -> str:
        """The base URL providers fetch claim-checked envelopes from (``[http] public_url``, else host and port)."""
        if self.public_url:
            return self.public_url
        scheme = "https" if self.tls_key and self.tls_certificate else "http"
        host = "127.0.0.1" if self.http_host in ("0.0.0.0", "::", "") else self.http_host  # noqa: S104 - a comparison
        return f"{scheme}://{host}:{self.http_port}"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'hub.db').resolve()}"


def _coerce(value: str, like: Any, name: str) -> Any:
    try:
        if isinstance(like, bool):
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("1", "true", "yes")
        if isinstance(like, int):
            return int(value)
        if isinstance(like, float):
            return float(value)
    except ValueError:
        kind = "true or false" if isinstance(like, bool) else "a whole number" if isinstance(like, int) else "a number"
        raise ConfigError(f"environment variable {name}={value!r} must be {kind}") from None
    if name == "HUB_ENVIRONMENT" and value not in ENVIRONMENTS:
        raise ConfigError(f"environment variable {name}={value!r} must be INT or PROD")
    return value


def retry_problem(values: Mapping[str, Any]) -> tuple[str, str] | None:
    """What is wrong with a ``[retry]`` section (the key and why), or None: a policy the consume loops can use."""
    if not 1 <= values["attempts"] <= 100:
        return "attempts", f"must be between 1 and 100, not {values['attempts']}"
    if values["first_delay_s"] < 0:
        return "first_delay_s", "must be at least 0"
    if values["max_delay_s"] < values["first_delay_s"]:
        return "max_delay_s", f"must be at least first_delay_s ({values['first_delay_s']})"
    if values["factor"] < 1:
        return "factor", f"must be at least 1 (1 = the same wait each time), not {values['factor']}"
    if not 0 <= values["jitter"] <= 1:
        return "jitter", f"must be between 0 and 1 (a fraction of each wait), not {values['jitter']}"
    return None


def lifecycle_problem(values: Mapping[str, Any]) -> tuple[str, str] | None:
    """What is wrong with a ``[lifecycle]`` section (the key and why), or None."""
    for key in ("warn_days", "reminder_days"):
        if values[key] < 0:
            return key, f"must be at least 0 (0: none), not {values[key]}"
    if values["check_every_s"] <= 0:
        return "check_every_s", f"must be more than 0 seconds, not {values['check_every_s']}"
    return None


def section_problem(section: str, values: Mapping[str, Any]) -> tuple[str, str] | None:
    """What is wrong with a ``[metrics]``, ``[log]``, ``[broker]`` or ``[http]`` value (the key and why), or None."""
    if section == "broker" and values["keep_sent_hours"] < 0:
        return "keep_sent_hours", f"must be at least 0 (0: removed once published), not {values['keep_sent_hours']}"
    if section == "broker" and not 0 <= values["gather_s"] <= 1:
        return "gather_s", f"must be between 0 and 1 second, not {values['gather_s']}"
    if section == "broker" and values["claim_check_bytes"] < 0:
        return "claim_check_bytes", f"must be at least 0 (0: never by reference), not {values['claim_check_bytes']}"
    if section == "http" and values["public_url"] and not str(values["public_url"]).startswith(("http://", "https://")):
        return "public_url", f"must start with http:// or https://, not {values['public_url']!r}"
    if section == "web" and not 5 <= values["session_minutes"] <= 24 * 60:
        return "session_minutes", f"must be between 5 and 1440 minutes, not {values['session_minutes']}"
    if section == "web" and not 1024 <= values["max_pdf_bytes"] <= 64 * 1024 * 1024:
        return "max_pdf_bytes", f"must be between 1024 and 67108864 bytes, not {values['max_pdf_bytes']}"
    if section == "web" and not 1 <= values["max_batch_rows"] <= 1000:
        return "max_batch_rows", f"must be between 1 and 1000, not {values['max_batch_rows']}"
    if section == "metrics" and not 0 <= values["port"] <= 65535:
        return "port", f"must be between 0 (off) and 65535, not {values['port']}"
    if section == "log" and values["format"] not in LOG_FORMATS:
        return "format", f"must be text or json, not {values['format']!r}"
    if section == "log" and str(values["level"]).upper() not in LOG_LEVELS:
        return "level", f"must be one of {', '.join(LOG_LEVELS)}, not {values['level']!r}"
    return None


def load_settings(config_dir: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    folder = Path(config_dir or env.get("HUB_CONFIG_DIR") or "config")
    merged = {section: dict(values) for section, values in DEFAULTS.items()}
    path = folder / "hub.toml"
    if path.exists():
        top = load_toml(path)
        for section_name, defaults in DEFAULTS.items():
            part = top.section(section_name)
            for key, default in defaults.items():
                kind = (int, float) if isinstance(default, float) else type(default)
                merged[section_name][key] = part.get(key, kind, default)
            part.finish()
            if section_name == "hub" and merged["hub"]["environment"] not in ENVIRONMENTS:
                raise part.error(f"must be INT or PROD, not {merged['hub']['environment']!r}", "environment")
            if section_name == "retry" and (problem := retry_problem(merged["retry"])):
                raise part.error(problem[1], problem[0])
            if section_name == "lifecycle" and (problem := lifecycle_problem(merged["lifecycle"])):
                raise part.error(problem[1], problem[0])
            if problem := section_problem(section_name, merged[section_name]):
                raise part.error(problem[1], problem[0])
        top.finish()
    known = {
        ("HUB_" + key if section == "hub" else f"HUB_{section}_{key}").upper(): (section, key)
        for section, values in DEFAULTS.items()
        for key in values
    }
    for name, value in env.items():
        if name in known:
            section_name, key = known[name]
            merged[section_name][key] = _coerce(value, DEFAULTS[section_name][key], name)
    if problem := retry_problem(merged["retry"]):
        raise ConfigError(f"[retry] {problem[0]} {problem[1]} (after the HUB_RETRY_* variables)")
    if problem := lifecycle_problem(merged["lifecycle"]):
        raise ConfigError(f"[lifecycle] {problem[0]} {problem[1]} (after the HUB_LIFECYCLE_* variables)")
    for section_name in ("metrics", "log", "broker", "http", "web"):
        if problem := section_problem(section_name, merged[section_name]):
            raise ConfigError(
                f"[{section_name}] {problem[0]} {problem[1]} (after the HUB_{section_name.upper()}_* variables)"
            )

    def path_or_none(value: str) -> Path | None:
        return None if not value else (Path(value) if Path(value).is_absolute() else folder / value)

    environment = str(merged["hub"]["environment"])  # checked where it was read: file or variable
    data_dir = Path(merged["hub"]["data_dir"])
    return Settings(
        config_dir=folder,
        environment=environment,
        data_dir=data_dir,
        database_url=str(merged["database"]["url"]),
        broker_url=str(merged["broker"]["url"]),
        confirm_timeout_s=float(merged["broker"]["confirm_timeout_s"]),
        relay_batch=int(merged["broker"]["relay_batch"]),
        claim_check_bytes=int(merged["broker"]["claim_check_bytes"]),
        gather_s=float(merged["broker"]["gather_s"]),
        keep_sent_hours=float(merged["broker"]["keep_sent_hours"]),
        signing_key=path_or_none(merged["signing"]["key"]),
        signing_certificate=path_or_none(merged["signing"]["certificate"]),
        max_envelope_bytes=int(merged["limits"]["max_envelope_bytes"]),
        max_batch=int(merged["limits"]["max_batch"]),
        max_batch_bytes=int(merged["limits"]["max_batch_bytes"]),
        retry_attempts=int(merged["retry"]["attempts"]),
        retry_first_delay_s=float(merged["retry"]["first_delay_s"]),
        retry_factor=float(merged["retry"]["factor"]),
        retry_max_delay_s=float(merged["retry"]["max_delay_s"]),
        retry_jitter=float(merged["retry"]["jitter"]),
        http_host=str(merged["http"]["host"]),
        http_port=int(merged["http"]["port"]),
        http_workers=int(merged["http"]["workers"]),
        http_timeout_s=float(merged["http"]["timeout_s"]),
        tls_key=path_or_none(merged["http"]["tls_key"]),
        tls_certificate=path_or_none(merged["http"]["tls_certificate"]),
        client_ca=path_or_none(merged["http"]["client_ca"]),
        public_url=str(merged["http"]["public_url"]).rstrip("/"),
        web_enabled=bool(merged["web"]["enabled"]),
        web_secure_cookies=bool(merged["web"]["secure_cookies"]),
        web_session_minutes=int(merged["web"]["session_minutes"]),
        web_max_pdf_bytes=int(merged["web"]["max_pdf_bytes"]),
        web_max_batch_rows=int(merged["web"]["max_batch_rows"]),
        lifecycle_warn_days=int(merged["lifecycle"]["warn_days"]),
        lifecycle_reminder_days=int(merged["lifecycle"]["reminder_days"]),
        lifecycle_check_every_s=float(merged["lifecycle"]["check_every_s"]),
        metrics_host=str(merged["metrics"]["host"]),
        metrics_port=int(merged["metrics"]["port"]),
        log_format=str(merged["log"]["format"]),
        log_level=str(merged["log"]["level"]).upper(),
        raw=merged,
    )
