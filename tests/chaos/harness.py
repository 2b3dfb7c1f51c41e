"""The pieces of the chaos run: a hub of separate processes under a supervisor, senders and their feeds.

- ``prepare`` writes a configuration (two institutions: the tax administration reads its
  acknowledgements by polling, social security by AMQP; five providers), fills the directory
  (nine citizens in ten read with myebox and doccle, the tenth has no digital post: paper) and
  signs the envelopes.
- ``Supervisor`` runs each kind of process (``hub serve``, the relay, the routing, acks and
  forward workers, the audit sealer, three providers) and restarts any that dies, after a short pause, as
  systemd's ``Restart=always`` would; ``kill`` sends SIGKILL.
- ``Submitter`` POSTs the envelopes in batches and retries what got no receipt (a refused
  connection, a 503) with the same bytes until it gets one: the hub's idempotency makes that
  safe, and it is what a careful institution does.
- ``FeedReader`` follows a sender's ``GET /v1/acks?after=CURSOR`` feed; ``QueueReader`` its
  AMQP queue ``sender.<id>.acks``, reconnecting across broker restarts.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from kombu import Connection, Consumer, Queue

from hub.demo import PROVIDERS, key_pair_for, write_config
from hub.envelope import examples as ex
from hub.envelope import model as m
from hub.outbound.acks import Acknowledgement, read_acknowledgement, read_acknowledgements
from hub.routing.directory import Change, Directory
from hub.routing.recipients import RecipientKind
from hub.safexml import parse
from hub.signing.keys import write_key_pair
from hub.store.db import make_engine, session_factory
from tests.kit import keyring
from tests.test_recipients import ssin

ROOT = Path(__file__).resolve().parents[2]
SENDERS = {ex.FINANCE: "polling", ex.SOCIAL: "amqp"}
TOKENS = {ex.FINANCE: "chaos-token-finance", ex.SOCIAL: "chaos-token-social"}
READ_WITH = ("myebox", "doccle")
PAPER = "paper"
RUNNING_PROVIDERS = (*READ_WITH, PAPER)

Expected = tuple[str, str, str | None]
"""One event a sender must see: (hub message id, event, provider or None for the hub's own)."""


# -- what is sent, to whom ---------------------------------------------------------------------


def sender_of(index: int) -> str:
    """Every fifth envelope comes from social security, the others from the tax administration."""
    return ex.SOCIAL if index % 5 == 4 else ex.FINANCE


def on_paper(index: int) -> bool:
    """Every tenth citizen has no digital post."""
    return index % 10 == 0


def providers_for(index: int) -> frozenset[str]:
    """What the routing rules must choose (deliver to all the recipient reads with; else paper)."""
    return frozenset({PAPER}) if on_paper(index) else frozenset(READ_WITH)


def expected_events(message_id: str, index: int) -> set[Expected]:
    events: set[Expected] = {(message_id, "accepted", None), (message_id, "routed", None)}
    if on_paper(index):
        events.add((message_id, "printed", PAPER))
    else:
        events |= {(message_id, "delivered", provider) for provider in READ_WITH}
    return events


def _letter(tag: str, index: int, created: datetime) -> bytes:
    base = ex.example("citizen-pdf" if sender_of(index) == ex.SOCIAL else "citizen-letter", created=created)
    header = replace(
        base.header,
        sender_message_id=f"CHAOS-{tag}-{index}",
        recipient=m.Recipient(ebox_type=m.EboxType.CITIZEN, id=ssin(index)),
    )
    return keyring().sign(replace(base, header=header))


def envelopes(count: int) -> list[bytes]:
    """``count`` signed envelopes, signed in a pool forked from this process (so with its keys).

    Call before this process starts a thread: a fork copies no thread but may copy a held lock.
    """
    keyring()
    created = datetime.now(UTC) - timedelta(minutes=1)
    tag = os.urandom(4).hex()
    jobs = [(tag, index, created) for index in range(count)]
    with multiprocessing.get_context("fork").Pool(os.cpu_count() or 1) as pool:
        return pool.starmap(_letter, jobs, chunksize=64)


def prepare(folder: Path) -> Path:
    """The configuration folder: providers, routing (the demo's), senders with their tokens and channels."""
    now = datetime.now(UTC)
    config = write_config(folder, {pid: key_pair_for(f"provider {pid}", None, now) for pid in PROVIDERS})
    for org, pair in keyring().pairs.items():
        write_key_pair(pair, config / "keys", org)
    senders = (ROOT / "config" / "senders.yaml").read_text()
    finance, social = (hashlib.sha256(TOKENS[org].encode()).hexdigest() for org in (ex.FINANCE, ex.SOCIAL))
    senders = senders.replace("api_token_sha256: []", f"api_token_sha256: [{finance}]", 1)
    amqp = "acknowledgements: {channel: amqp}\n"
    senders = senders.replace(amqp, f"{amqp}    api_token_sha256: [{social}]\n", 1)
    assert finance in senders and social in senders, "config/senders.yaml changed shape"
    (config / "senders.yaml").write_text(senders)
    return config


def fill_directory(database_url: str, count: int) -> None:
    engine = make_engine(database_url)
    directory = Directory(session_factory(engine))
    at = datetime.now(UTC) - timedelta(days=30)
    changes = []
    for index in range(count):
        if on_paper(index):
            continue
        citizen = ssin(index)
        changes.append(Change(op="activate", kind=RecipientKind.CITIZEN, id=citizen, at=at, provider=READ_WITH[0]))
        changes += [Change(op="link", kind=RecipientKind.CITIZEN, id=citizen, at=at, provider=p) for p in READ_WITH]
    for start in range(0, len(changes), 3000):
        directory.apply(changes[start : start + 3000])
    directory.refresh_statistics()
    engine.dispose()


# -- the hub's processes -----------------------------------------------------------------------


@dataclass
class Supervisor:
    """Starts every kind of process, restarts any that dies (after ``pause`` seconds), kills on demand."""

    env: dict[str, str]
    logs: Path
    commands: dict[str, list[str]]
    pause: tuple[float, float] = (0.3, 1.5)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    kills: Counter[str] = field(default_factory=Counter)
    exits: Counter[str] = field(default_factory=Counter)
    """Deaths not caused by ``kill``: a process that gave up (e.g. its database gone) and was restarted."""
    _restart_at: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    def start(self) -> None:
        for kind in self.commands:
            self._spawn(kind)
        self._thread.start()

    def kill(self, kind: str) -> None:
        with self._lock:
            process = self.processes[kind]
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()
                self.kills[kind] += 1
                self._restart_at[kind] = time.monotonic() + random.uniform(*self.pause)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with self._lock:
            for process in self.processes.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in self.processes.values():
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()

    def _spawn(self, kind: str) -> None:
        log = (self.logs / f"{kind}.log").open("ab")
        log.write(f"--- started at {time.strftime('%H:%M:%S')}\n".encode())
        log.flush()
        self.processes[kind] = subprocess.Popen(
            self.commands[kind], env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )
        log.close()

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            with self._lock:
                now = time.monotonic()
                for kind, process in self.processes.items():
                    if process.poll() is None:
                        continue
                    if kind not in self._restart_at:  # it died on its own
                        self.exits[kind] += 1
                        self._restart_at[kind] = now + random.uniform(*self.pause)
                    elif now >= self._restart_at[kind]:
                        del self._restart_at[kind]
                        self._spawn(kind)


def hub_commands(config: Path, port: int, mailboxes: Path, broker_url: str) -> dict[str, list[str]]:
    hub = [str(Path(sys.executable).parent / "hub")]
    commands = {
        "serve": [*hub, "serve", "--workers", "1"],
        "relay": [*hub, "relay"],
        "routing": [*hub, "worker", "routing"],
        "acks": [*hub, "worker", "acks"],
        "forward": [*hub, "worker", "forward"],
        "audit-sealer": [*hub, "audit", "seal", "--every", "1"],
    }
    keys = config / "keys"
    for pid in RUNNING_PROVIDERS:
        commands[f"provider-{pid}"] = [
            sys.executable,
            *("-m", "tests.chaos.provider", pid),
            *("--mailbox", str(mailboxes / f"{pid}.sqlite")),
            *("--key", str(keys / f"{pid}.key.pem"), "--certificate", str(keys / f"{pid}.cert.pem")),
            *("--broker", broker_url),
            *(["--fail-every-second"] if pid == READ_WITH[0] else []),
        ]
    return commands


# -- senders -----------------------------------------------------------------------------------


@dataclass
class Submitter:
    """POSTs ``batch`` envelopes at a time at ``rate`` a second from ``clients`` threads, until each has a receipt."""

    port: int
    data: list[bytes]
    rate: float
    batch: int = 20
    clients: int = 6
    receipts: dict[int, set[str]] = field(default_factory=lambda: defaultdict(set))
    """The hub message ids each envelope's receipts named (one, if idempotency holds)."""
    created: Counter[int] = field(default_factory=Counter)
    """How many times each envelope was answered 201 Created (one, if nothing was accepted twice)."""
    retried: Counter[str] = field(default_factory=Counter)
    """Why a POST was tried again: a connection error's class, or the status."""
    refused: dict[int, str] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        start = time.monotonic()
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60) as client:

            def post(first: int) -> None:
                pause = start + first / self.rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                pending = list(range(first, min(first + self.batch, len(self.data))))
                while pending:
                    pending = self._post(client, pending)
                    if pending:
                        time.sleep(0.5)

            with ThreadPoolExecutor(self.clients) as pool:
                list(pool.map(post, range(0, len(self.data), self.batch)))
        self.done.set()

    def _post(self, client: httpx.Client, indexes: list[int]) -> list[int]:
        """One POST /v1/batches of ``indexes``; the ones still without a receipt."""
        payload = {"envelopes": [base64.b64encode(self.data[i]).decode() for i in indexes]}
        try:
            answer = client.post("/v1/batches", json=payload)
        except httpx.HTTPError as exc:
            with self._lock:
                self.retried[type(exc).__name__] += 1
            return indexes
        if answer.status_code != 207:
            with self._lock:
                self.retried[str(answer.status_code)] += 1
            return indexes
        again = []
        with self._lock:
            for index, result in zip(indexes, answer.json()["results"], strict=True):
                status = result["status"]
                if status in (200, 201):
                    self.receipts[index].add(result["message_id"])
                    self.created[index] += status == 201
                elif status == 503:
                    self.retried["item 503"] += 1
                    again.append(index)
                else:
                    self.refused[index] = f"{status} {result.get('code')}: {result.get('message')}"
        return again

    def message_ids(self) -> dict[int, str]:
        return {index: next(iter(ids)) for index, ids in self.receipts.items() if len(ids) == 1}


@dataclass
class FeedReader:
    """Follows one sender's polling feed from cursor 0, across outages, until ``stop``."""

    port: int
    token: str
    items: list[Acknowledgement] = field(default_factory=list)
    pages: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    cursor: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self.run, name=f"feed-{self.token}", daemon=True)

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30, headers=headers) as client:
            while not self.stop.is_set():
                try:
                    answer = client.get("/v1/acks", params={"after": self.cursor, "limit": 1000})
                except httpx.HTTPError as exc:
                    self.errors[type(exc).__name__] += 1
                    self.stop.wait(0.5)
                    continue
                if answer.status_code == 204:
                    self.stop.wait(0.5)
                    continue
                if answer.status_code != 200:
                    self.errors[str(answer.status_code)] += 1
                    self.stop.wait(0.5)
                    continue
                self.items += read_acknowledgements(parse(answer.content))
                self.cursor = int(answer.headers["X-Hub-Cursor"])
                self.pages += 1


@dataclass
class QueueReader:
    """Consumes ``sender.<id>.acks`` (one signed Acknowledgement per message), reconnecting as needed."""

    url: str
    queue: str
    items: list[Acknowledgement] = field(default_factory=list)
    reconnects: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self.run, name=f"queue-{self.queue}", daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with Connection(self.url, connect_timeout=3) as connection:

                    def on_message(body: object, message: object) -> None:
                        self.items.append(read_acknowledgement(parse(message.body)))  # type: ignore[attr-defined]
                        message.ack()  # type: ignore[attr-defined]

                    queue = Queue(self.queue, no_declare=True)
                    with Consumer(connection, [queue], callbacks=[on_message], prefetch_count=200):
                        while not self.stop.is_set():
                            with contextlib.suppress(TimeoutError):
                                connection.drain_events(timeout=0.3)
            except Exception:  # the broker went away (a restart): connect again
                self.reconnects += 1
                self.stop.wait(0.5)


def seen(items: Iterable[Acknowledgement]) -> Counter[Expected]:
    """How many times each (message, event, provider) arrived."""
    return Counter((str(a.hub_message_id), a.event.value, a.provider) for a in items)
