"""docker-compose.yml stays consistent with the hub (no Docker engine runs on our machines)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from hub.settings import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
KNOWN = {"HUB_CONFIG_DIR"} | {
    ("HUB_" + key if section == "hub" else f"HUB_{section}_{key}").upper()
    for section, values in DEFAULTS.items()
    for key in values
}


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_brings_up_rabbitmq_postgres_and_the_hub():
    services = compose()["services"]
    assert {"postgres", "rabbitmq", "migrate", "http", "relay"} <= set(services)
    assert "15672:15672" in services["rabbitmq"]["ports"]  # the management UI
    assert services["http"]["command"][:2] == ["hub", "serve"]


def test_every_hub_variable_in_compose_is_a_real_setting():
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\b(HUB_[A-Z_]+):", text))
    assert used and used <= KNOWN, used - KNOWN


def test_the_non_docker_start_uses_the_same_variables():
    guide = (ROOT / "docs/deployment.md").read_text()
    compose_vars = set(re.findall(r"\b(HUB_[A-Z_]+):", (ROOT / "docker-compose.yml").read_text()))
    assert compose_vars <= set(re.findall(r"\b(HUB_[A-Z_]+)=", guide))


def test_compose_commands_are_hub_commands():
    from click.testing import CliRunner

    from hub.cli import cli

    for name, service in compose()["services"].items():
        command = service.get("command")
        if not command:
            continue
        text = command[-1] if command[0] == "sh" else " ".join(command)
        for part in text.split("&&"):
            words = part.split()
            if words and words[0] == "hub":
                path = [w for w in words[1:3] if not w.startswith("-")]  # the (sub)command, not its options
                result = CliRunner().invoke(cli, [*path, "--help"])
                assert result.exit_code == 0, (name, part, result.output)


@pytest.mark.skipif(not shutil.which("docker"), reason="no docker client on this machine")
def test_docker_compose_config_accepts_the_file_where_the_plugin_exists():
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed here")
    result = subprocess.run(["docker", "compose", "config", "-q"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
