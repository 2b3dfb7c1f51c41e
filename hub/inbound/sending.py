"""``hub send``: submit envelope files to a running hub's REST door."""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from hub.envelope.model import TYPES_NS


@dataclass(frozen=True)
class Sent:
    file: Path
    status: int
    message_id: str | None
    body: bytes

    @property
    def accepted(self) -> bool:
        return self.status in (200, 201)

    def describe(self) -> str:
        if self.accepted:
            kind = "accepted" if self.status == 201 else "already accepted"
            return f"{self.file}: {kind}, hub message {self.message_id}"
        try:
            error = etree.fromstring(self.body, parser=etree.XMLParser(resolve_entities=False, no_network=True))
            code = error.findtext(f"{{{TYPES_NS}}}Code")
            message = error.findtext(f"{{{TYPES_NS}}}Message")
            return f"{self.file}: {code}: {message}"
        except etree.XMLSyntaxError:
            return f"{self.file}: HTTP {self.status}: {self.body[:200]!r}"


def send_file(url: str, path: Path, *, timeout: float = 30.0) -> Sent:
    request = urllib.request.Request(  # noqa: S310 - the operator gives the hub's URL
        url.rstrip("/") + "/v1/messages",
        data=path.read_bytes(),
        headers={"Content-Type": "application/xml"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return Sent(path, response.status, response.headers.get("X-Hub-Message-Id"), response.read())
    except urllib.error.HTTPError as refused:
        return Sent(path, refused.code, None, refused.read())
