"""The hub's logs: one line per record on stderr, as text or as JSON, with no national numbers.

``configure(format, level)`` (the ``hub`` command line calls it at start with ``[log] format``
and ``level``: ``HUB_LOG_FORMAT=json|text``, ``HUB_LOG_LEVEL``) puts one handler on the root
logger. With ``json`` each line is one object:

    {"timestamp": "2026-03-01T09:30:00.123Z", "level": "INFO", "logger": "hub.routing",
     "message": "routed", "event": "routed", "message_id": "6f1c...", "outcome": "deliver", ...}

The fields after ``message`` are those the code passes in ``extra`` (``event``, ``message_id``
(the hub's message id), ``door``, ``provider``, ``outcome``, ``code``, ``queue``, ...); an
exception adds ``exception`` (its traceback). With ``text`` the same fields follow the message
as ``key=value``.

The stage logs never name a recipient; as a defence in depth, anything that looks like a
national number (11 digits standing alone, or written ``YY.MM.DD-XXX.CC``) is masked in the
message, the fields and the traceback (``MaskNationalNumbers``, ``mask``).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

NATIONAL_NUMBER = re.compile(r"(?<![0-9A-Za-z])(?:\d{11}|\d{2}\.\d{2}\.\d{2}-\d{3}\.\d{2})(?![0-9A-Za-z])")
MASK = "***********"
FORMATS = ("text", "json")

_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's copy of its message with terminal colours
}


def mask(text: str) -> str:
    """``text`` with every national-number look-alike replaced by asterisks."""
    return NATIONAL_NUMBER.sub(MASK, text)


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, list | tuple):
        return [_masked(item) for item in value]
    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items()}
    return value


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra`` fields of a record (what is not a standard ``LogRecord`` attribute)."""
    return {key: value for key, value in record.__dict__.items() if key not in _RESERVED and not key.startswith("_")}


class MaskNationalNumbers(logging.Filter):
    """Masks national-number look-alikes in a record's message and ``extra`` fields (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        for key, value in fields(record).items():
            if isinstance(value, str | list | tuple | dict):
                setattr(record, key, _masked(value))
        return True


class _Chatter(logging.Filter):
    """Drops kombu's warning for every ``memory://`` connection (the embedded default has no host name)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "kombu.connection" and str(record.msg).startswith("No hostname was supplied"))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: timestamp (UTC), level, logger, message, the ``extra`` fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, Any] = {
            "timestamp": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": mask(record.getMessage()),
        }
        for key, value in fields(record).items():
            line.setdefault(key, _masked(value))
        if record.exc_info:
            line["exception"] = mask(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = mask(self.formatStack(record.stack_info))
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``timestamp LEVEL logger: message key=value ...`` (traceback below), masked."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{key}={_text(value)}" for key, value in fields(record).items())
        return super().formatMessage(record) + (f" {extra}" if extra else "")

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return json.dumps(text, ensure_ascii=False) if not text or any(c.isspace() or c == '"' for c in text) else text


class _Stderr(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is at the time (a test runner may swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def configure(format: str = "text", level: str = "INFO", *, stream: TextIO | None = None) -> logging.Handler:
    """The root logger writes ``format`` (text or json) lines from ``level`` up to ``stream`` (default stderr).

    Idempotent: the handler a previous call installed is replaced; other handlers stay.
    """
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_hub", False):
            root.removeHandler(old)
    handler: logging.Handler = logging.StreamHandler(stream) if stream is not None else _Stderr()
    handler._hub = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    handler.addFilter(_Chatter())
    handler.addFilter(MaskNationalNumbers())
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler


def configure_from_settings(settings: Any = None) -> logging.Handler:
    """``configure`` with ``[log] format`` and ``level`` (``HUB_LOG_FORMAT``, ``HUB_LOG_LEVEL``).

    Without ``settings`` they are loaded; when they cannot be (a bad ``hub.toml``, which the
    command reports itself), the variables are read directly, falling back to text and INFO.
    """
    if settings is None:
        import os

        from hub.errors import ConfigError
        from hub.settings import LOG_LEVELS, load_settings

        try:
            settings = load_settings()
        except ConfigError:
            fmt = os.environ.get("HUB_LOG_FORMAT", "text")
            level = os.environ.get("HUB_LOG_LEVEL", "INFO").upper()
            return configure(fmt if fmt in FORMATS else "text", level if level in LOG_LEVELS else "INFO")
    return configure(settings.log_format, settings.log_level)


__all__ = ["JsonFormatter", "MaskNationalNumbers", "TextFormatter", "configure", "configure_from_settings", "mask"]
