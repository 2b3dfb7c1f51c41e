"""Check digits of the identifiers an envelope carries, as pure predicates.

The arithmetic comes from python-stdnum (a well-kept library of standard numbers); this
module only fixes which variant the hub accepts:

- SSIN: Belgian national number or bis number, 11 digits, mod 97 over the first nine
  digits (prefixed with 2 for people born from 2000).
- CBE: enterprise number, 10 digits starting with 0 or 1, mod 97 over the first eight.
- IBAN: ISO 13616, mod 97 over the rearranged number, with the country's length.
  National bank-code registries are not consulted: a new bank is not refused.
- BIC: ISO 9362 shape (8 or 11 characters, a known country).
- Structured reference (OGM/VCS): 12 digits, the last two are the first ten mod 97
  (97 when the remainder is 0).
"""

from __future__ import annotations

import functools
import re

from stdnum import bic as _bic
from stdnum import iban as _iban
from stdnum.be import ogm_vcs as _ogm
from stdnum.be import ssn as _ssn
from stdnum.be import vat as _cbe
from stdnum.exceptions import ValidationError


def is_valid_ssin(value: str) -> bool:
    return len(value) == 11 and value.isascii() and value.isdigit() and _ssn.is_valid(value)


@functools.lru_cache(maxsize=4096)
def is_valid_cbe(value: str) -> bool:
    """Remembered: an envelope names its sender's numbers (few, and the same every time) besides its recipient's."""
    return len(value) == 10 and value.isascii() and value.isdigit() and value[0] in "01" and _cbe.is_valid(value)


# The written forms accepted. stdnum is lenient about separators and reads any Unicode
# digit; the hub takes only the compact ASCII form (and the reference as printed).
_IBAN = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}")
_BIC = re.compile(r"[A-Z]{6}[A-Z0-9]{2}(?:[A-Z0-9]{3})?")
_REFERENCE = re.compile(r"(\+\+\+|\*\*\*)?[0-9]{3}/?[0-9]{4}/?[0-9]{5}(\+\+\+|\*\*\*)?")


def is_valid_iban(value: str) -> bool:
    if not _IBAN.fullmatch(value):
        return False
    try:
        _iban.validate(value, check_country=False)
    except ValidationError:
        return False
    return True


def is_valid_bic(value: str) -> bool:
    return bool(_BIC.fullmatch(value)) and _bic.is_valid(value)


def structured_reference_digits(value: str) -> str:
    """``+++010/8068/17183+++`` -> ``010806817183``."""
    return "".join(ch for ch in value if ch.isdigit())


def is_valid_structured_reference(value: str) -> bool:
    written = _REFERENCE.fullmatch(value)
    if not written or (written.group(1) or "") != (written.group(2) or ""):
        return False
    return _ogm.is_valid(structured_reference_digits(value))


def format_structured_reference(digits: str) -> str:
    return f"+++{digits[:3]}/{digits[3:7]}/{digits[7:]}+++"
