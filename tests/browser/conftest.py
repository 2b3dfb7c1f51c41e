"""The web console in a real browser: Debian's headless Chromium, driven by Playwright, against the whole hub.

- ``browser``: one Chromium for the session, Debian's package (``HUB_CHROMIUM``, else ``/usr/bin/chromium``);
  never a browser downloaded at test time. Missing: skipped, or failed under ``CI=true``.
- ``running_hub``: every stage of the hub in this process with its HTTP door (``hub.service.Service``), on
  SQLite with the in-process broker and on PostgreSQL with RabbitMQ, the web accounts of ``tests.web_kit``,
  a citizen with digital post at the simulated provider ``myebox``, which opens every message quickly.
  Everything runs on real time (the web console dates envelopes with it). One hub per back end, shared by
  the tests of this package (and stopped when they end: its simulated provider must not consume the other
  tests' queues on the run's RabbitMQ virtual host): each test signs in users of its own, and
  ``RunningHub.code`` never hands out a TOTP code twice.
- ``page``: a fresh browser context (no cookies) per test; a failed test leaves a screenshot.
- ``shot(page, name)``: a full-page PNG in ``$HUB_ARTIFACTS_DIR``, else ``test-artifacts/screenshots/``
  (git-ignored); the terminal summary says where they are.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest

from hub.outbound.simulated import Behaviour, SimulatedProvider
from hub.routing.directory import Change, Directory
from hub.routing.recipients import RecipientKind
from hub.runtime import Runtime
from hub.service import Service
from hub.signing.truststore import TrustStore, trusted
from hub.signing.verifier import Verifier
from hub.web.accounts import TOTP_WINDOW, totp_step
from tests.test_acknowledgements import PROVIDER_KEYS
from tests.test_routing_worker import PROVIDER_IDS, delete_queues
from tests.test_service import free_port, provider_config, wait_until_up
from tests.web_kit import PASSWORD, USERS, make_accounts, web_hub

ROOT = Path(__file__).resolve().parents[2]
_CHROMIUM = os.environ.get("HUB_CHROMIUM") or "/usr/bin/chromium"
CHROMIUM = shutil.which(_CHROMIUM) or _CHROMIUM
"""Debian's browser: ``HUB_CHROMIUM`` (a path, or a command on PATH), else ``/usr/bin/chromium``."""
ARTIFACTS = Path(os.environ.get("HUB_ARTIFACTS_DIR") or ROOT / "test-artifacts" / "screenshots")
CI = os.environ.get("CI") == "true"
BACKENDS = ("sqlite+memory", "postgresql+rabbitmq")
CITIZEN = "85073003328"
"""A citizen who activated digital post and reads it at the simulated provider ``myebox``."""
READER = "myebox"
TIMEOUT_MS = 15_000
"""Playwright's default wait for an element or a navigation."""

_SHOTS: list[Path] = []


# -- the browser --------------------------------------------------------------------------------------


def _missing(reason: str) -> None:
    if CI:
        pytest.fail(f"{reason}; CI must run the browser tests", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, for the browser tests (no sandbox: the tests may run as root).

    Package-scoped, not session-scoped: Playwright's sync API keeps an event loop running in this thread
    while it is open, and the running hub consumes the run's RabbitMQ queues; both must be gone before
    the rest of the suite runs in the same process."""
    install = "install Debian's chromium: apt-get install chromium chromium-driver"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        _missing(f"no browser at {CHROMIUM} (HUB_CHROMIUM); {install}")
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        _missing("Playwright (Python) is not installed: pip install -e '.[test]'")
    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        except Error as exc:
            _missing(f"the browser at {CHROMIUM} does not start ({str(exc).splitlines()[0]}); {install}")
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def page(request: pytest.FixtureRequest, browser: Any, running_hub: RunningHub) -> Iterator[Any]:
    """A page in a fresh context (no cookies, English, downloads allowed) on the running hub's address."""
    context = browser.new_context(
        base_url=running_hub.url, locale="en-GB", accept_downloads=True, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    tab = context.new_page()
    try:
        yield tab
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            with contextlib.suppress(Exception):
                shot(tab, f"FAILED-{request.node.name}")
        context.close()


# -- screenshots ----------------------------------------------------------------------------------------


def shot(page: Any, name: str) -> Path:
    """Save a full-page screenshot of ``page`` as ``<artefacts>/<name>.png``; its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name)
    path = ARTIFACTS / f"{safe}.png"
    page.screenshot(path=str(path), full_page=True)
    _SHOTS.append(path)
    return path


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not _SHOTS:
        return
    terminalreporter.section("web console screenshots")
    terminalreporter.write_line(f"{len(_SHOTS)} screenshot(s) of this run in {ARTIFACTS}:")
    for path in _SHOTS:
        terminalreporter.write_line(f"  {path.name}")


# -- the running hub ------------------------------------------------------------------------------------


@dataclass
class RunningHub:
    """The hub serving on ``url``, its runtime and broker, and the web users' TOTP secrets."""

    backend: str
    url: str
    runtime: Runtime
    service: Service
    broker_url: str
    secrets: dict[str, str]
    password: str = PASSWORD
    _last_step: dict[str, int] = field(default_factory=dict)

    def code(self, username: str) -> str:
        """A TOTP code of ``username`` the hub accepts now and that this run has not used before.

        The hub accepts the steps now-1..now+1 (``TOTP_WINDOW``), each once and in order: the step
        handed out is now's, else the one after the last handed out; past now+1, wait for the next step.
        """
        totp = pyotp.TOTP(self.secrets[username])
        while True:
            now = datetime.now(UTC)
            step = max(totp_step(now), self._last_step.get(username, -1) + 1)
            if step <= totp_step(now) + TOTP_WINDOW:
                self._last_step[username] = step
                return totp.at(step * 30)
            time.sleep(30 - now.timestamp() % 30 + 0.05)

    def wrong_code(self, username: str) -> str:
        """Six digits that are none of the codes the hub would accept for ``username`` just now."""
        totp = pyotp.TOTP(self.secrets[username])
        now = datetime.now(UTC)
        good = {totp.at(now + timedelta(seconds=30 * k)) for k in range(-2, 3)}
        return next(code for code in ("000000", "123456", "999999", "314159") if code not in good)

    def verifier(self) -> Verifier:
        """Verifies what the hub signs (receipts, acknowledgements, proofs)."""
        return Verifier(TrustStore([trusted("hub", self.runtime.hub_keys.certificate)]))


def _backend(name: str, request: pytest.FixtureRequest, stack: contextlib.ExitStack, tmp: Path) -> tuple[str, str]:
    """The (database URL, broker URL) of a back end: SQLite + in-process broker, or PostgreSQL + RabbitMQ."""
    if name == "sqlite+memory":
        return f"sqlite:///{tmp / 'hub.db'}", f"memory://localhost/{uuid.uuid4().hex}"
    from tests.backends import postgres_schema

    database_url = stack.enter_context(postgres_schema())
    return database_url, request.getfixturevalue("rabbitmq_session_url")


@pytest.fixture(scope="package", params=BACKENDS)
def running_hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    """The whole hub running in this process with its HTTP door, on one pair of back ends (see the module)."""
    backend: str = request.param
    tmp = tmp_path_factory.mktemp(backend.replace("+", "-"))
    with contextlib.ExitStack() as stack:  # undone in reverse: provider, hub, runtime, queues, database schema
        database_url, broker_url = _backend(backend, request, stack, tmp)
        delete_queues(broker_url, PROVIDER_IDS)  # a hub starts from empty queues (RabbitMQ keeps them)
        stack.callback(delete_queues, broker_url, PROVIDER_IDS)
        config = tmp / "config"
        config.mkdir()
        provider_config(config)
        port = free_port()
        runtime = web_hub(tmp, database_url, HUB_BROKER_URL=broker_url, HUB_HTTP_PORT=str(port))
        stack.callback(runtime.close)
        runtime.intake.clock = lambda: datetime.now(UTC)  # web_hub's intake runs on the tests' fixed clock
        secrets = make_accounts(runtime)
        assert set(secrets) == set(USERS)
        since = datetime.now(UTC) - timedelta(days=1)
        Directory(runtime.sessions).apply(
            [
                Change(op="activate", kind=RecipientKind.CITIZEN, id=CITIZEN, at=since, provider=READER),
                Change(op="link", kind=RecipientKind.CITIZEN, id=CITIZEN, at=since, provider=READER),
            ]
        )
        service = Service(runtime, http=True, check_every=3600)
        service.start()
        stack.callback(service.stop)
        reader = SimulatedProvider(
            READER,
            broker_url,
            PROVIDER_KEYS[READER],
            behaviour=Behaviour(open_probability=1.0, open_delay_s=0.2, reply_probability=0.0, seed=1),
            poll=0.05,
        )  # on real time, as the hub: it may not date events ahead of the hub's clock
        reader.start()
        stack.callback(reader.stop)
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url)
        yield RunningHub(backend, url, runtime, service, broker_url, secrets)
    assert not service.failures, service.failures
