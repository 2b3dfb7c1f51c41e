"""The XSDs are sound, the acknowledgement examples validate, and our vocabulary matches e-Box."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
import xmlschema
import yaml
from lxml import etree

from hub.envelope import examples as ex
from hub.envelope import schema
from hub.envelope.builder import build_envelope, to_bytes
from hub.envelope.media import ALLOWED_MEDIA_TYPES
from hub.envelope.model import ACK_NS, ENVELOPE_NS
from hub.envelope.reader import read_envelope
from hub.errors import ErrorCode, Rejected
from hub.safexml import ParseLimits, parse

ROOT = Path(__file__).resolve().parent.parent
ACK_EXAMPLES = sorted((ROOT / "examples" / "acknowledgements").glob("*.xml"))
SHARED_EBOX = ROOT.parent / "shared" / "reference" / "ebox"


@pytest.mark.parametrize("name", ["types-1.xsd", "envelope-1.xsd", "acknowledgement-1.xsd"])
def test_each_schema_is_valid_xsd_1_0(name):
    xmlschema.XMLSchema10(str(schema.schema_dir() / name))


def test_schemas_are_reachable_from_the_repository_root_as_agreed():
    assert (ROOT / "schemas" / "envelope-1.xsd").read_bytes() == (schema.schema_dir() / "envelope-1.xsd").read_bytes()


@pytest.mark.parametrize("path", ACK_EXAMPLES, ids=lambda p: p.name)
def test_acknowledgement_examples_validate(path):
    schema.validate(parse(path.read_bytes()), expect=ACK_NS)


def test_an_acknowledgement_is_refused_where_an_envelope_is_due():
    root = parse(ACK_EXAMPLES[0].read_bytes())
    with pytest.raises(Rejected) as refused:
        schema.validate(root, expect=ENVELOPE_NS)
    assert refused.value.code is ErrorCode.SCHEMA_INVALID
    assert "urn:ebox-hub:envelope:1" in refused.value.message


def test_an_acknowledgement_with_an_unknown_event_is_refused_with_its_line():
    data = ACK_EXAMPLES[0].read_bytes()
    bad = (ROOT / "examples/acknowledgements/replied.xml").read_bytes().replace(b">replied<", b">read<")
    assert bad != data
    with pytest.raises(Rejected) as refused:
        schema.validate(parse(bad))
    violation = refused.value.violations[0]
    assert violation.code is ErrorCode.SCHEMA_INVALID
    assert violation.path == "/Acknowledgement/Event"
    assert violation.line == 5
    assert "'read'" in violation.message


def _reference(path: str) -> Path:
    target = SHARED_EBOX / path
    if not target.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{target} is missing: CI must have ../shared beside the checkout")
        pytest.skip(f"the public e-Box contracts are not beside this checkout ({target})")
    return target


def test_our_media_types_are_all_accepted_by_the_real_ebox():
    spec = yaml.safe_load(_reference("e-Box-Enterprise-swagger-v2.1-AP-Public.yaml").read_text())
    ebox_types = set(spec["definitions"]["Attachment"]["properties"]["mediaType"]["enum"])
    assert ALLOWED_MEDIA_TYPES - {"image/png", "image/jpeg"} <= ebox_types


def test_our_enterprise_number_pattern_matches_the_real_ebox():
    spec = yaml.safe_load(_reference("e-Box-Enterprise-swagger-v2.1-AP-Public.yaml").read_text())
    pattern = spec["definitions"]["MessageToPublish"]["properties"]["senderOrganizationId"]["pattern"]
    ours = parse((schema.schema_dir() / "types-1.xsd").read_bytes())
    xs = "{http://www.w3.org/2001/XMLSchema}"
    cbe = ours.find(f"{xs}simpleType[@name='CBE']/{xs}restriction/{xs}pattern").get("value")
    assert pattern.replace("[0-1]", "[01]") == cbe



LARGE = ParseLimits(max_bytes=5_000_000)


def _large_letter(content: bytes) -> bytes:
    """A citizen letter whose document is ``content``: a base64 text well above LARGE_CONTENT."""
    letter = ex.example("citizen-letter")
    document = ex.attachment("big.pdf", "application/pdf", content)
    return to_bytes(build_envelope(replace(letter, content=replace(letter.content, document=document))))


def test_a_large_attachment_is_checked_by_the_reader_and_the_tree_is_left_as_it_was():
    pdf = b"%PDF-1.7\n" + os.urandom(200_000)
    data = _large_letter(pdf)
    root = parse(data, limits=LARGE)
    before = etree.tostring(root)
    schema.validate(root, expect=ENVELOPE_NS)  # the large base64 text set aside for libxml2, then put back
    assert etree.tostring(root) == before
    assert read_envelope(root).content.document.content == pdf  # type: ignore[union-attr]
    # Not base64 (a character outside the alphabet, at the end of a large text): refused all the same
    root = parse(data.replace(b"</Content>", b"*</Content>", 1), limits=LARGE)
    schema.validate(root, expect=ENVELOPE_NS)
    with pytest.raises(Rejected) as refused:
        read_envelope(root)
    assert refused.value.code is ErrorCode.SCHEMA_INVALID and "base64" in refused.value.message
    assert refused.value.violations[0].line is not None
    # Anything else wrong beside it is still the schema's to find
    other = parse(data.replace(b"</FileName>", b"</FileName><Unknown/>", 1), limits=LARGE)
    with pytest.raises(Rejected) as refused:
        schema.validate(other, expect=ENVELOPE_NS)
    assert refused.value.code is ErrorCode.SCHEMA_INVALID and "Unknown" in refused.value.message
