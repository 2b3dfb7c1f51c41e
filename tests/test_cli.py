"""The `hub` command line, as a user runs it: exit 0 good, 1 refused (CODE: message), 2 usage."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from hub.cli import cli
from tests.kit import CREATED, NOW

AT = ["--at", NOW.isoformat()]


@pytest.fixture()
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args: str, input: bytes | None = None):
        return runner.invoke(cli, list(args), input=input, catch_exceptions=False)

    return invoke


@pytest.fixture()
def signed_payment(run):
    assert run("keys", "create", "finance", "--out", "keys").exit_code == 0
    assert run("envelope", "example", "payment", "--at", CREATED.isoformat(), "-o", "p.xml").exit_code == 0
    result = run(
        "envelope",
        "sign",
        "p.xml",
        "--key",
        "keys/finance.key.pem",
        "--cert",
        "keys/finance.cert.pem",
        "-o",
        "p.signed.xml",
    )
    assert result.exit_code == 0, result.stderr
    return "p.signed.xml"


def test_keys_create_writes_a_key_and_a_certificate(run, tmp_path):
    result = run("keys", "create", "city", "--out", "k", "--type", "rsa")
    assert result.exit_code == 0
    assert (tmp_path / "k/city.key.pem").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert (tmp_path / "k/city.cert.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    again = run("keys", "create", "city", "--out", "k")
    assert again.exit_code == 2 and "already exists" in again.stderr


def test_sign_then_verify_then_validate(run, signed_payment):
    verified = run("envelope", "verify", signed_payment, "--cert", "keys/finance.cert.pem")
    assert verified.exit_code == 0
    assert verified.stdout.startswith("OK: signed by CN=finance")
    validated = run("envelope", "validate", signed_payment, *AT)
    assert validated.exit_code == 0
    assert "TAX_ASSESSMENT from 0308357159" in validated.stdout


def test_a_tampered_envelope_fails_verify_with_its_code_on_stderr(run, signed_payment, tmp_path):
    data = (tmp_path / signed_payment).read_bytes().replace(b"1234.56", b"4234.56")
    (tmp_path / "t.xml").write_bytes(data)
    result = run("envelope", "verify", "t.xml", "--cert", "keys/finance.cert.pem")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("SIGNATURE_INVALID: ")


def test_verify_with_another_certificate_names_the_unknown_signer(run, signed_payment):
    run("keys", "create", "other", "--out", "keys")
    result = run("envelope", "verify", signed_payment, "--cert", "keys/other.cert.pem")
    assert result.exit_code == 1
    assert result.stderr.startswith("UNKNOWN_SIGNER: ")


def test_validate_lists_every_problem_with_line_and_path(run, tmp_path):
    run("envelope", "example", "payment", "--at", CREATED.isoformat(), "-o", "p.xml")
    text = (tmp_path / "p.xml").read_text()
    (tmp_path / "bad.xml").write_text(text.replace("85073003328", "85073003329").replace("BE71", "BE72"))
    result = run("envelope", "validate", "bad.xml", *AT)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("SSIN_INVALID: line 11, /PublishMessage/Header/Recipient/Citizen/SSIN: ")
    assert lines[1].startswith("IBAN_INVALID: line ")
    assert "/PublishMessage/Content/Payment/IBAN" in lines[1]


def test_validate_reads_standard_input(run):
    example = run("envelope", "example", "citizen-letter", "--at", CREATED.isoformat())
    result = run("envelope", "validate", "-", *AT, input=example.stdout_bytes)
    assert result.exit_code == 0


def test_hostile_input_is_refused_not_crashed_on(run, tmp_path):
    (tmp_path / "x.xml").write_bytes(b'<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>')
    result = run("envelope", "validate", "x.xml")
    assert result.exit_code == 1
    assert result.stderr.startswith("XML_FORBIDDEN: ")


@pytest.mark.parametrize(
    "args",
    [
        ["envelope", "example", "no-such-kind"],
        ["envelope", "verify", "missing.xml", "--cert", "c.pem"],
        ["envelope", "sign", "p.xml"],
        ["envelope", "validate", "p.xml", "--at", "yesterday"],
        ["keys", "create", "../evil", "--out", "k"],
        ["nonsense"],
    ],
    ids=["unknown-kind", "missing-file", "missing-key-option", "bad-date", "bad-name", "unknown-command"],
)
def test_usage_errors_exit_2(run, args):
    run("envelope", "example", "citizen-letter", "-o", "p.xml")
    assert run(*args).exit_code == 2


def test_a_file_that_is_not_a_key_is_a_usage_error_naming_it(run, tmp_path):
    run("envelope", "example", "citizen-letter", "-o", "p.xml")
    (tmp_path / "k.pem").write_text("nope")
    result = run("envelope", "sign", "p.xml", "--key", "k.pem", "--cert", "k.pem")
    assert result.exit_code == 2
    assert "k.pem" in result.stderr
