"""Configuration files with errors: the ``hub`` command refuses to start, naming the file and the line,
and writes nothing (no database, no key, no data folder) and starts no server.

Each case writes a configuration folder with one mistake and runs the command an operator would
(``hub serve``, or ``hub routes check`` for the routing files) through click's runner, with the
server itself replaced by a recorder: a test can never hang in it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.serialization import Encoding

from hub.cli import cli
from hub.metrics import MULTIPROC_ENV
from tests.hostile.attacks import Attack, Door, attacks, params
from tests.kit import key_pair
from tests.test_config import BASE

INSTITUTION = BASE  # one valid institution (tests/test_config.py)
PROVIDER = """\
  - id: myebox
    name: My eBox portal
    kinds: [citizen]
"""
ROUTING = "rules:\n  - name: default\n    match: {}\n    deliver: all\n    fallback: paper\n"


@dataclass(frozen=True)
class Mistake:
    files: dict[str, str]
    """The configuration folder: file name -> text (senders.yaml is the good one unless given)."""
    command: tuple[str, ...]
    wrong: str
    """The file the error must name."""
    line: int
    says: str


MISTAKES: dict[str, Mistake] = {
    "config/senders-not-yaml": Mistake(
        {"senders.yaml": INSTITUTION.replace("[tax-on-web]", "[tax-on-web")},
        ("serve",),
        "senders.yaml",
        5,
        "not valid YAML: expected ',' or ']', but got ':' (while parsing a flow sequence that starts on line 4)",
    ),
    "config/senders-unknown-key": Mistake(
        {"senders.yaml": INSTITUTION.replace("applications:", "aplications:")},
        ("serve",),
        "senders.yaml",
        4,
        "did you mean 'applications'?",
    ),
    "config/senders-missing-certificate": Mistake(
        {"senders.yaml": INSTITUTION + "    certificates:\n      - file: keys/missing.cert.pem\n"},
        ("serve",),
        "senders.yaml",
        8,
        "missing.cert.pem",
    ),
    "config/senders-duplicate-institution": Mistake(
        {"senders.yaml": INSTITUTION + INSTITUTION.split("\n", 1)[1]},
        ("serve",),
        "senders.yaml",
        7,
        "institution 0308357159 is listed twice",
    ),
    "config/hub-toml-unknown-key": Mistake(
        {"hub.toml": '[http]\nhost = "127.0.0.1"\nprot = 8443\n'},
        ("serve",),
        "hub.toml",
        3,
        "unknown key 'prot'; did you mean 'port'?",
    ),
    "config/hub-toml-not-toml": Mistake(
        {"hub.toml": "[http]\nport = = 1\n"}, ("serve",), "hub.toml", 2, "not valid TOML"
    ),
    "config/providers-duplicate": Mistake(
        {"providers.yaml": "providers:\n" + PROVIDER + PROVIDER, "routing.yaml": ROUTING},
        ("routes", "check"),
        "providers.yaml",
        5,
        "listed twice",
    ),
    "config/tls-key-missing": Mistake(
        {"hub.toml": '[http]\ntls_key = "tls/missing.key.pem"\ntls_certificate = "tls/missing.cert.pem"\n'},
        ("serve",),
        "hub.toml",
        2,
        "tls/missing.key.pem",
    ),
}


@pytest.fixture()
def started(monkeypatch, tmp_path) -> Iterator[list[object]]:  # type: ignore[no-untyped-def]
    """Servers asked to start: uvicorn itself is replaced by a recorder (``hub serve`` runs up to it)."""
    calls: list[object] = []
    monkeypatch.setattr("uvicorn.run", lambda *args, **kwargs: calls.append((args, kwargs)))
    for name in [n for n in os.environ if n.startswith("HUB_")]:
        monkeypatch.delenv(name)  # the developer's own HUB_* variables must not leak in
    monkeypatch.chdir(tmp_path)
    # `hub serve` (N workers) sets PROMETHEUS_MULTIPROC_DIR in this process: restored afterwards, so that later
    # tests' /metrics count in this process again
    monkeypatch.setenv(MULTIPROC_ENV, "unset")
    monkeypatch.delenv(MULTIPROC_ENV)
    yield calls


def everything(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run(tmp_path: Path, files: dict[str, str], *command: str):  # type: ignore[no-untyped-def]
    config = tmp_path / "config"
    (config / "keys").mkdir(parents=True, exist_ok=True)
    (config / "keys/finance.cert.pem").write_bytes(key_pair("config-finance").certificate.public_bytes(Encoding.PEM))
    for name, text in {"senders.yaml": INSTITUTION, **files}.items():
        (config / name).write_text(text, encoding="utf-8")
    env = {"HUB_CONFIG_DIR": str(config), "HUB_DATA_DIR": str(tmp_path / "var")}
    return config, CliRunner().invoke(cli, list(command), env=env, catch_exceptions=False)


@pytest.mark.parametrize("attack", params(Door.CONFIG))
def test_a_configuration_file_with_an_error_stops_the_hub_naming_file_and_line(started, tmp_path, attack: Attack):
    mistake = MISTAKES[attack.id]
    before = everything(tmp_path)
    config, result = run(tmp_path, mistake.files, *mistake.command)
    assert result.exit_code == attack.status, result.output
    assert f"{config / mistake.wrong}:{mistake.line}: " in result.stderr, result.stderr
    assert mistake.says in result.stderr, result.stderr
    assert "Traceback" not in result.output
    assert started == []  # no server
    written = set(everything(tmp_path)) - set(before) - {f"config/{name}" for name in (*mistake.files, "senders.yaml")}
    written -= {"config/keys/finance.cert.pem"}
    if attack.name != "tls-key-missing":  # see test_missing_tls_files_are_refused_before_anything_is_written
        assert written == set(), written  # no database, no hub key, no data folder
    assert not any(name.startswith("config/") for name in written)  # nothing written beside the configuration


def test_the_table_and_these_ways_are_the_same_list():
    assert set(MISTAKES) == {a.id for a in attacks(Door.CONFIG)}


def test_the_same_folder_without_the_mistake_starts(started, tmp_path):
    # The control group: the good senders.yaml (and a good hub.toml) get as far as the server
    _, result = run(tmp_path, {"hub.toml": "[http]\nport = 8443\n"}, "serve")
    assert result.exit_code == 0, result.output
    assert len(started) == 1


def test_missing_tls_files_are_refused_before_anything_is_written(started, tmp_path):
    mistake = MISTAKES["config/tls-key-missing"]
    _, result = run(tmp_path, mistake.files, *mistake.command)
    assert result.exit_code == 2
    assert not (tmp_path / "var").exists()
