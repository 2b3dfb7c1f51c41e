"""Simulated mailbox providers, built on the provider SDK: load, demos and end-to-end tests.

Five profiles, one per provider of ``config/providers.yaml``:

    profile      plays                                        first event   then
    myebox       a My eBox-like citizen and business portal    delivered     opened, replied
    doccle       a Doccle-like mobile app                      delivered     opened, replied
    irisbox      an IRISbox-like regional portal               delivered     opened, replied
    enterprise   an e-Box Enterprise-like business inbox       delivered     opened, replied
    paper        a print and post centre                       printed       (nothing: paper is never "opened")

What each does with a delivery (``SimulatedProvider.handle``):

1. reads the envelope with the hub's reader; one it cannot read is acknowledged ``failed``
   (with the refusal's code) and nothing more;
2. acknowledges ``delivered`` (paper: ``printed``) at once;
3. with probability ``open_probability``, acknowledges ``opened`` after ``open_delay_s``
   (registered mail: with the proof, the delivery time and the assurance level the envelope
   asked for); not after the message expired;
4. then, with probability ``reply_probability`` and only where the envelope's reply options
   allow it, acknowledges ``replied`` after ``reply_delay_s`` more: one of the offered choices,
   or a short free text (cut to the allowed length) when free text is asked; only before the
   reply deadline (``hub.outbound.states.reply_fits`` decides, as the hub will).

Delays are drawn uniformly within ``jitter`` (a fraction) around the configured value. Every
draw comes from a random generator seeded with ``seed`` and the delivery id, so a run is
reproducible whatever order deliveries arrive in, and a delivery handled twice (the broker
redelivers) makes the same choices and sends the same acknowledgements (same ids).

Scheduled events (opened, replied) wait in one heap served by one timer thread, not a thread
per message. Stopping ends both the consume loop and the timer thread; events still pending
are simply not sent (a real recipient who never came back). ``stats`` counts what was sent
(``delivered``, ``opened``, ``replied``, ``printed``, ``failed``) for a progress display, and the
hub's notices received (``notice:documentExpirationAlert``, ``notice:newDocumentReminder``,
``notice:expired``). On ``expired`` the provider drops the document: the opening and reply
still scheduled for that delivery are cancelled (the recipient can no longer read it).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from hub.broker.connection import DEFAULT_OPTIONS, ConnectionOptions, RetryPolicy
from hub.broker.consumer import HANDLER_BACKOFF
from hub.envelope.model import AssuranceLevel, Envelope, ReplyOptions
from hub.errors import ConfigError, HubError, Rejected
from hub.outbound.acks import ErrorDetail, Event, Reply
from hub.outbound.sdk import Delivery, Notice, ProviderClient
from hub.outbound.states import DEFAULT_FREE_TEXT_LENGTH, reply_fits
from hub.signing.keys import KeyPair

log = logging.getLogger("hub.outbound")

RESEND_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)
"""Waits before sending a scheduled acknowledgement again after the broker did not confirm it."""


@dataclass(frozen=True, kw_only=True)
class Profile:
    """How one kind of provider behaves."""

    id: str
    name: str
    arrival: Event = Event.DELIVERED
    """What it acknowledges at once: ``delivered``, or ``printed`` for paper."""
    opens: bool = True
    """Its recipients open messages (paper: never reported)."""
    replies: bool = True
    texts: tuple[str, ...] = ("Bien reçu, merci.", "Goed ontvangen, dank u.")
    """The free-text answers its recipients write."""


PROFILES: dict[str, Profile] = {
    p.id: p
    for p in (
        Profile(
            id="myebox",
            name="My eBox-like portal",
            texts=("Bien reçu, merci.", "Goed ontvangen, dank u.", "Je vous recontacte cette semaine."),
        ),
        Profile(
            id="doccle",
            name="Doccle-like app",
            texts=("Merci, c'est noté.", "Dank u, genoteerd.", "OK 👍"),
        ),
        Profile(
            id="irisbox",
            name="IRISbox-like portal",
            texts=("Je confirme la date du 15 décembre.", "Ik bevestig de datum van 15 december."),
        ),
        Profile(
            id="enterprise",
            name="e-Box Enterprise-like business inbox",
            texts=("Received by the payroll department; we will follow up.", "Transmis au service concerné."),
        ),
        Profile(id="paper", name="Print and post centre", arrival=Event.PRINTED, opens=False, replies=False, texts=()),
    )
}


def profile(name: str) -> Profile:
    """The profile called ``name``; ``ConfigError`` naming the known ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"no simulated provider {name!r}; simulate one of: {', '.join(PROFILES)}") from None


@dataclass(frozen=True, kw_only=True)
class Behaviour:
    """What the simulated recipients do, and when."""

    open_probability: float = 0.7
    open_delay_s: float = 2.0
    reply_probability: float = 0.3
    reply_delay_s: float | None = None
    """After the opening; ``None``: the same as ``open_delay_s``."""
    jitter: float = 0.5
    """Each delay is drawn uniformly in [d × (1 - jitter), d × (1 + jitter)]."""
    seed: int | None = None
    """``None``: a fresh seed (``SimulatedProvider.seed`` says which, to replay the run)."""

    def __post_init__(self) -> None:
        for name in ("open_probability", "reply_probability", "jitter"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} lies between 0 and 1, not {getattr(self, name)}")
        if self.open_delay_s < 0 or (self.reply_delay_s is not None and self.reply_delay_s < 0):
            raise ValueError("delays are at least 0 seconds")


class Scheduler:
    """Actions due at a time, run in order by one timer thread; what is pending at stop is dropped."""

    def __init__(self, stop: threading.Event, *, name: str = "scheduler", poll: float = 0.1) -> None:
        self._stop, self._poll, self._name = stop, poll, name
        self._heap: list[tuple[float, int, Callable[[], None], str | None]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self.dropped = 0
        """Actions that were still pending when the scheduler closed."""

    @property
    def pending(self) -> int:
        with self._wake:
            return len(self._heap)

    def after(self, delay: float, action: Callable[[], None], *, key: str | None = None) -> None:
        """Run ``action`` in the timer thread ``delay`` seconds from now (not at all once stopped);
        ``key``: what ``cancel`` names it by (e.g. a delivery id)."""
        if self._stop.is_set():
            return
        with self._wake:
            heapq.heappush(self._heap, (time.monotonic() + max(0.0, delay), next(self._order), action, key))
            self._wake.notify()

    def cancel(self, key: str) -> int:
        """Drop the pending actions scheduled with ``key``; how many."""
        with self._wake:
            kept = [entry for entry in self._heap if entry[3] != key]
            dropped = len(self._heap) - len(kept)
            if dropped:
                heapq.heapify(kept)
                self._heap = kept
        return dropped

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> int:
        """Stop the timer thread (``stop`` must be set, or is set here); how many actions were dropped."""
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._wake:
            dropped, self._heap = len(self._heap), []
            self.dropped += dropped
        return dropped

    def _serve(self) -> None:
        while not self._stop.is_set():
            with self._wake:
                if not self._heap:
                    self._wake.wait(self._poll)
                    continue
                due = self._heap[0][0] - time.monotonic()
                if due > 0:
                    self._wake.wait(min(due, self._poll))
                    continue
                _, _, action, _ = heapq.heappop(self._heap)
            if self._stop.is_set():
                break
            try:
                action()
            except Exception:  # a bug in one action must not end the others
                log.exception("%s: a scheduled action failed", self._name)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SimulatedProvider:
    """A simulated provider: consumes ``provider.<id>`` and acknowledges as its ``Profile`` says.

    ``run(stop)`` blocks until ``stop`` is set; ``start()`` / ``stop()`` do the same in a
    thread of its own. With ``batch_size`` above 1 it takes deliveries in batches
    (``ProviderClient.run_batches``) and acknowledges their arrival under one signature.
    The provider's certificate must be among the hub's certificates for
    that provider (``providers.yaml``) for the hub to believe its acknowledgements.
    """

    def __init__(
        self,
        provider: Profile | str,
        broker_url: str,
        key_pair: KeyPair,
        *,
        behaviour: Behaviour | None = None,
        provider_id: str | None = None,
        options: ConnectionOptions = DEFAULT_OPTIONS,
        backoff: RetryPolicy = HANDLER_BACKOFF,
        poll: float = 0.25,
        batch_size: int = 1,
        hub_url: str | None = None,
        api_token: str | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size is at least 1, not {batch_size}")
        self.batch_size = batch_size
        self.profile = provider if isinstance(provider, Profile) else profile(provider)
        self.provider_id = provider_id or self.profile.id
        self.behaviour = behaviour or Behaviour()
        self.seed = self.behaviour.seed if self.behaviour.seed is not None else random.SystemRandom().randrange(2**32)
        self.clock = clock
        self.client = ProviderClient(
            self.provider_id,
            broker_url,
            key_pair,
            options=options,
            backoff=backoff,
            poll=poll,
            hub_url=hub_url,
            api_token=api_token,
            clock=clock,
        )
        self.stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        self._stop = threading.Event()
        self._scheduler = Scheduler(self._stop, name=f"simulated-{self.provider_id}-timer")
        self._thread: threading.Thread | None = None

    # -- running ------------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        """Consume deliveries until ``stop`` (or ``self.stop()``); then drop what is still scheduled."""
        if stop is not None:
            self._stop = stop
            self._scheduler = Scheduler(stop, name=f"simulated-{self.provider_id}-timer")
        self._scheduler.start()
        try:
            if self.batch_size > 1:
                self.client.run_batches(
                    self.handle_batch, self._stop, on_notice=self.notice, batch_size=self.batch_size
                )
            else:
                self.client.run(self.handle, self._stop, on_notice=self.notice)
        finally:
            self._scheduler.close()
            if self._scheduler.dropped:
                log.info(
                    "%s: stopped; %d scheduled acknowledgement(s) not sent", self.provider_id, self._scheduler.dropped
                )

    def start(self) -> None:
        """``run`` in a thread of its own (``stop()`` ends it)."""
        self._thread = threading.Thread(target=self.run, name=f"simulated-{self.provider_id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop consuming and drop the scheduled acknowledgements; returns once the threads ended."""
        self._stop.set()
        self._scheduler.close(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def pending(self) -> int:
        """Acknowledgements scheduled and not yet sent."""
        return self._scheduler.pending

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> SimulatedProvider:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        self.close()

    # -- one delivery -------------------------------------------------------------------------

    def handle(self, delivery: Delivery) -> None:
        """Acknowledge ``delivery`` at once, and schedule its opening and reply (see the module's doc)."""
        try:
            envelope = delivery.envelope_model()
        except Rejected as refused:
            first = refused.violations[0]
            self._send(delivery, Event.FAILED, error=ErrorDetail.of(first))
            return
        arrived = self.clock()
        self._send(delivery, self.profile.arrival, occurred_at=arrived)
        self._schedule(delivery, envelope, arrived)

    def handle_batch(self, deliveries: Sequence[Delivery]) -> None:
        """``handle`` for several deliveries: their arrival acknowledged under one signature
        (``ProviderClient.acknowledge_all``); a failure to read one is acknowledged on its own."""
        readable: list[tuple[Delivery, Envelope]] = []
        for delivery in deliveries:
            try:
                readable.append((delivery, delivery.envelope_model()))
            except Rejected as refused:
                self._send(delivery, Event.FAILED, error=ErrorDetail.of(refused.violations[0]))
        if not readable:
            return
        arrived = self.clock()
        self.client.acknowledge_all([delivery for delivery, _ in readable], self.profile.arrival, occurred_at=arrived)
        with self._stats_lock:
            self.stats[self.profile.arrival.value] += len(readable)
        for delivery, envelope in readable:
            self._schedule(delivery, envelope, arrived)

    def _schedule(self, delivery: Delivery, envelope: Envelope, arrived: datetime) -> None:
        """Draw whether (and when) the recipient opens and replies, and schedule it."""
        if not self.profile.opens:
            return
        rng = random.Random(f"{self.seed}:{self.provider_id}:{delivery.delivery_id}")  # noqa: S311 - not crypto
        opens = rng.random() < self.behaviour.open_probability
        open_delay = self._delay(rng, self.behaviour.open_delay_s)
        replies = rng.random() < self.behaviour.reply_probability
        reply_delay = self._delay(rng, self._reply_delay_s)
        answer = self._answer(rng, envelope.content.reply_options)
        if not opens:
            return
        reply = answer if replies and self.profile.replies else None
        self._scheduler.after(
            open_delay, lambda: self._open(delivery, envelope, arrived, reply, reply_delay), key=delivery.delivery_id
        )

    def notice(self, notice: Notice) -> None:
        """Count a notice from the hub; on ``expired``, drop the document: cancel what is scheduled for it."""
        with self._stats_lock:
            self.stats[f"notice:{notice.event.value}"] += 1
        if notice.event is Event.EXPIRED:
            dropped = self._scheduler.cancel(notice.delivery_id)
            log.debug("%s: %s expired; %d scheduled event(s) dropped", self.provider_id, notice.delivery_id, dropped)

    @property
    def _reply_delay_s(self) -> float:
        given = self.behaviour.reply_delay_s
        return self.behaviour.open_delay_s if given is None else given

    def _delay(self, rng: random.Random, seconds: float) -> float:
        spread = seconds * self.behaviour.jitter
        return rng.uniform(seconds - spread, seconds + spread)

    def _answer(self, rng: random.Random, options: ReplyOptions | None) -> Reply | None:
        """What the recipient would answer, if the envelope asks for an answer."""
        if options is None:
            return None
        if options.choices:
            return Reply(choice_id=rng.choice(options.choices).id)
        texts = self.profile.texts or ("OK",)
        limit = options.free_text_max_length or DEFAULT_FREE_TEXT_LENGTH
        return Reply(text=rng.choice(texts)[:limit])

    def _expired(self, delivery: Delivery, now: datetime) -> bool:
        return delivery.expires_at is not None and now >= delivery.expires_at

    def _open(
        self, delivery: Delivery, envelope: Envelope, arrived: datetime, reply: Reply | None, reply_delay: float
    ) -> None:
        now = self.clock()
        if self._expired(delivery, now):
            return
        self._send(
            delivery,
            Event.OPENED,
            occurred_at=now,
            delivered_at=arrived,
            assurance_level=envelope.header.assurance_level,
            scheduled=True,
        )
        if reply is not None:
            self._scheduler.after(reply_delay, lambda: self._reply(delivery, envelope, reply), key=delivery.delivery_id)

    def _reply(self, delivery: Delivery, envelope: Envelope, reply: Reply) -> None:
        now = self.clock()
        if self._expired(delivery, now):
            return
        refusal = reply_fits(envelope.content.reply_options, reply, now)
        if refusal is not None:  # e.g. the deadline passed meanwhile: the recipient did not answer in time
            log.debug("%s: no reply to %s: %s", self.provider_id, delivery.delivery_id, refusal.message)
            return
        self._send(delivery, Event.REPLIED, reply=reply, occurred_at=now, scheduled=True)

    def _send(
        self,
        delivery: Delivery,
        event: Event,
        *,
        reply: Reply | None = None,
        error: ErrorDetail | None = None,
        occurred_at: datetime | None = None,
        delivered_at: datetime | None = None,
        assurance_level: AssuranceLevel | None = None,
        scheduled: bool = False,
        attempt: int = 0,
    ) -> None:
        """Acknowledge ``event``. In the consume loop a failure propagates (the delivery is retried);
        a scheduled one that the broker did not confirm is sent again a few times, then given up."""
        try:
            self.client.acknowledge(
                delivery,
                event,
                reply=reply,
                error=error,
                occurred_at=occurred_at,
                delivered_at=delivered_at,
                assurance_level=assurance_level,
            )
        except HubError as exc:
            if not scheduled:
                raise
            if attempt >= len(RESEND_DELAYS):
                log.warning("%s: %s of %s not sent: %s", self.provider_id, event, delivery.delivery_id, exc)
                return
            log.info(
                "%s: %s of %s not confirmed (%s); again shortly", self.provider_id, event, delivery.delivery_id, exc
            )
            again = functools.partial(
                self._send,
                delivery,
                event,
                reply=reply,
                error=error,
                occurred_at=occurred_at,
                delivered_at=delivered_at,
                assurance_level=assurance_level,
                scheduled=True,
                attempt=attempt + 1,
            )
            self._scheduler.after(RESEND_DELAYS[attempt], again, key=delivery.delivery_id)
            return
        with self._stats_lock:
            self.stats[event.value] += 1


__all__ = ["PROFILES", "Behaviour", "Profile", "Scheduler", "SimulatedProvider", "profile"]
