"""Search through the things a call is found by: its number, customer, contact person and
extensions ("keys"), each indexed once, not once per call.

Theory of operation
-------------------
A call's ``search_text`` (:mod:`storage.search`) is the union of the texts of its keys:

* its number (kind ``n``, key the normalised number): the number's digits in every written
  form (:func:`number_text`);
* its customer and contact person (kinds ``c`` and ``p``, key 1C's id): the folded name;
* each extension taking part (kind ``e``, key the extension): the extension and its
  employee's folded name.

So a word is in a call's text exactly when it is in the text of one of the call's keys, and
the calls a word finds are the calls of the keys it finds. There are far fewer keys than calls
(at ten million calls: about two million numbers, a hundred thousand customers, forty
extensions), and each key's calls are one range of an index in journal order
(``ix_calls_number``, ``ix_calls_customer``, ``ix_calls_contact``, ``extension_calls``).

``search_suffixes`` holds every suffix (at least ``MIN_INDEXED_TERM`` characters, cut to
``MAX_SUFFIX``) of every word of every key's text, keyed ``(suffix, kind, key)``: the keys
whose text contains a word are one range of it (``suffix >= word AND suffix < word + U+10FFFF``),
read in order from a few leaf pages, where a trigram index would intersect posting lists
as long as the journal. Each suffix row carries the key's ``last``: an upper bound on the
start of the key's newest call, rounded up to the hour (``bucket``), so the writer touches a
busy key's rows once an hour, not once per call.

A page then opens the keys newest first (:mod:`storage.queries`): it reads a page of each
key's calls, and stops when the next key's ``last`` is older than the page's last row, so a
run of four digits matching a thousand numbers opens the few dozen that were called lately.

``search_keys`` is the list of keys with their text and ``last``: the writer compares what a
call brings with it (:func:`note_keys`), and rewrites a key's suffixes when its text changed
(a customer renamed, an extension given to another employee). A key whose calls have gone
keeps its rows: it finds no call, which is harmless; a ``last`` too high only opens a key for
nothing. A text that no longer holds would find calls that no longer match, so every change of
the directory that changes calls' texts goes through :func:`note_keys` too
(:mod:`storage.directory`).
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlalchemy.util import await_only

from storage.models import SearchKey, SearchSuffix
from storage.search import MIN_INDEXED_TERM, fold, number_forms

__all__ = [
    "BUCKET_SECONDS",
    "KIND_CONTACT",
    "KIND_CUSTOMER",
    "KIND_EXTENSION",
    "KIND_NUMBER",
    "MAX_SUFFIX",
    "Key",
    "KeyId",
    "Owner",
    "add_call_keys",
    "bucket",
    "build_all",
    "call_keys",
    "extension_text",
    "fill",
    "has_keys",
    "note_keys",
    "number_text",
    "suffixes",
    "word_range",
]

KIND_NUMBER = "n"
KIND_CUSTOMER = "c"
KIND_CONTACT = "p"
KIND_EXTENSION = "e"
#: ``last`` is rounded up to this: a busy key's rows are rewritten at most once per bucket.
BUCKET_SECONDS = 3600.0
#: Suffixes are cut to this many characters; a longer search word is not served by them.
MAX_SUFFIX = 64
#: Above every character: ``word + TOP`` bounds the range of the suffixes starting with word.
TOP = "\U0010ffff"

KeyId = tuple[str, str]
_CHUNK = 500
_KEYS = cast(sa.Table, SearchKey.__table__)
_SUFFIXES = cast(sa.Table, SearchSuffix.__table__)


@dataclass(frozen=True, slots=True)
class Key:
    """A key a search word found, with the bound of its newest call."""

    kind: str
    key: str
    last: float


def bucket(started_at: float) -> float:
    """``started_at`` rounded up to the bucket: never below it."""
    return math.ceil(started_at / BUCKET_SECONDS) * BUCKET_SECONDS


def number_text(number: str, region: str) -> str:
    """The number's digits in every written form (international, national)."""
    return " ".join(number_forms(number, region))


def extension_text(extension: str, employee_name: str | None) -> str:
    return f"{extension} {fold(employee_name)}" if employee_name else extension


def suffixes(text: str) -> set[str]:
    """Every suffix of every word, at least ``MIN_INDEXED_TERM`` long, cut to ``MAX_SUFFIX``."""
    found: set[str] = set()
    for word in text.split(" "):
        for start in range(len(word) - MIN_INDEXED_TERM + 1):
            found.add(word[start : start + MAX_SUFFIX])
    return found


def word_range(word: str) -> tuple[str, str]:
    """The suffixes that start with ``word``: ``lo <= suffix < hi``."""
    return word, word + TOP


def call_keys(
    *,
    number: str | None,
    customer: tuple[str, str] | None,
    contact: tuple[str, str] | None,
    extensions: Iterable[str],
    employees: Mapping[str, str],
    region: str,
) -> dict[KeyId, str]:
    """The keys of one call and their texts (``customer`` and ``contact``: id and name)."""
    keys: dict[KeyId, str] = {}
    if number:
        keys[(KIND_NUMBER, number)] = number_text(number, region)
    if customer is not None:
        keys[(KIND_CUSTOMER, customer[0])] = fold(customer[1])
    if contact is not None:
        keys[(KIND_CONTACT, contact[0])] = fold(contact[1])
    for extension in extensions:
        keys[(KIND_EXTENSION, extension)] = extension_text(extension, employees.get(extension))
    return keys


class Owner(Protocol):
    """Who a number belongs to (``storage.directory.NumberOwner``)."""

    @property
    def customer_id(self) -> str: ...
    @property
    def customer_name(self) -> str: ...
    @property
    def contact_id(self) -> str | None: ...
    @property
    def contact_name(self) -> str | None: ...


def add_call_keys(
    keys: dict[KeyId, tuple[str, float]],
    started_at: float,
    *,
    number: str | None,
    owner: Owner | None,
    extensions: Iterable[str],
    employees: Mapping[str, str],
    region: str,
) -> None:
    """Add a call's keys to ``keys`` (key → text, newest start among the calls added), as
    :func:`note_keys` takes them: the writer's batch and the directory's refresh."""
    contact = None
    if owner is not None and owner.contact_id and owner.contact_name is not None:
        contact = (owner.contact_id, owner.contact_name)
    for key, text in call_keys(
        number=number,
        customer=(owner.customer_id, owner.customer_name) if owner is not None else None,
        contact=contact,
        extensions=extensions,
        employees=employees,
        region=region,
    ).items():
        noted = keys.get(key)
        keys[key] = (text, started_at if noted is None else max(noted[1], started_at))


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


_INDEXED: weakref.WeakSet[Any] = weakref.WeakSet()


def has_keys(connection: Connection) -> bool:
    """Whether the journal has the tables (revision 0012 or later): a journal at an older
    revision (a test that upgrades it step by step, a tool pointed at a journal the daemon
    has not migrated yet) is written and searched without them. Known once true."""
    engine = connection.engine
    if engine in _INDEXED:
        return True
    if sa.inspect(connection).has_table("search_suffixes"):
        _INDEXED.add(engine)
        return True
    return False


@functools.lru_cache(maxsize=32)
def _read_keys(kinds: tuple[str, ...]) -> sa.Select[Any]:
    """The rows of some keys of ``kinds``: ``kind = 'n' AND key IN (…) OR …``, one search of
    the key per key. Not ``(kind, key) IN (VALUES …)``: SQLite scans the whole table for it."""
    return sa.select(_KEYS.c.kind, _KEYS.c.key, _KEYS.c.text, _KEYS.c.last).where(
        sa.or_(
            *(
                sa.and_(
                    _KEYS.c.kind == kind,
                    _KEYS.c.key.in_(sa.bindparam(f"keys_{kind}", expanding=True)),
                )
                for kind in kinds
            )
        )
    )


_INSERT_KEYS = sa.insert(_KEYS)
_UPDATE_KEYS = (
    sa.update(_KEYS)
    .where(_KEYS.c.kind == sa.bindparam("k"), _KEYS.c.key == sa.bindparam("kk"))
    .values(text=sa.bindparam("text"), last=sa.bindparam("last"))
)
_SUFFIX_KEY = (
    _SUFFIXES.c.suffix == sa.bindparam("s"),
    _SUFFIXES.c.kind == sa.bindparam("k"),
    _SUFFIXES.c.key == sa.bindparam("kk"),
)
_DELETE_SUFFIXES = sa.delete(_SUFFIXES).where(*_SUFFIX_KEY)
_RAISE_SUFFIXES = sa.update(_SUFFIXES).where(*_SUFFIX_KEY).values(last=sa.bindparam("last"))
_INSERT_SUFFIXES = sa.insert(_SUFFIXES)


def note_keys(session: Session, wanted: Mapping[KeyId, tuple[str, float]]) -> None:
    """Make every key of ``wanted`` (key → text, start of a call) findable by its text with a
    ``last`` at least that call's bucket; rewrite the suffixes of a key whose text changed.

    The statements are made once and run on the session's connection (Core, not the ORM's
    unit of work: the writer calls this for every batch)."""
    if not wanted:
        return
    connection = session.connection()
    if not has_keys(connection):
        return
    known: dict[KeyId, tuple[str, float]] = {}
    # One read for the batch's keys of every kind (a call has three or four).
    for chunk in _chunks(sorted(wanted)):
        by_kind: dict[str, list[str]] = {}
        for kind, key in chunk:
            by_kind.setdefault(kind, []).append(key)
        found = connection.execute(
            _read_keys(tuple(sorted(by_kind))),
            {f"keys_{kind}": keys for kind, keys in by_kind.items()},
        )
        known.update(((kind, key), (text, last)) for kind, key, text, last in found)
    new_keys: list[dict[str, Any]] = []
    moved: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    added: list[dict[str, Any]] = []
    raised: list[dict[str, Any]] = []
    for (kind, key), (text, started_at) in sorted(wanted.items()):
        last = bucket(started_at)
        old = known.get((kind, key))
        if old is None:
            new_keys.append({"kind": kind, "key": key, "text": text, "last": last})
            added.extend(_suffix_rows(kind, key, suffixes(text), last))
            continue
        old_text, old_last = old
        last = max(last, old_last)
        if old_text != text:
            moved.append({"k": kind, "kk": key, "text": text, "last": last})
            before, after = suffixes(old_text), suffixes(text)
            dropped.extend({"s": s, "k": kind, "kk": key} for s in before - after)
            added.extend(_suffix_rows(kind, key, after - before, last))
            raised.extend({"s": s, "k": kind, "kk": key, "last": last} for s in before & after)
        elif last > old_last:
            moved.append({"k": kind, "kk": key, "text": text, "last": last})
            raised.extend({"s": s, "k": kind, "kk": key, "last": last} for s in suffixes(text))
    writes: tuple[tuple[sa.Executable, list[dict[str, Any]]], ...] = (
        (_INSERT_KEYS, new_keys),
        (_UPDATE_KEYS, moved),
        (_DELETE_SUFFIXES, dropped),
        (_RAISE_SUFFIXES, raised),
        (_INSERT_SUFFIXES, added),
    )
    for statement, rows in writes:
        if rows:
            connection.execute(statement, rows)


def _suffix_rows(
    kind: str, key: str, found: Iterable[str], last: float
) -> Iterator[dict[str, Any]]:
    return ({"suffix": s, "kind": kind, "key": key, "last": last} for s in found)


# -- building every key from the journal (migration 0012, the benchmark's fill) ---------------

_NUMBERS = sa.text(
    "SELECT number, max(started_at) FROM calls WHERE number IS NOT NULL GROUP BY number"
)
_CUSTOMERS = sa.text(
    "SELECT m.customer_id, c.name, m.last FROM (SELECT customer_id, max(started_at) AS last "
    "FROM calls WHERE customer_id IS NOT NULL GROUP BY customer_id) m "
    "JOIN customers c ON c.id = m.customer_id"
)
_CONTACTS = sa.text(
    "SELECT m.contact_id, p.name, m.last FROM (SELECT contact_id, max(started_at) AS last "
    "FROM calls WHERE contact_id IS NOT NULL GROUP BY contact_id) m "
    "JOIN contacts p ON p.id = m.contact_id"
)
_EXTENSIONS = sa.text(
    "SELECT m.extension, e.name, m.last FROM (SELECT extension, max(started_at) AS last "
    "FROM extension_calls GROUP BY extension) m "
    "LEFT JOIN employee_extensions x ON x.extension = m.extension "
    "LEFT JOIN employees e ON e.id = x.employee_id"
)


def journal_keys(connection: Connection, region: str) -> Iterator[tuple[str, str, str, float]]:
    """Every key the journal's calls have, as ``(kind, key, text, last)``."""
    for number, last in connection.execute(_NUMBERS):
        yield KIND_NUMBER, number, number_text(number, region), bucket(last)
    for key, name, last in connection.execute(_CUSTOMERS):
        yield KIND_CUSTOMER, key, fold(name), bucket(last)
    for key, name, last in connection.execute(_CONTACTS):
        yield KIND_CONTACT, key, fold(name), bucket(last)
    for extension, name, last in connection.execute(_EXTENSIONS):
        yield KIND_EXTENSION, extension, extension_text(extension, name), bucket(last)


def build_all(
    connection: Connection,
    region: str,
    *,
    suffix_table: str = "search_suffixes",
    batch: int = 50_000,
) -> int:
    """Fill the empty ``search_keys`` and ``search_suffixes`` (or ``suffix_table``, a table of
    the same columns the migration copies from) from the journal; the number of keys."""
    keys = list(journal_keys(connection, region))
    for start in range(0, len(keys), batch):
        chunk = keys[start : start + batch]
        _insert(connection, "search_keys", ("kind", "key", "text", "last"), chunk)
        rows = [(s, k, key, last) for k, key, text, last in chunk for s in suffixes(text)]
        _insert(connection, suffix_table, ("suffix", "kind", "key", "last"), rows)
    return len(keys)


def _insert(
    connection: Connection, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """Rows in bulk, past the SQL layer: PostgreSQL's ``COPY`` (asyncpg, in the greenlet the
    synchronous connection runs in), SQLite's ``executemany``. Millions of rows at ten
    million calls: the ORM's or Core's per-row work was most of the migration's time."""
    if not rows:
        return
    if connection.dialect.name == "postgresql":
        driver = connection.connection.driver_connection
        assert driver is not None
        await_only(driver.copy_records_to_table(table, records=rows, columns=list(columns)))
        return
    marks = ", ".join("?" for _ in columns)
    connection.exec_driver_sql(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", list(rows)
    )


def fill(connection: Connection, region: str) -> int:
    """Rebuild both tables from the journal (migration 0012, the benchmark's bulk fill); the
    number of keys. A B-tree is built far faster from sorted entries than by millions of
    inserts in random places: on SQLite the suffixes go through a temporary rowid table and
    are copied in the key's order, on PostgreSQL the key is dropped and made again after."""
    connection.exec_driver_sql("DELETE FROM search_keys")
    connection.exec_driver_sql("DELETE FROM search_suffixes")
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql(
            "CREATE TEMP TABLE search_suffixes_fill "
            "(suffix TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL, last REAL NOT NULL)"
        )
        count = build_all(connection, region, suffix_table="search_suffixes_fill")
        connection.exec_driver_sql(
            "INSERT INTO search_suffixes (suffix, kind, key, last) "
            "SELECT suffix, kind, key, last FROM search_suffixes_fill ORDER BY suffix, kind, key"
        )
        connection.exec_driver_sql("DROP TABLE search_suffixes_fill")
    else:
        connection.exec_driver_sql("ALTER TABLE search_suffixes DROP CONSTRAINT pk_search_suffixes")
        count = build_all(connection, region)
        connection.exec_driver_sql(
            "ALTER TABLE search_suffixes ADD CONSTRAINT pk_search_suffixes "
            "PRIMARY KEY (suffix, kind, key) INCLUDE (last)"
        )
    connection.exec_driver_sql("ANALYZE search_keys")
    connection.exec_driver_sql("ANALYZE search_suffixes")
    return count
