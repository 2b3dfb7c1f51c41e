"""Benchmark: verify + validate rate per core for a signed example envelope.

What one intake worker does per envelope before anything is stored: safe parse,
signature verification against the trust store, XSD validation, reading the model and
the business rules (``hub.inbound.opening.open_envelope``). One process, one thread:
the figure is per core. Prints a table, then (last line) a JSON object of the figures.

    python bench/verify.py [--seconds 2] [--rounds 5] [--kind citizen-pdf]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hub.envelope.builder import build_envelope, to_bytes
from hub.envelope.examples import example
from hub.envelope.validation import validate_envelope
from hub.inbound.opening import open_envelope
from hub.safexml import parse
from hub.signing.keys import KeyPair, self_signed_certificate
from hub.signing.signer import Signer
from hub.signing.truststore import TrustStore, trusted
from hub.signing.verifier import Verifier


def rate(func, seconds: float, rounds: int) -> float:
    """Median calls per second over ``rounds`` rounds of about ``seconds`` each."""
    func()  # warm up caches (schema compilation, ...)
    results = []
    for _ in range(rounds):
        count, start = 0, time.perf_counter()
        deadline = start + seconds
        while True:
            for _ in range(50):
                func()
            count += 50
            now = time.perf_counter()
            if now >= deadline:
                break
        results.append(count / (now - start))
    return statistics.median(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kind", default="citizen-pdf")
    args = parser.parse_args()

    now = datetime.now(UTC).replace(microsecond=0)
    model = example(args.kind, created=now - timedelta(minutes=1))
    org = model.header.sender.organization_id
    keys = {
        "rsa2048": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ecdsa-p256": ec.generate_private_key(ec.SECP256R1()),
    }
    figures: dict[str, float] = {}
    print(f"{'key':<11} {'backend':<8} {'bytes':>6} {'envelopes/s/core':>17}")
    for key_name, key in keys.items():
        pair = KeyPair(key, self_signed_certificate(key, "bench", not_before=now - timedelta(days=1)))
        data = to_bytes(Signer(pair).sign(build_envelope(model)))
        store = TrustStore([trusted(org, pair.certificate)])
        for backend in ("fast", "signxml"):
            verifier = Verifier(store, backend=backend)  # type: ignore[arg-type]
            per_s = rate(lambda: open_envelope(data, verifier=verifier, now=now), args.seconds, args.rounds)  # noqa: B023
            figures[f"{key_name}_{backend}_per_s"] = round(per_s)
            print(f"{key_name:<11} {backend:<8} {len(data):>6} {per_s:>17,.0f}")
        if key_name == "rsa2048":
            root = parse(data)
            fast = Verifier(store)
            stages = {
                "parse": lambda: parse(data),  # noqa: B023
                "verify": lambda: fast.verify(root, now=now, parties=[org]),  # noqa: B023
                "validate": lambda: validate_envelope(root, now=now),  # noqa: B023
            }
            for stage, func in stages.items():
                figures[f"stage_{stage}_us"] = round(1e6 / rate(func, args.seconds / 3, 3), 1)
    print(
        "stage cost (rsa2048, fast): "
        + ", ".join(f"{k[6:-3]} {v} µs" for k, v in figures.items() if k.startswith("stage_"))
    )
    headline = min(figures["rsa2048_fast_per_s"], figures["ecdsa-p256_fast_per_s"])
    figures["verify_validate_per_s_core"] = headline
    figures["speedup_vs_signxml"] = round(figures["rsa2048_fast_per_s"] / figures["rsa2048_signxml_per_s"], 2)
    print(f"verify + validate: {headline:,} envelopes/s/core (slower key type; target >= 1,500)")
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
