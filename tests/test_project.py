"""The project's own promises: lint clean, README commands true, demo tells its story."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from hub.cli import cli

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    result = subprocess.run([ruff, "check", str(ROOT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing():
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_first_screen_has_exactly_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```sh\n(.*?)```", readme, re.S).group(1).strip().splitlines()
    assert first_block == [
        "pip install -e . && hub demo                       # run the hub's main job on the embedded default",
        "pip install -e '.[test]' && python -m pytest       # run the tests (lint included)",
    ]
    assert readme.index("```sh") < 1200  # on the first screen


def test_ci_runs_the_readme_test_command():
    script = (ROOT / ".ci/run").read_text()
    assert "grep -E \"^pip install -e '\\.\\[test\\]' && \" README.md" in script


def test_the_demo_runs_the_whole_loop_on_the_embedded_default(tmp_path):
    result = CliRunner().invoke(cli, ["demo", "--keep", str(tmp_path / "d")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.count("accepted: receipt") == 8
    for code in ("SIGNATURE_INVALID", "UNKNOWN_SIGNER", "SIGNATURE_MISSING", "XML_FORBIDDEN", "IBAN_INVALID"):
        assert f"refused {code}" in result.output
    assert "UNEXPECTED" not in result.output and "surprise" not in result.output
    # the journeys: a reply to registered mail, paper for the citizen without digital post, a held delivery
    assert re.search(r"registered .* replied .*replied@myebox", result.output)
    assert re.search(r"letter, no digital post .* printed .*printed@paper", result.output)
    assert "held until" in result.output
    # every sender got its acknowledgements, AMQP or polling
    assert re.search(r"social security +\d+ via queue sender\.0206731645\.acks .*replied 1", result.output)
    assert re.search(r"tax administration +\d+ via GET /v1/acks feed", result.output)
    assert (tmp_path / "d/var/hub.db").exists()
    assert "http://127.0.0.1:8080/web" in result.output  # where to go next: the web console


def test_the_package_runs_without_the_shared_folder_or_the_repository():
    # The schemas ship inside the package; nothing at run time reads ../shared.
    for path in (ROOT / "hub").rglob("*.py"):
        assert "shared/" not in path.read_text(), path
    assert (ROOT / "hub/schemas/envelope-1.xsd").is_file()


def test_every_file_the_package_reads_at_run_time_is_declared_as_package_data():
    """Templates, static files, translations, schemas and migrations ship in the wheel: the installed hub needs
    no repository (and the web console no network)."""
    import fnmatch
    import tomllib

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["hub"]
    missing = []
    for path in (ROOT / "hub").rglob("*"):
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts:
            relative = path.relative_to(ROOT / "hub").as_posix()
            if not any(
                fnmatch.fnmatchcase(relative, pattern) and relative.count("/") == pattern.count("/")
                for pattern in patterns
            ):
                missing.append(relative)
    assert not missing
