"""Property-based tests of the identifiers' check digits (hub.envelope.identifiers).

The expected check digits are computed here, independently, from the published formulas
(not through python-stdnum, which the hub uses):

- SSIN: 97 - (first nine digits mod 97); for people born from 2000 the nine digits are
  prefixed with "2". Bis numbers add 20 or 40 to the month.
- CBE: 97 - (first eight digits mod 97); the first digit is 0 or 1.
- IBAN: the first four characters moved to the end, letters as numbers (A=10..Z=35), the
  whole mod 97 is 1.
- Structured reference (OGM/VCS): the first ten digits mod 97 (97 for 0), written
  +++ddd/dddd/ddddd+++.

mod 97 detects every single-digit substitution (97 is prime and does not divide
d * 10^k for 0 < |d| < 10) and every swap of two adjacent different digits
((a - b) * 9 * 10^k). For an SSIN a changed number may become valid under the *other*
century's rule; the properties below assert only what that allows.
"""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hub.envelope.identifiers import (
    format_structured_reference,
    is_valid_bic,
    is_valid_cbe,
    is_valid_iban,
    is_valid_ssin,
    is_valid_structured_reference,
    structured_reference_digits,
)

FAST = settings(max_examples=200, deadline=None)
TODAY = date.today()
DIGITS = "0123456789"
UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
ARABIC_INDIC_THREE = "\u0663"  # '٣': str.isdigit() is True, but it is not an ASCII digit


# --- independent oracles -------------------------------------------------------------


def ssin_check(first9: str, century: int) -> str:
    base = int(first9) if century < 2000 else int("2" + first9)
    return f"{97 - base % 97:02d}"


def other_century(born_year: int) -> int:
    return 1900 if born_year >= 2000 else 2000


def century_possible(first9: str, century: int) -> bool:
    """A 2000s birth year must not lie in the future; the 1900s are always possible."""
    return century == 1900 or 2000 + int(first9[:2]) <= TODAY.year


def cbe_check(first8: str) -> str:
    return f"{97 - int(first8) % 97:02d}"


def reference_check(first10: str) -> str:
    return f"{int(first10) % 97 or 97:02d}"


def iban_numeric(text: str) -> int:
    return int("".join(str(int(ch, 36)) for ch in text))


def iban_check(country: str, bban: str) -> str:
    return f"{98 - iban_numeric(bban + country + '00') % 97:02d}"


def iban_mod97_ok(iban: str) -> bool:
    return iban_numeric(iban[4:] + iban[:4]) % 97 == 1


# --- strategies -------------------------------------------------------------------------


def digits(n: int) -> st.SearchStrategy[str]:
    return st.text(DIGITS, min_size=n, max_size=n)


def alnum(n: int) -> st.SearchStrategy[str]:
    return st.text(DIGITS + UPPER, min_size=n, max_size=n)


@st.composite
def ssins(draw: st.DrawFn, *, bis: bool = False, born: st.SearchStrategy[date] | None = None) -> tuple[str, date]:
    """A valid SSIN (or bis number) and the birth date it encodes."""
    birth = draw(born if born is not None else st.dates(min_value=date(1900, 1, 1), max_value=TODAY))
    month = birth.month + (draw(st.sampled_from((20, 40))) if bis else 0)
    serial = draw(st.integers(min_value=1, max_value=997))
    first9 = f"{birth.year % 100:02d}{month:02d}{birth.day:02d}{serial:03d}"
    return first9 + ssin_check(first9, birth.year), birth


@st.composite
def cbes(draw: st.DrawFn) -> str:
    first8 = draw(st.sampled_from("01")) + draw(digits(7))
    return first8 + cbe_check(first8)


@st.composite
def reference_digits(draw: st.DrawFn) -> str:
    first10 = draw(digits(10))
    return first10 + reference_check(first10)


# Country, and the BBAN's shape as strategies per segment (from the IBAN registry).
BBAN_SHAPES: dict[str, tuple[st.SearchStrategy[str], ...]] = {
    "BE": (digits(12),),  # 16 characters in all
    "DE": (digits(18),),  # 22
    "FR": (digits(5), digits(5), alnum(11), digits(2)),  # 27
    "NL": (st.text(UPPER, min_size=4, max_size=4), digits(10)),  # 18: a 4-letter bank code
    "LU": (digits(3), alnum(13)),  # 20
}
IBAN_LENGTHS = {"BE": 16, "DE": 22, "FR": 27, "NL": 18, "LU": 20}


@st.composite
def ibans(draw: st.DrawFn, country: str | None = None) -> str:
    cc = country or draw(st.sampled_from(sorted(BBAN_SHAPES)))
    bban = "".join(draw(part) for part in BBAN_SHAPES[cc])
    return cc + iban_check(cc, bban) + bban


def substitute(value: str, position: int, new: str) -> str:
    return value[:position] + new + value[position + 1 :]


def swap(value: str, position: int) -> str:
    return value[:position] + value[position + 1] + value[position] + value[position + 2 :]


@st.composite
def substitution(draw: st.DrawFn, value: str, positions: range | list[int]) -> tuple[int, str]:
    """A position among ``positions`` and a different ASCII digit to put there."""
    position = draw(st.sampled_from(list(positions)))
    new = draw(st.sampled_from([d for d in DIGITS if d != value[position]]))
    return position, new


# --- the oracles agree with the published examples --------------------------------------


def test_the_independent_formulas_reproduce_the_known_examples() -> None:
    assert ssin_check("850730033", 1985) == "28"
    assert ssin_check("010101123", 2001) == "01"
    assert cbe_check("04067980") == "06"
    assert cbe_check("03083571") == "59"
    assert reference_check("0108068171") == "83"
    assert iban_check("BE", "096123456769") == "71"
    assert iban_mod97_ok("BE71096123456769")


# --- SSIN --------------------------------------------------------------------------------


@pytest.mark.parametrize("ssin", ["85073003328", "93051822361", "01010112301", "68041217944"])
def test_known_good_ssins_are_accepted(ssin: str) -> None:
    assert is_valid_ssin(ssin)


@pytest.mark.parametrize(
    "ssin",
    [
        pytest.param("85073003329", id="wrong-check-digits"),
        pytest.param("85073003382", id="check-digits-swapped"),
        pytest.param("8507300332", id="10-digits"),
        pytest.param("850730033280", id="12-digits"),
        pytest.param("", id="empty"),
        pytest.param(" 85073003328", id="leading-space"),
        pytest.param("85073003328 ", id="trailing-space"),
        pytest.param("85073003328\n", id="trailing-newline"),
        pytest.param("85.07.30-033.28", id="with-separators"),
        pytest.param("8507300332a", id="letter"),
        pytest.param("8507300332" + ARABIC_INDIC_THREE, id="arabic-indic-digit"),
        pytest.param("８５０７３００３３２８", id="fullwidth-digits"),
        pytest.param("851330033" + ssin_check("851330033", 1985), id="month-13-with-right-check"),
        pytest.param("853330033" + ssin_check("853330033", 1985), id="month-33-with-right-check"),
        pytest.param("501010001" + ssin_check("501010001", 2050), id="born-2050-future"),
    ],
)
def test_known_bad_ssins_are_refused(ssin: str) -> None:
    assert not is_valid_ssin(ssin)


def test_given_a_person_born_in_2001_when_checked_then_only_the_2_prefix_explains_the_check_digits() -> None:
    # Given the example citizen born on 1 January 2001
    first9, check = "010101123", "01"
    # Then the check digits are those of the 2000s rule, not of the 1900s rule
    assert ssin_check(first9, 2001) == check != ssin_check(first9, 1901)
    assert is_valid_ssin(first9 + check)


@FAST
@given(ssins())
def test_every_valid_ssin_is_accepted(case: tuple[str, date]) -> None:
    ssin, _ = case
    assert is_valid_ssin(ssin)


@FAST
@given(ssins(bis=True))
def test_every_valid_bis_number_is_accepted(case: tuple[str, date]) -> None:
    bis, born = case
    assert int(bis[2:4]) in (born.month + 20, born.month + 40)
    assert is_valid_ssin(bis)


@FAST
@given(ssins(born=st.dates(min_value=date(TODAY.year + 1, 1, 1), max_value=date(2099, 12, 31))))
def test_a_number_computed_for_a_birth_date_in_the_future_is_refused(case: tuple[str, date]) -> None:
    # The 2000s rule only applies to years that have begun; the 1900s rule gives other digits.
    ssin, _ = case
    assert ssin[9:] != ssin_check(ssin[:9], 1900)
    assert not is_valid_ssin(ssin)


@FAST
@given(st.data(), ssins())
def test_changing_a_check_digit_of_an_ssin_is_refused_unless_the_other_century_explains_it(
    data: st.DataObject, case: tuple[str, date]
) -> None:
    # Given a valid SSIN, when one check digit is changed to another digit
    ssin, born = case
    position, new = data.draw(substitution(ssin, range(9, 11)))
    changed = substitute(ssin, position, new)
    # Then it is valid only when it is the number of someone born a century apart
    first9, century = changed[:9], other_century(born.year)
    expected = changed[9:] == ssin_check(first9, century) and century_possible(first9, century)
    assert is_valid_ssin(changed) == expected


@FAST
@given(st.data(), ssins())
def test_changing_a_payload_digit_of_an_ssin_breaks_the_same_century_rule(
    data: st.DataObject, case: tuple[str, date]
) -> None:
    # Given a valid SSIN, when one of its first nine digits is changed
    ssin, born = case
    position, new = data.draw(substitution(ssin, range(9)))
    changed = substitute(ssin, position, new)
    # Then the check digits no longer fit under the same century (mod 97 detects it) ...
    assert changed[9:] != ssin_check(changed[:9], born.year)
    # ... so if the hub accepts it, it can only be as the number of someone born a century apart
    if is_valid_ssin(changed):
        assert changed[9:] == ssin_check(changed[:9], other_century(born.year))


@FAST
@given(ssins(born=st.dates(min_value=date(1900, 1, 1), max_value=date(1999, 12, 31))), st.data())
def test_changing_a_check_digit_of_an_ssin_from_the_future_only_century_range_is_refused(
    case: tuple[str, date], data: st.DataObject
) -> None:
    # Given someone born in the 1900s in a year whose 2000s twin has not begun yet
    ssin, _ = case
    assume(2000 + int(ssin[:2]) > TODAY.year)
    position, new = data.draw(substitution(ssin, range(9, 11)))
    # Then any changed check digit is refused: there is no other century to fall back on
    assert not is_valid_ssin(substitute(ssin, position, new))


@FAST
@given(ssins(), st.sampled_from([" ", "\t", "\n", "\u00a0"]), st.booleans())
def test_an_ssin_with_surrounding_whitespace_is_refused(case: tuple[str, date], space: str, before: bool) -> None:
    ssin, _ = case
    assert not is_valid_ssin(space + ssin if before else ssin + space)


@FAST
@given(ssins(), st.integers(min_value=0, max_value=10), st.sampled_from([ARABIC_INDIC_THREE, "\uff13", "a", "-", "."]))
def test_an_ssin_with_a_non_ascii_digit_or_non_digit_is_refused(
    case: tuple[str, date], position: int, bad: str
) -> None:
    ssin, _ = case
    assert not is_valid_ssin(substitute(ssin, position, bad))


@FAST
@given(ssins(), st.sampled_from(["drop", "append"]), st.sampled_from(DIGITS))
def test_an_ssin_of_the_wrong_length_is_refused(case: tuple[str, date], how: str, extra: str) -> None:
    ssin, _ = case
    assert not is_valid_ssin(ssin[:-1] if how == "drop" else ssin + extra)


# --- CBE ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cbe", ["0406798006", "0308357159", "0206731645", "0207373429", "0202239951"])
def test_known_good_enterprise_numbers_are_accepted(cbe: str) -> None:
    assert is_valid_cbe(cbe)


@pytest.mark.parametrize(
    "cbe",
    [
        pytest.param("0406798007", id="wrong-check-digits"),
        pytest.param("0406798060", id="check-digits-swapped"),
        pytest.param("406798006", id="9-digits-old-format"),
        pytest.param("04067980060", id="11-digits"),
        pytest.param("BE0406798006", id="vat-prefix"),
        pytest.param("0406.798.006", id="with-dots"),
        pytest.param(" 0406798006", id="leading-space"),
        pytest.param("0406798006 ", id="trailing-space"),
        pytest.param("040679800" + ARABIC_INDIC_THREE, id="arabic-indic-digit"),
        pytest.param("2" + "0000000" + cbe_check("20000000"), id="first-digit-2-with-right-check"),
        pytest.param("", id="empty"),
    ],
)
def test_known_bad_enterprise_numbers_are_refused(cbe: str) -> None:
    assert not is_valid_cbe(cbe)


@FAST
@given(cbes())
def test_every_valid_enterprise_number_is_accepted(cbe: str) -> None:
    assert is_valid_cbe(cbe)


@FAST
@given(st.data(), cbes())
def test_changing_any_digit_of_an_enterprise_number_is_refused(data: st.DataObject, cbe: str) -> None:
    position, new = data.draw(substitution(cbe, range(10)))
    assert not is_valid_cbe(substitute(cbe, position, new))


@FAST
@given(st.data(), cbes())
def test_swapping_two_adjacent_different_digits_of_an_enterprise_number_is_refused(
    data: st.DataObject, cbe: str
) -> None:
    pairs = [i for i in range(7) if cbe[i] != cbe[i + 1]]
    assume(pairs)
    assert not is_valid_cbe(swap(cbe, data.draw(st.sampled_from(pairs))))


@FAST
@given(st.sampled_from("23456789"), digits(7))
def test_an_enterprise_number_not_starting_with_0_or_1_is_refused_even_with_right_check_digits(
    first: str, rest: str
) -> None:
    first8 = first + rest
    assert not is_valid_cbe(first8 + cbe_check(first8))


@FAST
@given(cbes(), st.integers(min_value=0, max_value=9), st.sampled_from([ARABIC_INDIC_THREE, "\uff10", "O", " "]))
def test_an_enterprise_number_with_a_non_ascii_digit_or_non_digit_is_refused(cbe: str, position: int, bad: str) -> None:
    assert not is_valid_cbe(substitute(cbe, position, bad))


@FAST
@given(cbes(), st.sampled_from([" ", "\t", "\n"]), st.booleans())
def test_an_enterprise_number_with_surrounding_whitespace_is_refused(cbe: str, space: str, before: bool) -> None:
    assert not is_valid_cbe(space + cbe if before else cbe + space)


# --- IBAN --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "iban",
    [
        "BE71096123456769",
        "BE68539007547034",
        "DE89370400440532013000",
        "FR1420041010050500013M02606",
        "NL91ABNA0417164300",
        "LU280019400644750000",
    ],
)
def test_known_good_ibans_are_accepted(iban: str) -> None:
    assert iban_mod97_ok(iban)
    assert is_valid_iban(iban)


@pytest.mark.parametrize(
    "iban",
    [
        pytest.param("BE71096123456768", id="wrong-check"),
        pytest.param("BE17096123456769", id="check-digits-swapped"),
        pytest.param("be71096123456769", id="lower-case"),
        pytest.param("BE71 0961 2345 6769", id="grouped-with-spaces"),
        pytest.param(" BE71096123456769", id="leading-space"),
        pytest.param("BE71096123456769 ", id="trailing-space"),
        pytest.param("BE7109612345676", id="too-short"),
        pytest.param("XX71096123456769", id="unknown-country"),
        pytest.param("BE7109612345676" + "\u0669", id="arabic-indic-digit"),
        pytest.param("BE" + "\u0667" + "1096123456769", id="arabic-indic-digit-of-same-value-in-check"),
        pytest.param("", id="empty"),
    ],
)
def test_known_bad_ibans_are_refused(iban: str) -> None:
    assert not is_valid_iban(iban)


@pytest.mark.parametrize("separator", ["-", "."])
def test_an_iban_written_with_separators_is_refused(separator: str) -> None:
    # Given the example IBAN grouped by fours with a separator other than a space
    grouped = separator.join(["BE71", "0961", "2345", "6769"])
    # Then it is refused like the space-grouped form: an envelope carries the electronic form
    assert not is_valid_iban(grouped)


@FAST
@given(ibans())
def test_every_valid_iban_is_accepted(iban: str) -> None:
    assert len(iban) == IBAN_LENGTHS[iban[:2]]
    assert iban_mod97_ok(iban)
    assert is_valid_iban(iban)


@FAST
@given(st.data(), ibans())
def test_changing_any_digit_of_an_iban_is_refused(data: st.DataObject, iban: str) -> None:
    positions = [i for i in range(2, len(iban)) if iban[i] in DIGITS]
    position, new = data.draw(substitution(iban, positions))
    changed = substitute(iban, position, new)
    assert not iban_mod97_ok(changed)
    assert not is_valid_iban(changed)


@FAST
@given(st.data(), ibans())
def test_swapping_two_adjacent_different_digits_of_an_iban_is_refused(data: st.DataObject, iban: str) -> None:
    pairs = [
        i for i in range(4, len(iban) - 1) if iban[i] in DIGITS and iban[i + 1] in DIGITS and iban[i] != iban[i + 1]
    ]
    assume(pairs)
    assert not is_valid_iban(swap(iban, data.draw(st.sampled_from(pairs))))


@FAST
@given(st.sampled_from(sorted(BBAN_SHAPES)), st.data(), st.sampled_from(["drop", "append"]))
def test_an_iban_of_the_wrong_length_for_its_country_is_refused_even_with_right_check_digits(
    country: str, data: st.DataObject, how: str
) -> None:
    # Given a BBAN one character too short or too long, with check digits computed for it
    bban = "".join(data.draw(part) for part in BBAN_SHAPES[country])
    bban = bban[:-1] if how == "drop" else bban + "0"
    iban = country + iban_check(country, bban) + bban
    # Then mod 97 is fine but the length is not: refused
    assert iban_mod97_ok(iban)
    assert not is_valid_iban(iban)


@FAST
@given(ibans(), st.sampled_from([" ", "\t", "\n"]), st.booleans())
def test_an_iban_with_surrounding_whitespace_is_refused(iban: str, space: str, before: bool) -> None:
    assert not is_valid_iban(space + iban if before else iban + space)


@FAST
@given(ibans())
def test_an_iban_in_lower_case_is_refused(iban: str) -> None:
    assume(iban.lower() != iban)
    assert not is_valid_iban(iban.lower())


@FAST
@given(st.data(), ibans(country="BE"))
def test_a_belgian_iban_with_a_non_ascii_digit_is_refused(data: st.DataObject, iban: str) -> None:
    position = data.draw(st.integers(min_value=2, max_value=len(iban) - 1))
    assert not is_valid_iban(substitute(iban, position, ARABIC_INDIC_THREE))


# --- BIC ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bic", ["GKCCBEBB", "BBRUBEBB", "GEBABEBB", "GKCCBEBBXXX", "DEUTDEFF500"])
def test_known_good_bics_are_accepted(bic: str) -> None:
    assert is_valid_bic(bic)


@pytest.mark.parametrize(
    "bic",
    [
        pytest.param("gkccbebb", id="lower-case"),
        pytest.param("GKCCBEB", id="7-characters"),
        pytest.param("GKCCBEBB1", id="9-characters"),
        pytest.param("GKCCBEBB12", id="10-characters"),
        pytest.param("GKCC1EBB", id="digit-in-country"),
        pytest.param("GKCCXXBB", id="unknown-country"),
        pytest.param("", id="empty"),
    ],
)
def test_known_bad_bics_are_refused(bic: str) -> None:
    assert not is_valid_bic(bic)


@pytest.mark.parametrize(
    "bic",
    [
        pytest.param(" GKCCBEBB", id="leading-space"),
        pytest.param("GKCCBEBB ", id="trailing-space"),
        pytest.param("GKCCBEBB\n", id="trailing-newline"),
        pytest.param("GKCC BEBB", id="inner-space"),
        pytest.param("GKCC-BE-BB", id="dashes"),
    ],
)
def test_a_bic_with_whitespace_or_separators_is_refused(bic: str) -> None:
    assert not is_valid_bic(bic)


# --- structured reference (OGM/VCS) ------------------------------------------------------


@pytest.mark.parametrize(
    "reference",
    [
        "+++010/8068/17183+++",
        "***010/8068/17183***",  # the schema's alternative delimiters
        "010806817183",  # the schema allows the bare digits
        "+++000/0000/09797+++",  # remainder 0: the check is 97
    ],
)
def test_known_good_structured_references_are_accepted(reference: str) -> None:
    assert is_valid_structured_reference(reference)


@pytest.mark.parametrize(
    "reference",
    [
        pytest.param("+++010/8068/17184+++", id="wrong-check"),
        pytest.param("+++010/8068/17138+++", id="check-digits-swapped"),
        pytest.param("+++000/0000/09700+++", id="remainder-0-written-00"),
        pytest.param("+++010/8068/1718+++", id="11-digits"),
        pytest.param("+++010/8068/171830+++", id="13-digits"),
        pytest.param("+++010/8068/1718" + ARABIC_INDIC_THREE + "+++", id="arabic-indic-digit"),
        pytest.param("", id="empty"),
    ],
)
def test_known_bad_structured_references_are_refused(reference: str) -> None:
    assert not is_valid_structured_reference(reference)


@pytest.mark.parametrize(
    "reference",
    [
        pytest.param(" +++010/8068/17183+++", id="leading-space"),
        pytest.param("+++010/8068/17183+++ ", id="trailing-space"),
        pytest.param("+++010/8068/17183+++\n", id="trailing-newline"),
        pytest.param("REF 010806817183", id="letters-before"),
        pytest.param("+++010/8068/17183+++x", id="letter-after"),
        pytest.param("+++0108/068/17183+++", id="wrong-grouping"),
        pytest.param("0 1 0 8 0 6 8 1 7 1 8 3", id="spaced-digits"),
    ],
)
def test_a_structured_reference_with_other_characters_than_its_written_form_is_refused(reference: str) -> None:
    # The 12 digits are right; what surrounds them is not the +++ddd/dddd/ddddd+++ form.
    assert not is_valid_structured_reference(reference)


@FAST
@given(reference_digits())
def test_every_valid_structured_reference_is_accepted_in_its_written_form(digits12: str) -> None:
    written = format_structured_reference(digits12)
    assert written == f"+++{digits12[:3]}/{digits12[3:7]}/{digits12[7:]}+++"
    assert is_valid_structured_reference(written)


@FAST
@given(reference_digits())
def test_a_structured_reference_round_trips_between_written_form_and_digits(digits12: str) -> None:
    written = format_structured_reference(digits12)
    assert structured_reference_digits(written) == digits12
    assert format_structured_reference(structured_reference_digits(written)) == written


@FAST
@given(st.data(), reference_digits())
def test_changing_any_digit_of_a_structured_reference_is_refused(data: st.DataObject, digits12: str) -> None:
    position, new = data.draw(substitution(digits12, range(12)))
    assert not is_valid_structured_reference(format_structured_reference(substitute(digits12, position, new)))


@FAST
@given(st.data(), reference_digits())
def test_swapping_two_adjacent_different_digits_of_a_structured_reference_is_refused(
    data: st.DataObject, digits12: str
) -> None:
    pairs = [i for i in range(9) if digits12[i] != digits12[i + 1]]
    assume(pairs)
    swapped = swap(digits12, data.draw(st.sampled_from(pairs)))
    assert not is_valid_structured_reference(format_structured_reference(swapped))


@FAST
@given(reference_digits(), st.sampled_from(["drop", "append"]), st.sampled_from(DIGITS))
def test_a_structured_reference_of_the_wrong_length_is_refused(digits12: str, how: str, extra: str) -> None:
    assert not is_valid_structured_reference(digits12[:-1] if how == "drop" else digits12 + extra)


@FAST
@given(reference_digits(), st.integers(min_value=0, max_value=11))
def test_a_structured_reference_with_a_non_ascii_digit_is_refused(digits12: str, position: int) -> None:
    assert not is_valid_structured_reference(
        format_structured_reference(substitute(digits12, position, ARABIC_INDIC_THREE))
    )


@FAST
@given(reference_digits(), st.sampled_from([" ", "\t", "\n"]), st.booleans())
def test_a_structured_reference_with_surrounding_whitespace_is_refused(digits12: str, space: str, before: bool) -> None:
    written = format_structured_reference(digits12)
    assert not is_valid_structured_reference(space + written if before else written + space)
