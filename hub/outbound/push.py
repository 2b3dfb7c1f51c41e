"""The HTTP push adapter: consume a queue, POST each message to a URL (a webhook).

Serves the providers that take deliveries by HTTPS push (``providers.yaml``: ``delivery:
{channel: http, url: https://...}``, queue ``provider.<id>``) and the senders that take
their acknowledgements by webhook (``senders.yaml``: ``acknowledgements: {channel: webhook,
url: https://...}``, queue ``sender.<id>.acks``). ``Pusher.handle`` is a handler for the
consume loop (``hub.broker.consumer``), which retries and dead-letters by what it raises.

The request: ``POST <url>``, the message's body as it is, ``Content-Type`` the message's
(default ``application/xml``), and the headers

    X-Hub-Message-Id     the hub's message id (``hub-message-id``), else the AMQP message_id
    X-Hub-Delivery-Id    the delivery id (``delivery-id``), when the message has one
    X-Hub-Attempt        which attempt this is (1 = the first)
    Idempotency-Key      the delivery id, else the AMQP message_id, else ``sha256:<digest of the body>``:
                         the same for every attempt, so the receiver de-duplicates retries
    X-Hub-Priority, X-Hub-Expires-At, X-Hub-Registered, X-Hub-Sender
                         a delivery's other headers (``hub.routing.deliveries``), when present
    X-Hub-Envelope-Url, X-Hub-Envelope-Bytes, X-Hub-Envelope-Sha256
                         a large envelope that travels by reference (``hub.broker.relay``): the body
                         is empty; GET the URL with the provider's API token

plus ``extra_headers`` (e.g. the receiver's ``Authorization``; they never replace the above).

The answer:

    2xx                            done: ``on_success(headers, response)``, then the message is acked
    408, 425, 429, 5xx, a timeout, ``Unavailable`` (``PushUnavailable``): retried with back-off,
    a connection or protocol error  then ``hub.dead`` after the last attempt
    any other status (3xx, 4xx)    ``Rejected`` ``PUSH_REFUSED`` naming the status: ``hub.dead`` at once

Redirects are not followed (a moved endpoint is a configuration change). ``Retry-After``
(seconds or an HTTP date) is read into ``PushUnavailable.retry_after``; the consume loop's
back-off does not use it yet (``hub.broker.retry.decide`` takes its delay from the policy).
``on_success`` raising fails the message like any handler error: it is pushed again, with
the same ``Idempotency-Key``.

Nothing logs a body (neither the message's nor the response's) nor a URL's query string or
user info: only the scheme, host, port and path, the status and the response's length. (httpx
itself logs each request's full URL at INFO: a filter on its ``httpx`` logger, installed with
this module, shortens those URLs the same way.)
One ``httpx.Client`` per ``Pusher`` keeps connections alive between pushes; ``close`` ends it.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from hub import metrics
from hub.broker.connection import RetryPolicy
from hub.broker.consumer import HANDLER_BACKOFF, RECONNECT, Properties, consume
from hub.broker.topology import provider_queue, sender_queue
from hub.errors import ConfigError, ErrorCode, Rejected, Unavailable

if TYPE_CHECKING:
    from hub.inbound.senders import AckChannel
    from hub.routing.providers import ProviderCatalog

log = logging.getLogger("hub.push")

DEFAULT_CONTENT_TYPE = "application/xml"
RETRIED_STATUSES = frozenset({408, 425, 429})
"""Besides every 5xx: the receiver may take the same request later."""
MAX_RESPONSE_BYTES = 1024 * 1024
"""Bytes of a response read (and handed to ``on_success``); the rest is not read."""
MAX_RETRY_AFTER_S = 24 * 3600.0
DECODED_AWAY = frozenset({"content-encoding", "content-length", "transfer-encoding"})
"""Response headers that no longer describe the body once it is read (decompressed, maybe cut)."""
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
USER_AGENT = "ebox-hub-push/1"
FORWARDED = {
    "priority": "X-Hub-Priority",
    "expires-at": "X-Hub-Expires-At",
    "registered": "X-Hub-Registered",
    "sender": "X-Hub-Sender",
    "envelope-url": "X-Hub-Envelope-Url",
    "envelope-bytes": "X-Hub-Envelope-Bytes",
    "envelope-sha256": "X-Hub-Envelope-Sha256",
}
"""Delivery headers (``hub.routing.deliveries``) passed on as request headers, when present."""
OWN_HEADERS = frozenset(
    name.lower()
    for name in (
        "Content-Type",
        "Content-Length",
        "Host",
        "Idempotency-Key",
        "X-Hub-Message-Id",
        "X-Hub-Delivery-Id",
        "X-Hub-Attempt",
        *FORWARDED.values(),
    )
)

OnSuccess = Callable[[dict[str, Any], httpx.Response], None]
"""Called after a 2xx with the message's headers and the response (its body read, up to ``MAX_RESPONSE_BYTES``)."""


class PushUnavailable(Unavailable):
    """The receiver cannot take the push now; ``retry_after`` (seconds) is what it asked for, if anything."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


def safe_url(url: str | httpx.URL) -> str:
    """The URL fit for a log line or an error: scheme, host, port and path (no user info, query nor fragment)."""
    parsed = httpx.URL(url) if isinstance(url, str) else url
    return f"{parsed.scheme}://{parsed.netloc.decode('ascii', 'replace')}{parsed.path}"


class _UrlsWithoutQuery(logging.Filter):
    """httpx logs each request's URL at INFO, query string included: keep its scheme, host, port and path only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(arg, httpx.URL) for arg in record.args):
            record.args = tuple(safe_url(arg) if isinstance(arg, httpx.URL) else arg for arg in record.args)
        return True


_httpx_log = logging.getLogger("httpx")
if not any(isinstance(existing, _UrlsWithoutQuery) for existing in _httpx_log.filters):
    _httpx_log.addFilter(_UrlsWithoutQuery())  # for every httpx client of the process: it only shortens URLs


def checked_url(url: str, *, allow_insecure_localhost: bool = False) -> httpx.URL:
    """``url`` parsed, if pushes may go there: https://, or http:// to this machine when allowed (tests, demos)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigError("a push URL is not a valid URL") from exc
    if not parsed.host:
        raise ConfigError(f"push URL {safe_url(parsed)} names no host")
    if parsed.scheme == "https":
        return parsed
    if parsed.scheme == "http" and allow_insecure_localhost and parsed.host in LOCAL_HOSTS:
        return parsed
    allowed = "https:// (or http:// to 127.0.0.1 / localhost when allowed)" if parsed.scheme == "http" else "https://"
    raise ConfigError(f"push URL {safe_url(parsed)} must be {allowed}")


def retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header in seconds (from seconds or an HTTP date; capped at a day), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def idempotency_key(body: bytes, headers: Mapping[str, Any], properties: Properties) -> str:
    """The delivery id, else the AMQP message_id, else a digest of the body: the same on every attempt."""
    for value in (headers.get("delivery-id"), properties.message_id):
        if value:
            return _text(value)
    return "sha256:" + hashlib.sha256(body).hexdigest()


class Pusher:
    """POSTs each message of a queue to one URL; ``handle`` is the consume loop's handler (see the module's doc)."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 10.0,
        client: httpx.Client | None = None,
        extra_headers: Mapping[str, str] | None = None,
        on_success: OnSuccess | None = None,
        allow_insecure_localhost: bool = False,
    ) -> None:
        if timeout_s <= 0:
            raise ConfigError(f"a push timeout must be more than 0 seconds, not {timeout_s}")
        self.url = checked_url(url, allow_insecure_localhost=allow_insecure_localhost)
        self.where = safe_url(self.url)
        self.timeout_s = timeout_s
        self.on_success = on_success
        self.extra_headers = {k: v for k, v in (extra_headers or {}).items() if k.lower() not in OWN_HEADERS}
        self._owns_client = client is None
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(timeout_s), follow_redirects=False, headers={"User-Agent": USER_AGENT}
        )

    def request_headers(self, body: bytes, headers: Mapping[str, Any], properties: Properties) -> dict[str, str]:
        content_type = properties.content_type or headers.get("content_type") or DEFAULT_CONTENT_TYPE
        out = dict(self.extra_headers)
        out["Content-Type"] = _text(content_type)
        message_id = headers.get("hub-message-id") or properties.message_id
        if message_id:
            out["X-Hub-Message-Id"] = _text(message_id)
        if headers.get("delivery-id"):
            out["X-Hub-Delivery-Id"] = _text(headers["delivery-id"])
        out["X-Hub-Attempt"] = str(properties.attempt)
        out["Idempotency-Key"] = idempotency_key(body, headers, properties)
        for name, header in FORWARDED.items():
            if headers.get(name) is not None:
                out[header] = _text(headers[name])
        return out

    def handle(self, body: bytes, headers: dict[str, Any], properties: Properties) -> None:
        """Push one message; return when the receiver took it, else raise ``Unavailable`` or ``Rejected``."""
        request = self._client.build_request(
            "POST", self.url, content=body, headers=self.request_headers(body, headers, properties)
        )
        key = request.headers["Idempotency-Key"]
        try:
            response = self._client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise PushUnavailable(f"push to {self.where}: no answer within {self.timeout_s:g} s") from exc
        except httpx.RequestError as exc:  # connection refused or reset, DNS, TLS, protocol
            raise PushUnavailable(f"push to {self.where}: {type(exc).__name__}") from exc
        try:
            content, complete = self._read(response)
        finally:
            response.close()
        status = response.status_code
        length = f"{len(content)}{'' if complete else '+'} bytes"
        if 200 <= status < 300:
            log.debug("push %s to %s: HTTP %d (%s)", key, self.where, status, length)
            if self.on_success is not None:
                kept = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in DECODED_AWAY]
                done = httpx.Response(status, headers=kept, content=content, request=request)
                self.on_success(headers, done)
            return
        if status in RETRIED_STATUSES or 500 <= status < 600:
            wait = retry_after(response.headers.get("Retry-After"))
            asked = f", Retry-After {wait:g} s" if wait is not None else ""
            log.info("push %s to %s: HTTP %d (%s%s); to be retried", key, self.where, status, length, asked)
            raise PushUnavailable(f"push to {self.where}: HTTP {status}", status=status, retry_after=wait)
        log.warning("push %s to %s refused: HTTP %d (%s)", key, self.where, status, length)
        raise Rejected(ErrorCode.PUSH_REFUSED, f"the receiver at {self.where} refused the push: HTTP {status}")

    def _read(self, response: httpx.Response) -> tuple[bytes, bool]:
        """The response's body up to ``MAX_RESPONSE_BYTES``; whether that was all of it."""
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    return b"".join(chunks)[:MAX_RESPONSE_BYTES], False
        except httpx.TimeoutException as exc:
            raise PushUnavailable(f"push to {self.where}: the answer did not come within {self.timeout_s:g} s") from exc
        except httpx.RequestError as exc:  # the connection broke while the answer came
            raise PushUnavailable(f"push to {self.where}: {type(exc).__name__} reading the answer") from exc
        return b"".join(chunks), True

    def close(self) -> None:
        """Close the HTTP client (and its kept-alive connections), unless it was given."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> Pusher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


ProviderHook = Callable[[str], "OnSuccess | None"]
"""Given a provider id, what to call after a push to it succeeded (e.g. record ``delivered``), or None."""


def targets_for(
    providers: ProviderCatalog,
    channels: Mapping[str, AckChannel],
    *,
    on_provider_delivered: ProviderHook | None = None,
) -> list[PushTarget]:
    """Every queue to push and its URL: providers with an ``http`` channel, senders with a ``webhook``."""
    targets: list[PushTarget] = []
    for ident in providers.ids():
        provider = providers[ident]
        if provider.channel == "http" and provider.url:
            hook = on_provider_delivered(ident) if on_provider_delivered is not None else None
            targets.append(PushTarget(provider_queue(ident).name, provider.url, hook))
    for ident, channel in sorted(channels.items()):
        if channel.kind == "webhook" and channel.url:
            targets.append(PushTarget(sender_queue(ident).name, channel.url))
    return targets


@dataclass(frozen=True)
class PushTarget:
    """One queue pushed to one URL."""

    queue: str
    url: str
    on_success: OnSuccess | None = None


def run_pushers(
    broker_url: str,
    targets: Sequence[PushTarget],
    stop: threading.Event,
    backoff: RetryPolicy = HANDLER_BACKOFF,
    *,
    timeout_s: float = 10.0,
    prefetch: int = 10,
    allow_insecure_localhost: bool = False,
    reconnect: RetryPolicy = RECONNECT,
    poll: float = 0.25,
) -> None:
    """Consume every target's queue on a thread of its own, pushing to its URL, until ``stop`` is set.

    Every URL is checked first (``ConfigError`` before anything is consumed). The queues,
    their retry queues and ``hub.dead`` must exist. A consume loop that ends with an error
    (a queue missing: ``ConfigError``) sets ``stop``, so the others end too, and its error is
    raised once all have ended.
    """
    for target in targets:  # every URL checked before any client is made
        checked_url(target.url, allow_insecure_localhost=allow_insecure_localhost)
    pushers = [
        Pusher(
            target.url,
            timeout_s=timeout_s,
            on_success=target.on_success,
            allow_insecure_localhost=allow_insecure_localhost,
        )
        for target in targets
    ]
    failures: list[BaseException] = []

    def loop(queue: str, pusher: Pusher) -> None:
        stage = "deliver" if queue.startswith("provider.") else "forward"  # sender.<id>.acks: acknowledgements
        try:
            consume(
                broker_url,
                queue,
                metrics.counted(stage, pusher.handle, done="pushed"),
                prefetch=prefetch,
                stop=stop,
                backoff=backoff,
                reconnect=reconnect,
                poll=poll,
            )
        except BaseException as exc:
            log.error("push from %s to %s stopped: %s", queue, pusher.where, exc)
            failures.append(exc)
            stop.set()

    threads = [
        threading.Thread(target=loop, args=(target.queue, pusher), name=f"push-{target.queue}", daemon=True)
        for target, pusher in zip(targets, pushers, strict=True)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for pusher in pushers:
            with contextlib.suppress(Exception):  # closing what is already closed
                pusher.close()
    if failures:
        raise failures[0]
