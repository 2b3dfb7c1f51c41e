"""Wiring: from settings to the objects a hub process runs with.

One ``Runtime`` per process: the database engine and sessions, the sender directory and
its trust store, the hub's own signing key, and the intake every door shares.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from hub.errors import ConfigError
from hub.inbound.acceptance import Intake
from hub.inbound.senders import SenderDirectory, load_senders
from hub.safexml import ParseLimits
from hub.settings import Settings
from hub.signing.keys import KeyPair, generate_key, load_key_pair, self_signed_certificate, write_key_pair
from hub.signing.signer import Signer
from hub.store.db import make_engine, session_factory


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    directory: SenderDirectory
    hub_keys: KeyPair
    intake: Intake

    def close(self) -> None:
        self.engine.dispose()


def hub_key_pair(settings: Settings) -> KeyPair:
    """The hub's own key: configured, or created once in the data folder (embedded default)."""
    if settings.signing_key and settings.signing_certificate:
        return load_key_pair(settings.signing_key, settings.signing_certificate)
    if settings.signing_key or settings.signing_certificate:
        raise ConfigError("signing.key and signing.certificate go together: set both or neither")
    folder = settings.data_dir / "keys"
    key_path, cert_path = folder / "hub.key.pem", folder / "hub.cert.pem"
    if not key_path.exists():
        key = generate_key("ec")
        start = datetime.now(UTC) - timedelta(minutes=5)
        pair = KeyPair(key, self_signed_certificate(key, "ebox-hub", not_before=start, days=730))
        with contextlib.suppress(FileExistsError, ConfigError):  # another process of this hub was first
            write_key_pair(pair, folder, "hub")
    return _complete_key_pair(key_path, cert_path)


def _complete_key_pair(key_path: Path, cert_path: Path, patience_s: float = 5.0) -> KeyPair:
    """The key pair in the data folder, once whoever writes it has written both files.

    Processes started together (``hub serve --workers 2``, a worker beside it) race to create
    the embedded key: one writes it, the others load it, waiting a moment for a file that is
    not there yet or not whole. A pair still unreadable after ``patience_s`` is a ``ConfigError``.
    """
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return load_key_pair(key_path, cert_path)
        except ConfigError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def build_runtime(settings: Settings, *, directory: SenderDirectory | None = None) -> Runtime:
    if directory is None:
        if not settings.senders_file.exists():
            raise ConfigError(
                "no senders file: copy config/senders.yaml and register your institutions",
                file=str(settings.senders_file),
            )
        directory = load_senders(settings.senders_file)
    engine = make_engine(settings.effective_database_url)
    sessions = session_factory(engine)
    keys = hub_key_pair(settings)
    intake = Intake(
        sessions=sessions,
        directory=directory,
        receipt_signer=Signer(keys),
        environment=settings.environment,
        parse_limits=ParseLimits(max_bytes=settings.max_envelope_bytes),
    )
    return Runtime(settings, engine, sessions, directory, keys, intake)


def data_path(settings: Settings, name: str) -> Path:
    return settings.data_dir / name
