"""Signing and verification: scope, key rotation, key loading, and the fast verifier held to signxml."""

from __future__ import annotations

import copy
import os
import stat
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from lxml import etree

from hub.envelope.builder import build_envelope, to_bytes
from hub.errors import ConfigError, ErrorCode, Rejected
from hub.safexml import parse
from hub.signing.algorithms import DS_NS
from hub.signing.keys import KeyPair, load_key_pair, self_signed_certificate, write_key_pair
from hub.signing.signer import Signer
from hub.signing.truststore import TrustStore, trusted
from hub.signing.verifier import Verifier
from tests.kit import CREATED, NOW, example, key_pair

DS = "{" + DS_NS + "}"
FINANCE = "0308357159"


def signed_letter(pair: KeyPair, *, with_id: bool = False) -> bytes:
    root = build_envelope(example("citizen-letter"))
    if with_id:
        root.set("Id", "letter-1")
    return to_bytes(Signer(pair).sign(root))


def verify(data: bytes, store: TrustStore, *, now=NOW, backend="fast", parties=(FINANCE,)):
    return Verifier(store, backend=backend).verify(parse(data), now=now, parties=list(parties))


# --- scope ---------------------------------------------------------------------------


@pytest.mark.parametrize("with_id", [False, True], ids=["uri-empty", "uri-root-id"])
def test_a_signature_over_the_whole_document_verifies_by_empty_uri_or_root_id(with_id):
    pair = key_pair("finance")
    data = signed_letter(pair, with_id=with_id)
    reference = parse(data).find(f"{DS}Signature/{DS}SignedInfo/{DS}Reference")
    assert reference.get("URI") == ("#letter-1" if with_id else "")
    assert verify(data, TrustStore([trusted(FINANCE, pair.certificate)])).signer.party == FINANCE


def test_signing_an_already_signed_document_is_refused():
    pair = key_pair("finance")
    with pytest.raises(ValueError, match="already signed"):
        Signer(pair).sign(parse(signed_letter(pair)))


def test_verification_leaves_the_tree_exactly_as_it_was():
    pair = key_pair("finance")
    root = parse(signed_letter(pair))
    before = etree.tostring(root)
    Verifier(TrustStore([trusted(FINANCE, pair.certificate)])).verify(root, now=NOW)
    assert etree.tostring(root) == before


def test_without_an_embedded_certificate_the_registered_ones_are_tried():
    # Given a signature whose KeyInfo was stripped (KeyInfo is not signed)
    old, new = key_pair("finance-old"), key_pair("finance")
    root = parse(signed_letter(new))
    signature = root.find(f"{DS}Signature")
    signature.remove(signature.find(f"{DS}KeyInfo"))
    store = TrustStore([trusted(FINANCE, old.certificate), trusted(FINANCE, new.certificate)])
    # Then the hub finds the right registered certificate by trying the sender's
    assert Verifier(store).verify(root, now=NOW, parties=[FINANCE]).signer.certificate == new.certificate
    # And a sender whose registered keys did not sign it is refused
    with pytest.raises(Rejected) as refused:
        Verifier(TrustStore([trusted(FINANCE, old.certificate)])).verify(root, now=NOW, parties=[FINANCE])
    assert refused.value.code is ErrorCode.SIGNATURE_INVALID


def test_an_ecdsa_signature_value_of_the_wrong_length_is_refused():
    pair = key_pair("finance")
    root = parse(signed_letter(pair))
    value = root.find(f"{DS}Signature/{DS}SignatureValue")
    value.text = "AAAA" + value.text
    with pytest.raises(Rejected) as refused:
        Verifier(TrustStore([trusted(FINANCE, pair.certificate)])).verify(root, now=NOW)
    assert refused.value.code is ErrorCode.SIGNATURE_INVALID


# --- key rotation -----------------------------------------------------------------------


def test_key_rotation_with_an_overlap_window():
    # Given the old key ends at T, the new one starts at T - 7 days (a week of overlap)
    t = NOW + timedelta(days=30)
    old, new = key_pair("finance-old"), key_pair("finance")
    store = TrustStore(
        [
            trusted(FINANCE, old.certificate, valid_until=t),
            trusted(FINANCE, new.certificate, valid_from=t - timedelta(days=7)),
        ]
    )
    by_old, by_new = signed_letter(old), signed_letter(new)
    # Before the overlap: only the old key
    assert verify(by_old, store, now=t - timedelta(days=8)).signer.certificate == old.certificate
    with pytest.raises(Rejected) as early:
        verify(by_new, store, now=t - timedelta(days=8))
    assert early.value.code is ErrorCode.CERT_NOT_YET_VALID
    # During the overlap: both
    assert verify(by_old, store, now=t - timedelta(days=1)).signer.certificate == old.certificate
    assert verify(by_new, store, now=t - timedelta(days=1)).signer.certificate == new.certificate
    # After: only the new key; the old one is refused as expired, with a hint
    assert verify(by_new, store, now=t + timedelta(seconds=1)).signer.certificate == new.certificate
    with pytest.raises(Rejected) as late:
        verify(by_old, store, now=t + timedelta(seconds=1))
    assert late.value.code is ErrorCode.CERT_EXPIRED
    assert "current key" in late.value.message


def test_a_trust_window_never_extends_a_certificate():
    pair = key_pair("short", start=CREATED - timedelta(days=2), days=1)
    entry = trusted(FINANCE, pair.certificate, valid_until=CREATED + timedelta(days=365))
    assert entry.not_after == pair.certificate.not_valid_after_utc


# --- keys ------------------------------------------------------------------------------


def test_written_private_keys_are_private_and_never_overwritten(tmp_path):
    pair = key_pair("finance")
    key_path, cert_path = write_key_pair(pair, tmp_path, "finance")
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert load_key_pair(key_path, cert_path).certificate == pair.certificate
    with pytest.raises(ConfigError, match="already exists"):
        write_key_pair(pair, tmp_path, "finance")


def test_a_certificate_of_another_key_is_refused(tmp_path):
    key_path, _ = write_key_pair(key_pair("a"), tmp_path, "a")
    _, other_cert = write_key_pair(key_pair("b"), tmp_path, "b")
    with pytest.raises(ConfigError, match="does not belong"):
        load_key_pair(key_path, other_cert)


def test_weak_rsa_keys_are_refused():
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ConfigError, match="at least 2048"):
        trusted(FINANCE, self_signed_certificate(weak, "weak"))


def test_an_unreadable_key_file_names_the_file(tmp_path):
    garbage = tmp_path / "k.pem"
    garbage.write_text("not a key")
    with pytest.raises(ConfigError, match=r"k\.pem"):
        load_key_pair(garbage, garbage)


# --- the fast verifier is held to signxml --------------------------------------------------


def _mutations(data: bytes):
    """Every text node and attribute of a signed document changed, one at a time."""
    root = parse(data)
    for index, element in enumerate(root.iter()):
        if element.text and element.text.strip():
            yield f"text-{index}-{etree.QName(element).localname}", "text", index, None
        for name in element.attrib:
            yield f"attr-{index}-{name}", "attr", index, name
        if index and element.getparent() is not None:
            yield f"tail-{index}", "tail", index, None


def _apply(data: bytes, kind: str, index: int, name: str | None) -> bytes:
    root = parse(data)
    element = list(root.iter())[index]
    if kind == "text":
        element.text = element.text[:-1] + ("B" if element.text[-1] != "B" else "C")
    elif kind == "attr":
        element.set(name, element.get(name) + "x")
    else:
        element.tail = (element.tail or "") + " "
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _outcome(data: bytes, store: TrustStore, backend: str) -> str:
    try:
        Verifier(store, backend=backend).verify(parse(data), now=NOW, parties=[FINANCE])
        return "ok"
    except Rejected as refused:
        return refused.code.value


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_fast_and_signxml_agree_on_every_single_change_to_a_signed_document(kind):
    pair = key_pair("finance", kind)
    store = TrustStore([trusted(FINANCE, pair.certificate)])
    original = signed_letter(pair, with_id=True)
    assert _outcome(original, store, "fast") == _outcome(original, store, "signxml") == "ok"
    disagreements, accepted = [], []
    for label, *how in _mutations(original):
        changed = _apply(original, *how)
        fast, reference = _outcome(changed, store, "fast"), _outcome(changed, store, "signxml")
        if fast != reference:
            disagreements.append((label, fast, reference))
        if fast == "ok":
            accepted.append(label)
    assert disagreements == []
    # Only whitespace outside the signed content (inside ds:Signature, off SignedInfo) may change.
    signature_index = next(i for i, e in enumerate(parse(original).iter()) if e.tag == f"{DS}Signature")
    inside_signature = [label for label in accepted if label.startswith("tail-") and int(label[5:]) >= signature_index]
    assert accepted == inside_signature


def test_fast_and_signxml_agree_on_a_different_key_of_the_same_party():
    signer, registered = key_pair("finance"), key_pair("finance-old")
    root = parse(signed_letter(signer))
    signature = root.find(f"{DS}Signature")
    signature.remove(signature.find(f"{DS}KeyInfo"))
    data = etree.tostring(root)
    store = TrustStore([trusted(FINANCE, registered.certificate)])
    assert _outcome(data, store, "fast") == _outcome(data, store, "signxml") == "SIGNATURE_INVALID"


def test_both_back_ends_accept_a_document_signed_with_inclusive_c14n():
    import signxml

    pair = key_pair("finance", "rsa")
    root = build_envelope(example("citizen-letter"))
    signed = signxml.XMLSigner(c14n_algorithm="http://www.w3.org/TR/2001/REC-xml-c14n-20010315").sign(
        copy.deepcopy(root), key=pair.key, cert=[pair.certificate]
    )
    data = etree.tostring(signed)
    store = TrustStore([trusted(FINANCE, pair.certificate)])
    assert _outcome(data, store, "fast") == _outcome(data, store, "signxml") == "ok"


# --- the fast signer is held to signxml ----------------------------------------------------


@pytest.mark.parametrize("kind", ["ec", "rsa"])
@pytest.mark.parametrize("with_id", [False, True], ids=["uri-empty", "uri-root-id"])
@pytest.mark.parametrize("example_kind", ["citizen-letter", "citizen-pdf", "enterprise"])
def test_what_the_fast_signer_signs_verifies_with_signxml(kind, with_id, example_kind):
    pair = key_pair("finance", kind)
    root = build_envelope(example(example_kind))
    if with_id:
        root.set("Id", "doc-1")
    store = TrustStore([trusted(example(example_kind).header.sender.organization_id, pair.certificate)])
    fast = to_bytes(Signer(pair).sign(root))
    reference = to_bytes(Signer(pair, backend="signxml").sign(root))
    for data in (fast, reference):
        for backend in ("fast", "signxml"):
            assert Verifier(store, backend=backend).verify(parse(data), now=NOW).signer.certificate == pair.certificate
    # The same structure, algorithm for algorithm (signxml wraps base64 lines; ECDSA is randomised).
    assert _shape(parse(fast)) == _shape(parse(reference))


def _shape(root):
    signature = root.find(f"{DS}Signature")
    return [(etree.QName(e).localname, dict(e.attrib)) for e in signature.iter()]


def test_signing_does_not_touch_the_given_tree():
    pair = key_pair("finance")
    root = build_envelope(example("citizen-letter"))
    before = etree.tostring(root)
    Signer(pair).sign(root)
    assert etree.tostring(root) == before


def test_processes_started_together_share_the_one_embedded_hub_key(tmp_path):
    """`hub serve --workers 2` beside a worker, no key configured: one creates it, all load the same one."""
    import threading

    from hub.runtime import hub_key_pair
    from hub.settings import load_settings

    settings = load_settings(tmp_path, {"HUB_DATA_DIR": str(tmp_path / "var")})
    start = threading.Barrier(8)
    got: list[object] = []

    def one_process() -> None:
        start.wait()
        try:
            got.append(hub_key_pair(settings).certificate)
        except Exception as exc:  # the test fails on any, naming it
            got.append(exc)

    threads = [threading.Thread(target=one_process) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert not [g for g in got if isinstance(g, Exception)], got
    assert len(got) == 8 and len(set(got)) == 1  # one key pair, created once
