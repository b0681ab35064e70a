"""Join codes: ``<nameplate>-<word>-<word>``, e.g. ``7-guitar-tornado`` (sans-IO).

The nameplate is a small number that tells the joiner which open invitation to contact; it is
public. The words are the secret (8 bits each, from wordlist.WORDS) that both sides feed to
SPAKE2. Since the PAKE runs on the code's canonical text, ``parse_code`` normalises whatever
the user typed (case, spaces, leading zeros, 3-letter prefixes) to that text.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from p2prtc.core.wordlist import WORDS
from p2prtc.errors import ExitCode, P2PError

DEFAULT_WORDS = 2
MAX_NAMEPLATE_DIGITS = 6
_PREFIX_LEN = 3
_SEPARATORS = re.compile(r"[\s-]+")
_WORD_SET = frozenset(WORDS)
_BY_PREFIX = {word[:_PREFIX_LEN]: word for word in WORDS}


class InvalidCode(P2PError):
    """The join code is not valid."""

    exit_code = ExitCode.CODE_REFUSED


@dataclass(frozen=True)
class JoinCode:
    """A parsed, canonical join code; ``str()`` gives the text users type and the PAKE uses."""

    nameplate: str
    words: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_nameplate(self.nameplate)
        if self.nameplate.startswith("0"):
            raise InvalidCode(f"the number {self.nameplate!r} is not canonical (leading zero)")
        if not self.words:
            raise InvalidCode("no words after the number")
        unknown = [word for word in self.words if word not in _WORD_SET]
        if unknown:
            raise InvalidCode(f"unknown word {unknown[0]!r}")

    def __str__(self) -> str:
        return "-".join((self.nameplate, *self.words))


def generate_code(nameplate: int | str, words: int = DEFAULT_WORDS) -> JoinCode:
    """A fresh code on ``nameplate`` with ``words`` random words (8 bits of secret each)."""
    if words < 1:
        raise ValueError("a code needs at least one word")
    import secrets  # here: the CLI parses codes, and secrets loads OpenSSL (hmac)

    chosen = tuple(secrets.choice(WORDS) for _ in range(words))
    return JoinCode(_normalise_nameplate(str(nameplate)), chosen)


def parse_code(text: str) -> JoinCode:
    """Parse what a user typed: case-insensitive, trimmed, '-' or spaces between parts.

    A word may be abbreviated to any prefix of three letters or more.
    """
    parts = [part for part in _SEPARATORS.split(text.strip().lower()) if part]
    if len(parts) < 2:
        raise InvalidCode("expected a number and words, like 7-guitar-tornado")
    nameplate, *words = parts
    return JoinCode(_normalise_nameplate(nameplate), tuple(_expand_word(w) for w in words))


def complete_code(typed: str) -> list[str]:
    """Completions of a partly typed code (the words of the last part), for a prompt.

    ``"7-gui"`` gives ``["7-guitar-"]``; the number itself is never guessed.
    """
    head, separator, last = typed.lower().rpartition("-")
    if not separator or not head:
        return []
    matches = sorted(word for word in WORDS if word.startswith(last))
    return [f"{head}-{word}-" for word in matches]


def pick_nameplate(taken: Collection[str]) -> str:
    """The smallest nameplate (from 1) not in ``taken``: short numbers are easiest to type."""
    number = 1
    while str(number) in taken:
        number += 1
    return str(number)


def _normalise_nameplate(text: str) -> str:
    _check_nameplate(text)
    return str(int(text))


def _check_nameplate(text: str) -> None:
    if not (text.isascii() and text.isdigit()):
        raise InvalidCode(f"{text!r} is not a number; codes start with one, like 7-guitar-tornado")
    if len(text) > MAX_NAMEPLATE_DIGITS or int(text) == 0:
        raise InvalidCode(f"the number {text!r} is out of range")


def _expand_word(typed: str) -> str:
    """The word ``typed`` names: itself, or the only word starting with it (3+ letters)."""
    if typed in _WORD_SET:
        return typed
    candidate = _BY_PREFIX.get(typed[:_PREFIX_LEN])
    if len(typed) >= _PREFIX_LEN and candidate is not None and candidate.startswith(typed):
        return candidate
    raise InvalidCode(f"unknown word {typed!r}")
