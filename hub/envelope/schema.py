"""Validate documents against the hub's own XSDs (``schemas/``), with lxml for speed.

Schemas are compiled once per process. Errors name the line and the element path and
drop namespace noise, so a sender can act on them.
"""

from __future__ import annotations

import re
import threading
from importlib import resources
from pathlib import Path

from lxml import etree

from hub.envelope.model import ACK_NS, ENVELOPE_NS, TYPES_NS
from hub.errors import ErrorCode, Rejected, Violation
from hub.safexml import element_path

SCHEMA_FILES = {
    ENVELOPE_NS: "envelope-1.xsd",
    ACK_NS: "acknowledgement-1.xsd",
    TYPES_NS: "types-1.xsd",
}


def schema_dir() -> Path:
    """The folder holding the XSDs, inside the installed package."""
    return Path(str(resources.files("hub") / "schemas"))


_per_thread = threading.local()


def compiled(namespace: str) -> etree.XMLSchema:
    """The compiled schema for ``namespace``, one per thread.

    An lxml ``XMLSchema`` keeps its error log on the object: validating from two threads
    at once mixes their results (seen under load as spurious SCHEMA_INVALID), so each
    thread compiles its own copy once.
    """
    schemas = getattr(_per_thread, "schemas", None)
    if schemas is None:
        schemas = _per_thread.schemas = {}
    schema = schemas.get(namespace)
    if schema is None:
        path = schema_dir() / SCHEMA_FILES[namespace]
        parser = etree.XMLParser(resolve_entities=False, no_network=True)
        schema = schemas[namespace] = etree.XMLSchema(etree.parse(str(path), parser=parser))
    return schema


_PREFIXED_STEP = re.compile(r"([A-Za-z_][\w.-]*):([A-Za-z_][\w.-]*)(\[\d+\])?")
_NS_NOISE = re.compile(r"\{urn:ebox-hub:[a-z]+:1\}")


def _readable(message: str) -> str:
    return _NS_NOISE.sub("", message).replace("Element '", "element '")


def check_root(root: etree._Element, *, expect: str | None = None, name: str | None = None) -> str:
    """Refuse (``SCHEMA_INVALID``) a root of an unknown namespace, or not the one expected.

    Cheap enough to run before the signature is checked; returns the root's namespace.
    """
    qname = etree.QName(root)
    namespace = qname.namespace
    wrong_name = name is not None and qname.localname != name
    if (
        (expect is not None and namespace != expect)
        or namespace not in SCHEMA_FILES
        or namespace == TYPES_NS
        or wrong_name
    ):
        wanted = expect or "one of " + ", ".join(n for n in SCHEMA_FILES if n != TYPES_NS)
        kind = f"a {name} " if name else "a document "
        raise Rejected(
            ErrorCode.SCHEMA_INVALID,
            f"the root element is {root.tag!r}; expected {kind}in namespace {wanted}. "
            "Check the root element and its xmlns.",
            path="/" + qname.localname,
            line=root.sourceline,
        )
    return namespace


def validate(root: etree._Element, *, expect: str | None = None) -> None:
    """Raise ``Rejected(SCHEMA_INVALID)`` unless ``root`` is valid for its namespace.

    ``expect`` (a namespace URI) refuses a document of another kind, e.g. an
    acknowledgement posted where an envelope is due.
    """
    namespace = check_root(root, expect=expect)
    schema = compiled(namespace)
    set_aside = _large_contents(root) if namespace == ENVELOPE_NS else []
    try:
        valid = schema.validate(root)
    finally:
        for element, text in set_aside:
            element.text = text
    if valid:
        return
    violations = [
        Violation(
            ErrorCode.SCHEMA_INVALID,
            _readable(error.message).rstrip(".") + f". See schemas/{SCHEMA_FILES[namespace]}.",
            path=_path_of(root, error.path),
            line=error.line or None,
        )
        for error in list(schema.error_log)[:50]
    ]
    raise Rejected.of(violations)


_CONTENT = "{" + ENVELOPE_NS + "}Content"
LARGE_CONTENT = 64 * 1024
"""Attachment contents longer than this (characters of base64) are not handed to libxml2's validator."""


def _large_contents(root: etree._Element) -> list[tuple[etree._Element, str]]:
    """Blank each large attachment ``Content`` for the schema check; what to put back afterwards.

    libxml2 checks an ``xs:base64Binary`` by walking every character: 8 ms per megabyte, the
    dearest step of accepting a large envelope. The reader decodes that same text strictly
    (``hub.envelope.reader._attachment``: ``SCHEMA_INVALID`` naming the element and its line),
    and the business rules then check its size and digest, so the schema need not read it: it
    sees an empty ``base64Binary`` (valid) and checks everything else as before.
    """
    set_aside = []
    for element in root.iter(_CONTENT):
        text = element.text
        if text is not None and len(text) > LARGE_CONTENT and len(element) == 0:
            set_aside.append((element, text))
            element.text = ""
    return set_aside


def _path_of(root: etree._Element, xpath: str | None) -> str | None:
    """libxml2 reports ``/*/*[1]/*[4]``; name the element instead: ``/PublishMessage/Header/...``."""
    if not xpath:
        return None
    # Steps may carry prefixes libxml2 invented (``ns0:include``): match on local names instead.
    portable = _PREFIXED_STEP.sub(lambda step: f"*[local-name()='{step.group(2)}']{step.group(3) or ''}", xpath)
    try:
        found = root.getroottree().xpath(portable)
    except etree.XPathError:
        return xpath
    return element_path(found[0]) if found and isinstance(found[0], etree._Element) else xpath
