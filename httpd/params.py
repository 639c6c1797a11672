"""Reading and validating request parameters and bodies; every problem is a 4xx naming it.

A bad request must never reach the database as something it chokes on (that would be a 500):
strings are checked for NUL characters and unpaired surrogates (PostgreSQL and SQLite's
driver both refuse them), integers for the 64-bit range of the id columns, lengths for the
columns' sizes. Bodies are read with a size limit before they are parsed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from httpd.errors import ApiError

__all__ = [
    "INT64_MAX",
    "Query",
    "bad",
    "check_text",
    "expect_object",
    "object_field",
    "path_int",
    "path_text",
    "read_json",
    "string_list",
]

INT64_MAX = 2**63 - 1
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def bad(code: str, message: str, status: int = 400) -> ApiError:
    return ApiError(status, code, message)


def check_text(value: str, name: str, *, max_length: int, allow_empty: bool = False) -> str:
    """``value`` unless it is too long, empty, or holds what no database column takes."""
    if "\x00" in value:
        raise bad("invalid_parameter", f"{name}: NUL characters are not allowed")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad("invalid_parameter", f"{name}: not valid Unicode text") from None
    if not allow_empty and not value.strip():
        raise bad("invalid_parameter", f"{name}: must not be empty")
    if len(value) > max_length:
        raise bad("invalid_parameter", f"{name}: longer than {max_length} characters")
    return value


def path_int(request: web.Request, name: str) -> int:
    text = request.match_info[name]
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > INT64_MAX:
        raise bad("invalid_parameter", f"{name}: expected a positive integer, got {text[:40]!r}")
    return int(text)


def path_text(request: web.Request, name: str, *, max_length: int = 64) -> str:
    return check_text(request.match_info[name], name, max_length=max_length)


class Query:
    """The query string of one request; :meth:`done` rejects parameters nobody read."""

    def __init__(self, request: web.Request) -> None:
        self._query = request.rel_url.query
        self._read: set[str] = set()

    def _values(self, name: str) -> list[str]:
        self._read.add(name)
        return self._query.getall(name, [])

    def text(
        self,
        name: str,
        *,
        max_length: int = 200,
        default: str | None = None,
        allow_empty: bool = False,
    ) -> str | None:
        """The parameter's one value; an empty value is refused unless ``allow_empty``."""
        values = self._values(name)
        if not values:
            return default
        if len(values) > 1:
            raise bad("invalid_parameter", f"{name}: given {len(values)} times, expected once")
        if values[0] == "" and not allow_empty:
            raise bad("invalid_parameter", f"{name}: empty; leave the parameter out instead")
        return check_text(values[0], name, max_length=max_length, allow_empty=True)

    def integer(self, name: str, *, default: int, low: int, high: int) -> int:
        text = self.text(name, max_length=20)
        if text is None or text == "":
            return default
        try:
            value = int(text)
        except ValueError:
            raise bad("invalid_parameter", f"{name}: expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise bad("invalid_parameter", f"{name}: must be between {low} and {high}")
        return value

    def number(self, name: str, *, default: float, low: float, high: float) -> float:
        text = self.text(name, max_length=20)
        if text is None or text == "":
            return default
        try:
            value = float(text)
        except ValueError:
            raise bad("invalid_parameter", f"{name}: expected a number, got {text!r}") from None
        if not math.isfinite(value) or not low <= value <= high:
            raise bad("invalid_parameter", f"{name}: must be between {low:g} and {high:g}")
        return value

    def boolean(self, name: str) -> bool | None:
        text = self.text(name, max_length=10)
        if text is None or text == "":
            return None
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise bad("invalid_parameter", f"{name}: expected true or false, got {text!r}")

    def choice(self, name: str, options: Iterable[str], *, default: str) -> str:
        text = self.text(name, max_length=20)
        if text is None or text == "":
            return default
        allowed = list(options)
        if text not in allowed:
            raise bad("invalid_parameter", f"{name}: expected one of {', '.join(allowed)}")
        return text

    def words(self, name: str, options: Iterable[str]) -> frozenset[str]:
        """A repeatable parameter whose values may also be comma lists."""
        allowed = frozenset(options)
        found: set[str] = set()
        for value in self._values(name):
            check_text(value, name, max_length=200, allow_empty=True)
            for raw in value.split(","):
                word = raw.strip()
                if word not in allowed:
                    raise bad(
                        "invalid_parameter",
                        f"{name}: unknown value {word[:40]!r}; "
                        f"expected any of {', '.join(sorted(allowed))}",
                    )
                found.add(word)
        return frozenset(found)

    def done(self) -> None:
        unknown = sorted(set(self._query) - self._read)
        if unknown:
            raise bad("unknown_parameter", f"unknown query parameter {unknown[0][:40]!r}")


async def read_json(request: web.Request, *, limit: int) -> Any:
    """The request body as JSON, refused when larger than ``limit`` bytes or not JSON."""
    if request.content_length is not None and request.content_length > limit:
        raise bad("body_too_large", f"request body over {limit} bytes", 413)
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise bad("body_too_large", f"request body over {limit} bytes", 413)
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise bad("invalid_body", "a JSON body is required")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise bad("invalid_json", f"body is not JSON: {str(exc)[:200]}") from None


def object_field(
    body: Mapping[str, Any],
    name: str,
    where: str,
    *,
    required: bool = True,
    max_length: int = 500,
    nullable: bool = False,
) -> str | None:
    """A string member of a JSON object."""
    if name not in body:
        if required:
            raise bad("invalid_body", f"{where}.{name}: is required")
        return None
    value = body[name]
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise bad("invalid_body", f"{where}.{name}: expected a string")
    return check_text(value, f"{where}.{name}", max_length=max_length)


def expect_object(value: Any, where: str, allowed: Iterable[str]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise bad("invalid_body", f"{where}: expected a JSON object")
    extra = sorted(set(value) - set(allowed))
    if extra:
        raise bad("invalid_body", f"{where}: unknown member {extra[0][:40]!r}")
    return value


def string_list(
    body: Mapping[str, Any], name: str, where: str, *, max_items: int, max_length: int
) -> tuple[str, ...]:
    value = body.get(name, [])
    if not isinstance(value, list):
        raise bad("invalid_body", f"{where}.{name}: expected an array of strings")
    if len(value) > max_items:
        raise bad("invalid_body", f"{where}.{name}: more than {max_items} items")
    out = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise bad("invalid_body", f"{where}.{name}[{index}]: expected a string")
        out.append(check_text(item, f"{where}.{name}[{index}]", max_length=max_length))
    return tuple(out)
