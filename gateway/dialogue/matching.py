"""Utterance normalisation and phrase matching, for Chinese and English.

Rules of this file:
- `normalize` folds full-width to half-width forms (NFKC), case (casefold),
  punctuation and symbols to spaces, and drops white space except a single
  space between two Latin letters or digits. So "再说 一遍！" and "再说一遍"
  are the same, and so are "Say it AGAIN, please" and "say it again please".
- A phrase matches an utterance when the normalised phrase occurs in the
  normalised utterance, and a Latin word in the phrase is not part of a
  longer Latin word in the utterance ("human" does not match "inhuman").
  Chinese has no word boundaries; a Chinese phrase matches anywhere.
- Phrase sets are compiled once, at start-up; matching is pure and cheap.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from functools import lru_cache


def _is_word(ch: str) -> bool:
    # Latin letters and digits carry word boundaries; CJK characters do not.
    return ch.isascii() and ch.isalnum()


def _fold(text: str) -> str:
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    out: list[str] = []
    pending_space = False
    for ch in folded:
        if ch.isspace() or unicodedata.category(ch)[0] in "PSZC":
            pending_space = True
            continue
        if pending_space and out and _is_word(out[-1]) and _is_word(ch):
            out.append(" ")
        pending_space = False
        out.append(ch)
    return unicodedata.normalize("NFC", "".join(out))


@lru_cache(maxsize=4096)
def normalize(text: str) -> str:
    """The matching form of `text` (see the file header)."""
    result = _fold(text)
    # Dropping a separator can put a combining mark next to a letter, and
    # composing them can change a letter's script: fold again until stable,
    # so that normalising twice changes nothing. Real text needs one pass.
    for _ in range(4):
        again = _fold(result)
        if again == result:
            break
        result = again
    return result


_WORD = "A-Za-z0-9"


def _phrase_pattern(phrase: str) -> str:
    # Latin words must stand whole; CJK characters need no boundary.
    left = f"(?<![{_WORD}])" if _is_word(phrase[0]) else ""
    right = f"(?![{_WORD}])" if _is_word(phrase[-1]) else ""
    return f"{left}{re.escape(phrase)}{right}"


def _no_match(text: str) -> None:
    return None


class PhraseSet:
    """A compiled list of phrases; `matches` takes an already normalised text.

    All phrases are one regular expression, so a match is one scan in C.
    """

    __slots__ = ("_phrases", "_regex", "search")

    def __init__(self, phrases: Iterable[str]) -> None:
        normalized = {normalize(p) for p in phrases}
        normalized.discard("")
        # Longest first, so the more specific phrase is tried first.
        self._phrases = tuple(sorted(normalized, key=lambda p: (-len(p), p)))
        self._regex = (
            re.compile("|".join(_phrase_pattern(p) for p in self._phrases))
            if self._phrases
            else None
        )
        # The compiled pattern's own search (a match or None): the turn path
        # calls it directly, without a Python frame in between.
        self.search: Callable[[str], object] = (
            self._regex.search if self._regex is not None else _no_match
        )

    def matches(self, text: str) -> bool:
        return self.search(text) is not None

    def __bool__(self) -> bool:
        return bool(self._phrases)

    def __repr__(self) -> str:
        return f"PhraseSet({list(self._phrases)!r})"
