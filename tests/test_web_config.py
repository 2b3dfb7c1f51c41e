"""``self_service`` in senders.yaml: the key the hub signs web users' envelopes with, checked at load."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hub.errors import ConfigError
from hub.inbound.senders import load_senders
from hub.signing.keys import write_key_pair
from tests.kit import key_pair

REPO = Path(__file__).resolve().parent.parent
ENTRY = """institutions:
  - id: "0308357159"
    name: Federal tax administration
    applications: [tax-on-web]
    certificates:
      - file: keys/finance.cert.pem
    message_types:
      TAX_ASSESSMENT: {{}}
    self_service:
{self_service}
"""


def senders(tmp_path: Path, self_service: str) -> Path:
    keys = tmp_path / "keys"
    write_key_pair(key_pair("finance"), keys, "finance")
    write_key_pair(key_pair("stranger"), keys, "stranger")
    path = tmp_path / "senders.yaml"
    path.write_text(ENTRY.format(self_service=self_service))
    return path


def test_a_self_service_key_whose_certificate_is_registered_loads(tmp_path):
    path = senders(tmp_path, "      key: keys/finance.key.pem\n      certificate: keys/finance.cert.pem\n")
    service = load_senders(path).institutions["0308357159"].self_service
    assert service is not None and service.application == "tax-on-web"
    assert service.keys.certificate == key_pair("finance").certificate


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (
            "      key: keys/stranger.key.pem\n      certificate: keys/stranger.cert.pem\n",
            "must be one of this institution's certificates",
        ),
        (
            "      key: keys/finance.key.pem\n      certificate: keys/finance.cert.pem\n      application: payroll\n",
            "not one of this institution's applications",
        ),
        ("      key: keys/missing.key.pem\n      certificate: keys/finance.cert.pem\n", "the self-service key"),
        ("      key: keys/finance.key.pem\n", "certificate"),
        ("      key: keys/finance.key.pem\n      certificate: keys/finance.cert.pem\n      keyfile: x\n", "keyfile"),
    ],
)
def test_a_wrong_self_service_entry_stops_the_hub_naming_the_file_and_line(tmp_path, body, says):
    path = senders(tmp_path, body)
    with pytest.raises(ConfigError) as refused:
        load_senders(path)
    assert says in str(refused.value) and "senders.yaml" in str(refused.value)


def test_the_shipped_senders_file_lets_the_tax_administration_send_from_the_web(tmp_path):
    config = tmp_path / "config"
    shutil.copytree(REPO / "config", config, ignore=shutil.ignore_patterns("keys"))
    for org in ("0308357159", "0206731645", "0207373429", "0202239951"):
        write_key_pair(key_pair(f"shipped-{org}"), config / "keys", org)
    directory = load_senders(config / "senders.yaml")
    assert directory.institutions["0308357159"].self_service is not None
    assert directory.institutions["0206731645"].self_service is None
