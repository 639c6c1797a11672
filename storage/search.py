"""What journal search matches, as text a trigram index can serve.

Theory of operation
-------------------
Search (DESIGN section 1) takes one string and matches the customer's name, the contact
person's name, an employee's name or extension, or the phone number "in any format, partial
digits". Joining four tables per row and normalising numbers at query time would scan the
journal, so the writer keeps one lower-cased ``search_text`` per call holding all of it:
names folded (:func:`fold`: case and ``ё``/``е``, which Russian writes interchangeably),
extensions, and the number's digits in each written form — international
(``79161234567``), national with its trunk prefix (``89161234567``) and as the PBX presented
it. Any run of digits a person types is then a plain substring of that text, and a trigram
index (FTS5 ``trigram`` on SQLite, ``pg_trgm`` on PostgreSQL) finds substrings without a scan.

:func:`parse_query` turns the user's string into terms: a string without letters is a
number — its digits, plus the international digits when it is a whole valid number, so
``8 916 123-45-67``, ``+7 916 1234567`` and ``9161234567`` all find ``+79161234567``; a string
with letters is words, each of which must match. Trigram indexes need three characters; the
shortest terms are reported so the query module can fall back to a bounded substring walk.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

import phonenumbers

from storage.numbers import digits_of, possible_number

__all__ = [
    "MIN_INDEXED_TERM",
    "SearchQuery",
    "fold",
    "number_forms",
    "parse_query",
    "search_text",
]

#: Trigram indexes match only terms of at least this many characters.
MIN_INDEXED_TERM = 3
_PHONE_PUNCTUATION = frozenset("+-() .")


def fold(text: str) -> str:
    """Case- and ``ё``-insensitive form used on both sides of a search."""
    return " ".join(text.casefold().replace("ё", "е").split())


def number_forms(number: str | None, region: str) -> list[str]:
    """Every digit string a person may type for this (normalised) number, most specific
    first: international and national. The form the PBX presented adds nothing a person
    types (its digits are a part of one of these, or a dialling prefix), and leaving it out
    makes the text a number's own (migration 0012 indexes each number once,
    :mod:`storage.searchkeys`)."""
    forms: list[str] = []
    if number:
        forms.append(digits_of(number))
        national = _national_digits(number, region)
        if national is not None and national != forms[0]:
            forms.append(national)
    return [form for form in forms if form]


@functools.lru_cache(maxsize=65536)
def _national_digits(number: str, region: str) -> str | None:
    """The digits of the national form (``8 (916) ...``), cached: phonenumbers takes ~0.1 ms."""
    parsed = possible_number(number, region)
    if parsed is None:
        return None
    return digits_of(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL))


def search_text(
    *,
    number: str | None,
    region: str,
    names: Iterable[str | None] = (),
    extensions: Iterable[str] = (),
) -> str:
    """The folded text a call is found by; parts separated so no term spans two of them."""
    parts = [*number_forms(number, region)]
    parts.extend(fold(name) for name in names if name)
    parts.extend(extensions)
    seen: list[str] = []
    for part in parts:
        if part and part not in seen:
            seen.append(part)
    return " | ".join(seen)


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A parsed search string.

    ``all_of``: every term must occur (words of a name). ``any_of``: one of them must occur
    (the digit forms of a number). Exactly one of the two is non-empty for a usable query.
    """

    all_of: tuple[str, ...] = ()
    any_of: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.all_of and not self.any_of

    @property
    def indexable(self) -> bool:
        """Whether a trigram index can answer it (every term is long enough)."""
        terms = self.all_of or self.any_of
        return bool(terms) and all(len(term) >= MIN_INDEXED_TERM for term in terms)


def parse_query(text: str, region: str = "RU") -> SearchQuery:
    """Terms of a user's search string (see the module docstring)."""
    stripped = text.strip()
    if not stripped:
        return SearchQuery()
    if all(ch.isdigit() or ch in _PHONE_PUNCTUATION for ch in stripped):
        digits = digits_of(stripped)
        if not digits:
            return SearchQuery()
        forms = [digits]
        try:
            parsed = phonenumbers.parse(stripped, region)
        except phonenumbers.NumberParseException:
            parsed = None
        if parsed is not None and phonenumbers.is_valid_number(parsed):
            international = digits_of(
                phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
            )
            if international != digits:
                forms.insert(0, international)
        return SearchQuery(any_of=tuple(forms))
    words = [word for word in fold(stripped).split(" ") if word]
    long_words = [word for word in words if len(word) >= MIN_INDEXED_TERM]
    # Short words ("ип", "и") would defeat the index; keep them only when nothing else is left.
    return SearchQuery(all_of=tuple(long_words or words))
