"""Every example envelope validates, signs and verifies; the files in examples/ are current."""

from __future__ import annotations

from pathlib import Path

import pytest
import xmlschema

from hub.envelope import examples as ex
from hub.envelope.builder import build_envelope, to_bytes
from hub.envelope.schema import schema_dir
from tests.kit import CREATED, NOW, example

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KINDS = sorted(ex.KINDS)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", ["fast", "signxml"])
def test_every_example_signs_verifies_and_reads_back_unchanged(keys, kind, backend):
    # Given an example envelope, signed by its sender's registered key
    model = example(kind)
    signed = keys.sign(model)
    # When the hub opens it
    opened = keys.open(signed, backend=backend)
    # Then the signer is the submitting organisation and the model is exactly what was sent
    assert opened.verified.signer.party == model.header.sender.organization_id
    assert opened.envelope == model


@pytest.mark.parametrize("kind", KINDS)
def test_rsa_signed_examples_verify_too(rsa_keys, kind):
    opened = rsa_keys.open(rsa_keys.sign(example(kind)))
    assert opened.verified.method.name == "RSA_SHA256"


@pytest.mark.parametrize("kind", KINDS)
def test_committed_example_files_are_what_the_generator_writes(kind):
    committed = (EXAMPLES / f"{kind}.xml").read_bytes()
    assert committed == to_bytes(build_envelope(ex.example(kind, created=CREATED))), (
        f"examples/{kind}.xml is stale: regenerate with "
        f"`hub envelope example {kind} --at {CREATED.isoformat()} -o examples/{kind}.xml`"
    )


def test_there_is_an_example_of_every_feature_of_the_envelope():
    models = [example(kind) for kind in KINDS]
    assert any(m.header.registered and m.header.opening_receipt for m in models)
    assert any(m.header.recipient.ebox_type == "enterprise" and m.header.recipient.for_the_attention_of for m in models)
    assert any(m.header.sender.on_behalf_of for m in models)
    assert any(m.content.payment and m.content.payment.structured_reference for m in models)
    assert any(m.content.reply_options and m.content.reply_options.choices for m in models)
    assert any(m.content.reply_options and m.content.reply_options.free_text_max_length for m in models)
    assert any(m.content.document and len(m.content.annexes) >= 2 for m in models)
    assert any(m.content.body_main_content for m in models)
    assert any(m.content.business_data and m.content.link and m.content.contact for m in models)
    assert {t.lang for m in models for t in m.content.subjects} == {"fr", "nl", "de", "en"}


@pytest.mark.parametrize("kind", KINDS)
def test_examples_are_valid_for_an_independent_validator(kind):
    # xmlschema (pure Python) agrees with lxml/libxml2 on every example.
    schema = xmlschema.XMLSchema10(str(schema_dir() / "envelope-1.xsd"))
    schema.validate(str(EXAMPLES / f"{kind}.xml"))


def test_an_example_generated_now_is_valid_now(keys):
    from datetime import UTC, datetime

    now = datetime.now(UTC).replace(microsecond=0)
    for kind in KINDS:
        model = ex.example(kind, created=now)
        # The test keys are valid around the fixed clock; check the rules alone at today's date.
        from hub.envelope.rules import check_rules

        assert check_rules(model, now=now) == [], kind


def test_examples_are_opened_at_the_tests_clock():
    assert NOW > CREATED
