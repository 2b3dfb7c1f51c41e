"""Allowed attachment media types, and whether a file's bytes look like what it claims.

A declared type is checked against the file's own signature ("magic bytes"): a "PDF"
must start like one. Text types must be UTF-8 without control characters other than
tab, CR and LF.
"""

from __future__ import annotations

from collections.abc import Callable

_ZIP = b"PK\x03\x04"


def _starts(prefix: bytes) -> Callable[[bytes], bool]:
    return lambda data: data.startswith(prefix)


def _odf(mime: str) -> Callable[[bytes], bool]:
    # ODF: a ZIP whose first stored member is "mimetype" holding the media type.
    marker = b"mimetype" + mime.encode()
    return lambda data: data.startswith(_ZIP) and data[30 : 30 + len(marker)] == marker


def _text(data: bytes) -> bool:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not any(ord(ch) < 32 and ch not in "\t\r\n" for ch in text)


def _xml(data: bytes) -> bool:
    return _text(data) and data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<")


SNIFFERS: dict[str, Callable[[bytes], bool]] = {
    "application/pdf": _starts(b"%PDF-"),
    "text/plain": _text,
    "text/csv": _text,
    "text/xml": _xml,
    "image/png": _starts(b"\x89PNG\r\n\x1a\n"),
    "image/jpeg": _starts(b"\xff\xd8\xff"),
    "application/vnd.oasis.opendocument.text": _odf("application/vnd.oasis.opendocument.text"),
    "application/vnd.oasis.opendocument.spreadsheet": _odf("application/vnd.oasis.opendocument.spreadsheet"),
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": _starts(_ZIP),
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": _starts(_ZIP),
}

ALLOWED_MEDIA_TYPES = frozenset(SNIFFERS)


def looks_like(media_type: str, data: bytes) -> bool:
    """True when ``data`` is plausibly of ``media_type`` (which must be allowed)."""
    sniff = SNIFFERS.get(media_type)
    return sniff is not None and sniff(data)
