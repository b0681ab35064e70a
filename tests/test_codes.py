"""Join codes: the word list's properties, generation, lenient parsing, clear errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2prtc.core.codes import (
    InvalidCode,
    JoinCode,
    complete_code,
    generate_code,
    parse_code,
    pick_nameplate,
)
from p2prtc.core.wordlist import WORDS


def test_wordlist_has_256_distinct_short_lowercase_words() -> None:
    assert len(WORDS) == 256
    assert len(set(WORDS)) == 256
    assert all(word.isascii() and word.isalpha() and word.islower() for word in WORDS)
    assert all(3 <= len(word) <= 7 for word in WORDS)


def test_wordlist_prefixes_of_three_letters_are_unique() -> None:
    assert len({word[:3] for word in WORDS}) == 256


def test_str_is_the_canonical_code() -> None:
    assert str(JoinCode("7", ("guitar", "tornado"))) == "7-guitar-tornado"


def test_generate_code_shape() -> None:
    code = generate_code(7)
    assert code.nameplate == "7"
    assert len(code.words) == 2
    assert all(word in WORDS for word in code.words)
    assert parse_code(str(code)) == code
    assert len(generate_code("12", words=4).words) == 4


def test_generate_code_is_random() -> None:
    assert len({generate_code(1) for _ in range(50)}) > 40


def test_generate_code_needs_a_word() -> None:
    with pytest.raises(ValueError):
        generate_code(1, words=0)


@pytest.mark.parametrize(
    "typed",
    [
        "7-guitar-tornado",
        "  7-Guitar-TORNADO \n",
        "7 guitar tornado",
        "7 - guitar -- tornado",
        "007-guitar-tornado",
        "7-gui-torn",
    ],
)
def test_parse_is_lenient_and_canonical(typed: str) -> None:
    assert parse_code(typed) == JoinCode("7", ("guitar", "tornado"))


@pytest.mark.parametrize(
    ("typed", "detail"),
    [
        ("", "expected a number and words"),
        ("7", "expected a number and words"),
        ("guitar-tornado", "is not a number"),
        ("7-guitar-tornadoes", "unknown word 'tornadoes'"),
        ("7-gu-tornado", "unknown word 'gu'"),
        ("7-gux-tornado", "unknown word 'gux'"),
        ("0-guitar-tornado", "out of range"),
        ("1234567-guitar-tornado", "out of range"),
        ("٣-guitar-tornado", "is not a number"),
    ],
)
def test_parse_errors_are_clear(typed: str, detail: str) -> None:
    with pytest.raises(InvalidCode) as info:
        parse_code(typed)
    assert str(info.value).startswith("The join code is not valid. (")
    assert detail in str(info.value)


def test_joincode_refuses_non_canonical_values() -> None:
    with pytest.raises(InvalidCode, match="leading zero"):
        JoinCode("07", ("guitar",))
    with pytest.raises(InvalidCode, match="unknown word"):
        JoinCode("7", ("Guitar",))
    with pytest.raises(InvalidCode, match="no words"):
        JoinCode("7", ())


def test_pick_nameplate_takes_the_smallest_free_number() -> None:
    assert pick_nameplate(set()) == "1"
    assert pick_nameplate({"1", "2", "4"}) == "3"
    assert pick_nameplate({"2"}) == "1"


@given(st.text(max_size=60))
def test_parse_never_fails_other_than_invalid_code(text: str) -> None:
    try:
        code = parse_code(text)
    except InvalidCode:
        return
    assert parse_code(str(code)) == code


def test_completion_offers_the_words_that_fit_the_last_part() -> None:
    assert complete_code("7-gui") == ["7-guitar-"]
    assert complete_code("7-guitar-tor") == ["7-guitar-tornado-"]
    assert "12-zebra-" in complete_code("12-")
    assert complete_code("7") == []  # the number is never guessed
    assert complete_code("7-qqq") == []
    # A completed code parses back to itself.
    assert str(parse_code(complete_code(complete_code("7-gui")[0] + "torn")[0])) == (
        "7-guitar-tornado"
    )
