"""Hardened XML intake: the one parser every door of the hub uses.

No DTD (internal or external), no entity expansion, no network, no processing
instructions, bounded size and depth. Comments are dropped while parsing, so the tree
holds exactly what an XML signature without comments covers: text split by a spliced
comment reads back whole, as it was signed.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

from lxml import etree

from hub.errors import ErrorCode, Rejected


@dataclass(frozen=True, kw_only=True)
class ParseLimits:
    """Bounds on what the parser accepts; configurable per deployment."""

    max_bytes: int = 15 * 1024 * 1024
    """Largest document accepted, in bytes as received (before any decoding)."""
    max_depth: int = 24
    """Deepest element nesting accepted (the envelope needs 7)."""


DEFAULT_LIMITS = ParseLimits()

# lxml parsers are not thread-safe: each thread keeps its own, built from these options
# and reused for every document that thread parses (building one per call costs more).
_PARSER_OPTIONS = dict(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=True,
    remove_pis=False,
    strip_cdata=True,
    collect_ids=False,
)


_per_thread = threading.local()


def _parser() -> etree.XMLParser:
    parser = getattr(_per_thread, "parser", None)
    if parser is None:
        parser = _per_thread.parser = etree.XMLParser(**_PARSER_OPTIONS)
    return parser


def parse(data: bytes, *, limits: ParseLimits = DEFAULT_LIMITS) -> etree._Element:
    """Parse ``data`` into an element tree, or raise :class:`Rejected`.

    Codes: ``TOO_LARGE`` (size or depth), ``XML_FORBIDDEN`` (DTD, entity, processing
    instruction), ``XML_MALFORMED`` (not well-formed).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("parse() takes the document as bytes, as received")
    if len(data) > limits.max_bytes:
        raise Rejected(
            ErrorCode.TOO_LARGE,
            f"the document is {len(data)} bytes; the limit is {limits.max_bytes}. "
            "Send large files as separate messages or reduce attachment sizes.",
        )
    head = bytes(data[:4])
    if head.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")) or b"\x00" in head:
        raise Rejected(ErrorCode.XML_FORBIDDEN, "the document is encoded as UTF-16 or UTF-32; send it as UTF-8.")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise Rejected(
            ErrorCode.XML_FORBIDDEN,
            "document type declarations (DOCTYPE/ENTITY) are not accepted; remove the DOCTYPE.",
        )
    try:
        root = etree.fromstring(bytes(data), parser=_parser())
    except etree.XMLSyntaxError as exc:
        line = exc.lineno if exc.lineno else None
        msg = exc.msg or str(exc)
        if "Huge input" in msg or "Excessive depth" in msg or "huge" in msg.lower():
            raise Rejected(ErrorCode.TOO_LARGE, f"{msg}; the document exceeds the parser's limits.", line=line) from exc
        raise Rejected(ErrorCode.XML_MALFORMED, f"the document is not well-formed XML: {msg}", line=line) from exc
    encoding = (root.getroottree().docinfo.encoding or "UTF-8").upper()
    if encoding not in ("UTF-8", "US-ASCII", "ASCII"):
        raise Rejected(ErrorCode.XML_FORBIDDEN, f"the document is encoded as {encoding}; send it as UTF-8.")
    _refuse_forbidden_nodes(root)
    _check_depth(root, limits.max_depth)
    return root


def _refuse_forbidden_nodes(root: etree._Element) -> None:
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None or docinfo.externalDTD is not None or docinfo.doctype:
        raise Rejected(ErrorCode.XML_FORBIDDEN, "document type declarations are not accepted; remove the DOCTYPE.")
    for sibling in (*root.itersiblings(preceding=True), *root.itersiblings()):
        if isinstance(sibling, etree._ProcessingInstruction):
            raise Rejected(
                ErrorCode.XML_FORBIDDEN,
                f"processing instructions are not accepted (<?{sibling.target} ...?>); remove it.",
                line=sibling.sourceline,
            )
    for node in root.iter(etree.PI, etree.Entity):
        kind = "processing instructions" if isinstance(node, etree._ProcessingInstruction) else "entity references"
        raise Rejected(ErrorCode.XML_FORBIDDEN, f"{kind} are not accepted; remove it.", line=node.sourceline)


@functools.cache
def _too_deep(max_depth: int) -> etree.XPath:
    """``(/*)`` repeated max_depth + 1 times: the first element nested deeper than allowed."""
    return etree.XPath("(/*" + "/*" * max_depth + ")[1]")


def _check_depth(root: etree._Element, max_depth: int) -> None:
    # One compiled XPath, evaluated in C; a deep document stops at the first match.
    found = _too_deep(max_depth)(root)
    if found:
        raise Rejected(
            ErrorCode.TOO_LARGE,
            f"elements are nested more than {max_depth} deep; flatten the document.",
            line=found[0].sourceline,
        )


def element_path(element: etree._Element) -> str:
    """A readable path such as ``/PublishMessage/Header/Recipient[1]/Citizen/SSIN``."""
    parts = []
    node: etree._Element | None = element
    while node is not None:
        name = etree.QName(node).localname
        parent = node.getparent()
        if parent is not None:
            same = [c for c in parent if c.tag == node.tag]
            if len(same) > 1:
                name = f"{name}[{same.index(node) + 1}]"
        parts.append(name)
        node = parent
    return "/" + "/".join(reversed(parts))
