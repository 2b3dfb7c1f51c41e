"""SOAP with Attachments (SwA): a ``multipart/related`` request, split into its SOAP part and its attachments.

e-Box EBoxMessage v1 carries documents by ``swaRef``: the SOAP Body names ``cid:<Content-ID>``, and the
bytes travel in another MIME part of the same ``multipart/related`` request (W3C "SOAP Messages with
Attachments", WS-I Attachments Profile 1.0). A plain ``text/xml`` request is a SOAP part with no attachment.

The parser is exact on bytes (no line-ending conversion: a PDF arrives as it was sent), pure, and strict:
CRLF delimiters, a closing delimiter, no repeated Content-ID, a root part in ``text/xml``, transfer
encodings ``binary`` / ``8bit`` / ``7bit`` / ``base64`` / ``quoted-printable`` only. Every refusal is
``Rejected`` (``CONTENT_TYPE_INVALID`` for the HTTP content type, ``SCHEMA_INVALID`` for the MIME structure).
"""

from __future__ import annotations

import base64
import binascii
import email.message
import quopri
from dataclasses import dataclass, field
from urllib.parse import unquote

from hub.errors import ErrorCode, Rejected

MAX_PARTS = 16
"""The SOAP part and up to 15 attachments (the contract allows a document and 5 annexes)."""
MAX_HEADER_BYTES = 8192


@dataclass(frozen=True)
class Part:
    content_id: str
    """Without the angle brackets."""
    content_type: str
    """Lower-case media type without parameters ("" when the part did not say)."""
    content: bytes = field(repr=False)


@dataclass(frozen=True)
class SoapRequest:
    soap: bytes
    """The SOAP envelope (the root part)."""
    attachments: dict[str, Part]
    """By Content-ID."""

    def referenced(self, uri: str) -> Part | None:
        """The part a swaRef (``cid:...``, percent-encoded) names, or None."""
        if not uri.lower().startswith("cid:"):
            return None
        return self.attachments.get(unquote(uri[4:]).strip("<>"))


def _content_type(value: str) -> email.message.Message:
    holder = email.message.Message()
    holder["Content-Type"] = value
    return holder


def _malformed(message: str) -> Rejected:
    return Rejected(ErrorCode.SCHEMA_INVALID, f"the multipart/related request is malformed: {message}")


def _charset_ok(params: email.message.Message) -> None:
    charset = str(params.get_param("charset") or "utf-8").strip().lower()
    if charset not in ("utf-8", "us-ascii"):
        raise Rejected(ErrorCode.CONTENT_TYPE_INVALID, f"send the SOAP part in UTF-8 (charset was {charset[:32]!r}).")


def split_request(content_type: str, body: bytes) -> SoapRequest:
    """The SOAP envelope and attachments of a request with HTTP ``Content-Type`` ``content_type``."""
    params = _content_type(content_type)
    kind = params.get_content_type()
    if not content_type.strip():
        kind = ""
    if kind == "text/xml":
        _charset_ok(params)
        return SoapRequest(body, {})
    if kind == "application/soap+xml":
        raise Rejected(
            ErrorCode.CONTENT_TYPE_INVALID,
            "SOAP 1.2 (application/soap+xml) is not served: EBoxMessage v1 is SOAP 1.1 (text/xml, or "
            "multipart/related with a text/xml root part for attachments).",
        )
    if kind != "multipart/related":
        raise Rejected(
            ErrorCode.CONTENT_TYPE_INVALID,
            f"send SOAP 1.1 as text/xml, or multipart/related with attachments (Content-Type was {kind[:64]!r}).",
        )
    boundary = params.get_param("boundary")
    if not isinstance(boundary, str) or not boundary or len(boundary) > 200:
        raise Rejected(ErrorCode.CONTENT_TYPE_INVALID, "multipart/related without a boundary parameter.")
    start = params.get_param("start")
    start_id = start.strip().strip("<>") if isinstance(start, str) else None
    parts = [_part(raw, index) for index, raw in enumerate(_bodies(body, boundary.encode("utf-8", "replace")))]
    if not parts:
        raise _malformed("it has no part.")
    ids = [part.content_id for part in parts if part.content_id]
    if len(ids) != len(set(ids)):
        raise _malformed("two parts have the same Content-ID.")
    root = parts[0] if start_id is None else next((p for p in parts if p.content_id == start_id), None)
    if root is None:
        raise _malformed(f"no part has the Content-ID {(start_id or '')[:64]!r} that the start parameter names.")
    if root.content_type not in ("text/xml", ""):
        raise _malformed(f"the root part is {root.content_type[:64]!r}; the SOAP 1.1 envelope travels as text/xml.")
    attachments = {part.content_id: part for part in parts if part is not root}
    if "" in attachments:
        raise _malformed("an attachment part has no Content-ID: a swaRef cannot name it.")
    return SoapRequest(root.content, attachments)


def _bodies(body: bytes, boundary: bytes) -> list[bytes]:
    dash = b"--" + boundary
    if body.startswith(dash):
        position = 0
    else:
        position = body.find(b"\r\n" + dash)
        if position < 0:
            raise _malformed("the boundary never appears.")
        position += 2
    found: list[bytes] = []
    while True:
        position += len(dash)
        if body[position : position + 2] == b"--":
            return found
        line_end = body.find(b"\r\n", position)
        if line_end < 0 or body[position:line_end].strip(b" \t"):
            raise _malformed("a boundary line is not followed by CRLF.")
        start = line_end + 2
        following = body.find(b"\r\n" + dash, start)
        if following < 0:
            raise _malformed("the closing boundary is missing (the request is truncated?).")
        found.append(body[start:following])
        if len(found) > MAX_PARTS:
            raise Rejected(ErrorCode.TOO_LARGE, f"the request has more than {MAX_PARTS} MIME parts.")
        position = following + 2


def _headers(head: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    last = None
    for line in head.decode("latin-1").split("\r\n"):
        if line[:1] in (" ", "\t") and last is not None:
            headers[last] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise _malformed(f"a part header line has no colon: {line[:40]!r}.")
        last = name.strip().lower()
        headers[last] = value.strip()
    return headers


def _part(raw: bytes, index: int) -> Part:
    if raw.startswith(b"\r\n"):
        head, content = b"", raw[2:]
    else:
        head, separator, content = raw.partition(b"\r\n\r\n")
        if not separator:
            raise _malformed(f"part {index + 1} has no blank line after its headers.")
    if len(head) > MAX_HEADER_BYTES:
        raise _malformed(f"part {index + 1} has more than {MAX_HEADER_BYTES} bytes of headers.")
    headers = _headers(head) if head else {}
    params = _content_type(headers.get("content-type", ""))
    kind = params.get_content_type() if "content-type" in headers else ""
    if kind == "text/xml":
        _charset_ok(params)
    encoding = headers.get("content-transfer-encoding", "binary").strip().lower()
    if encoding == "base64":
        try:
            content = base64.b64decode(b"".join(content.split()), validate=True)
        except (binascii.Error, ValueError):
            raise _malformed(f"part {index + 1} is not valid base64.") from None
    elif encoding == "quoted-printable":
        content = quopri.decodestring(content)
    elif encoding not in ("binary", "8bit", "7bit"):
        raise _malformed(f"part {index + 1} has the transfer encoding {encoding[:32]!r}; send it binary or base64.")
    return Part(content_id=headers.get("content-id", "").strip().strip("<>"), content_type=kind, content=content)
