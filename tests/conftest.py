from __future__ import annotations

import pytest

from tests.kit import Keyring, keyring


@pytest.fixture(scope="session")
def keys() -> Keyring:
    """Keys (ECDSA P-256) of the example organisations, registered in a trust store."""
    return keyring("ec")


@pytest.fixture(scope="session")
def rsa_keys() -> Keyring:
    return keyring("rsa")
