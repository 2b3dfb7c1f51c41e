"""A deadline for the request line and headers (slowloris), which uvicorn does not have.

uvicorn hands a request to the application once its headers are complete, and until then waits
for them as long as the client likes: a client that opens a connection and sends nothing, or a
byte of its headers now and then, holds the connection (and one of ``limit_concurrency``) for
ever. This protocol answers such a client ``408`` with the hub's error document
(``REQUEST_TIMEOUT``) and closes the connection once ``[http] timeout_s`` has passed since the
connection opened, or since the request began, without the headers having all arrived. The body
has a deadline of its own, in the doors (``hub.inbound.http.read_body``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from hub.errors import ErrorCode, Rejected
from hub.inbound.documents import error_document

DEFAULT_TIMEOUT_S = 30.0


def head_timeout(app: Any) -> float:
    """``[http] timeout_s`` of the hub the ASGI ``app`` serves (through uvicorn's middleware), else the default."""
    for _ in range(16):  # a few middleware layers at most
        runtime = getattr(getattr(app, "state", None), "runtime", None)
        if runtime is not None:
            return float(runtime.settings.http_timeout_s)
        app = getattr(app, "app", None)
        if app is None:
            break
    return DEFAULT_TIMEOUT_S


def timeout_answer(timeout: float) -> bytes:
    body = error_document(
        Rejected(
            ErrorCode.REQUEST_TIMEOUT,
            f"the request line and headers did not arrive within {timeout:g} s; send the request again.",
        )
    )
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/xml\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class DeadlineHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline for each request's line and headers."""

    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()  # the next request on a kept-alive connection: its head has the same time

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._head_deadline is None:
            timeout = head_timeout(self.app)
            self._head_deadline = self.loop.call_later(timeout, self._too_slow, timeout)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _too_slow(self, timeout: float) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.write(timeout_answer(timeout))
            self.transport.close()
