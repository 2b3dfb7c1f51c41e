"""Hostile inputs made by hypothesis, and the time the fuzzing part of the suite may take.

Every fuzz test runs a fixed number of examples (``examples``), scaled by ``HUB_FUZZ_SCALE``
(default 1; a nightly run may set 20), and stops early, passing, once the fuzz tests of the run
have used ``HUB_FUZZ_BUDGET_S`` seconds (default 45) in all (the ``fuzz_clock`` fixture times
them): the fuzzing part stays bounded on a slow machine. Deadlines per example are off (the
first example of a door pays for its warm-up).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from hub.envelope.examples import KINDS
from tests.kit import example, keyring

SCALE = float(os.environ.get("HUB_FUZZ_SCALE", "1"))
BUDGET_S = float(os.environ.get("HUB_FUZZ_BUDGET_S", "45"))


class Budget:
    """The fuzzing part's time: what the fuzz tests of the run have used (``fuzz_clock`` times each)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.used = 0.0
        self.since: float | None = None

    def start(self) -> None:
        self.since = time.monotonic()

    def stop(self) -> None:
        if self.since is not None:
            self.used += time.monotonic() - self.since
            self.since = None

    def spent(self) -> bool:
        """Whether the budget is used up: the remaining examples of every fuzz test then pass at once."""
        running = time.monotonic() - self.since if self.since is not None else 0.0
        return self.used + running > self.seconds


BUDGET = Budget(BUDGET_S)


def examples(count: int) -> Callable[[Any], Any]:
    """Hypothesis settings for a fuzz test: ``count`` examples (scaled), no deadline, no database."""
    return settings(
        max_examples=max(1, int(count * SCALE)),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
    )


# --- signed envelopes, and what a hostile network or sender does to them -------------------------------------

SIGNED: dict[str, bytes] = {}


def signed(kind: str) -> bytes:
    """The example of ``kind`` signed by its sender, with a SenderMessageId of its own (made once per run)."""
    if kind not in SIGNED:
        envelope = example(kind)
        header = replace(envelope.header, sender_message_id=f"FUZZ-{kind}-{os.getpid()}-{time.time_ns()}")
        SIGNED[kind] = keyring().sign(replace(envelope, header=header))
    return SIGNED[kind]


KIND = st.sampled_from(sorted(KINDS))
_ELEMENT = re.compile(rb"<([A-Za-z][\w:.-]*)(?:\s[^<>]*)?>[^<]*</\1>")
INSERTS = st.binary(min_size=1, max_size=8) | st.sampled_from(
    [
        b"<",
        b">",
        b"&",
        b"&amp;",
        b"&#0;",
        b"]]>",
        b"<!--x-->",
        b"<?pi x?>",
        b"<![CDATA[x]]>",
        b" ",
        b"\n",
        b"\r",
        b"<x/>",
        b'"',
        b"\xc3",
        b"\xff\xfe",
        b"\x00",
        b"<!DOCTYPE a>",
        b'xmlns:t="urn:other"',
        b"\xef\xbb\xbf",
    ]
)


@st.composite
def mutation(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with one to three changes: a bit flipped, cut short, bytes inserted or removed, an element doubled."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "duplicate"]))
        at = draw(st.integers(0, max(0, len(out) - 1)))
        if kind == "flip" and out:
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate" or not out:
            del out[at:]
        elif kind == "insert":
            out[at:at] = draw(INSERTS)
        elif kind == "delete":
            del out[at : at + draw(st.integers(1, 32))]
        else:
            elements = list(_ELEMENT.finditer(bytes(out)))
            if elements:
                found = draw(st.sampled_from(elements))
                out[found.end() : found.end()] = found.group(0)
    return bytes(out)


@st.composite
def mutated_envelope(draw: st.DrawFn) -> tuple[str, bytes]:
    """(kind, a signed example of that kind, mutated)."""
    kind = draw(KIND)
    return kind, draw(mutation(signed(kind)))


XMLISH = st.sampled_from(
    [
        b"",
        b"<a/>",
        b"<?xml version='1.0'?><a>",
        b"<PublishMessage xmlns='urn:ebox-hub:envelope:1'/>",
        b'<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>',
        b"\xef\xbb\xbf<a/>",
        b"\xff\xfe<\x00a\x00/\x00>\x00",
        b"<a>" * 40 + b"</a>" * 40,
        b'{"envelopes": []}',
        b"\x00" * 16,
    ]
)
BODIES = st.one_of(st.binary(max_size=400), XMLISH, mutated_envelope().map(lambda pair: pair[1]))
"""Request bodies: random bytes, XML-ish snippets, mutated signed envelopes."""

HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
CONTENT_TYPES = (
    st.sampled_from(
        [
            "application/xml",
            "text/xml",
            "text/xml; charset=utf-8",
            "application/xml; charset=iso-8859-1",
            "application/json",
            "application/soap+xml",
            "",
            "multipart/form-data; boundary=x",
            "text/xml; charset",
            "APPLICATION/XML",
            'text/xml;charset="utf-16"',
        ]
    )
    | HEADER_TEXT
)
EXTRA_HEADERS = st.dictionaries(
    st.sampled_from(
        ["SOAPAction", "Authorization", "Accept", "Content-Encoding", "Expect", "X-Forwarded-For", "Cookie", "Range"]
    ),
    HEADER_TEXT,
    max_size=3,
)
PATH_SEGMENT = st.one_of(
    st.binary(max_size=40).map(lambda raw: "".join(f"%{b:02X}" for b in raw)),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="/?#%"), max_size=120),
    st.uuids().map(str),
    st.sampled_from(["%00", "..", "%2e%2e%2f", "x" * 5000, "00000000-0000-4000-8000-000000000000:myebox"]),
)
"""A path segment as a client may write it (percent-encoded bytes included)."""
