"""Oversized and slow requests over a real socket, against the hub served by uvicorn as ``hub serve``
serves it (its protocol: ``hub.inbound.server``), with ``[http] timeout_s`` = 0.5 s.

Oversized bodies are answered 413 before the client has sent them all; a client that is slow
(its headers or its body a byte at a time), stalls or sends nothing is answered 408 and
closed, and the server keeps serving others meanwhile; a client that goes away half-way leaves no
error in the hub's log. None of them writes anything.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn

from hub.errors import ErrorCode
from hub.inbound.server import serve
from tests.hostile.attacks import Attack, Door, attacks, params
from tests.hostile.stack import MAX_ENVELOPE_BYTES, World, build_world, grown

TIMEOUT_S = 0.5
POST_HEAD = b"POST /v1/messages HTTP/1.1\r\nHost: hub\r\nContent-Type: application/xml\r\n"


@dataclass
class Served:
    world: World
    port: int
    errors: list[logging.LogRecord]
    """ERROR records of uvicorn's logger while the server ran (an exception in the application)."""

    def connect(self) -> socket.socket:
        connection = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        connection.settimeout(0.05)
        return connection


class _Keep(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.ERROR)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def hub_protocol() -> str:
    """The HTTP protocol ``hub serve`` gives uvicorn."""
    from hub.settings import load_settings

    captured: dict[str, object] = {}
    original = uvicorn.run
    uvicorn.run = lambda *args, **kwargs: captured.update(kwargs)  # type: ignore[assignment]
    try:
        serve(load_settings("/nonexistent", {}), workers=1)
    finally:
        uvicorn.run = original
    return str(captured.get("http", "auto"))


@pytest.fixture(scope="module")
def served(backend, tmp_path_factory) -> Iterator[Served]:  # type: ignore[no-untyped-def]
    worlds = build_world(backend, tmp_path_factory.mktemp("served"), HUB_HTTP_TIMEOUT_S=str(TIMEOUT_S))
    world = next(worlds)
    config = uvicorn.Config(
        world.client.app, host="127.0.0.1", port=0, log_level="warning", http=hub_protocol(), timeout_keep_alive=5
    )
    errors: list[logging.LogRecord] = []
    keep = _Keep(errors)
    logging.getLogger("uvicorn.error").addHandler(keep)  # after the config: it sets uvicorn's loggers up anew
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield Served(world, server.servers[0].sockets[0].getsockname()[1], errors)
    finally:
        server.should_exit = True
        thread.join(10)
        logging.getLogger("uvicorn.error").removeHandler(keep)
        next(worlds, None)


def read_answer(connection: socket.socket, limit: float) -> tuple[bytes, bool]:
    """What the server sends within ``limit`` seconds, and whether it closed the connection."""
    answer = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            chunk = connection.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return answer, True
        if not chunk:
            return answer, True
        answer += chunk
    return answer, False


def trickle(served: Served, data: bytes, *, every: float = 0.1, limit: float = 4.0) -> tuple[bytes, bool, float]:
    """Send ``data`` a byte at a time, ``every`` seconds; stop when the server answers or closes."""
    started = time.monotonic()
    with served.connect() as connection:
        answer = b""
        for index in range(len(data)):
            if time.monotonic() - started > limit:
                break
            try:
                connection.send(data[index : index + 1])
            except OSError:
                break
            got, closed = read_answer(connection, every)
            answer += got
            if answer or closed:
                break
        more, closed = read_answer(connection, 1.0)
        return answer + more, closed, time.monotonic() - started


def others_are_served(served: Served, attack: Callable[[], tuple[bytes, bool, float]]) -> tuple[bytes, bool, float]:
    """Run ``attack`` in a thread and, meanwhile, have another client served; the attack's outcome."""
    outcome: list[tuple[bytes, bool, float]] = []
    thread = threading.Thread(target=lambda: outcome.append(attack()), daemon=True)
    thread.start()
    time.sleep(0.15)
    assert thread.is_alive(), "the attack ended before others were served"
    with httpx.Client(base_url=f"http://127.0.0.1:{served.port}", trust_env=False, timeout=2) as client:
        for _ in range(3):
            started = time.monotonic()
            assert client.get("/healthz").status_code == 200
            assert time.monotonic() - started < 1.0
    thread.join(15)
    [result] = outcome
    return result


def _declared_oversized(served: Served) -> tuple[bytes, bool, float]:
    started = time.monotonic()
    with served.connect() as connection:
        connection.sendall(POST_HEAD + b"Content-Length: 10000000\r\n\r\n" + b"x" * 1000)  # 1 kB of 10 MB
        answer, closed = read_answer(connection, 5)
    return answer, closed, time.monotonic() - started


def _chunked_oversized(served: Served) -> tuple[bytes, bool, float]:
    started = time.monotonic()
    chunk = b"x" * 10_000
    with served.connect() as connection:
        connection.sendall(POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
        for _ in range(MAX_ENVELOPE_BYTES // len(chunk) + 1):  # past the limit, and no last chunk
            connection.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        answer, closed = read_answer(connection, 5)
    return answer, closed, time.monotonic() - started


def _slow_body(served: Served) -> tuple[bytes, bool, float]:
    def attack() -> tuple[bytes, bool, float]:
        with served.connect() as connection:
            connection.sendall(POST_HEAD + b"Content-Length: 2000\r\n\r\n")
            started = time.monotonic()
            answer, closed = b"", False
            for _ in range(40):  # a byte every 0.1 s: each well within the 0.5 s timeout
                try:
                    connection.send(b"<")
                except OSError:
                    break
                got, closed = read_answer(connection, 0.1)
                answer += got
                if answer or closed:
                    break
            more, closed = read_answer(connection, 1.0)
            return answer + more, closed, time.monotonic() - started

    return others_are_served(served, attack)


def _stalled_body(served: Served) -> tuple[bytes, bool, float]:
    started = time.monotonic()
    with served.connect() as connection:
        connection.sendall(POST_HEAD + b"Content-Length: 2000\r\n\r\n<PublishMessage")
        answer, closed = read_answer(connection, 5)
    return answer, closed, time.monotonic() - started


def _slow_headers(served: Served) -> tuple[bytes, bool, float]:
    head = POST_HEAD + b"X-Padding: " + b"a" * 100 + b"\r\n\r\n"
    return others_are_served(served, lambda: trickle(served, head))


def _idle(served: Served) -> tuple[bytes, bool, float]:
    started = time.monotonic()
    with served.connect() as connection:
        answer, closed = read_answer(connection, 5)
    return answer, closed, time.monotonic() - started


def _disconnect(served: Served) -> tuple[bytes, bool, float]:
    started = time.monotonic()
    before = len(served.errors)
    with served.connect() as connection:
        connection.sendall(POST_HEAD + b"Content-Length: 2000\r\n\r\n<PublishMessage")
        time.sleep(0.1)
    time.sleep(0.3)  # the application reads on, and meets the disconnection
    assert served.errors[before:] == [], [r.getMessage() for r in served.errors[before:]]
    return b"", True, time.monotonic() - started


HOW: dict[str, Callable[[Served], tuple[bytes, bool, float]]] = {
    "server/declared-oversized-body": _declared_oversized,
    "server/chunked-oversized-body": _chunked_oversized,
    "server/slow-body": _slow_body,
    "server/stalled-body": _stalled_body,
    "server/slow-headers": _slow_headers,
    "server/idle-connection": _idle,
    "server/disconnect-mid-body": _disconnect,
}


@pytest.mark.parametrize("attack", params(Door.SERVER))
def test_oversized_and_slow_requests_are_cut_off(served: Served, attack: Attack):
    before = served.world.footprint()
    answer, closed, seconds = HOW[attack.id](served)
    if attack.status is not None:
        assert answer.startswith(b"HTTP/1.1 %d " % attack.status), answer[:300]
        assert attack.code is not None and f"<t:Code>{attack.code.value}</t:Code>".encode() in answer, answer[:600]
    if attack.code is ErrorCode.REQUEST_TIMEOUT:
        assert closed, "the connection stays open"
        assert seconds < 3.0, f"answered after {seconds:.1f} s"
    assert grown(before, served.world.footprint()) == {}
    assert served.errors == [], [r.getMessage() for r in served.errors]


def test_the_table_and_these_ways_are_the_same_list():
    assert set(HOW) == {a.id for a in attacks(Door.SERVER)}


def test_a_client_that_is_not_slow_is_served(served: Served):
    # The control group: a whole request at once, on a kept-alive connection, twice
    with httpx.Client(base_url=f"http://127.0.0.1:{served.port}", trust_env=False, timeout=5) as client:
        for _ in range(2):
            response = client.post("/v1/messages", content=b"<a/>", headers={"Content-Type": "application/xml"})
            assert response.status_code == 400 and b"SCHEMA_INVALID" in response.content
            time.sleep(TIMEOUT_S * 1.5)  # idle between requests: the keep-alive timeout, not the head's, applies
