"""Phone numbers in one comparable form.

A customer calls as ``89161234567``, is saved in 1C as ``+7 (916) 123-45-67`` and dialled back
as ``79161234567``: the journal must see one number. :func:`normalize_number` parses with
``phonenumbers`` in the PBX's default region and returns E.164 (``+79161234567``); what is not
a possible phone number (short service numbers, garbage) keeps its digits so that it still
compares equal to itself, and a number with no digits at all (``anonymous``) is None.
"""

from __future__ import annotations

import functools

import phonenumbers

__all__ = ["digits_of", "normalize_number", "possible_number"]


def digits_of(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def normalize_number(raw: str | None, region: str = "RU") -> str | None:
    """E.164 for a possible phone number, its digits otherwise, None when it has none."""
    if not raw:
        return None
    return _normalize(raw, region)


@functools.lru_cache(maxsize=65536)
def _normalize(raw: str, region: str) -> str | None:
    # phonenumbers takes ~0.1 ms a number; the same numbers come back all day.
    digits = digits_of(raw)
    if not digits:
        return None
    parsed = possible_number(raw, region)
    if parsed is None:
        return digits
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def possible_number(raw: str, region: str) -> phonenumbers.PhoneNumber | None:
    """``raw`` parsed in ``region`` if it is a possible phone number, None otherwise."""
    try:
        parsed = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    return parsed if phonenumbers.is_possible_number(parsed) else None
