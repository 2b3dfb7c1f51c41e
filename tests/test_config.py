"""Configuration loading: "a bad config file fails at start with a message that names the file,
the line and the problem".

Each refusal test writes a small ``senders.yaml`` or ``hub.toml`` with one mistake and checks the
EXACT file, the EXACT line and what the message says (with a "did you mean" for typos). The
documents start on line 1: the line numbers in the tests can be counted in the text.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import textwrap
import tomllib
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from hub.cli import cli
from hub.envelope import examples as ex
from hub.envelope.rules import MessageTypePolicy
from hub.errors import ConfigError
from hub.inbound.senders import AckChannel, SenderDirectory, load_senders
from hub.settings import DEFAULTS, Settings, load_settings
from hub.signing.keys import self_signed_certificate
from tests.kit import key_pair

REPO = Path(__file__).resolve().parent.parent
SHIPPED_CONFIG = REPO / "config"


# --- helpers -------------------------------------------------------------------------------


@cache
def weak_certificate_pem() -> bytes:
    """A self-signed certificate over a 1024-bit RSA key: too weak for the hub."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return self_signed_certificate(key, "weak").public_bytes(Encoding.PEM)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """A configuration folder with a good certificate, a file that is not PEM and a weak certificate."""
    config = tmp_path / "config"
    (config / "keys").mkdir(parents=True)
    (config / "keys/finance.cert.pem").write_bytes(key_pair("config-finance").certificate.public_bytes(Encoding.PEM))
    (config / "keys/integrator.cert.pem").write_bytes(
        key_pair("config-integrator").certificate.public_bytes(Encoding.PEM)
    )
    (config / "keys/notes.txt").write_text("this is not a certificate\n")
    (config / "keys/weak.cert.pem").write_bytes(weak_certificate_pem())
    return config


def write(folder: Path, text: str, name: str = "senders.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def refusal(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_senders(path)
    return caught.value


def assert_names(error: ConfigError, file: Path, line: int, *fragments: str) -> None:
    """The error names exactly this file and line, in the ``file:line: message`` form, and says each fragment."""
    message = str(error)
    assert (error.file, error.line) == (str(file), line), message
    assert message.startswith(f"{file}:{line}: "), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# One valid institution, six lines long: a line appended to it is line 7.
BASE = """\
institutions:
  - id: "0308357159"
    name: Federal tax administration
    applications: [tax-on-web]
    message_types:
      TAX_ASSESSMENT: {max_retention_months: 36}
"""


# --- senders.yaml: what loads --------------------------------------------------------------


def test_the_base_institution_of_these_tests_loads(folder):
    # Given the six-line institution the refusal tests start from
    path = write(folder, BASE)
    # When it is loaded
    directory = load_senders(path)
    # Then it is one institution with the hub's defaults where nothing is said
    finance = directory.institutions["0308357159"]
    assert finance.name == "Federal tax administration"
    assert finance.environment == "PROD"
    assert finance.applications == {"tax-on-web"}
    assert finance.message_types == {"TAX_ASSESSMENT": MessageTypePolicy(max_retention_months=36)}
    assert finance.acknowledgements == AckChannel(kind="polling")
    assert finance.certificates == () and finance.token_hashes == frozenset()
    assert directory.integrators == {}


def test_every_key_of_an_institution_and_an_integrator_is_read(folder):
    # Given an institution and an integrator that use every key
    digest = "ab" * 32
    path = write(
        folder,
        f"""\
        institutions:
          - id: "0308357159"
            name: Federal tax administration
            logo_url: https://finances.example.be/logo.svg
            contact: {{email: ebox@finances.example.be, phone: "+32 2 572 57 57"}}
            environment: INT
            applications: [tax-on-web, myminfin]
            certificates:
              - file: keys/finance.cert.pem
            message_types:
              TAX_ASSESSMENT: {{min_retention_months: 3, max_retention_months: 120, default_retention_months: 24}}
              CERTIFICATE: {{unlimited_allowed: true}}
            acknowledgements: {{channel: webhook, url: "https://finances.example.be/acks"}}
            api_token_sha256: ["{digest}"]
        integrators:
          - id: "0202239951"
            name: Software house
            mandates: ["0308357159"]
            certificates:
              - file: keys/integrator.cert.pem
            acknowledgements: {{channel: amqp}}
        """,
    )
    # When it is loaded
    directory = load_senders(path)
    # Then every value arrives where the hub reads it
    finance = directory.institutions["0308357159"]
    assert finance.logo_url == "https://finances.example.be/logo.svg"
    assert finance.contact == {"email": "ebox@finances.example.be", "phone": "+32 2 572 57 57"}
    assert finance.environment == "INT"
    assert finance.applications == {"tax-on-web", "myminfin"}
    assert finance.message_types["TAX_ASSESSMENT"] == MessageTypePolicy(
        min_retention_months=3, max_retention_months=120, default_retention_months=24
    )
    assert finance.message_types["CERTIFICATE"].unlimited_allowed is True
    assert finance.acknowledgements == AckChannel(kind="webhook", url="https://finances.example.be/acks")
    assert finance.token_hashes == {digest}
    assert [c.certificate for c in finance.certificates] == [key_pair("config-finance").certificate]
    integrator = directory.integrators["0202239951"]
    assert integrator.mandates == {"0308357159"}
    assert integrator.acknowledgements == AckChannel(kind="amqp")
    assert [c.party for c in directory.trust_store()] == ["0308357159", "0202239951"]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("# every sender commented out\n#institutions: []\n", id="only-comments"),
        pytest.param("institutions: []\nintegrators: []\n", id="empty-lists"),
    ],
)
def test_a_file_without_senders_loads_as_an_empty_directory(folder, text):
    # Given a senders.yaml that registers nobody (a fresh installation, every entry commented out)
    path = write(folder, text)
    # When it is loaded
    directory = load_senders(path)
    # Then the hub starts with nobody allowed to send: every envelope is refused as from an
    # unknown sender, which is what an operator who has not registered anyone expects
    assert directory == SenderDirectory({}, {})


def test_a_certificate_window_takes_dates_quoted_or_not_and_reads_them_as_utc(folder):
    # Given certificate windows written as a bare date (YAML reads it as a date), a quoted date
    # and a date-time without a zone
    path = write(
        folder,
        BASE
        + """\
    certificates:
      - file: keys/finance.cert.pem
        valid_from: 2026-12-01
        valid_until: "2027-06-30"
      - file: keys/finance.cert.pem
        valid_from: 2026-12-01 08:30:00
        valid_until: "2027-06-30T12:00:00+02:00"
""",
    )
    # When it is loaded
    first, second = load_senders(path).institutions["0308357159"].certificates
    # Then each narrows the certificate's window, in UTC unless a zone is given
    assert (first.not_before, first.not_after) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 6, 30, tzinfo=UTC),
    )
    assert (second.not_before, second.not_after) == (
        datetime(2026, 12, 1, 8, 30, tzinfo=UTC),
        datetime(2027, 6, 30, 10, 0, tzinfo=UTC),
    )


def test_certificate_paths_are_relative_to_the_senders_file_not_the_working_directory(folder, tmp_path, monkeypatch):
    # Given a senders.yaml naming keys/finance.cert.pem, and the hub started from another folder
    path = write(folder, BASE + "    certificates:\n      - file: keys/finance.cert.pem\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # When it is loaded
    (certificate,) = load_senders(path).institutions["0308357159"].certificates
    # Then the certificate is found next to the senders file
    assert certificate.certificate == key_pair("config-finance").certificate


# --- senders.yaml: refusals, with file, line and problem -----------------------------------


@pytest.mark.parametrize(
    ("text", "line", "fragments"),
    [
        pytest.param(
            """\
            institutions:
              - id: "0308357159"
                name: Federal tax administration
               applications: [tax-on-web]
            """,
            4,
            ["not valid YAML", "expected <block end>"],
            id="bad-indentation",
        ),
        pytest.param(
            """\
            institutions:
              - id: "0308357159"
                applications: [tax-on-web, myminfin
                name: Federal tax administration
            """,
            # The parser trips on line 4; the message says where the bracket was opened.
            4,
            ["not valid YAML", "expected ',' or ']'", "flow sequence that starts on line 3"],
            id="unclosed-bracket",
        ),
        pytest.param(
            """\
            institutions:
              - id: "0308357159"
                name: "Federal tax administration
            """,
            4,
            ["not valid YAML", "quoted scalar that starts on line 3"],
            id="unclosed-quote",
        ),
        pytest.param("institutions:\n\t- id: x\n", 2, ["not valid YAML", "'\\t'"], id="tab"),
        pytest.param(
            """\
            - id: "0308357159"
              name: Federal tax administration
            """,
            1,
            ["the file must hold a mapping (key: value) at the top"],
            id="top-level-list",
        ),
        pytest.param("just some words\n", 1, ["must hold a mapping"], id="top-level-text"),
        pytest.param("institutions: []\n2024: x\n", 2, ["keys must be text, not 2024"], id="number-as-key"),
    ],
)
def test_a_file_that_is_not_usable_yaml_is_refused_at_the_line_of_the_problem(folder, text, line, fragments):
    # Given a senders.yaml that is not valid YAML, or not a mapping
    path = write(folder, text)
    # When it is loaded
    error = refusal(path)
    # Then the error names the file and the line where the problem is
    assert_names(error, path, line, *fragments)


@pytest.mark.parametrize(
    ("text", "line", "fragments"),
    [
        pytest.param(
            """\
            institution:
              - id: "0308357159"
            """,
            1,
            ["unknown key 'institution'; did you mean 'institutions'?"],
            id="top-level",
        ),
        pytest.param(
            "institutions: []\nsenders: []\n",
            2,
            ["unknown key 'senders'; known keys: institutions, integrators"],
            id="top-level-no-near-match",
        ),
        pytest.param(
            """\
            institutions:
              - id: "0308357159"
                name: Federal tax administration
                aplications: [tax-on-web]
                message_types:
                  TAX_ASSESSMENT: {}
            """,
            4,
            ["institutions[0].aplications: unknown key 'aplications'; did you mean 'applications'?"],
            id="institution",
        ),
        pytest.param(
            """\
            institutions:
              - id: "0308357159"
                nmae: Federal tax administration
                applications: [tax-on-web]
                message_types:
                  TAX_ASSESSMENT: {}
            """,
            3,
            ["unknown key 'nmae'; did you mean 'name'?"],
            id="institution-required-key",
        ),
        pytest.param(
            """\
            institutions:
              - id: "0308357159"
                name: Federal tax administration
                applications: [tax-on-web]
                message_type:
                  TAX_ASSESSMENT: {}
            """,
            5,
            ["unknown key 'message_type'; did you mean 'message_types'?"],
            id="institution-message-types",
        ),
        pytest.param(
            """\
            institutions:
              - id: "0308357159"
                name: Federal tax administration
                applications: [tax-on-web]
                message_types:
                  TAX_ASSESSMENT:
                    max_retention_month: 36
            """,
            7,
            [
                "institutions[0].message_types.TAX_ASSESSMENT.max_retention_month: "
                "unknown key 'max_retention_month'; did you mean 'max_retention_months'?"
            ],
            id="message-type",
        ),
        pytest.param(
            BASE + "    acknowledgements:\n      chanel: amqp\n",
            8,
            ["institutions[0].acknowledgements.chanel: unknown key 'chanel'; did you mean 'channel'?"],
            id="acknowledgements",
        ),
        pytest.param(
            BASE + "    certificates:\n      - file: keys/finance.cert.pem\n        valid_untill: 2027-06-30\n",
            9,
            ["institutions[0].certificates[0].valid_untill: unknown key 'valid_untill'; did you mean 'valid_until'?"],
            id="certificate",
        ),
        pytest.param(
            BASE + "    certificates:\n      - flie: keys/finance.cert.pem\n",
            8,
            ["unknown key 'flie'; did you mean 'file'?"],
            id="certificate-required-key",
        ),
        pytest.param(
            BASE + 'integrators:\n  - id: "0202239951"\n    name: Software house\n    mandate: ["0308357159"]\n',
            10,
            ["integrators[0].mandate: unknown key 'mandate'; did you mean 'mandates'?"],
            id="integrator",
        ),
    ],
)
def test_an_unknown_key_is_refused_with_a_suggestion(folder, text, line, fragments):
    # Given a senders.yaml with a misspelt key
    path = write(folder, text)
    # When it is loaded
    error = refusal(path)
    # Then the error is on the misspelt key's line and suggests the key meant (not "X is required")
    assert_names(error, path, line, *fragments)


@pytest.mark.parametrize(
    ("text", "line", "fragments"),
    [
        pytest.param(
            """\
            institutions:
              - id: "0308357159"
                name: Federal tax administration
                applications: [tax-on-web]
                name: Tax
            """,
            5,
            ["'name' is given twice"],
            id="key-twice",
        ),
        pytest.param(
            BASE + "institutions: []\n",
            7,
            ["'institutions' is given twice"],
            id="section-twice",
        ),
        pytest.param(
            """\
            institutions:
              - id: "0308357159"
                name: Federal tax administration
                applications: tax-on-web
                message_types:
                  TAX_ASSESSMENT: {}
            """,
            4,
            ["institutions[0].applications: must be list, not str ('tax-on-web')"],
            id="applications-as-text",
        ),
        pytest.param(
            """\
            institutions:
              - id: "0308357159"
                name: Federal tax administration
                applications: []
                message_types:
                  TAX_ASSESSMENT: {}
            """,
            4,
            ["institutions[0].applications: list at least one application id"],
            id="applications-empty",
        ),
        pytest.param(
            """\
            institutions:
              - id: "0308357159"
                name: Federal tax administration
                applications: [tax-on-web]
                message_types:
                  TAX_ASSESSMENT: {max_retention_months: "36"}
            """,
            6,
            ["institutions[0].message_types.TAX_ASSESSMENT.max_retention_months: must be int, not str ('36')"],
            id="months-as-text",
        ),
        pytest.param(
            """\
            institutions:
              - id: "0308357159"
                name: Federal tax administration
                applications: [tax-on-web]
                message_types:
                  TAX_ASSESSMENT:
                    unlimited_allowed: "yes"
            """,
            7,
            ["TAX_ASSESSMENT.unlimited_allowed: must be bool, not str ('yes')"],
            id="flag-as-text",
        ),
        pytest.param(
            """\
            institutions:
              - id: "0308357159"
                name: Federal tax administration
                applications: [tax-on-web]
                message_types: [TAX_ASSESSMENT]
            """,
            5,
            ["institutions[0].message_types: must be dict, not list (['TAX_ASSESSMENT'])"],
            id="message-types-as-list",
        ),
        pytest.param(
            """\
            institutions:
              - id: "0308357159"
                name: Federal tax administration
                applications: [tax-on-web]
                message_types:
                  TAX_ASSESSMENT: 36
            """,
            6,
            ["institutions[0].message_types.TAX_ASSESSMENT: must be a mapping"],
            id="message-type-not-a-mapping",
        ),
        pytest.param(
            "institutions:\n  # - id: ...\n",
            1,
            ["institutions: must be list, but is empty"],
            id="institutions-left-empty",
        ),
        pytest.param(
            BASE + '  - "0206731645"\n',
            7,
            ["institutions[1]: each entry must be a mapping"],
            id="entry-not-a-mapping",
        ),
    ],
)
def test_a_key_twice_or_a_value_of_the_wrong_type_is_refused(folder, text, line, fragments):
    # Given a senders.yaml with a key given twice or a value of the wrong kind
    path = write(folder, text)
    # When it is loaded
    error = refusal(path)
    # Then the error is on that key's line and says what was expected and what was found
    assert_names(error, path, line, *fragments)


@pytest.mark.parametrize(
    ("text", "line", "fragments"),
    [
        pytest.param(
            """\
            institutions:
              - id: "0308357159"
                applications: [tax-on-web]
                message_types:
                  TAX_ASSESSMENT: {}
            """,
            2,
            ["institutions[0]: 'name' is required"],
            id="name",
        ),
        pytest.param(
            """\
            institutions:
              - name: Federal tax administration
                applications: [tax-on-web]
            """,
            2,
            ["institutions[0]: 'id' is required"],
            id="id",
        ),
        pytest.param(
            BASE + '  - id: "0206731645"\n    name: Social security\n    applications: [pensions]\n',
            7,
            ["institutions[1]: 'message_types' is required"],
            id="message_types",
        ),
        pytest.param(
            """\
            institutions:
              - id: "0308357159"
                name: Federal tax administration
                applications: [tax-on-web]
                message_types: {}
            """,
            5,
            ["institutions[0].message_types: list at least one message type"],
            id="message_types-empty",
        ),
        pytest.param(
            BASE + "    certificates:\n      - valid_until: 2027-06-30\n",
            8,
            ["institutions[0].certificates[0]: 'file' is required"],
            id="certificate-file",
        ),
        pytest.param(
            BASE + 'integrators:\n  - id: "0202239951"\n    mandates: []\n',
            8,
            ["integrators[0]: 'name' is required"],
            id="integrator-name",
        ),
    ],
)
def test_a_missing_required_key_is_refused_at_its_entry(folder, text, line, fragments):
    # Given an entry without a key it must have
    path = write(folder, text)
    # When it is loaded
    error = refusal(path)
    # Then the error is on the entry's first line and names the missing key
    assert_names(error, path, line, *fragments)


@pytest.mark.parametrize(
    ("text", "line", "fragments"),
    [
        pytest.param(
            """\
            institutions:
              - name: Federal tax administration
                id: "0308357158"
            """,
            3,
            ["institutions[0].id: '0308357158' is not a valid enterprise (CBE) number", "check digits"],
            id="cbe-check-digits",
        ),
        pytest.param(
            """\
            institutions:
              - name: Federal tax administration
                id: "BE0308357159"
            """,
            3,
            ["'BE0308357159' is not an enterprise (CBE) number: 10 digits"],
            id="cbe-form",
        ),
        pytest.param(
            """\
            institutions:
              - name: Social security
                id: 0206731645
            """,
            # Unquoted, YAML reads it as the octal number 35369893: the message must not show
            # that number as if the user had written it, but tell them to quote.
            3,
            ["institutions[0].id: write enterprise (CBE) numbers in quotes", "octal"],
            id="cbe-unquoted-octal",
        ),
        pytest.param(
            BASE
            + """\
  - id: "0308357159"
    name: Federal tax administration, again
""",
            7,
            ["institutions[1].id: institution 0308357159 is listed twice"],
            id="institution-twice",
        ),
        pytest.param(
            BASE
            + """\
integrators:
  - id: "0308357159"
    name: The tax administration as an integrator
""",
            8,
            ["integrators[0].id: 0308357159 is listed twice"],
            id="integrator-is-an-institution",
        ),
        pytest.param(
            BASE
            + """\
integrators:
  - id: "0202239951"
    name: Software house
    mandates: ["0207373429"]
""",
            10,
            ["integrators[0].mandates: mandate for 0207373429, which is not a listed institution"],
            id="mandate-for-unknown-institution",
        ),
        pytest.param(
            BASE + "    environment: TEST\n",
            7,
            ["institutions[0].environment: must be INT or PROD"],
            id="environment",
        ),
        pytest.param(
            BASE + "    acknowledgements:\n      channel: webhook\n      url: http://finances.example.be/acks\n",
            9,
            ["institutions[0].acknowledgements.url: a webhook needs an https:// url"],
            id="webhook-over-http",
        ),
        pytest.param(
            BASE + "    acknowledgements:\n      channel: webhook\n",
            8,
            ["institutions[0].acknowledgements.url: a webhook needs an https:// url"],
            id="webhook-without-url",
        ),
        pytest.param(
            BASE + "    acknowledgements:\n      channel: email\n",
            8,
            ["institutions[0].acknowledgements.channel: must be one of amqp, webhook, polling"],
            id="unknown-channel",
        ),
        pytest.param(
            BASE + "    acknowledgements:\n      channel: amqp\n      batch: 0\n",
            9,
            ["institutions[0].acknowledgements.batch: must be between 1 (one signed document per event) and 10000"],
            id="batch-of-none",
        ),
        pytest.param(
            BASE + "    acknowledgements:\n      channel: polling\n      batch: 100\n",
            9,
            ["institutions[0].acknowledgements.batch: applies to amqp and webhook"],
            id="batch-on-polling",
        ),
        pytest.param(
            BASE + "    api_token_sha256:\n      - " + "AB" * 32 + "\n",
            7,
            ["institutions[0].api_token_sha256: each entry must be the SHA-256 of a token", "hub keys token"],
            id="token-hash-upper-case",
        ),
        pytest.param(
            BASE + "    api_token_sha256: [secret-token]\n",
            7,
            ["api_token_sha256: each entry must be the SHA-256 of a token, 64 lower-case hex digits"],
            id="token-instead-of-hash",
        ),
        pytest.param(
            """\
            institutions:
              - id: "0308357159"
                name: Federal tax administration
                applications: [tax-on-web]
                message_types:
                  GENERAL_INFORMATION: {}
                  TAX_ASSESSMENT: {min_retention_months: 40, max_retention_months: 36}
            """,
            7,
            [
                "institutions[0].message_types.TAX_ASSESSMENT: retention must satisfy 0 <= min <= default <= max",
                "min 40",
                "max 36",
            ],
            id="retention-min-above-max",
        ),
        pytest.param(
            """\
            institutions:
              - id: "0308357159"
                name: Federal tax administration
                applications: [tax-on-web]
                message_types:
                  TAX_ASSESSMENT: {max_retention_months: 12, default_retention_months: 24}
            """,
            6,
            ["TAX_ASSESSMENT: retention must satisfy", "default 24, max 12"],
            id="retention-default-above-max",
        ),
        pytest.param(
            """\
            institutions:
              - id: "0308357159"
                name: Federal tax administration
                applications: [tax-on-web]
                message_types:
                  TAX_ASSESSMENT: {min_retention_months: 6, default_retention_months: 3}
            """,
            6,
            ["TAX_ASSESSMENT: retention must satisfy", "min 6, default 3"],
            id="retention-default-below-min",
        ),
    ],
)
def test_a_value_that_makes_no_sense_is_refused_on_its_line(folder, text, line, fragments):
    # Given a senders.yaml whose values are well-typed but wrong
    path = write(folder, text)
    # When it is loaded
    error = refusal(path)
    # Then the error is on the line of the wrong value and says what is wrong with it
    assert_names(error, path, line, *fragments)


@pytest.mark.parametrize(
    ("certificate", "fragments"),
    [
        pytest.param("keys/missing.cert.pem", ["missing.cert.pem", "cannot read: No such file"], id="missing"),
        pytest.param("keys/notes.txt", ["notes.txt", "not a PEM certificate"], id="not-pem"),
        pytest.param("keys/weak.cert.pem", ["RSA keys must have at least 2048 bits (this one: 1024)"], id="rsa-1024"),
        pytest.param("keys", ["cannot read"], id="a-folder"),
    ],
)
def test_an_unusable_certificate_is_refused_on_its_file_line(folder, certificate, fragments):
    # Given an institution whose certificate (line 8) is missing, not PEM or too weak
    path = write(folder, BASE + f"    certificates:\n      - file: {certificate}\n")
    # When it is loaded
    error = refusal(path)
    # Then the error names senders.yaml, the line of the file entry and the problem with the file
    assert_names(error, path, 8, "institutions[0].certificates[0].file: certificate", *fragments)


WHERE = "institutions[0].certificates[0].valid_until: "


@pytest.mark.parametrize(
    ("value", "fragments"),
    [
        pytest.param("next year", [WHERE, "'next year' is not an ISO 8601 date or date-time"], id="words"),
        pytest.param('"2027-02-30"', [WHERE, "'2027-02-30' is not an ISO 8601 date"], id="no-such-day"),
        # unquoted, YAML itself reads it as a date, and there is no 30 February
        pytest.param("2027-02-30", ["'2027-02-30' is not a valid timestamp: day is out"], id="no-such-day-bare"),
        pytest.param("12", [WHERE, "must be str or date, not int (12)"], id="a-number"),
    ],
)
def test_a_certificate_window_that_is_not_a_date_is_refused(folder, value, fragments):
    # Given a certificate whose valid_until (line 9) is not a date
    certificate = f"    certificates:\n      - file: keys/finance.cert.pem\n        valid_until: {value}\n"
    path = write(folder, BASE + certificate)
    # When it is loaded
    error = refusal(path)
    # Then the error is on the valid_until line
    assert_names(error, path, 9, *fragments)


def test_a_senders_file_that_cannot_be_read_is_named(folder):
    # Given no senders.yaml at all
    path = folder / "senders.yaml"
    # When it is loaded
    error = refusal(path)
    # Then the error names the file (there is no line to name)
    assert error.file == str(path) and error.line is None
    assert str(error) == f"{path}: cannot read: No such file or directory"


# --- hub.toml and HUB_* variables ----------------------------------------------------------


def settings_refusal(folder: Path, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_settings(folder, environ or {})
    return caught.value


def test_the_shipped_hub_toml_loads_and_says_what_the_built_in_defaults_say(tmp_path):
    # Given the shipped config/hub.toml, and a folder with no hub.toml at all
    empty = tmp_path / "empty"
    empty.mkdir()
    # When both are loaded without HUB_* variables
    shipped, built_in = load_settings(SHIPPED_CONFIG, {}), load_settings(empty, {})
    # Then they are the same settings
    assert dataclasses.replace(shipped, config_dir=empty) == built_in
    assert shipped.raw == DEFAULTS
    # And the annotated example documents every setting there is
    written = tomllib.loads((SHIPPED_CONFIG / "hub.toml").read_text(encoding="utf-8"))
    assert {s: set(v) for s, v in written.items()} == {s: set(v) for s, v in DEFAULTS.items()}


def test_the_built_in_defaults_are_the_settings_class_defaults(tmp_path):
    # Given no hub.toml and no variables
    # When the settings are loaded
    settings = load_settings(tmp_path, {})
    # Then they are the Settings class's own defaults (the two lists cannot drift apart)
    assert dataclasses.replace(settings, raw={}) == Settings(config_dir=tmp_path)


@pytest.mark.parametrize(
    ("text", "line", "fragments"),
    [
        pytest.param(
            '[http]\nhost = "0.0.0.0"\nprot = 8443\n',
            3,
            ["http.prot: unknown key 'prot'; did you mean 'port'?"],
            id="unknown-key",
        ),
        pytest.param(
            '[hub]\nenvironment = "INT"\n\n[htpp]\nport = 8443\n',
            4,
            ["htpp: unknown key 'htpp'; did you mean 'http'?"],
            id="unknown-section",
        ),
        pytest.param(
            'environment = "INT"\n',
            1,
            [
                "unknown key 'environment'; known keys: broker, database, http, hub, lifecycle, limits, log, metrics, "
                "retry, signing"
            ],
            id="key-outside-a-section",
        ),
        pytest.param("[retry]\nattempts = 0\n", 2, ["retry.attempts: must be between 1 and 100, not 0"], id="no-try"),
        pytest.param(
            "[retry]\nfirst_delay_s = 10\nmax_delay_s = 5\n",
            3,
            ["retry.max_delay_s: must be at least first_delay_s (10)"],
            id="max-below-first",
        ),
        pytest.param("[retry]\nfactor = 0.5\n", 2, ["retry.factor: must be at least 1"], id="shrinking-waits"),
        pytest.param("[retry]\njitter = 2\n", 2, ["retry.jitter: must be between 0 and 1"], id="jitter"),
        pytest.param(
            '[hub]\nenvironment = "INT"\n\n[http]\nport = "8443"\n',
            5,
            ["http.port: must be int, not str ('8443')"],
            id="port-as-text",
        ),
        pytest.param(
            '[broker]\nconfirm_timeout_s = "10s"\n',
            2,
            ["broker.confirm_timeout_s: must be int or float, not str ('10s')"],
            id="seconds-as-text",
        ),
        pytest.param("http = 8443\n", 1, ["http: must be dict, not int (8443)"], id="section-as-value"),
        pytest.param(
            '[hub]\nenvironment = "TEST"\n',
            2,
            ["hub.environment: must be INT or PROD, not 'TEST'"],
            id="environment",
        ),
        pytest.param("[http]\nport = \n", 2, ["not valid TOML: Invalid value"], id="missing-value"),
        pytest.param("[http\nport = 8443\n", 1, ["not valid TOML", "table declaration"], id="unclosed-table"),
        pytest.param("[http]\nport = 1\nport = 2\n", 3, ["not valid TOML"], id="key-twice"),
    ],
)
def test_a_bad_hub_toml_is_refused_with_file_and_line(tmp_path, text, line, fragments):
    # Given a hub.toml with one mistake
    path = write(tmp_path, text, "hub.toml")
    # When the settings are loaded
    error = settings_refusal(tmp_path)
    # Then the error names hub.toml, the line and the problem
    assert_names(error, path, line, *fragments)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("HUB_HTTP_PORT", "abc", "environment variable HUB_HTTP_PORT='abc' must be a whole number"),
        ("HUB_HTTP_TIMEOUT_S", "30s", "environment variable HUB_HTTP_TIMEOUT_S='30s' must be a number"),
        ("HUB_ENVIRONMENT", "TEST", "environment variable HUB_ENVIRONMENT='TEST' must be INT or PROD"),
    ],
)
def test_a_bad_hub_variable_is_refused_naming_the_variable_not_a_file(tmp_path, variable, value, message):
    # Given a valid hub.toml and a HUB_* variable with a bad value
    write(tmp_path, '[hub]\nenvironment = "PROD"\n\n[http]\nport = 8080\n', "hub.toml")
    # When the settings are loaded
    error = settings_refusal(tmp_path, {variable: value})
    # Then the error names the variable and its value, and blames no file
    assert str(error) == message
    assert error.file is None and error.line is None


def test_a_hub_variable_wins_over_the_file(tmp_path):
    # Given a hub.toml that sets a port, an environment and a database
    write(
        tmp_path,
        """\
        [hub]
        environment = "PROD"
        [database]
        url = "postgresql://hub@db/hub"
        [http]
        port = 9000
        timeout_s = 30
        """,
        "hub.toml",
    )
    # When HUB_* variables set other values
    settings = load_settings(
        tmp_path,
        {
            "HUB_ENVIRONMENT": "INT",
            "HUB_DATABASE_URL": "postgresql://hub@other/hub",
            "HUB_HTTP_PORT": "9100",
            "HUB_HTTP_TIMEOUT_S": "2.5",
        },
    )
    # Then the variables win, converted to the setting's type
    assert settings.environment == "INT"
    assert settings.database_url == "postgresql://hub@other/hub"
    assert settings.http_port == 9100
    assert settings.http_timeout_s == 2.5
    # And what no variable overrides comes from the file (an int where a float is expected becomes a float)
    assert load_settings(tmp_path, {}).http_timeout_s == 30.0


def test_unknown_hub_variables_are_ignored(tmp_path):
    # Given variables that look like the hub's but are not settings (HUB_URL is `hub send`'s)
    environ = {"HUB_URL": "http://hub:8080", "HUB_HTTP_PROT": "1", "HUB_NOTHING": "x", "HUBBUB": "y"}
    # When the settings are loaded
    settings = load_settings(tmp_path, environ)
    # Then they change nothing
    assert settings == load_settings(tmp_path, {})


def test_the_config_folder_comes_from_hub_config_dir(tmp_path):
    # Given HUB_CONFIG_DIR naming a folder whose hub.toml sets the port
    write(tmp_path, "[http]\nport = 8443\n", "hub.toml")
    # When the settings are loaded without naming a folder
    settings = load_settings(None, {"HUB_CONFIG_DIR": str(tmp_path)})
    # Then that folder is the configuration folder, and senders.yaml is read from it
    assert settings.http_port == 8443
    assert settings.senders_file == tmp_path / "senders.yaml"


def test_relative_certificate_and_key_paths_resolve_against_the_config_folder(tmp_path):
    # Given a hub.toml naming the hub's key and TLS files, relative and absolute
    absolute = tmp_path / "elsewhere/ca.pem"
    write(
        tmp_path,
        f"""\
        [signing]
        key = "keys/hub.key.pem"
        certificate = "keys/hub.cert.pem"
        [http]
        tls_key = "tls/key.pem"
        tls_certificate = "tls/cert.pem"
        client_ca = "{absolute}"
        """,
        "hub.toml",
    )
    # When the settings are loaded, and again with a variable naming another relative file
    settings = load_settings(tmp_path, {})
    overridden = load_settings(tmp_path, {"HUB_SIGNING_KEY": "other/hub.key.pem"})
    # Then relative paths are inside the configuration folder, absolute ones are kept
    assert settings.signing_key == tmp_path / "keys/hub.key.pem"
    assert settings.signing_certificate == tmp_path / "keys/hub.cert.pem"
    assert settings.tls_key == tmp_path / "tls/key.pem"
    assert settings.tls_certificate == tmp_path / "tls/cert.pem"
    assert settings.client_ca == absolute
    assert overridden.signing_key == tmp_path / "other/hub.key.pem"
    # And an empty path means "none"
    assert load_settings(tmp_path, {"HUB_SIGNING_KEY": "", "HUB_SIGNING_CERTIFICATE": ""}).signing_key is None


# --- end to end: `hub serve` -----------------------------------------------------------------


@pytest.fixture()
def served(monkeypatch) -> list[Settings]:
    """The settings `hub serve` would start uvicorn with: the server is replaced, a test can never hang in it."""
    calls: list[Settings] = []

    def serve(settings: Settings, *, workers: int | None = None, reload: bool = False) -> None:
        calls.append(settings)

    monkeypatch.setattr("hub.inbound.server.serve", serve)
    return calls


@pytest.fixture()
def run_hub(served, tmp_path, monkeypatch):
    """Run the `hub` command with HUB_CONFIG_DIR = the given folder and HUB_DATA_DIR in tmp_path."""
    for name in [n for n in os.environ if n.startswith("HUB_")]:
        monkeypatch.delenv(name)  # the developer's own HUB_* variables must not leak in
    monkeypatch.chdir(tmp_path)

    def invoke(config: Path, *args: str):  # type: ignore[no-untyped-def]
        env = {"HUB_CONFIG_DIR": str(config), "HUB_DATA_DIR": str(tmp_path / "var")}
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    return invoke


def test_hub_serve_with_a_broken_senders_file_exits_2_naming_the_file_and_line(run_hub, served, folder, tmp_path):
    # Given a configuration folder whose senders.yaml has a typo on line 4
    write(
        folder,
        """\
        institutions:
          - id: "0308357159"
            name: Federal tax administration
            aplications: [tax-on-web]
            message_types:
              TAX_ASSESSMENT: {}
        """,
    )
    # When `hub serve` starts
    result = run_hub(folder, "serve")
    # Then it exits 2 with the file, the line and the fix, before any server or database exists
    assert result.exit_code == 2, result.output
    assert f"{folder / 'senders.yaml'}:4: " in result.stderr
    assert "did you mean 'applications'?" in result.stderr
    assert served == []
    assert not (tmp_path / "var").exists()


def test_hub_serve_with_a_broken_hub_toml_exits_2_naming_the_file_and_line(run_hub, served, folder):
    # Given a good senders.yaml and a hub.toml with a typo on line 3
    write(folder, BASE)
    write(folder, '[http]\nhost = "0.0.0.0"\nprot = 8443\n', "hub.toml")
    # When `hub serve` starts
    result = run_hub(folder, "serve")
    # Then it exits 2 naming hub.toml:3
    assert result.exit_code == 2, result.output
    assert f"{folder / 'hub.toml'}:3: http.prot: unknown key 'prot'; did you mean 'port'?" in result.stderr
    assert served == []


def test_hub_serve_without_a_senders_file_says_to_create_one(run_hub, served, tmp_path):
    # Given an empty configuration folder
    config = tmp_path / "config"
    config.mkdir()
    # When `hub serve` starts
    result = run_hub(config, "serve")
    # Then it exits 2 telling the operator to copy the example
    assert result.exit_code == 2
    assert f"{config / 'senders.yaml'}: no senders file: copy config/senders.yaml" in result.stderr
    assert served == []


@pytest.fixture()
def shipped(run_hub, tmp_path) -> Path:
    """A copy of the shipped config folder with a key pair for each of its four organisations."""
    config = tmp_path / "shipped-config"
    shutil.copytree(SHIPPED_CONFIG, config, ignore=shutil.ignore_patterns("keys", "*.key.pem"))
    for organisation in (ex.FINANCE, ex.SOCIAL, ex.CITY, ex.INTEGRATOR):
        created = run_hub(config, "keys", "create", organisation, "--out", str(config / "keys"))
        assert created.exit_code == 0, created.output
    return config


def test_the_shipped_senders_yaml_loads_once_its_keys_exist(shipped):
    # Given the shipped senders.yaml and a key pair for each organisation it names
    # When it is loaded
    directory = load_senders(shipped / "senders.yaml")
    # Then it registers the three institutions and the integrator, each with its certificate
    assert set(directory.institutions) == {ex.FINANCE, ex.SOCIAL, ex.CITY}
    assert set(directory.integrators) == {ex.INTEGRATOR}
    assert directory.integrators[ex.INTEGRATOR].mandates == {ex.CITY}
    assert sorted(c.party for c in directory.trust_store()) == sorted([ex.FINANCE, ex.SOCIAL, ex.CITY, ex.INTEGRATOR])
    assert {c.subject for c in directory.trust_store()} == {
        f"CN={org}" for org in (ex.FINANCE, ex.SOCIAL, ex.CITY, ex.INTEGRATOR)
    }
    # And the retention bounds and channels it annotates
    finance = directory.institutions[ex.FINANCE]
    assert finance.message_types["GENERAL_INFORMATION"] == MessageTypePolicy(
        max_retention_months=12, default_retention_months=6
    )
    assert finance.message_types["TAX_ASSESSMENT"] == MessageTypePolicy(max_retention_months=36)
    assert directory.institutions[ex.SOCIAL].acknowledgements == AckChannel(kind="amqp")
    assert directory.institutions[ex.CITY].message_types["INFORMATION_REQUEST"] == MessageTypePolicy(
        max_retention_months=6, default_retention_months=6
    )


def test_hub_serve_with_the_shipped_configuration_gets_as_far_as_the_server(run_hub, served, shipped, tmp_path):
    # Given the shipped configuration with its keys
    # When `hub serve` starts (the server itself replaced by a recorder)
    result = run_hub(shipped, "serve", "--port", "8181")
    # Then the configuration passes and the server is asked to start with it
    assert result.exit_code == 0, result.output
    (settings,) = served
    assert (settings.config_dir, settings.http_port, settings.environment) == (shipped, 8181, "PROD")
    assert (tmp_path / "var/hub.db").exists()


def test_the_retry_policy_comes_from_hub_toml_and_hub_retry_variables(tmp_path):
    # Given the shipped defaults: eight tries, waits from 1 s growing 2.5 times, at most 5 minutes
    policy = load_settings(tmp_path, environ={}).redelivery
    assert (policy.attempts, policy.start, policy.factor, policy.max, policy.jitter) == (8, 1.0, 2.5, 300.0, 0.2)
    # When an operator shortens it in hub.toml and a variable overrides one key
    write(tmp_path, "[retry]\nattempts = 4\nfirst_delay_s = 0.5\nfactor = 2\n", "hub.toml")
    policy = load_settings(tmp_path, environ={"HUB_RETRY_MAX_DELAY_S": "3"}).redelivery
    # Then the consume loops wait 0.5, 1, 2 s between the four tries, never more than 3 s (before jitter)
    assert policy.attempts == 4 and policy.max == 3.0
    for failures, wait in ((1, 0.5), (2, 1.0), (3, 2.0), (6, 3.0)):
        assert wait <= policy.delay(failures) <= wait * 1.2, failures
    # And a variable that makes the policy impossible is refused at start
    with pytest.raises(ConfigError, match=r"jitter must be between 0 and 1"):
        load_settings(tmp_path, environ={"HUB_RETRY_JITTER": "5"})


def test_the_claim_check_threshold_and_the_public_url_are_checked_and_the_url_has_a_sensible_default(tmp_path):
    # Given no public_url, the door's address stands in (any-address binds are reached on loopback)
    settings = load_settings(tmp_path, {"HUB_HTTP_HOST": "0.0.0.0", "HUB_HTTP_PORT": "9000"})
    assert settings.effective_public_url == "http://127.0.0.1:9000"
    assert settings.claim_check_bytes == 256 * 1024
    # And a public_url given is used as is, without a trailing slash
    given = load_settings(tmp_path, {"HUB_HTTP_PUBLIC_URL": "https://hub.example.be/"})
    assert given.effective_public_url == "https://hub.example.be"
    # When a value makes no sense, in the file or in a variable, it is refused naming the key
    (tmp_path / "hub.toml").write_text("[broker]\nclaim_check_bytes = -1\n")
    assert "hub.toml:2: broker.claim_check_bytes: must be at least 0" in str(settings_refusal(tmp_path))
    (tmp_path / "hub.toml").unlink()
    assert "public_url must start with http:// or https://" in str(
        settings_refusal(tmp_path, {"HUB_HTTP_PUBLIC_URL": "hub.example.be"})
    )


def test_the_gather_wait_is_a_setting_within_a_second(tmp_path):
    assert load_settings(tmp_path, {}).gather_s == 0.05
    assert load_settings(tmp_path, {"HUB_BROKER_GATHER_S": "0"}).gather_s == 0.0  # no wait: lowest latency
    (tmp_path / "hub.toml").write_text("[broker]\ngather_s = 2.5\n")
    assert "hub.toml:2: broker.gather_s: must be between 0 and 1 second" in str(settings_refusal(tmp_path))
    (tmp_path / "hub.toml").write_text("[broker]\nkeep_sent_hours = -1\n")
    assert "hub.toml:2: broker.keep_sent_hours: must be at least 0" in str(settings_refusal(tmp_path))
