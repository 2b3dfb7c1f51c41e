"""``hub demo``: what the hub does today, end to end, with nothing installed beyond the package.

In a temporary folder it creates a key per institution, writes an envelope of every
kind, signs each with its sender's key, and opens each as the hub's intake does (safe
parse, signature over the whole document by the registered signer, schema, business
rules). Then it shows forged and broken envelopes being refused with their codes.
Later stages (storage, routing, providers, acknowledgements) join this demo as they land.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from hub.envelope import examples as ex
from hub.envelope.builder import build_envelope, to_bytes
from hub.envelope.model import Envelope
from hub.errors import Rejected
from hub.inbound.opening import open_envelope
from hub.signing.keys import KeyPair, generate_key, self_signed_certificate, write_key_pair
from hub.signing.signer import Signer
from hub.signing.truststore import TrustStore, trusted
from hub.signing.verifier import Verifier

INSTITUTIONS = {
    ex.FINANCE: "tax administration",
    ex.SOCIAL: "social security",
    ex.CITY: "city",
    ex.INTEGRATOR: "integrator",
}


def run_demo(folder: Path, echo: Callable[[str], None] = click.echo) -> int:
    """Run the demo in ``folder``; return the number of outcomes that were not as expected."""
    now = datetime.now(UTC).replace(microsecond=0)
    pairs: dict[str, KeyPair] = {}
    for org, name in INSTITUTIONS.items():
        key = generate_key("ec")
        pair = KeyPair(key, self_signed_certificate(key, name, organization=org, not_before=now - timedelta(hours=1)))
        write_key_pair(pair, folder / "keys", org)
        pairs[org] = pair
    verifier = Verifier(TrustStore(trusted(org, pair.certificate) for org, pair in pairs.items()))
    echo(f"Keys for {len(pairs)} organisations in {folder / 'keys'}; trust store built.\n")

    def sign(model: Envelope, org: str | None = None) -> bytes:
        return to_bytes(Signer(pairs[org or model.header.sender.organization_id]).sign(build_envelope(model)))

    surprises = 0
    echo(f"{'envelope':<34} {'bytes':>6}  outcome")
    for kind in sorted(ex.KINDS):
        model = ex.example(kind, created=now - timedelta(minutes=1))
        data = sign(model)
        (folder / f"{kind}.signed.xml").write_bytes(data)
        try:
            opened = open_envelope(data, verifier=verifier, now=now)
        except Rejected as refused:
            surprises += 1
            echo(f"{kind:<34} {len(data):>6}  UNEXPECTED {refused}")
            continue
        h = opened.envelope.header
        echo(
            f"{kind:<34} {len(data):>6}  accepted: {h.message_type} from {INSTITUTIONS[h.sender.institution_id]}"
            f"{' via the integrator' if h.sender.on_behalf_of else ''}"
            f" to a{'n' if h.recipient.ebox_type == 'enterprise' else ''} {h.recipient.ebox_type}"
            f", sha256 {opened.digest.hex()[:12]}…"
        )

    letter = ex.example("payment", created=now - timedelta(minutes=1))
    assert letter.content.payment is not None
    good = sign(letter)
    forged_sender = replace(
        letter, header=replace(letter.header, sender=replace(letter.header.sender, organization_id=ex.SOCIAL))
    )
    hostile: dict[str, tuple[bytes, str]] = {
        "amount changed after signing": (good.replace(b"1234.56", b"9234.56"), "SIGNATURE_INVALID"),
        "signed by the city, claims to be social security": (sign(forged_sender, ex.CITY), "UNKNOWN_SIGNER"),
        "unsigned": (to_bytes(build_envelope(letter)), "SIGNATURE_MISSING"),
        "external entity (XXE)": (
            b'<!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]><m>&x;</m>',
            "XML_FORBIDDEN",
        ),
        "invalid IBAN, properly signed": (
            sign(
                replace(
                    letter,
                    content=replace(letter.content, payment=replace(letter.content.payment, iban="BE71096123456768")),
                )
            ),
            "IBAN_INVALID",
        ),
    }
    echo("")
    for label, (data, expected) in hostile.items():
        try:
            open_envelope(data, verifier=verifier, now=now)
            outcome, ok = "ACCEPTED (should have been refused)", False
        except Rejected as refused:
            outcome, ok = f"refused {refused.code}", refused.code == expected
        surprises += not ok
        echo(f"{label:<50} {outcome}")
    return surprises


@click.command("demo")
@click.option("--keep", type=click.Path(file_okay=False), help="Write into this folder and keep it.")
def demo(keep: str | None) -> None:
    """Show the hub at work on the embedded default, with nothing else installed."""
    if keep:
        folder = Path(keep)
        folder.mkdir(parents=True, exist_ok=True)
        surprises = run_demo(folder)
        click.echo(
            f"\nSigned envelopes are in {folder}. Try: hub envelope verify {folder / 'payment.signed.xml'} "
            f"--cert {folder / 'keys' / (ex.FINANCE + '.cert.pem')}"
        )
    else:
        with tempfile.TemporaryDirectory(prefix="hub-demo-") as tmp:
            surprises = run_demo(Path(tmp))
    if surprises:
        raise SystemExit(1)
