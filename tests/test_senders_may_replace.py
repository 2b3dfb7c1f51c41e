"""``senders.yaml`` ``may_replace``: an institution's permission to replace a message on the e-Box SOAP door."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hub.inbound.senders import load_senders
from tests.test_config import BASE, assert_names, refusal, write

SHIPPED = Path(__file__).resolve().parent.parent / "config" / "senders.yaml"


def test_may_replace_is_false_unless_given(tmp_path):
    assert load_senders(write(tmp_path, BASE)).institutions["0308357159"].may_replace is False
    assert load_senders(write(tmp_path, BASE + "    may_replace: true\n")).institutions["0308357159"].may_replace


def test_the_shipped_senders_file_lets_nobody_replace_and_documents_the_key():
    shipped = yaml.safe_load(SHIPPED.read_text())
    assert shipped["institutions"] and not any("may_replace" in i for i in shipped["institutions"])
    assert "may_replace: true (default false)" in SHIPPED.read_text()  # in the comments


@pytest.mark.parametrize("value", ['"yes"', "1", ""], ids=["text", "number", "empty"])
def test_a_value_that_is_not_a_boolean_is_refused_at_its_line(tmp_path, value):
    path = write(tmp_path, BASE + f"    may_replace: {value}\n")
    assert_names(refusal(path), path, 7, "may_replace", "must be bool")


def test_a_misspelt_key_is_refused_at_its_line(tmp_path):
    path = write(tmp_path, BASE + "    may_replaces: true\n")
    assert_names(refusal(path), path, 7, "may_replaces", "may_replace")


def test_may_replace_is_an_institutions_key_not_an_integrators(tmp_path):
    text = BASE + 'integrators:\n  - id: "0202239951"\n    name: integrator\n    may_replace: true\n'
    path = write(tmp_path, text)
    assert_names(refusal(path), path, 10, "may_replace")
