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

import unicodedata
from collections.abc import Iterable
from functools import lru_cache


def _is_word(ch: str) -> bool:
    # Latin letters and digits carry word boundaries; CJK characters do not.
    return ch.isascii() and ch.isalnum()


@lru_cache(maxsize=4096)
def normalize(text: str) -> str:
    """The matching form of `text` (see the file header)."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    out: list[str] = []
    pending_space = False
    for ch in folded:
        cat = unicodedata.category(ch)
        if ch.isspace() or cat[0] in "PSZC":
            pending_space = True
            continue
        if pending_space and out and _is_word(out[-1]) and _is_word(ch):
            out.append(" ")
        pending_space = False
        out.append(ch)
    # Dropping a spacing mark can leave a combining one next to a letter;
    # compose again so that normalising twice changes nothing.
    return unicodedata.normalize("NFC", "".join(out))


def occurs(phrase: str, text: str) -> bool:
    """Whether normalised `phrase` occurs in normalised `text` on word boundaries."""
    if not phrase:
        return False
    start = text.find(phrase)
    n = len(phrase)
    check_left = _is_word(phrase[0])
    check_right = _is_word(phrase[-1])
    while start != -1:
        end = start + n
        left_ok = not (check_left and start > 0 and _is_word(text[start - 1]))
        right_ok = not (check_right and end < len(text) and _is_word(text[end]))
        if left_ok and right_ok:
            return True
        start = text.find(phrase, start + 1)
    return False


class PhraseSet:
    """A compiled list of phrases; `matches` takes an already normalised text."""

    __slots__ = ("_exact", "_phrases")

    def __init__(self, phrases: Iterable[str]) -> None:
        normalized = {normalize(p) for p in phrases}
        normalized.discard("")
        self._exact = frozenset(normalized)
        # Longest first, so the more specific phrase is tried first.
        self._phrases = tuple(sorted(normalized, key=len, reverse=True))

    def matches(self, text: str) -> bool:
        if text in self._exact:
            return True
        return any(occurs(p, text) for p in self._phrases)

    def __bool__(self) -> bool:
        return bool(self._phrases)

    def __repr__(self) -> str:
        return f"PhraseSet({list(self._phrases)!r})"
