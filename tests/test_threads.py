"""The intake is shared by every door's threads: concurrent use must give the answers serial use gives."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from lxml import etree

from hub.envelope.builder import build_envelope
from hub.envelope.model import ENVELOPE_NS
from hub.errors import Rejected
from tests.kit import NOW, example, keyring


def test_concurrent_opening_gives_the_same_answers_as_serial_opening():
    # Given properly signed envelopes, some valid, some not valid against the schema
    ring = keyring()
    kinds = ("citizen-letter", "payment", "registered", "enterprise", "citizen-pdf")
    good = [ring.sign(example(kind)) for kind in kinds]
    bad = []
    for kind in kinds:
        root = build_envelope(example(kind))
        etree.SubElement(root.find(f"{{{ENVELOPE_NS}}}Header"), f"{{{ENVELOPE_NS}}}Unexpected").text = kind
        bad.append(ring.sign_root(root))

    def outcome(data: bytes) -> str:
        try:
            ring.open(data, now=NOW)
            return "ok"
        except Rejected as refused:
            return f"{refused.code.value} {refused.violations[0].path}"

    documents = [d for pair in zip(good, bad, strict=True) for d in pair] * 60
    expected = [outcome(d) for d in documents]
    # When 16 threads open them at once
    with ThreadPoolExecutor(max_workers=16) as pool:
        concurrent = list(pool.map(outcome, documents))
    # Then every answer is the serial one
    assert concurrent == expected
    assert {e.split()[0] for e in expected} == {"ok", "SCHEMA_INVALID"}
