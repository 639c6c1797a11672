"""Reading the journal: the filtered page, the change feed, and rows back into entries.

Theory of operation
-------------------
A journal page (DESIGN section 1, ``GET /calls``) is newest first, ordered by
``(started_at, id)`` descending, and paginated by *keyset*: the cursor is the last row's
``(started_at, id)`` and the next page is ``(started_at, id) < cursor``. Unlike an offset, a
keyset page neither repeats nor skips a row when calls are written meanwhile: new calls sort
before the first page, and no row moves (``started_at`` never changes). The cursor is opaque
to 1C (base64url of the JSON ``["<repr of started_at>", id]``) and carries the float exactly
(``repr`` round-trips). It is not signed and need not be: it is only a position in the
journal, which every client may read whole, and the filters still apply on top of it. It is
validated part by part (:func:`decode_cursor`): anything but the exact form this module
writes, with a finite start time in 1970…9999 and an id in the 64-bit range, is a
:class:`CursorError`.

Every filter maps to a column with a ``(column, started_at, id)`` index (see
:mod:`storage.models`), so the planner walks one index range in order and stops after a page;
``missed`` is "incoming and not answered", which needs no status list (``no_answer`` and
``lost`` both are exactly that). Filters combine with AND; several kinds combine with OR.
"My calls" reads ``extension_calls`` (each extension's calls in journal order with their
flags, :func:`mine_page`); with a search, a probe of the participants per row. Search goes
through the trigram index (:mod:`storage.search` explains the text): an FTS5 ``MATCH`` on
SQLite, ``LIKE`` over a ``pg_trgm`` GIN index on PostgreSQL; the terms are bound parameters,
with ``%``/``_`` escaped for LIKE and quotes doubled for FTS5. A term under three characters
cannot use a trigram index: it falls back to a substring test on the rows walked in journal
order, which is bounded by the page size, not by the table.

The change feed is ``version > N`` ascending over the unique index on ``version``. A client's
``N`` above the journal's last version is refused (:class:`SinceAheadError`): it was saved
from another journal (or from this one before a backup was restored), and answering it as
"nothing new" would leave the client waiting for versions that will mean other rows.
:func:`journal_identity` is the journal's UUID and last version.

Rows leave this module as :class:`storage.journal.JournalEntry` (ORM objects never leave
``storage/``), rendered by :func:`storage.journal.to_call_object`, or, for the pages of
``GET /calls`` and ``/changes``, as those call objects themselves (:func:`list_call_objects`,
:func:`change_objects`): a page of a thousand calls is rendered straight from its rows,
without the entries, at a third of the CPU (``docs/benchmarks.md``, ``bench.issue18-render``).
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import heapq
import itertools
import json
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.visitors import InternalTraversal

from connector.assembly import (
    Direction,
    FinishedCall,
    Leg,
    Participant,
    RecordingPart,
    Role,
    TransferNote,
)
from connector.recordings import FoundRecording
from storage.journal import (
    CustomerRef,
    EmployeeDirectory,
    EmployeeInfo,
    JournalEntry,
    LocalTimes,
    StoredRecording,
)
from storage.models import (
    Call,
    CallComment,
    CallLeg,
    CallParticipant,
    CallRecording,
    CallTransfer,
    Contact,
    Customer,
    Employee,
    EmployeeExtension,
    ExtensionCall,
    JournalState,
    SearchKey,
    SearchSuffix,
)
from storage.rules import Status
from storage.search import MIN_INDEXED_TERM, SearchQuery, parse_query
from storage.searchkeys import (
    KIND_CONTACT,
    KIND_CUSTOMER,
    KIND_EXTENSION,
    KIND_NUMBER,
    MAX_SUFFIX,
    Key,
    has_keys,
    word_range,
)

__all__ = [
    "KINDS",
    "CursorError",
    "InternalCalls",
    "JournalFilter",
    "JournalIdentity",
    "JournalPage",
    "SinceAheadError",
    "change_objects",
    "changes",
    "decode_cursor",
    "encode_cursor",
    "explain",
    "journal_classes",
    "journal_identity",
    "journal_statement",
    "list_call_objects",
    "list_calls",
    "load_call_objects",
    "load_employee_directory",
    "load_entries",
    "load_recording",
    "page_ids",
    "parse_time_bound",
    "read_entries",
    "warm_up",
]

KINDS = frozenset({"incoming", "outgoing", "missed", "lost"})
#: From this many FTS5 matches on, a SQLite search page walks the journal index instead of
#: sorting every match: a page is then found within a few thousand rows walked.
FREQUENT_MATCHES = 3000


#: Longest cursor accepted (the ones made here are under 60 characters).
MAX_CURSOR = 200
#: The start times a cursor may carry: 1970-01-01 … 9999-12-31 (epoch seconds).
CURSOR_TIME_RANGE = (0.0, 253402300799.0)
INT64_MAX = 2**63 - 1
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


class CursorError(ValueError):
    """The cursor was not made by this journal; the message says what is wrong with it."""


class SinceAheadError(ValueError):
    """``since`` is above the journal's last version: it belongs to another journal."""

    def __init__(self, since: int, version: int) -> None:
        super().__init__(f"version {since} is ahead of the journal's last version {version}")
        self.since = since
        self.version = version


class InternalCalls(enum.Enum):
    HIDE = "hide"
    SHOW = "show"
    ONLY = "only"


@dataclass(frozen=True, slots=True)
class JournalFilter:
    """The ``GET /calls`` filters; None means "do not filter on this"."""

    #: Epoch seconds: calls that started at or after.
    started_from: float | None = None
    #: Epoch seconds: calls that started before (exclusive).
    started_until: float | None = None
    #: Any of ``KINDS``; several are OR-ed.
    kinds: frozenset[str] = field(default_factory=frozenset)
    first_contact: bool | None = None
    unregistered: bool | None = None
    attention: bool | None = None
    internal: InternalCalls = InternalCalls.HIDE
    #: "My calls": an employee id, or an extension.
    employee: str | None = None
    #: Search string (names, extensions, numbers in any written form).
    query: str | None = None


@dataclass(frozen=True, slots=True)
class JournalPage:
    entries: list[JournalEntry]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class JournalIdentity:
    #: The journal's UUID, made when its database was created (migration 0003).
    journal_id: str
    #: The last version handed out.
    version: int


def encode_cursor(started_at: float, call_id: int) -> str:
    raw = json.dumps([repr(started_at), call_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _refuse_constant(name: str) -> Any:
    raise CursorError(f"not a journal cursor ({name} in it)")


def decode_cursor(cursor: str) -> tuple[float, int]:
    """The ``(started_at, id)`` of a cursor :func:`encode_cursor` made.

    Every part is checked, so that nothing a client makes up reaches the query as something
    the database (or ``float``/``int``) chokes on: the length, the base64url alphabet, UTF-8
    JSON without ``NaN``/``Infinity``, a two-element array, the start time as the exact
    ``repr`` of a finite float in 1970…9999, the id a JSON integer in ``0 … 2**63-1``.
    Anything else is a :class:`CursorError` whose message says which part is wrong.
    """
    if not isinstance(cursor, str) or not 0 < len(cursor) <= MAX_CURSOR:
        raise CursorError(f"not a journal cursor (empty or longer than {MAX_CURSOR})")
    if not _BASE64URL.fullmatch(cursor) or len(cursor) % 4 == 1:
        raise CursorError("not a journal cursor (not base64url)")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except CursorError:
        raise
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise CursorError("not a journal cursor (not base64url of JSON)") from None
    if not isinstance(value, list) or len(value) != 2:
        raise CursorError("not a journal cursor (expected a pair)")
    started_text, call_id = value
    if not isinstance(started_text, str) or len(started_text) > 32:
        raise CursorError("not a journal cursor (bad start time)")
    try:
        started = float(started_text)
    except ValueError:
        raise CursorError("not a journal cursor (bad start time)") from None
    if (
        not math.isfinite(started)
        or repr(started) != started_text
        or not CURSOR_TIME_RANGE[0] <= started <= CURSOR_TIME_RANGE[1]
    ):
        raise CursorError("not a journal cursor (start time out of range)")
    if type(call_id) is not int or not 0 <= call_id <= INT64_MAX:
        raise CursorError("not a journal cursor (bad call id)")
    return started, call_id


def parse_time_bound(text: str, timezone: ZoneInfo, *, end: bool) -> float:
    """``from``/``to`` of ``GET /calls``: an ISO date or datetime, local to the PBX unless it
    carries an offset. A date as ``to`` includes that whole day."""
    try:
        if "T" not in text and " " not in text and len(text) <= 10:
            day = date.fromisoformat(text)
            if end:
                day += timedelta(days=1)
            return datetime.combine(day, time.min, tzinfo=timezone).timestamp()
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"not an ISO 8601 date or datetime: {text!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone)
    return moment.timestamp()


def _like(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _fts_phrase(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def _fts_matches(search: SearchQuery) -> sa.Select[Any]:
    joiner = " AND " if search.all_of else " OR "
    expression = joiner.join(_fts_phrase(term) for term in search.all_of or search.any_of)
    return (
        sa.select(sa.literal_column("rowid"))
        .select_from(sa.table("calls_search"))
        .where(sa.literal_column("calls_search").op("MATCH")(sa.bindparam("fts", expression)))
    )


async def fts_matches(session: AsyncSession, search: SearchQuery) -> list[int] | None:
    """The rows an FTS5 search matches, or None when there are too many to sort them all
    (``FREQUENT_MATCHES``): then a page is found faster by walking the journal."""
    found = await session.scalars(_fts_matches(search).limit(FREQUENT_MATCHES))
    ids = [int(i) for i in found]
    return ids if len(ids) < FREQUENT_MATCHES else None


def _search_condition(
    dialect: str, search: SearchQuery, matches: Sequence[int] | None, *, frequent: bool
) -> sa.ColumnElement[bool]:
    terms = search.all_of or search.any_of
    if dialect == "sqlite" and search.indexable and matches is not None:
        return Call.id.in_(matches)
    if dialect == "sqlite" and search.indexable and not frequent:
        return Call.id.in_(_fts_matches(search).scalar_subquery())
    # PostgreSQL: pg_trgm serves LIKE itself, and its planner weighs a bitmap of the trigram
    # index against walking the journal. SQLite, for a term that matches thousands of rows:
    # walking the journal index and testing each row finds a page within a few thousand
    # rows, where evaluating and sorting every match would not.
    if dialect == "postgresql" and frequent:
        # The keys said every term is common: PostgreSQL walks the journal too. The planner's
        # estimate of a LIKE on the column comes from ANALYZE's sample of 101 texts: "131",
        # in 430,000 of ten million calls, was estimated at 3,000, and a bitmap of the
        # trigram index fetched and sorted 380,000 rows (3.2 s warm) where walking the
        # journal finds a page within 1,500. ``strpos`` (the same test: a term is text, not
        # a pattern) is one the trigram index cannot serve, and the planner puts it at a
        # third of the rows: a LIKE on an expression it put at 900 for "зайцев" (in
        # 100,000), enough to start two parallel workers (6 ms) for a walk of 0.5 ms.
        found = [_holds(dialect, term) for term in terms]
    else:
        found = [Call.search_text.like(_like(term), escape="\\") for term in terms]
    return sa.and_(*found) if search.all_of else sa.or_(*found)


def _holds(dialect: str, term: Any) -> sa.ColumnElement[bool]:
    """A call's text holds ``term`` (a value or a parameter), tested on each row a walk
    reads: ``strpos`` on PostgreSQL (see :func:`_search_condition`), ``LIKE`` on SQLite,
    whose value is then :func:`_like`'s pattern (:func:`_held`)."""
    if dialect == "postgresql":
        return sa.func.strpos(Call.search_text, term) > 0
    return Call.search_text.like(term, escape="\\")


def _held(dialect: str, term: str) -> str:
    """The value of :func:`_holds`' parameter for ``term``."""
    return term if dialect == "postgresql" else _like(term)


def _kind_condition(kind: str, c: Any) -> sa.ColumnElement[bool]:
    """A kind's condition on the columns ``c`` (``calls``' or ``extension_calls``')."""
    if kind == "incoming":
        return sa.and_(c.direction == Direction.INCOMING.value)
    if kind == "outgoing":
        return sa.and_(c.direction == Direction.OUTGOING.value)
    if kind == "missed":
        return sa.and_(c.direction == Direction.INCOMING.value, c.answered == sa.false())
    if kind == "lost":
        return sa.and_(c.status == Status.LOST.value)
    raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(sorted(KINDS))}")


def _flag(column: sa.ColumnElement[bool], wanted: bool) -> sa.ColumnElement[bool]:
    return column == (sa.true() if wanted else sa.false())


def _flag_conditions(where: JournalFilter, c: Any) -> list[sa.ColumnElement[bool]]:
    """The filter's kinds, internal mode and flags as conditions on the columns ``c`` (of
    ``calls``, or of ``extension_calls``, which carries the same ones)."""
    conditions: list[sa.ColumnElement[bool]] = []
    if where.kinds:
        conditions.append(sa.or_(*(_kind_condition(kind, c) for kind in sorted(where.kinds))))
    if where.internal is InternalCalls.ONLY:
        conditions.append(c.direction == Direction.INTERNAL.value)
    elif where.internal is InternalCalls.HIDE and not where.kinds:
        conditions.append(c.direction != Direction.INTERNAL.value)
    for name, wanted in (
        ("first_contact", where.first_contact),
        ("unregistered", where.unregistered),
        ("attention", where.attention),
    ):
        if wanted is not None:
            conditions.append(_flag(c[name], wanted))
    return conditions


#: The columns of ``ix_calls_class``, in its order, and every value each can hold: the
#: enums the writer stores and the booleans. A page of a filter that combines several of them
#: is the merge of one index range per matching combination ("class"), each already in journal
#: order, so the database reads about a page of entries however rare the combination is.
CLASS_COLUMNS: tuple[tuple[str, tuple[Any, ...]], ...] = (
    ("direction", tuple(d.value for d in Direction)),
    ("answered", (False, True)),
    ("attention", (False, True)),
    ("first_contact", (False, True)),
    ("unregistered", (False, True)),
    ("status", tuple(s.value for s in Status)),
)
#: Above this many classes a filter is dense enough to walk the journal (or its own index)
#: in order: the classes would cost more seeks than the walk reads entries.
MAX_CLASSES = 48
#: The same for "my calls": an extension's calls are a 40th of the journal or so, so its
#: ranges are short and near each other; every single flag (80 classes with internal calls
#: hidden) is merged, a period or "hide internal calls" alone (160) is walked.
MAX_EMPLOYEE_CLASSES = 80


def _kind_matches(kind: str, cls: dict[str, Any]) -> bool:
    if kind == "incoming":
        return bool(cls["direction"] == Direction.INCOMING.value)
    if kind == "outgoing":
        return bool(cls["direction"] == Direction.OUTGOING.value)
    if kind == "missed":
        return cls["direction"] == Direction.INCOMING.value and not cls["answered"]
    if kind == "lost":
        return bool(cls["status"] == Status.LOST.value)
    raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(sorted(KINDS))}")


def _class_matches(where: JournalFilter, cls: dict[str, Any]) -> bool:
    """Whether every call of this class passes the filter's flag conditions: the same
    conditions as :func:`journal_statement`'s ``WHERE``, evaluated on one class."""
    if where.kinds and not any(_kind_matches(kind, cls) for kind in where.kinds):
        return False
    internal = cls["direction"] == Direction.INTERNAL.value
    if where.internal is InternalCalls.ONLY and not internal:
        return False
    if where.internal is InternalCalls.HIDE and not where.kinds and internal:
        return False
    return all(
        wanted is None or cls[name] == wanted
        for name, wanted in (
            ("first_contact", where.first_contact),
            ("unregistered", where.unregistered),
            ("attention", where.attention),
        )
    )


def _conditions_used(where: JournalFilter) -> int:
    """How many of the flag columns' filters (kinds, internal=only, each flag) a filter
    combines."""
    return sum(
        (
            bool(where.kinds),
            where.internal is InternalCalls.ONLY,
            where.first_contact is not None,
            where.unregistered is not None,
            where.attention is not None,
        )
    )


def journal_classes(where: JournalFilter) -> list[dict[str, Any]] | None:
    """The classes a combined filter's page merges, or None when it walks an index instead:
    a single filter has an index of its own, whose range is exactly its rows; a filter that
    matches more than ``MAX_CLASSES`` classes is dense; a search goes through its own index.

    "My calls" (without a search) reads ``extension_calls`` instead: see
    :func:`employee_classes`."""
    if where.query or _conditions_used(where) < 2:
        return None
    return _matching_classes(where, MAX_CLASSES)


def employee_classes(where: JournalFilter) -> list[dict[str, Any]] | None:
    """The classes a page of "my calls" merges, one ``ix_extension_calls_class`` range per
    extension and class, or None when the filter is dense (more than
    ``MAX_EMPLOYEE_CLASSES`` classes: hiding internal calls and nothing else, a period,
    ``internal=show``): then the page walks the extension's calls in journal order
    (``extension_calls``' key) and tests the flags the entries carry."""
    if where.query:
        return None
    return _matching_classes(where, MAX_EMPLOYEE_CLASSES)


def _matching_classes(where: JournalFilter, most: int) -> list[dict[str, Any]] | None:
    names = [name for name, _ in CLASS_COLUMNS]
    found = []
    for values in itertools.product(*(domain for _, domain in CLASS_COLUMNS)):
        cls = dict(zip(names, values, strict=True))
        if _class_matches(where, cls):
            found.append(cls)
            if len(found) > most:
                return None
    return found


def journal_statement(
    dialect: str,
    where: JournalFilter,
    *,
    limit: int,
    cursor: str | None = None,
    extensions: Sequence[str] = (),
    region: str = "RU",
    search_matches: Sequence[int] | None = None,
    frequent_search: bool = False,
) -> sa.Select[int, float] | sa.CompoundSelect[int, float]:
    """The page query: ids and start times, newest first.

    :func:`list_calls` finds out the rest: ``extensions`` are the employee's; on SQLite,
    ``search_matches`` the rows the FTS5 index matched, or ``frequent_search`` when they were
    too many to list. With neither, the FTS5 query is a subquery (as ``explain`` shows it).

    A filter combining several conditions is a ``UNION ALL`` of one ``ix_calls_class`` range
    per matching class (:func:`journal_classes`), ordered by ``(started_at, id)``: both
    engines merge the ranges lazily (SQLite's ``MERGE (UNION ALL)``, PostgreSQL's Merge
    Append) and stop after a page. "My calls" without a search, or with a ``frequent_search``,
    reads ``extension_calls`` instead (:func:`_mine_statement`); with another search it
    probes the participants of each row the search walks."""
    if where.employee is not None and (not where.query or frequent_search):
        walked = parse_query(where.query, region) if where.query else None
        return _mine_statement(
            dialect, where, limit=limit, cursor=cursor, extensions=extensions, search=walked
        )
    shared: list[sa.ColumnElement[bool]] = []
    if where.started_from is not None:
        shared.append(Call.started_at >= where.started_from)
    if where.started_until is not None:
        shared.append(Call.started_at < where.started_until)
    if where.employee is not None:
        # A scalar subquery, not EXISTS: PostgreSQL turns EXISTS into a semi-join and then
        # hashes every call of the employee (hundreds of thousands at ten million calls)
        # before the first row; a scalar subquery stays a probe of the participants' index
        # per row walked, in journal order, and the walk stops after a page.
        mine = (
            sa.select(sa.literal(1))
            .where(
                CallParticipant.call_id == Call.id,
                CallParticipant.extension.in_(list(extensions) or [where.employee]),
            )
            .limit(1)
            .scalar_subquery()
        )
        shared.append(mine.is_not(None))
    if cursor is not None:
        started, call_id = decode_cursor(cursor)
        shared.append(sa.tuple_(Call.started_at, Call.id) < sa.tuple_(started, call_id))
    classes = journal_classes(where)
    if classes is not None:
        if not classes:
            return sa.select(Call.id, Call.started_at).where(sa.false()).limit(limit)
        if dialect == "postgresql" and where.employee is None and len(classes) > 1:
            return _classes_lateral(classes, shared, limit)
        arms = [
            sa.select(Call.id, Call.started_at).where(
                *_class_conditions(tuple(cls.items())), *shared
            )
            for cls in classes
        ]
        if len(arms) == 1:
            return arms[0].order_by(Call.started_at.desc(), Call.id.desc()).limit(limit)
        if dialect == "postgresql":
            # With "my calls" a class's page may take many probes: its arm is cut to a page
            # by its own LIMIT and the arms are merged (Merge Append), so that only the
            # classes the page needs are read that far.
            arms = [
                arm.order_by(Call.started_at.desc(), Call.id.desc()).limit(limit) for arm in arms
            ]
        merged = sa.union_all(*arms)
        return merged.order_by(
            merged.selected_columns.started_at.desc(), merged.selected_columns.id.desc()
        ).limit(limit)
    conditions = _flag_conditions(where, Call.__table__.c)
    order: tuple[sa.ColumnElement[Any], ...] = (Call.started_at.desc(), Call.id.desc())
    flag = _walked_flag(where) if dialect == "postgresql" and frequent_search else None
    if flag is not None:
        # PostgreSQL puts a frequent term's test at a third of the rows, so that walking the
        # journal seems to find a page as soon as walking the flag's own index: for "7956"
        # and first contacts at ten million calls it walked 248,000 rows of the journal
        # (114 ms) where the flag's index gives a page within 3,800 (20 ms). The flag as a
        # range, not an equality (which would make it a constant of the order), and first
        # in the order: only its index gives that order without sorting.
        column = Call.__table__.c[flag]
        value = sa.literal(getattr(where, flag), type_=sa.Boolean())
        conditions = _flag_conditions(_without_flag(where, flag), Call.__table__.c)
        conditions += [column >= value, column <= value]
        order = (column.desc(), *order)
    if where.query:
        search = parse_query(where.query, region)
        if not search.empty:
            conditions.append(
                _search_condition(dialect, search, search_matches, frequent=frequent_search)
            )
    return (
        sa.select(Call.id, Call.started_at)
        .where(*conditions, *shared)
        .order_by(*order)
        .limit(limit)
    )


def _walked_flag(where: JournalFilter) -> str | None:
    """The one flag a frequent search's walk on PostgreSQL goes through by its own index
    (``ix_calls_first_contact``, ``ix_calls_unregistered``, ``ix_calls_attention``): a
    filter of that flag alone, besides internal calls hidden or shown."""
    flags = [name for name in _WALKED_FLAGS if getattr(where, name) is not None]
    if len(flags) != 1 or where.kinds or where.internal is InternalCalls.ONLY:
        return None
    return flags[0]


_WALKED_FLAGS = ("first_contact", "unregistered", "attention")


def _without_flag(where: JournalFilter, flag: str) -> JournalFilter:
    if flag == "first_contact":
        return replace(where, first_contact=None)
    if flag == "unregistered":
        return replace(where, unregistered=None)
    return replace(where, attention=None)


def _classes_lateral(
    classes: list[dict[str, Any]], shared: list[sa.ColumnElement[bool]], limit: int
) -> sa.Select[int, float]:
    """PostgreSQL's page of several classes: the classes as ``VALUES``, each joined
    ``LATERAL`` to one backward scan of its range cut to a page, the pages sorted.

    Planning one ``UNION ALL`` arm per class cost about 6 ms for 40 classes on every request
    (custom plans); the lateral scan is planned once, with the class as its parameters, and
    reads at most a page of index entries per class (index-only)."""
    names = [name for name, _ in CLASS_COLUMNS]
    keys = _class_keys(classes)
    page = (
        sa.select(Call.id, Call.started_at)
        .where(*(_class_column(name) == keys.c[name] for name in names), *shared)
        .order_by(Call.started_at.desc(), Call.id.desc())
        .limit(limit)
        .lateral("class_page")
    )
    return (
        sa.select(page.c.id, page.c.started_at)
        .select_from(keys)
        .join(page, sa.true())
        .order_by(page.c.started_at.desc(), page.c.id.desc())
        .limit(limit)
    )


@functools.lru_cache(maxsize=1024)
def _class_conditions(cls: tuple[tuple[str, Any], ...]) -> tuple[sa.ColumnElement[bool], ...]:
    """A class's ``column = value`` conditions, made once: a combination's page has up to 48
    classes of 6 columns, and making 288 comparisons (each a bound parameter) was most of
    the CPU such a request took (clauses are immutable, so one may serve every statement)."""
    return tuple(_class_column(name) == value for name, value in cls)


_mine = ExtensionCall.__table__.c


@dataclass(frozen=True, slots=True)
class _MineShape:
    """What a page of "my calls" is built from, besides its values: pages of the same shape
    share one statement (see :func:`mine_page`)."""

    dialect: str
    kinds: frozenset[str]
    internal: InternalCalls
    first_contact: bool | None
    unregistered: bool | None
    attention: bool | None
    extensions: int
    since: bool
    until: bool
    cursor: bool
    #: A search walked with the employee's calls (``terms`` parameters ``q0``, …, every one
    #: held or, with ``any_of``, one), see :func:`mine_page`.
    terms: int = 0
    any_of: bool = False


def mine_page(
    dialect: str,
    where: JournalFilter,
    *,
    limit: int,
    cursor: str | None,
    extensions: Sequence[str],
    search: SearchQuery | None = None,
) -> tuple[sa.Select[int, float] | sa.CompoundSelect[int, float], dict[str, Any]]:
    """The page query of "my calls" from ``extension_calls``, and its parameters: ids and
    start times, newest first.

    A rare filter is one range of ``ix_extension_calls_class`` per extension and matching
    class, merged in journal order (SQLite: a ``UNION ALL`` merged lazily; PostgreSQL: the
    classes as ``VALUES`` joined ``LATERAL`` to one index-only scan cut to a page, as
    :func:`_classes_lateral`); a dense one walks each extension's calls in journal order (the
    table's key) and tests the flags on the entries. An employee with several extensions
    merges those too, a call of two of them once (``UNION``, ``DISTINCT``).

    The statement is made once per shape (the filter's conditions, how many extensions,
    which bounds) with its values as parameters: building and hashing 80 ``UNION ALL`` arms
    took SQLAlchemy about 7 ms, more than SQLite took to answer.

    A ``search`` whose every term is common (``KeySearch.frequent``) is tested on the text of
    each call the page reads (a probe of the call's row): the employee's calls are a
    fortieth of the journal, so walking them finds a page of "131" within 1,200 calls, where
    walking the journal and probing each call's participants read 46,000 (42 ms at ten
    million calls; with "missed" too, 170 ms)."""
    owned = sorted(set(extensions)) or [str(where.employee)]
    params: dict[str, Any] = {f"e{i}": extension for i, extension in enumerate(owned)}
    terms = (search.all_of or search.any_of) if search is not None else ()
    params.update((f"q{i}", _held(dialect, term)) for i, term in enumerate(terms))
    params["page"] = limit
    if where.started_from is not None:
        params["since"] = where.started_from
    if where.started_until is not None:
        params["until"] = where.started_until
    if cursor is not None:
        params["cursor_started"], params["cursor_id"] = decode_cursor(cursor)
    shape = _MineShape(
        dialect,
        where.kinds,
        where.internal,
        where.first_contact,
        where.unregistered,
        where.attention,
        len(owned),
        where.started_from is not None,
        where.started_until is not None,
        cursor is not None,
        len(terms),
        search is not None and bool(search.any_of),
    )
    return _mine_template(shape), params


def _mine_statement(
    dialect: str,
    where: JournalFilter,
    *,
    limit: int,
    cursor: str | None,
    extensions: Sequence[str],
    search: SearchQuery | None = None,
) -> sa.Select[int, float] | sa.CompoundSelect[int, float]:
    """:func:`mine_page`'s statement with its values bound (for callers that execute or
    explain the statement alone)."""
    statement, params = mine_page(
        dialect, where, limit=limit, cursor=cursor, extensions=extensions, search=search
    )
    return statement.params(params)


@functools.lru_cache(maxsize=256)
def _mine_template(
    shape: _MineShape,
) -> sa.Select[int, float] | sa.CompoundSelect[int, float]:
    where = JournalFilter(
        kinds=shape.kinds,
        internal=shape.internal,
        first_contact=shape.first_contact,
        unregistered=shape.unregistered,
        attention=shape.attention,
        employee="",
    )
    shared: list[sa.ColumnElement[bool]] = []
    if shape.since:
        shared.append(_mine.started_at >= sa.bindparam("since", type_=sa.Double()))
    if shape.until:
        shared.append(_mine.started_at < sa.bindparam("until", type_=sa.Double()))
    if shape.cursor:
        shared.append(
            sa.tuple_(_mine.started_at, _mine.call_id)
            < sa.tuple_(
                sa.bindparam("cursor_started", type_=sa.Double()),
                sa.bindparam("cursor_id", type_=sa.BigInteger()),
            )
        )
    if shape.terms:
        # A scalar subquery, not EXISTS: PostgreSQL would make EXISTS a join, free to read
        # every call holding the term before the first of the employee's.
        tests = [
            _holds(shape.dialect, sa.bindparam(f"q{i}", type_=sa.Text()))
            for i in range(shape.terms)
        ]
        held = (
            sa.select(sa.literal(1))
            .where(Call.id == _mine.call_id, sa.or_(*tests) if shape.any_of else sa.and_(*tests))
            .scalar_subquery()
        )
        shared.append(held.is_not(None))
    page = sa.bindparam("page", type_=sa.Integer())
    owned = [sa.bindparam(f"e{i}", type_=_mine.extension.type) for i in range(shape.extensions)]
    classes = employee_classes(where)
    if shape.terms and classes:
        # With a search the extensions' calls are walked and the flags tested on them: a
        # class's range is read until it holds the term, and merging them needs each one's
        # first match (SQLite: a class where the term is rare is read whole) or a whole
        # page of each (PostgreSQL's lateral pages). At ten million calls, "Мои звонки" +
        # a flag + a common term: SQLite up to 167 ms merged (unregistered, "зайцев"), 44
        # walked; PostgreSQL up to 158 ms (missed, "7928"), 71 walked.
        classes = None
    newest = (_mine.started_at.desc(), _mine.call_id.desc())
    if classes is not None and not classes:
        return sa.select(_mine.call_id.label("id"), _mine.started_at).where(sa.false()).limit(page)
    if classes is not None and shape.dialect == "postgresql":
        return _mine_lateral(owned, classes, shared, page)
    if classes is not None:
        arms = [
            sa.select(_mine.call_id.label("id"), _mine.started_at).where(
                _mine.extension == extension,
                *(_mine[name] == value for name, value in cls.items()),
                *shared,
            )
            for extension in owned
            for cls in classes
        ]
    else:
        flags = _flag_conditions(where, _mine)
        arms = [
            sa.select(_mine.call_id.label("id"), _mine.started_at).where(
                _mine.extension == extension, *flags, *shared
            )
            for extension in owned
        ]
    if len(arms) == 1:
        return arms[0].order_by(*newest).limit(page)
    if shape.dialect == "postgresql":
        arms = [arm.order_by(*newest).limit(page) for arm in arms]
    merged = sa.union(*arms) if len(owned) > 1 else sa.union_all(*arms)
    return merged.order_by(
        merged.selected_columns.started_at.desc(), merged.selected_columns.id.desc()
    ).limit(page)


def _mine_lateral(
    extensions: list[sa.BindParameter[str]],
    classes: list[dict[str, Any]],
    shared: list[sa.ColumnElement[bool]],
    page: sa.BindParameter[int],
) -> sa.Select[int, float]:
    """PostgreSQL's page of "my calls" with a rare filter: each (extension, class) a page of
    ``ix_extension_calls_class`` (``LATERAL``, planned once), the pages sorted."""
    names = [name for name, _ in CLASS_COLUMNS]
    keys = _class_keys(classes)
    pages = []
    for extension in extensions:
        pages.append(
            sa.select(_mine.call_id.label("id"), _mine.started_at)
            .where(
                _mine.extension == extension,
                *(_mine[name] == keys.c[name] for name in names),
                *shared,
            )
            .order_by(_mine.started_at.desc(), _mine.call_id.desc())
            .limit(page)
            .lateral("class_page")
        )
    if len(pages) == 1:
        (one,) = pages
        return (
            sa.select(one.c.id, one.c.started_at)
            .select_from(keys)
            .join(one, sa.true())
            .order_by(one.c.started_at.desc(), one.c.id.desc())
            .limit(page)
        )
    arms = [
        sa.select(one.c.id, one.c.started_at).select_from(keys).join(one, sa.true())
        for one in pages
    ]
    merged = sa.union(*arms).subquery("mine")
    return (
        sa.select(merged.c.id, merged.c.started_at)
        .order_by(merged.c.started_at.desc(), merged.c.id.desc())
        .limit(page)
    )


def _class_keys(classes: list[dict[str, Any]]) -> Any:
    """PostgreSQL: the classes as rows, ``unnest`` of one array per class column (bound
    parameters). Not ``VALUES``: SQLAlchemy cannot cache a statement holding a ``VALUES``
    construct, and compiled the whole statement anew on every request (2–3 ms on a quiet
    machine, tens of milliseconds at load 5, for 40–80 classes)."""
    arrays = [
        sa.bindparam(
            f"classes_{name}",
            value=[cls[name] for cls in classes],
            type_=postgresql.ARRAY(_class_column(name).type),
        )
        for name, _ in CLASS_COLUMNS
    ]
    return (
        sa.func.unnest(*arrays)
        .table_valued(
            *(sa.column(name, _class_column(name).type) for name, _ in CLASS_COLUMNS),
            name="classes",
        )
        .render_derived(name="classes")
    )


def _class_column(name: str) -> sa.ColumnElement[Any]:
    column: sa.ColumnElement[Any] = getattr(Call, name)
    return column


async def employee_extensions(session: AsyncSession, employee: str) -> list[str]:
    """Extensions of an employee id; an unknown id is taken as an extension itself."""
    found = await session.scalars(
        sa.select(EmployeeExtension.extension).where(EmployeeExtension.employee_id == employee)
    )
    return sorted(found.all()) or [employee]


# -- search through keys (migration 0012, ``storage.searchkeys``) ----------------------------

#: A word found in more keys than this is searched by the calls' own index instead (a common
#: word: walking the journal finds a page within a few thousand rows).
MAX_SEARCH_KEYS = 4000
#: The words of a query whose every word is common are still intersected when each range has
#: at most this many entries (a surname, a first name: ~30,000 at ten million calls).
CROWDED_KEYS = 100_000
#: A word of a query of several words found in at most this many keys (suffix entries) is
#: "rare": the keys of the rare words are intersected, the other words checked on their texts.
FEW_KEYS = 256
#: How many keys each statement of a search page opens, in turn (then the last, repeated):
#: the first key often fills the page (a number, a customer), a run of digits opens dozens.
KEY_BATCHES = (4, 12, 32)
#: Of a search's common words, the second smallest range is intersected with the smallest
#: when it has at most this many times its entries (else its word is checked on texts).
PAIRED_RANGES = 4
#: The common words' ranges are counted up to each of these many entries in turn, and up to
#: ``CROWDED_KEYS`` only when each range has more: the count stops once one range is within
#: it (the smallest is then known, and whether a range up to four times it is paired). The
#: first is the last walk window (a range within it is read whole, without a walk), the
#: second four times that. Counting a surname and a first name whole was the costliest
#: statement of a walk: 57,000 entries, ~20 ms on PostgreSQL.
COUNT_STEPS = (4_096, 16_384)
#: A search of common words first reads its smallest range's newest entries, a window of
#: this many, then of the next size when the first gave fewer than ``WALK_KEYS`` keys, and
#: checks the other words on their keys' texts: a surname and a first name found together
#: in one key of thirty fill a page from there, without building an index of either range.
#: Only when the last window gives fewer keys than that are the ranges intersected. The
#: first window is small because choosing the newest entries is a sort of the whole range
#: kept to the window: of 14,300 entries, SQLite keeps the newest 1,024 in 5 ms and the
#: newest 4,096 in 15 to 20 ms, and a name often found with the other fills a page from the
#: first.
WALKED = (1024, 4096)
WALK_KEYS = 128


@dataclass(frozen=True, slots=True)
class KeySearch:
    """The keys a search opens, as ranges of ``search_suffixes``: a number's forms (any of
    them), or words (every one: the first range's keys that are in the others, smallest
    first, and the ``common`` words, found in too many keys to intersect, checked on the
    remaining keys' texts). A ``frequent`` search has no ranges and never reaches
    :func:`key_page`; an ``extensions`` search has none either and opens the extensions'
    keys whose texts hold its terms."""

    ranges: tuple[str, ...]
    any_of: bool = False
    common: tuple[str, ...] = ()
    #: Every term is in more keys than ``MAX_SEARCH_KEYS``: the search goes through the
    #: calls' own text (SQLite walks the journal at once, without asking FTS5 first).
    frequent: bool = False
    #: A walk: only a window of the newest entries of the one range is read (``WALKED``;
    #: the other words are all ``common``), for at most ``WALK_KEYS`` keys; when the last
    #: window gives fewer, the search goes on as ``exact`` after the last key read (none is
    #: opened twice). The walk's keys are the newest of the exact search's: any other of its
    #: keys is in the range after the entries read.
    exact: KeySearch | None = None
    #: Words of which one is not all digits: a number's key (whose text is digits only)
    #: cannot hold them all, so the ranges of digit words leave numbers out ("Зайцев Сергей
    #: 450": of the 16,700 entries of ``450`` at ten million calls, 13,400 are numbers).
    names: bool = False
    #: The keys whose texts are checked for the ``common`` words are few by construction
    #: (rare ranges, one range of at most ``WALKED[-1]`` entries read whole, a walk's
    #: window): PostgreSQL checks them key by key (see :func:`_keys_template`).
    few: bool = False
    #: Internal calls only: an internal call's text is its extensions' texts (it has no
    #: number, customer or contact), so the keys are the extensions' (a few dozen), each
    #: text checked for every term (any term, with ``any_of``: a number's forms), and there
    #: are no ranges. A term in too many numbers' keys is not frequent here: "7928" with
    #: internal calls only walked every internal call of ten million (20 s) and found none.
    extensions: bool = False
    #: Unregistered calls only: such a call has no customer or contact, so the ranges leave
    #: their keys out. A word of customers' names ("ооо") is then in no key, where walking
    #: the journal for it read every unregistered call (over 15 s at ten million calls).
    owners_out: bool = False

    def numbers_out(self) -> tuple[bool, ...]:
        """Which of the ranges leave numbers' keys out (see ``names``)."""
        return _numbers_out(self.ranges, self.names)


def _digits_only(word: str) -> bool:
    return word.isascii() and word.isdigit()


def _numbers_out(words: Sequence[str], names: bool) -> tuple[bool, ...]:
    """Which of ``words``' ranges leave numbers' keys out: in a search of ``names``, the
    digit words' (``KeySearch.names``)."""
    return tuple(names and _digits_only(word) for word in words)


def _in_range(
    columns: Any, i: int, numbers_out: bool, owners_out: bool = False
) -> tuple[sa.ColumnElement[bool], ...]:
    """Word ``i``'s range of ``search_suffixes`` (``lo{i}``, ``hi{i}``), without numbers'
    keys when ``numbers_out``, without customers' and contacts' when ``owners_out`` (the
    index's second column, checked on its entries)."""
    bounds = (columns.suffix >= sa.bindparam(f"lo{i}"), columns.suffix < sa.bindparam(f"hi{i}"))
    if numbers_out and owners_out:
        return (*bounds, columns.kind == KIND_EXTENSION)
    if owners_out:
        return (*bounds, columns.kind != KIND_CUSTOMER, columns.kind != KIND_CONTACT)
    return (*bounds, columns.kind != KIND_NUMBER) if numbers_out else bounds


def _range_count(i: int, numbers_out: bool, owners_out: bool) -> sa.ScalarSelect[Any]:
    """How many entries word ``i``'s range has, counted without fetching them and without
    reading past ``most``."""
    s = SearchSuffix.__table__.c
    counted = (
        sa.select(sa.literal(1))
        .where(*_in_range(s, i, numbers_out, owners_out))
        .limit(sa.bindparam("most"))
        .subquery()
    )
    return sa.select(sa.func.count()).select_from(counted).scalar_subquery()


@functools.lru_cache(maxsize=64)
def _counts_template(numbers_out: tuple[bool, ...], owners_out: bool = False) -> sa.Select[Any]:
    return sa.select(*(_range_count(i, out, owners_out) for i, out in enumerate(numbers_out)))


async def _range_sizes(
    session: AsyncSession,
    words: Sequence[str],
    most: int,
    *,
    names: bool = False,
    owners_out: bool = False,
) -> list[int]:
    """The entries of each word's range of ``search_suffixes`` (a key holding the word twice
    is two; with ``names``, a digit word's without numbers' keys, see ``KeySearch.names``;
    with ``owners_out``, without customers' and contacts' keys), each counted up to
    ``most + 1``: all in one statement."""
    params: dict[str, Any] = {"most": most + 1}
    for i, word in enumerate(words):
        params[f"lo{i}"], params[f"hi{i}"] = word_range(word)
    template = _counts_template(_numbers_out(words, names), owners_out)
    row = (await session.execute(template, params)).one()
    return [int(count) for count in row]


def _keyable(term: str) -> bool:
    return MIN_INDEXED_TERM <= len(term) <= MAX_SUFFIX


async def key_search(
    session: AsyncSession,
    search: SearchQuery,
    *,
    internal_only: bool = False,
    unregistered_only: bool = False,
) -> KeySearch | None:
    """How keys serve a search, or None when they cannot (a term under three or over
    ``MAX_SUFFIX`` characters, a number form or every word too common): it then goes
    through the calls' trigram index.

    A number opens the keys holding one of its forms. Words open the keys holding every word
    (one name, one number, or an extension with its employee's name: "Иванов Пётр",
    "ромашка 2000", "101 smirnova"). With ``internal_only`` (a filter of internal calls
    only) the keys are the extensions' whose texts hold the terms (``KeySearch.extensions``):
    the keys a search through ranges would open that have internal calls. With
    ``unregistered_only`` the ranges leave customers' and contacts' keys out
    (``KeySearch.owners_out``): an unregistered call has none."""
    if not await session.run_sync(lambda sync: has_keys(sync.connection())):
        return None
    terms = list(dict.fromkeys(search.any_of or search.all_of))
    if not terms or not all(_keyable(term) for term in terms):
        return None
    if internal_only:
        return KeySearch(
            (), any_of=bool(search.any_of), common=tuple(terms), extensions=True, few=True
        )
    out = unregistered_only
    if search.any_of or len(terms) == 1:
        most = 2 * MAX_SEARCH_KEYS
        sizes = await _range_sizes(session, terms, most, owners_out=out)
        if any(size > most for size in sizes):
            # One common form is enough to make the number's calls frequent.
            return KeySearch((), frequent=True)
        return KeySearch(tuple(terms), any_of=bool(search.any_of), owners_out=out)
    # Several words: the rare ones' ranges (a few leaf pages each, cold) are intersected and
    # the others checked on the few keys left, which costs less than reading their ranges
    # (thousands of entries for a surname or a first name). A word that is not all digits
    # rules numbers out: a digit word's range is then counted and read without them.
    names = not all(_digits_only(term) for term in terms)
    sizes = await _range_sizes(session, terms, FEW_KEYS, names=names, owners_out=out)
    rare = [word for size, word in sorted(zip(sizes, terms, strict=True)) if size <= FEW_KEYS]
    if rare:
        common = tuple(w for w in terms if w not in rare)
        return KeySearch(tuple(rare), common=common, names=names, few=True, owners_out=out)
    # Every word is common, but together they may be rare ("Зайцев Анна 123": a surname and
    # a first name that no contact has together): walking the journal for them would read it
    # all. The smallest range is read, and the next smallest is intersected with it when it
    # is not much larger (an index of it is built, which costs less per entry than checking
    # a text); the other words are checked on the keys left. Two words (a surname and a
    # first name, often together) first walk the smallest range's newest entries instead.
    # The ranges are counted only as far as the choice needs (``COUNT_STEPS``): a surname's
    # 14,000 entries, not a first name's 43,000 as well. A range past the count is not
    # paired with the smallest.
    for most in sorted({min(step, CROWDED_KEYS) for step in (*COUNT_STEPS, CROWDED_KEYS)}):
        sizes = await _range_sizes(session, terms, most, names=names, owners_out=out)
        if min(sizes) <= most:
            break
    crowded = sorted((size, word) for size, word in zip(sizes, terms, strict=True) if size <= most)
    if not crowded:
        return KeySearch((), frequent=True)
    smallest, ranges = crowded[0][1], [crowded[0][1]]
    if len(crowded) > 1 and crowded[1][0] <= min(most, PAIRED_RANGES * crowded[0][0]):
        ranges.append(crowded[1][1])
    exact = KeySearch(
        tuple(ranges),
        common=tuple(w for w in terms if w not in ranges),
        names=names,
        owners_out=out,
    )
    others = tuple(w for w in terms if w != smallest)
    if len(terms) > 2:
        # Three common words are seldom together in keys of the smallest range (a name and
        # a part of a number): walking it would mostly end up intersecting after all.
        return exact
    if crowded[0][0] <= WALKED[-1]:
        # Read it all.
        return KeySearch((smallest,), common=others, names=names, few=True, owners_out=out)
    return KeySearch((smallest,), common=others, exact=exact, names=names, few=True, owners_out=out)


#: Keys read per statement of a search page, newest first.
KEYS_READ = 256


def _after(columns: Any) -> sa.ColumnElement[bool]:
    return sa.tuple_(columns.last, columns.kind, columns.key) < sa.tuple_(
        sa.bindparam("after_last"), sa.bindparam("after_kind"), sa.bindparam("after_key")
    )


@functools.lru_cache(maxsize=256)
def _keys_template(
    ranges: int,
    any_of: bool,
    common: int,
    after: bool,
    walk: bool = False,
    *,
    numbers_out: tuple[bool, ...] = (),
    by_key: bool = False,
    extensions: bool = False,
    owners_out: bool = False,
    every: bool = False,
) -> sa.Select[Any]:
    """The next ``KEYS_READ`` keys of a search, newest ``last`` first (after ``after``): the
    statement of a shape, made once, with its values as parameters (``lo0``, ``hi0``, …,
    ``common0``, …, ``after_last``, ``after_kind``, ``after_key``). A ``walk`` gives the
    next ``WALK_KEYS`` keys among the newest entries of its one range, as many as the
    parameter ``walked`` (a window of ``WALKED``). The ranges flagged in ``numbers_out``
    leave numbers' keys out (``KeySearch.names``); with ``owners_out`` every range leaves
    customers' and contacts' keys out (``KeySearch.owners_out``).

    ``by_key``: the common words' check stays a subquery run for each key (its ``OFFSET 0``
    keeps PostgreSQL from turning the ``EXISTS`` into a join), for keys known to be few
    (``KeySearch.few``). As a join, PostgreSQL's planner may hash every text holding the word
    instead: at a million calls, "Иванов Пётр" read all 263,000 texts (a parallel sequential
    scan, 26 ms) to check the 1,432 keys of ``иванов``, which take 5.5 ms one by one.

    ``extensions``: no ranges; the keys are the extensions' (one range of the primary key of
    ``search_keys``) whose texts hold every common word, or any with ``any_of``
    (``KeySearch.extensions``).

    ``every``: all the keys, in no order (:func:`window_page`; not with ``after`` or a
    ``walk``)."""
    if extensions:
        return _extension_keys(any_of, common, after)
    s = SearchSuffix.__table__.c
    out = numbers_out or (False,) * ranges
    selects = [
        sa.select(s.kind, s.key, s.last).where(*_in_range(s, i, out[i], owners_out))
        for i in range(ranges)
    ]
    read = KEYS_READ
    if walk:
        newest = sa.desc(s.last), sa.desc(s.kind), sa.desc(s.key)
        window = selects[0].where(_after(s)) if after else selects[0]
        keys = window.order_by(*newest).limit(sa.bindparam("walked", type_=sa.Integer)).subquery()
        after = False  # applied to the window
        read = WALK_KEYS
    elif any_of and ranges > 1:
        keys = sa.union(*selects).subquery()
    else:
        # The first (smallest) range, each key of it also in the others' ranges: SQLite and
        # PostgreSQL build an index (a hash) of the other ranges and probe it, which costs
        # about half an INTERSECT of them all. A key holding the word twice is listed twice:
        # the page skips the second (sorting without a DISTINCT's hashing is what PostgreSQL
        # does fastest here).
        first = selects[0]
        for i in range(1, ranges):
            other = SearchSuffix.__table__.alias(f"range{i}").c
            first = first.where(
                sa.tuple_(s.kind, s.key).in_(
                    sa.select(other.kind, other.key).where(*_in_range(other, i, out[i], owners_out))
                )
            )
        keys = first.subquery()
    statement = sa.select(keys.c.kind, keys.c.key, keys.c.last)
    if common:
        text = SearchKey.__table__.c
        held: sa.Select[Any] = sa.select(sa.literal_column("1")).where(
            text.kind == keys.c.kind,
            text.key == keys.c.key,
            *(text.text.like(sa.bindparam(f"common{i}"), escape="\\") for i in range(common)),
        )
        statement = statement.where((held.offset(0) if by_key else held).exists())
    if after:
        statement = statement.where(_after(keys.c))
    if every:
        return statement
    if walk:
        # Not sorted again: the window is read in its order (SQLite's co-routine, PostgreSQL's
        # subquery scan), and its texts checked only until enough keys are found.
        return statement.limit(read)
    return statement.order_by(keys.c.last.desc(), keys.c.kind.desc(), keys.c.key.desc()).limit(read)


def _extension_keys(any_of: bool, terms: int, after: bool) -> sa.Select[Any]:
    """The next ``KEYS_READ`` extensions' keys whose texts hold every term (``common0``, …),
    or one of them with ``any_of``, newest ``last`` first: ``KeySearch.extensions``."""
    c = SearchKey.__table__.c
    likes = [c.text.like(sa.bindparam(f"common{i}"), escape="\\") for i in range(terms)]
    statement = sa.select(c.kind, c.key, c.last).where(
        c.kind == KIND_EXTENSION, sa.or_(*likes) if any_of else sa.and_(*likes)
    )
    if after:
        statement = statement.where(_after(c))
    return statement.order_by(c.last.desc(), c.kind.desc(), c.key.desc()).limit(KEYS_READ)


def _keys_statement(
    found_by: KeySearch,
    after: tuple[float, str, str] | None,
    window: int,
    dialect: str,
    *,
    every: bool = False,
) -> tuple[sa.Select[Any], dict[str, Any]]:
    """The statement reading a search's next keys after ``after``, and its values (a walk
    reads the window ``WALKED[window]``). SQLite checks every key's text by itself anyway
    (it has no hash join): ``by_key`` is PostgreSQL's."""
    params: dict[str, Any] = {}
    if found_by.exact is not None:
        params["walked"] = WALKED[window]
    for i, term in enumerate(found_by.ranges):
        params[f"lo{i}"], params[f"hi{i}"] = word_range(term)
    for i, word in enumerate(found_by.common):
        params[f"common{i}"] = _like(word)
    if after is not None:
        params["after_last"], params["after_kind"], params["after_key"] = after
    template = _keys_template(
        len(found_by.ranges),
        found_by.any_of,
        len(found_by.common),
        after is not None,
        found_by.exact is not None,
        numbers_out=found_by.numbers_out(),
        by_key=found_by.few and dialect == "postgresql",
        extensions=found_by.extensions,
        owners_out=found_by.owners_out,
        every=every,
    )
    return template, params


_KEY_COLUMNS = {KIND_NUMBER: "number", KIND_CUSTOMER: "customer_id", KIND_CONTACT: "contact_id"}


@dataclass(frozen=True, slots=True)
class _ArmShape:
    """What the statement opening keys of one kind is built from, besides its values: its
    number of keys is a power of two (the keys past the batch's are ``""``, which no call
    has), so that a few statements serve every batch."""

    dialect: str
    kind: str
    keys: int
    filters: JournalFilter
    extensions: int
    bound: bool
    floor: bool


def _key_arm(kind: str, key: Any, shape: _ArmShape) -> sa.Select[Any]:
    """A page of the calls of ``key`` (a parameter or a column), newest first, with the
    filter's conditions."""
    where = shape.filters
    calls = Call.__table__.c
    if kind == KIND_EXTENSION:
        c = _mine
        statement = sa.select(c.call_id.label("id"), c.started_at).where(c.extension == key)
        started, call_id = c.started_at, c.call_id
        conditions = _flag_conditions(where, c)
    else:
        c = calls
        statement = sa.select(c.id, c.started_at).where(c[_KEY_COLUMNS[kind]] == key)
        started, call_id = c.started_at, c.id
        # A call with a number, customer or contact is never internal: hiding internal calls
        # (the default) needs no look at the row, which the key's index does not hold.
        hidden = where.internal is InternalCalls.HIDE and not where.kinds
        conditions = _flag_conditions(
            replace(where, internal=InternalCalls.SHOW) if hidden else where, c
        )
    if shape.extensions:
        conditions.append(
            sa.select(sa.literal(1))
            .where(
                CallParticipant.call_id == call_id,
                CallParticipant.extension.in_(sa.bindparam("mine", expanding=True)),
            )
            .limit(1)
            .scalar_subquery()
            .is_not(None)
        )
    if where.started_from is not None:
        conditions.append(started >= sa.bindparam("since"))
    if where.started_until is not None:
        conditions.append(started < sa.bindparam("until"))
    if shape.floor:
        conditions.append(started >= sa.bindparam("floor"))
    if shape.bound:
        conditions.append(
            sa.tuple_(started, call_id)
            < sa.tuple_(sa.bindparam("bound_started"), sa.bindparam("bound_id"))
        )
    return (
        statement.where(*conditions)
        .order_by(started.desc(), call_id.desc())
        .limit(sa.bindparam("page"))
    )


@functools.lru_cache(maxsize=512)
def _arms_template(shape: _ArmShape) -> sa.Select[Any] | sa.TextClause:
    """The statement opening keys of a kind, made once per shape (building a few dozen
    subqueries took most of a search page's CPU, and compiling them more).

    PostgreSQL: the keys are ``unnest`` of one array (``keys``), each joined ``LATERAL`` to
    its page: one small plan whatever the number of keys (planning a ``UNION ALL`` of 32
    arms, as its planner must for every request with custom plans, cost more than running
    it). SQLite: a ``UNION ALL`` of one arm per key (``key0``, ``key1``, …), the arm compiled
    once and repeated as text (:func:`_union_of_arms`), run by the driver
    (:func:`_arms_driver`)."""
    if shape.dialect == "postgresql":
        keys = (
            sa.func.unnest(sa.bindparam("keys", type_=postgresql.ARRAY(sa.String())))
            .table_valued(sa.column("key", sa.String()), name="keys")
            .render_derived(name="keys")
        )
        page = _key_arm(shape.kind, keys.c.key, shape).lateral("key_page")
        return sa.select(page.c.id, page.c.started_at).select_from(keys).join(page, sa.true())
    arm = _key_arm(shape.kind, sa.bindparam(_ARM_KEY), shape)
    return _union_of_arms(arm, shape.keys, shape.extensions)


#: The key of the arm :func:`_union_of_arms` repeats, renamed ``key0``, ``key1``, … in turn.
_ARM_KEY = "arm_key"
#: SQLite's SQL with ``:name`` parameters, which a :func:`sqlalchemy.text` binds by name.
_NAMED_SQLITE = sqlite.dialect(paramstyle="named")
#: SQLite's SQL as its driver takes it (``?``), in :class:`_DriverStatement`.
_QMARK_SQLITE = sqlite.dialect()
_POSTCOMPILE = re.compile(r"\(__\[POSTCOMPILE_(\w+)\]\)")


def _union_of_arms(arm: sa.Select[Any], keys: int, extensions: int) -> sa.TextClause:
    """``keys`` copies of ``arm`` (a SQLite page of one key's calls, the key the parameter
    ``arm_key``) as one ``UNION ALL``, the i-th copy's key ``key{i}``: the arm is compiled
    once and its SQL repeated. SQLAlchemy compiled a union of 32 subqueries in 17-27 ms, the
    first time each shape was seen (a kind, a filter, a batch size, a page's floor): a
    search's first pages after a start paid it two or three times (bench.issue18-quiet).
    The parameters keep their names and types, and the values SQLAlchemy gave the arm's
    own (a flag's, a ``LIMIT 1``'s); the employee's ``extensions`` (the expanding ``mine``)
    are ``mine0``, ``mine1``, …"""
    compiled = arm.compile(dialect=_NAMED_SQLITE)
    binds = []
    for name, value in compiled.params.items():
        bind = compiled.binds[name]
        if name == _ARM_KEY:
            binds += [sa.bindparam(f"key{i}", type_=bind.type) for i in range(keys)]
        elif name == "mine":
            binds += [sa.bindparam(f"mine{i}", type_=bind.type) for i in range(extensions)]
        elif bind.required:
            binds.append(sa.bindparam(name, type_=bind.type))
        else:
            binds.append(sa.bindparam(name, value, type_=bind.type))
    mine = "(" + ", ".join(f":mine{i}" for i in range(extensions)) + ")"
    sql = _POSTCOMPILE.sub(lambda found: mine if found[1] == "mine" else found[0], compiled.string)
    if "POSTCOMPILE" in sql:
        raise AssertionError(f"an arm with an expanding parameter other than mine: {sql}")
    copies = [re.sub(rf":{_ARM_KEY}\b", f":key{i}", sql) for i in range(keys)]
    union = " UNION ALL ".join(f"SELECT id, started_at FROM ({copy})" for copy in copies)
    return sa.text(union).bindparams(*binds)


@dataclass(frozen=True, slots=True)
class _DriverStatement:
    """A statement as SQLite's driver takes it: its SQL with ``?`` and the names of its
    parameters in that order, run with :meth:`AsyncConnection.exec_driver_sql`, without
    SQLAlchemy's cache key, compiled-statement cache or per-parameter processing (a union
    of 32 arms has 400 parameters: 0.3 ms a statement through SQLAlchemy, in a search page
    that runs two or three)."""

    sql: str
    names: tuple[str, ...]
    #: The values of the parameters the statement sets itself (``LIMIT 1``, a flag's).
    own: dict[str, Any]

    def parameters(self, values: dict[str, Any]) -> tuple[Any, ...]:
        given = self.own | values
        return tuple(given[name] for name in self.names)


@functools.lru_cache(maxsize=512)
def _arms_driver(shape: _ArmShape) -> _DriverStatement:
    """:func:`_arms_template` on SQLite, as :class:`_DriverStatement`."""
    compiled = _arms_template(shape).compile(dialect=_QMARK_SQLITE)
    processors = compiled._bind_processors
    own = {}
    for name, bind in compiled.binds.items():
        if not bind.required:
            processor = processors.get(name)
            own[name] = processor(bind.value) if callable(processor) else bind.value
    return _DriverStatement(compiled.string, tuple(compiled.positiontup or ()), own)


def _page_values(
    where: JournalFilter, limit: int, cursor: str | None, extensions: Sequence[str]
) -> tuple[JournalFilter, list[str], tuple[float, int] | None, dict[str, Any]]:
    """What a search page's statements are made of (:func:`key_page`, :func:`window_page`):
    the filters without their values (which are parameters) and without the search, the
    employee's extensions, the cursor's bound, and the values of the page's size, the period
    and the bound."""
    filters = replace(
        where,
        query=None,
        employee=None,
        started_from=None if where.started_from is None else 0.0,
        started_until=None if where.started_until is None else 0.0,
    )
    mine = list(extensions) or ([where.employee] if where.employee is not None else [])
    bound = decode_cursor(cursor) if cursor is not None else None
    params: dict[str, Any] = {"page": limit}
    if where.started_from is not None:
        params["since"] = where.started_from
    if where.started_until is not None:
        params["until"] = where.started_until
    if bound is not None:
        params["bound_started"], params["bound_id"] = bound
    return filters, mine, bound, params


async def key_page(
    session: AsyncSession,
    found_by: KeySearch,
    where: JournalFilter,
    *,
    limit: int,
    cursor: str | None,
    extensions: Sequence[str],
) -> list[tuple[int, float]]:
    """A search page from its keys: ``(id, started_at)`` newest first, at most ``limit``.

    The keys are read newest ``last`` first (``KEYS_READ`` at a time) and opened a few per
    statement (``KEY_BATCHES``), each giving at most a page of its calls; once a page of
    calls is found, a key whose ``last`` is older than the page's oldest call cannot add to
    it, nor can any key after it, and the keys still opened read only what is newer."""
    dialect = (await session.connection()).dialect.name
    filters, mine, bound, params = _page_values(where, limit, cursor, extensions)
    params = _arm_values(dialect, params, mine)
    found: dict[int, float] = {}
    waiting: list[Key] = []
    seen: set[tuple[str, str]] = set()
    after: tuple[float, str, str] | None = None
    exhausted = not found_by.ranges and not found_by.extensions
    turn = window = 0
    while True:
        size = KEY_BATCHES[min(turn, len(KEY_BATCHES) - 1)]
        floor = heapq.nlargest(limit, found.values())[-1] if len(found) >= limit else None
        # The keys not read yet are no newer than the last read: none of them can add to a
        # full page once it is older than the page's oldest call. Once the page is full, the
        # keys read are opened (raising its floor) before any more are read.
        spent = floor is not None and after is not None and after[0] < floor
        wanted = len(waiting) < size if floor is None else not waiting
        if wanted and not exhausted and not spent:
            statement, values = _keys_statement(found_by, after, window, dialect)
            read = (await session.execute(statement, values)).all()
            for kind, key, last in read:
                if (kind, key) not in seen:
                    seen.add((kind, key))
                    waiting.append(Key(kind, key, float(last)))
            exhausted = len(read) < (KEYS_READ if found_by.exact is None else WALK_KEYS)
            if read:
                after = (float(read[-1][2]), read[-1][0], read[-1][1])
            if exhausted and found_by.exact is not None:
                # The walk's window gave too few: a larger window goes on after the last key
                # read, then the exact search (its keys up to there are the walk's: any other
                # is in the range after the window, which was read newest first).
                if window + 1 < len(WALKED):
                    window += 1
                else:
                    found_by = found_by.exact
                exhausted = False
        if not waiting:
            if exhausted or spent:
                break
            continue
        if floor is not None and waiting[0].last < floor:
            break
        chunk, waiting = waiting[:size], waiting[size:]
        turn += 1
        for kind in sorted({k.kind for k in chunk}):
            names = [k.key for k in chunk if k.kind == kind]
            opened = await _open_keys(
                session,
                dialect,
                kind,
                names,
                filters=filters,
                mine=len(mine),
                bound=bound,
                floor=floor,
                params=params,
            )
            found.update(opened)
    ordered = sorted(found.items(), key=lambda item: (item[1], item[0]), reverse=True)
    return ordered[:limit]


def _arm_values(dialect: str, params: dict[str, Any], mine: Sequence[str]) -> dict[str, Any]:
    """``params`` with the employee's extensions as :func:`_key_arm`'s probe takes them (an
    array on PostgreSQL, one parameter each on SQLite)."""
    values = dict(params)
    if mine and dialect == "postgresql":
        values["mine"] = list(mine)
    elif mine:
        values.update((f"mine{i}", extension) for i, extension in enumerate(mine))
    return values


async def _open_keys(
    session: AsyncSession,
    dialect: str,
    kind: str,
    names: Sequence[str],
    *,
    filters: JournalFilter,
    mine: int,
    bound: tuple[float, int] | None,
    floor: float | None,
    params: dict[str, Any],
) -> list[tuple[int, float]]:
    """Keys of one kind opened in one statement: each key's calls with the filters, newest
    first, at most a page of each (``params["page"]``), none older than ``floor``."""
    values = dict(params)
    if dialect == "postgresql":
        slots = 0
        values["keys"] = list(names)
    else:
        slots = 1 << (len(names) - 1).bit_length()
        values.update((f"key{i}", name) for i, name in enumerate(names))
        values.update((f"key{i}", "") for i in range(len(names), slots))
    shape = _ArmShape(dialect, kind, slots, filters, mine, bound is not None, floor is not None)
    if floor is not None:
        values["floor"] = floor
    if dialect == "postgresql":
        rows = await session.execute(_arms_template(shape), values)
    else:
        driver = _arms_driver(shape)
        connection = await session.connection()
        rows = await connection.exec_driver_sql(driver.sql, driver.parameters(values))
    return [(int(call_id), float(started)) for call_id, started in rows]


# -- a search with a filter: every key's calls at once (window_page) -------------------------

#: The kinds of keys the window statement reads, in its order (their calls are ``calls`` by
#: ``_KEY_COLUMNS``; an extension's keys are opened beside it: :func:`window_page`).
_WINDOW_KINDS = (KIND_NUMBER, KIND_CUSTOMER, KIND_CONTACT)
#: SQLite may drop the ORDER BY of a subquery in FROM that has no LIMIT (its omit-ORDER-BY
#: optimisation): the candidates' LIMIT is this, which no journal reaches.
_NO_CAP = 1 << 62
#: Kinds that half the calls are: a page of them is found among the newest keys' calls.
_COMMON_KINDS = frozenset({"incoming", "outgoing"})
#: ``started_at + 0``: a start no index gives in order (see :func:`_window_template`).
_ZERO: sa.ColumnElement[Any] = sa.literal_column("0")


#: A search with a filter reads every start of its keys' calls when it has at least this many
#: keys (:func:`window_page`); fewer are opened one by one (:func:`key_page`): the busy
#: number's 50,000 calls and lost ones, 5-9 ms opened, 29-34 ms read whole.
WINDOW_KEYS = 64


def windowed(found_by: KeySearch, where: JournalFilter) -> bool:
    """Whether a search page reads every key's calls at once (:func:`window_page`) rather
    than opening keys newest first (:func:`key_page`): with a filter besides the search, a
    key's newest calls seldom pass it, so the keys' merge read each key's calls far back
    before a page was full, fetching each row to test the flag ("9183" and lost calls at ten
    million: 77 statements opening about 2,400 of its 3,058 keys, 82 ms on SQLite; a run of
    four digits and lost calls, p95 183 ms on SQLite and 826 ms on PostgreSQL). Not for a
    walk (its keys are found as it goes) or internal calls alone (their keys are a few
    extensions), nor for incoming or outgoing calls alone (half the calls: the newest keys
    give a page)."""
    if found_by.exact is not None or found_by.extensions:
        return False
    return bool(
        where.kinds - _COMMON_KINDS
        or where.employee is not None
        or where.internal is InternalCalls.ONLY
        or where.first_contact is not None
        or where.unregistered is not None
        or where.attention is not None
        or where.started_from is not None
        or where.started_until is not None
    )


def _in_list(dialect: str, column: sa.ColumnElement[Any], name: str) -> sa.ColumnElement[bool]:
    """``column`` in the list bound as ``name``: SQLite reads it as one JSON array
    (``json_each``, one index lookup per value), PostgreSQL as an array (``= ANY``)."""
    if dialect == "postgresql":
        return column == sa.any_(sa.bindparam(name, type_=postgresql.ARRAY(sa.String())))
    values: sa.Select[Any] = sa.select(sa.column("value")).select_from(
        sa.func.json_each(sa.bindparam(name, type_=_JsonIds()))
    )
    return column.in_(values.scalar_subquery())


@dataclass(frozen=True, slots=True)
class _WindowShape:
    dialect: str
    #: The kinds of keys the search has, in ``_WINDOW_KINDS`` order.
    kinds: tuple[str, ...]
    #: The filters without their values and without the search (as in :func:`key_page`).
    filters: JournalFilter
    mine: bool
    bound: bool


@functools.lru_cache(maxsize=256)
def _window_template(shape: _WindowShape) -> sa.Select[Any]:
    """The statement of :func:`window_page`: the starts of every key's calls (``keys_n``,
    ``keys_c``, ``keys_p``: one list per kind), each index read without a row,
    distinct and newest first; then, for each start in that order, the ids of its calls
    that hold a key and pass the filter, one aggregate per start, until ``page`` starts
    have some. Only the starts gone through fetch rows: about as many as the calls down to
    the page's oldest, where the keys' merge fetched every call of every key it opened.

    The candidates are sorted on ``started_at + 0``, which no index gives: neither engine
    may then walk the journal's index in order and test each entry for a key."""
    dialect = shape.dialect
    where = shape.filters
    calls = Call.__table__.c
    arms = []
    for kind in shape.kinds:
        started = calls.started_at
        arm = sa.select(started).where(_in_list(dialect, calls[_KEY_COLUMNS[kind]], f"keys_{kind}"))
        if where.started_from is not None:
            arm = arm.where(started >= sa.bindparam("since"))
        if where.started_until is not None:
            arm = arm.where(started < sa.bindparam("until"))
        if shape.bound:
            arm = arm.where(started <= sa.bindparam("bound_started"))
        arms.append(arm)
    if len(arms) == 1:
        start = arms[0].selected_columns[0]
        newest = arms[0].with_only_columns((start + _ZERO).label("s"))
    else:
        starts = sa.union_all(*arms).subquery("starts")
        newest = sa.select((starts.c.started_at + _ZERO).label("s"))
    # Grouped (one row per start; SQLite's DISTINCT took a second temporary b-tree), then
    # sorted: the same b-tree on SQLite.
    s_label: sa.ColumnElement[Any] = sa.literal_column("s")
    newest = newest.group_by(s_label).order_by(s_label.desc())
    if dialect == "sqlite":
        newest = newest.limit(sa.bindparam("cap", _NO_CAP))
    candidates = newest.subquery("candidates")

    row = Call.__table__.alias("c2").c
    held = [_in_list(dialect, row[_KEY_COLUMNS[kind]], f"keys_{kind}") for kind in shape.kinds]
    conditions = _flag_conditions(where, row)
    if shape.mine:
        conditions.append(
            sa.exists().where(
                CallParticipant.call_id == row.id,
                _in_list(dialect, CallParticipant.__table__.c.extension, "mine"),
            )
        )
    if shape.bound:
        conditions.append(
            sa.tuple_(row.started_at, row.id)
            < sa.tuple_(sa.bindparam("bound_started"), sa.bindparam("bound_id"))
        )
    # A start is first tested on an index alone: is there a call of the employee's (their
    # extensions' calls carry the flags) or one passing the flags at that start? Most are
    # not, and are passed over without reading a call's row. The test is a subquery of its
    # own (``OFFSET 0``: PostgreSQL would otherwise merge it with the next and test the
    # rows first).
    passing = None
    if shape.mine:
        passing = sa.select(candidates.c.s).where(
            sa.exists().where(
                _in_list(dialect, _mine.extension, "mine"),
                _mine.started_at == candidates.c.s,
                *_flag_conditions(where, _mine),
            )
        )
    elif _conditions_used(where):
        flags = Call.__table__.alias("c3").c
        passing = sa.select(candidates.c.s).where(
            sa.exists().where(flags.started_at == candidates.c.s, *_flag_conditions(where, flags))
        )
    if passing is not None:
        if dialect == "postgresql":
            # Its order said again, or PostgreSQL tests every start and sorts those left.
            passing = passing.order_by(candidates.c.s.desc())
        candidates = passing.offset(0).subquery("passing")
    aggregate = sa.func.array_agg if dialect == "postgresql" else sa.func.group_concat
    # The keys are tested in the aggregate's FILTER, not in WHERE: PostgreSQL's planner
    # estimates how selective a WHERE's ``= ANY`` of a few thousand keys is key by key, a
    # second time after the starts' (4-5 ms of a search's planning).
    ids = (
        sa.select(aggregate(row.id).filter(sa.or_(*held)))
        .where(row.started_at == candidates.c.s, *conditions)
        .scalar_subquery()
    )
    found = sa.select(candidates.c.s.label("s"), ids.label("ids")).subquery("found")
    statement = (
        sa.select(found.c.s, found.c.ids)
        .where(found.c.ids.is_not(None))
        .limit(sa.bindparam("page"))
    )
    # PostgreSQL keeps the candidates' order (the outer ORDER BY is theirs: no sort, and
    # each start's ids are looked for only until the page is full). SQLite's co-routine
    # yields them in order too, but an ORDER BY here would sort every start first.
    if dialect == "postgresql":
        statement = statement.order_by(found.c.s.desc())
    return statement


_SERIAL = sa.text("SET LOCAL max_parallel_workers_per_gather = 0")
_PARALLEL = sa.text("SET LOCAL max_parallel_workers_per_gather TO DEFAULT")


class WindowOrderError(RuntimeError):
    """The window statement gave its starts out of order (it never has: see
    :func:`window_page`)."""


async def window_page(
    session: AsyncSession,
    found_by: KeySearch,
    where: JournalFilter,
    *,
    limit: int,
    cursor: str | None,
    extensions: Sequence[str],
) -> list[tuple[int, float]]:
    """A page of a search with a filter (:func:`windowed`): ``(id, started_at)`` newest
    first, at most ``limit``, from every key of the search at once (one statement reads the
    keys, one the page: :func:`_window_template`)."""
    dialect = (await session.connection()).dialect.name
    statement, values = _keys_statement(found_by, None, 0, dialect, every=True)
    by_kind: dict[str, list[str]] = defaultdict(list)
    for kind, key, _last in (await session.execute(statement, values)).all():
        by_kind[kind].append(key)
    # An extension's key (a quarter of a million calls each at ten million) is opened by
    # itself, its flags tested on ``extension_calls``' index, a page at most: reading every
    # start of its calls costs more. The other keys go through the window when there are
    # enough of them ("129" and missed calls at a million: the extension's key and 1,800
    # numbers'; opened one by one, every number's calls were read back to the first).
    opened = sorted(set(by_kind.pop(KIND_EXTENSION, [])))
    kinds = tuple(kind for kind in _WINDOW_KINDS if by_kind.get(kind))
    if not kinds and not opened:
        return []
    digits = all(_digits_only(term) for term in (*found_by.ranges, *found_by.common))
    if sum(map(len, by_kind.values())) < WINDOW_KEYS or (opened and not digits):
        # A few keys: reading every start of theirs costs more than opening them one by one.
        # Names with an employee's among them (a surname) are opened one by one too: a
        # name's newest keys give the page, where the window reads every contact's calls (a
        # surname and first contacts at a million calls on PostgreSQL: 11-14 ms merged, 39 ms
        # through the window and the employees' extensions).
        return await key_page(
            session, found_by, where, limit=limit, cursor=cursor, extensions=extensions
        )
    filters, mine, bound, params = _page_values(where, limit, cursor, extensions)
    arms = _arm_values(dialect, params, mine)
    for kind in kinds:
        # A key holding the word twice is read twice from the ranges.
        params[f"keys_{kind}"] = sorted(set(by_kind[kind]))
    if mine:
        params["mine"] = mine
    shape = _WindowShape(dialect, kinds, filters, bool(mine), bound is not None)
    if dialect == "postgresql":
        # The starts of a few thousand keys' calls are estimated at 20,000 rows: enough for
        # two parallel workers, whose start (15-20 ms) cost more than the reads they share.
        await session.execute(_SERIAL)
        rows = (await session.execute(_window_template(shape), params)).all()
        await session.execute(_PARALLEL)
    else:
        rows = (await session.execute(_window_template(shape), params)).all()
    found: list[tuple[int, float]] = []
    previous = math.inf
    for started, ids in rows:
        if started > previous:
            raise WindowOrderError(f"starts out of order: {started!r} after {previous!r}")
        previous = started
        listed = ids if isinstance(ids, list) else [int(i) for i in str(ids).split(",")]
        found += [(int(call_id), float(started)) for call_id in sorted(listed, reverse=True)]
    if opened:
        # Nothing older than a full page of the window's can join it: the extensions' calls
        # are read down to that start only (a surname and first contacts at a million
        # calls: the extensions of employees of that name read whole, 40 ms on PostgreSQL).
        floor = found[limit - 1][1] if len(found) >= limit else None
        extension_calls = await _open_keys(
            session,
            dialect,
            KIND_EXTENSION,
            opened,
            filters=filters,
            mine=len(mine),
            bound=bound,
            floor=floor,
            params=arms,
        )
        # A call may hold an extension's key and a number's: once in the page.
        merged = dict(found[:limit])
        merged.update(extension_calls)
        found = sorted(merged.items(), key=lambda item: (item[1], item[0]), reverse=True)
    return found[:limit]


async def page_ids(
    session: AsyncSession,
    where: JournalFilter,
    *,
    limit: int = 50,
    cursor: str | None = None,
    region: str = "RU",
) -> tuple[list[int], str | None]:
    """The ids of one journal page, in its order, and the cursor of the next page (None on
    the last page): the page query of :func:`list_calls` and :func:`list_call_objects`."""
    dialect = (await session.connection()).dialect.name
    extensions = await employee_extensions(session, where.employee) if where.employee else []
    found_by: KeySearch | None = None
    # Parsed once: the keys, FTS5 and a walk of "my calls" take the same terms.
    search = parse_query(where.query, region) if where.query else None
    if search is not None:
        found_by = (
            None
            if search.empty
            else await key_search(
                session,
                search,
                internal_only=where.internal is InternalCalls.ONLY,
                unregistered_only=where.unregistered is True,
            )
        )
        if found_by is not None and not found_by.frequent:
            page = window_page if windowed(found_by, where) else key_page
            found = await page(
                session, found_by, where, limit=limit + 1, cursor=cursor, extensions=extensions
            )
            more = len(found) > limit
            found = found[:limit]
            last = encode_cursor(found[-1][1], found[-1][0]) if more and found else None
            return [call_id for call_id, _ in found], last
    matches: list[int] | None = None
    frequent = found_by is not None and found_by.frequent
    if search is not None and dialect == "sqlite" and not frequent and search.indexable:
        matches = await fts_matches(session, search)
        frequent = matches is None
    if where.employee is not None and (search is None or frequent):
        mine, params = mine_page(
            dialect, where, limit=limit + 1, cursor=cursor, extensions=extensions, search=search
        )
        rows = (await session.execute(mine, params)).all()
    else:
        statement = journal_statement(
            dialect,
            where,
            limit=limit + 1,
            cursor=cursor,
            extensions=extensions,
            region=region,
            search_matches=matches,
            frequent_search=frequent,
        )
        rows = (await session.execute(statement)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1][1], rows[-1][0]) if more and rows else None
    return [call_id for call_id, _ in rows], next_cursor


async def list_calls(
    session: AsyncSession,
    where: JournalFilter,
    *,
    limit: int = 50,
    cursor: str | None = None,
    region: str = "RU",
) -> JournalPage:
    """One journal page and the cursor of the next (None on the last page). Its entries are
    loaded without legs and transfers (``load_entries(timeline=False)``): the call object
    does not show them."""
    ids, next_cursor = await page_ids(session, where, limit=limit, cursor=cursor, region=region)
    return JournalPage(await load_entries(session, ids, timeline=False), next_cursor)


async def list_call_objects(
    session: AsyncSession,
    where: JournalFilter,
    timezone: ZoneInfo,
    employees: EmployeeDirectory,
    *,
    limit: int = 50,
    cursor: str | None = None,
    region: str = "RU",
) -> tuple[list[dict[str, Any]], str | None]:
    """:func:`list_calls` as ``GET /calls`` answers it: the page's call objects
    (:func:`load_call_objects`) and the cursor of the next page."""
    ids, next_cursor = await page_ids(session, where, limit=limit, cursor=cursor, region=region)
    return await load_call_objects(session, ids, timezone, employees), next_cursor


async def journal_identity(session: AsyncSession) -> JournalIdentity:
    """The journal's id and last version, in one read."""
    row = (
        await session.execute(
            sa.select(JournalState.journal_id, JournalState.last_version).where(
                JournalState.id == 1
            )
        )
    ).one_or_none()
    if row is None:
        raise RuntimeError("journal_state is missing: run `pbxjournal migrate`")
    return JournalIdentity(str(row[0]), int(row[1]))


async def _changes_counter(session: AsyncSession, since: int) -> int:
    """The journal's last version, read before the rows: every version up to it was
    committed by then. :class:`SinceAheadError` if ``since`` is above it."""
    counter = int(
        await session.scalar(sa.select(JournalState.last_version).where(JournalState.id == 1)) or 0
    )
    if since > counter:
        raise SinceAheadError(since, counter)
    return counter


def _next_since(versions: list[int], counter: int, limit: int) -> int:
    """The version to poll from after a page of ``versions`` (ascending): the page's last
    when it is full (more may follow), else the counter (or a row's, if one is above it)."""
    if len(versions) == limit:
        return versions[-1]
    return max([counter, *versions])


async def changes(
    session: AsyncSession, since: int, limit: int = 500
) -> tuple[list[JournalEntry], int]:
    """Calls whose version is above ``since``, ascending, and the version to poll from next.

    The counter is read before the rows: every version up to it was committed by then, so
    when the page is not full, nothing at or below the returned version can appear later.
    The returned version is the journal's (the counter or a row's), never ``since`` itself:
    a ``since`` above the counter raises :class:`SinceAheadError` instead. Entries as in
    :func:`list_calls`: without legs and transfers. The rows are read in one statement in
    ``version`` order (each row's version as of that statement), not looked up by id.
    """
    counter = await _changes_counter(session, since)
    entries = await session.run_sync(_read_entries_since, since, limit)
    return entries, _next_since([entry.version for entry in entries], counter, limit)


async def change_objects(
    session: AsyncSession,
    since: int,
    timezone: ZoneInfo,
    employees: EmployeeDirectory,
    limit: int = 500,
) -> tuple[list[dict[str, Any]], int]:
    """:func:`changes` as ``GET /changes`` answers it: the call objects
    (:func:`load_call_objects`) and the version to poll from next."""
    counter = await _changes_counter(session, since)
    objects = await session.run_sync(_read_objects_since, since, limit, timezone, employees)
    return objects, _next_since([item["version"] for item in objects], counter, limit)


async def load_employee_directory(session: AsyncSession) -> EmployeeDirectory:
    rows = await session.execute(
        sa.select(Employee.id, EmployeeExtension.extension, Employee.name).join(
            EmployeeExtension, EmployeeExtension.employee_id == Employee.id
        )
    )
    return EmployeeDirectory(EmployeeInfo(i, ext, name) for i, ext, name in rows)


def _found(row: CallRecording) -> StoredRecording:
    return StoredRecording(
        id=row.id,
        found=FoundRecording(
            part=row.part,
            pbx_path=row.pbx_path,
            file=Path(row.file_path),
            started_at=row.started_at,
            offset_seconds=row.offset_seconds,
            duration_seconds=row.duration_seconds,
            size=row.size,
        ),
    )


async def load_recording(
    session: AsyncSession, recording_id: int
) -> tuple[int, StoredRecording] | None:
    row = await session.get(CallRecording, recording_id)
    return None if row is None else (row.call_id, _found(row))


# Entries are read as plain rows of named columns, not ORM objects: a page of /changes is up
# to a thousand calls, and building (and identity-mapping) an ORM object per row and per
# part cost several times what SQLite took to find them. The enum members are looked up in
# dictionaries for the same reason (an Enum call is a slow path).
_DIRECTIONS = {member.value: member for member in Direction}
_ROLES = {member.value: member for member in Role}
_STATUSES = {member.value: member for member in Status}

_calls = Call.__table__.c
_participants = CallParticipant.__table__.c
_legs = CallLeg.__table__.c
_transfers = CallTransfer.__table__.c
_recordings = CallRecording.__table__.c


def _raw(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """A JSON column as the driver returns it: text on SQLite, which :func:`_json_list`
    decodes itself (most of these lists are empty, and SQLAlchemy's per-value JSON processor
    cost more than the rest of the row); asyncpg decodes JSON in its own codec."""
    return sa.type_coerce(column, sa.Text)


def _json_list(value: Any) -> tuple[Any, ...]:
    if value == "[]":
        return ()
    return tuple(json.loads(value) if isinstance(value, str) else value)


class _JsonIds(sa.types.TypeDecorator[list[Any]]):
    """A list of ids (or of keys) bound as one JSON array (SQLite reads it with
    ``json_each``)."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: list[Any] | None, dialect: Any) -> str | None:
        return None if value is None else json.dumps(value)


class _InIds(sa.ColumnElement[bool]):
    """``column IN (ids)``, the ids bound as one parameter ``ids``: on SQLite a JSON array
    read by ``json_each`` (a subquery SQLite turns into one index lookup per id, in order),
    on PostgreSQL an array (``= ANY``). An expanding list rendered 500 placeholders, with
    PostgreSQL's cast each, on every page of ``/changes``: it cost more CPU than reading
    the rows on PostgreSQL, and 1-2 ms a statement on SQLite."""

    inherit_cache = True
    _is_implicitly_boolean = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]  # noqa: RUF012
    type = sa.Boolean()

    def __init__(self, column: sa.ColumnElement[Any]) -> None:
        self.column = column


@compiles(_InIds)
def _in_ids(element: _InIds, compiler: Any, **kw: Any) -> str:
    ids: sa.Select[Any] = sa.select(sa.column("value")).select_from(
        sa.func.json_each(sa.bindparam("ids", type_=_JsonIds()))
    )
    return str(compiler.process(element.column.in_(ids.scalar_subquery()), **kw))


@compiles(_InIds, "postgresql")
def _in_ids_postgresql(element: _InIds, compiler: Any, **kw: Any) -> str:
    ids = sa.bindparam("ids", type_=postgresql.ARRAY(sa.BigInteger))
    return str(compiler.process(element.column == sa.any_(ids), **kw))


_LINKEDIDS = _raw(_calls.linkedids)
_ANNOUNCED = _raw(_calls.announced_recordings)
_HINTS = _raw(_calls.recording_hints)
_QUEUES = _raw(_calls.queues)
#: The columns of a call's row with its customer's and contact's names and its comment, read
#: in one statement. Not ``search_text`` or ``fingerprint``: only the writer reads them.
_ENTRY_COLUMNS = (
    _calls.id,
    _calls.version,
    _calls.pbx,
    _calls.conversation_id,
    _LINKEDIDS,
    _calls.started_at,
    _calls.answered_at,
    _calls.ended_at,
    _calls.approximate_end,
    _calls.direction,
    _calls.number,
    _calls.number_raw,
    _calls.did,
    _calls.answered,
    _calls.ring_seconds,
    _calls.talk_seconds,
    _ANNOUNCED,
    _HINTS,
    _QUEUES,
    _calls.status,
    _calls.attention,
    _calls.first_contact,
    _calls.registered_at_end,
    _calls.window_closes_at,
    _calls.settled,
    _calls.customer_id,
    _calls.contact_id,
    Customer.__table__.c.name,
    Contact.__table__.c.name,
    CallComment.__table__.c.text,
    _calls.number_withheld,
    _calls.callback_of,
)
_ENTRY_FROM = (
    Call.__table__.outerjoin(Customer.__table__, Customer.__table__.c.id == _calls.customer_id)
    .outerjoin(Contact.__table__, Contact.__table__.c.id == _calls.contact_id)
    .outerjoin(CallComment.__table__, CallComment.__table__.c.call_id == _calls.id)
)
#: The same columns for a call object, which shows none of the four JSON lists: they are
#: NULL, so that neither the driver (asyncpg decodes JSON itself) nor SQLite reads them.
_UNSHOWN = (_LINKEDIDS, _ANNOUNCED, _HINTS, _QUEUES)
_OBJECT_COLUMNS = tuple(
    sa.null() if any(column is unshown for unshown in _UNSHOWN) else column
    for column in _ENTRY_COLUMNS
)


def _since(columns: Sequence[sa.ColumnElement[Any]]) -> sa.Select[Any]:
    """The rows of ``GET /changes``: ``version > since``, ascending, at most ``limit``."""
    return (
        sa.select(*columns)
        .select_from(_ENTRY_FROM)
        .where(_calls.version > sa.bindparam("since", type_=sa.BigInteger))
        .order_by(_calls.version)
        .limit(sa.bindparam("limit", type_=sa.Integer))
    )


#: The rows of ``ids``.
_ENTRY = sa.select(*_ENTRY_COLUMNS).select_from(_ENTRY_FROM).where(_InIds(_calls.id))
_ENTRY_SINCE = _since(_ENTRY_COLUMNS)
_OBJECT = sa.select(*_OBJECT_COLUMNS).select_from(_ENTRY_FROM).where(_InIds(_calls.id))
_OBJECT_SINCE = _since(_OBJECT_COLUMNS)
_PARTICIPANTS = (
    sa.select(
        _participants.call_id,
        _participants.extension,
        _participants.role,
        _participants.placed,
        _participants.rang,
        _participants.answered_at,
        _participants.rang_at,
        _participants.talk_seconds,
        _participants.on_mobile,
    )
    .where(_InIds(_participants.call_id))
    .order_by(_participants.call_id, _participants.ordinal)
)
_LEGS = (
    sa.select(
        _legs.call_id,
        _legs.extension,
        _legs.connected_at,
        _legs.disconnected_at,
        _legs.on_mobile,
    )
    .where(_InIds(_legs.call_id))
    .order_by(_legs.call_id, _legs.ordinal)
)
_TRANSFERS = (
    sa.select(
        _transfers.call_id,
        _transfers.kind,
        _transfers.at,
        _transfers.by_extension,
        _transfers.target_extension,
    )
    .where(_InIds(_transfers.call_id))
    .order_by(_transfers.call_id, _transfers.ordinal)
)
_RECORDINGS = (
    sa.select(
        _recordings.call_id,
        _recordings.id,
        _recordings.part,
        _recordings.pbx_path,
        _recordings.file_path,
        _recordings.started_at,
        _recordings.offset_seconds,
        _recordings.duration_seconds,
        _recordings.size,
    )
    .where(_InIds(_recordings.call_id))
    .order_by(_recordings.part, _recordings.id)
)


async def load_entries(
    session: AsyncSession, ids: Sequence[int], *, timeline: bool = True
) -> list[JournalEntry]:
    """The entries of ``ids``, in that order (missing ids are left out).

    ``timeline=False`` (the pages of ``GET /calls`` and ``/changes``): the calls' legs and
    transfers are not read and stay empty. The call object
    (:func:`storage.journal.to_call_object`) does not show them, only ``GET /calls/{id}``'s
    timeline does; leaving them out saves two statements and, cold, the pages of two tables'
    rows scattered over the file. Everything else is read as with ``timeline=True``.
    """
    if not ids:
        return []
    return await session.run_sync(read_entries, list(ids), timeline=timeline)


async def load_call_objects(
    session: AsyncSession, ids: Sequence[int], timezone: ZoneInfo, employees: EmployeeDirectory
) -> list[dict[str, Any]]:
    """The call objects of ``ids``, in that order (missing ids are left out): the very
    bytes :func:`storage.journal.to_call_object` makes of ``load_entries(ids)``'s entries,
    rendered straight from the rows.

    A page of ``/changes`` is up to a thousand calls; building an entry (a frozen
    ``FinishedCall`` of 22 fields, its participants, the entry) and then rendering it cost
    more than the database took to find and read the rows. Here a row becomes its call
    object at once, and times are formatted with :class:`storage.journal.LocalTimes`.
    ``tests/test_storage_journal.py`` pins the two renderings to each other and to recorded
    bytes: a field added to the call object goes into both (:func:`_call_object`).
    """
    if not ids:
        return []
    return await session.run_sync(_read_objects, list(ids), timezone, employees)


@dataclass(slots=True)
class _Parts:
    """The part rows of some calls, by call id, each list in its statement's order."""

    participants: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    legs: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    transfers: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))
    recordings: dict[int, list[Any]] = field(default_factory=lambda: defaultdict(list))


def _read_parts(session: Session, ids: list[int], *, timeline: bool) -> _Parts:
    parts = _Parts()
    if not ids:
        return parts
    statements = [(_PARTICIPANTS, parts.participants), (_RECORDINGS, parts.recordings)]
    if timeline:
        statements += [(_LEGS, parts.legs), (_TRANSFERS, parts.transfers)]
    for statement, found in statements:
        for row in session.execute(statement, {"ids": ids}):
            found[row[0]].append(row)
    return parts


def read_entries(
    session: Session, ids: Sequence[int], *, timeline: bool = True
) -> list[JournalEntry]:
    """:func:`load_entries` in a synchronous session (the batch writer's thread)."""
    if not ids:
        return []
    rows = {row[0]: row for row in session.execute(_ENTRY, {"ids": list(ids)})}
    wanted = [call_id for call_id in ids if call_id in rows]
    parts = _read_parts(session, wanted, timeline=timeline)
    return [_entry(rows[call_id], parts) for call_id in wanted]


def _read_entries_since(session: Session, since: int, limit: int) -> list[JournalEntry]:
    rows = session.execute(_ENTRY_SINCE, {"since": since, "limit": limit}).all()
    parts = _read_parts(session, [row[0] for row in rows], timeline=False)
    return [_entry(row, parts) for row in rows]


def _read_objects(
    session: Session, ids: list[int], timezone: ZoneInfo, employees: EmployeeDirectory
) -> list[dict[str, Any]]:
    rows = {row[0]: row for row in session.execute(_OBJECT, {"ids": ids})}
    wanted = [call_id for call_id in ids if call_id in rows]
    parts = _read_parts(session, wanted, timeline=False)
    times = LocalTimes(timezone)
    return [_call_object(rows[call_id], parts, times, employees) for call_id in wanted]


def _read_objects_since(
    session: Session, since: int, limit: int, timezone: ZoneInfo, employees: EmployeeDirectory
) -> list[dict[str, Any]]:
    rows = session.execute(_OBJECT_SINCE, {"since": since, "limit": limit}).all()
    parts = _read_parts(session, [row[0] for row in rows], timeline=False)
    times = LocalTimes(timezone)
    return [_call_object(row, parts, times, employees) for row in rows]


_NONE: list[Any] = []


def _entry(row: Sequence[Any], parts: _Parts) -> JournalEntry:
    (
        call_id,
        version,
        pbx,
        conversation_id,
        linkedids,
        started_at,
        answered_at,
        ended_at,
        approximate_end,
        direction,
        number,
        number_raw,
        did,
        answered,
        ring_seconds,
        talk_seconds,
        announced,
        hints,
        queues,
        status,
        attention,
        first_contact,
        registered_at_end,
        window_closes_at,
        settled,
        customer_id,
        contact_id,
        customer_name,
        contact_name,
        comment,
        number_withheld,
        callback_of,
    ) = row
    participants = tuple(
        Participant(
            extension=extension,
            role=_ROLES[role],
            placed=placed,
            rang=rang,
            answered_at=participant_answered_at,
            rang_at=rang_at,
            talk_seconds=talk,
            mobile=on_mobile,
        )
        for (
            _,
            extension,
            role,
            placed,
            rang,
            participant_answered_at,
            rang_at,
            talk,
            on_mobile,
        ) in parts.participants.get(call_id, _NONE)
    )
    call = FinishedCall(
        conversation_id=conversation_id,
        linkedids=_json_list(linkedids),
        started_at=started_at,
        answered_at=answered_at,
        ended_at=ended_at,
        approximate_end=approximate_end,
        direction=_DIRECTIONS[direction],
        external_number=number_raw,
        did=did,
        answered=answered,
        participants=participants,
        legs=tuple(
            Leg(extension, connected_at, disconnected_at, mobile=on_mobile)
            for _, extension, connected_at, disconnected_at, on_mobile in parts.legs.get(
                call_id, _NONE
            )
        ),
        ring_seconds=ring_seconds,
        talk_seconds=talk_seconds,
        recordings=tuple(
            RecordingPart(path=str(path), started_at=float(at), channel=str(channel))
            for path, at, channel in _json_list(announced)
        ),
        recording_hints=_json_list(hints),
        queues=_json_list(queues),
        transfers=tuple(
            TransferNote(kind, at, by, target)
            for _, kind, at, by, target in parts.transfers.get(call_id, _NONE)
        ),
        number_withheld=number_withheld,
        callback_of=callback_of,
    )
    customer = None
    if customer_id is not None:
        customer = CustomerRef(
            id=customer_id,
            # A customer row that is gone shows as a nameless customer, as before.
            name=customer_name if customer_name is not None else "",
            contact_id=contact_id,
            contact_name=contact_name if contact_id is not None else None,
        )
    recordings = tuple(
        StoredRecording(
            key,
            FoundRecording(
                part=part,
                pbx_path=pbx_path,
                file=Path(file_path),
                started_at=started,
                offset_seconds=offset,
                duration_seconds=duration,
                size=size,
            ),
        )
        for (
            _,
            key,
            part,
            pbx_path,
            file_path,
            started,
            offset,
            duration,
            size,
        ) in parts.recordings.get(call_id, _NONE)
    )
    return JournalEntry(
        id=call_id,
        version=version,
        pbx=pbx,
        call=call,
        number=number,
        number_raw=number_raw,
        status=_STATUSES[status],
        attention=attention,
        first_contact=first_contact,
        registered_at_end=registered_at_end,
        window_closes_at=window_closes_at,
        settled=settled,
        recordings=recordings,
        customer=customer,
        comment=comment,
    )


#: A status as the call object shows it: its value and its label.
_STATUS_SHOWN = {member.value: (member.value, member.label) for member in Status}


def _call_object(
    row: Sequence[Any], parts: _Parts, times: LocalTimes, employees: EmployeeDirectory
) -> dict[str, Any]:
    """:func:`storage.journal.to_call_object` of the row's entry, made from the row: the
    same keys in the same order, the same values (keep the two in step)."""
    (
        call_id,
        version,
        pbx,
        conversation_id,
        _linkedids,
        started_at,
        answered_at,
        ended_at,
        approximate_end,
        direction,
        number,
        number_raw,
        did,
        _answered,
        ring_seconds,
        talk_seconds,
        _announced,
        _hints,
        _queues,
        status,
        attention,
        first_contact,
        _registered_at_end,
        _window_closes_at,
        _settled,
        customer_id,
        contact_id,
        customer_name,
        contact_name,
        comment,
        number_withheld,
        callback_of,
    ) = row
    internal = _DIRECTIONS[direction] is Direction.INTERNAL
    status_value, status_label = _STATUS_SHOWN[status]
    customer = None
    if customer_id is not None:
        customer = {
            "id": customer_id,
            # A customer row that is gone shows as a nameless customer (as _entry).
            "name": customer_name if customer_name is not None else "",
            "contact": None if contact_id is None else {"id": contact_id, "name": contact_name},
        }
    people = []
    for participant in parts.participants.get(call_id, _NONE):
        extension = participant[1]
        info = employees.get(extension)
        people.append(
            {
                "id": info.id,
                "extension": extension,
                "name": info.name,
                "role": _ROLES[participant[2]].value,
                "on_mobile": participant[8],
            }
        )
    return {
        "id": call_id,
        "pbx": pbx,
        "linkedid": conversation_id,
        "started_at": times(started_at),
        "answered_at": times(answered_at),
        "ended_at": times(ended_at),
        "approximate_end": approximate_end,
        "direction": direction,
        "status": status_value,
        "status_label": status_label,
        "number": None if internal else number,
        "number_raw": number_raw,
        "number_withheld": number_withheld,
        "did": did,
        "callback_of": callback_of,
        "customer": customer,
        "unregistered": not internal and customer_id is None,
        "employees": people,
        "ring_seconds": round(ring_seconds, 1),
        "talk_seconds": round(talk_seconds, 1),
        "first_contact": first_contact,
        "attention": attention,
        "comment": comment,
        "recordings": [
            {
                "id": key,
                "part": part,
                "offset_seconds": offset,
                "duration_seconds": duration,
                "url": f"/api/v1/recordings/{key}",
            }
            for _, key, part, _path, _file, _started, offset, duration, _size in (
                parts.recordings.get(call_id, _NONE)
            )
        ],
        "version": version,
    }


async def warm_up(session: AsyncSession) -> None:
    """Run the statements of the journal's pages once on this session's connection, with
    arguments that match nothing (a cursor before the first call, id 0, a version beyond the
    last): a new PostgreSQL backend loads the catalog entries of every table, index, column
    statistic, operator and type a statement uses the first time it plans it — about 550
    pages read after a restart, tens of milliseconds even when they are cached — and each
    statement here reads no more than an index's first pages. Then the journal's first page
    is read, the screen most often opened first.
    :meth:`storage.engine.Database.warm_connections` does this on each of the pool's
    connections when the server was (re)connected, ahead of the requests."""
    dialect = (await session.connection()).dialect.name
    nothing = encode_cursor(1.0, 0)
    pages = [
        JournalFilter(),
        JournalFilter(kinds=frozenset({"missed"})),
        JournalFilter(first_contact=True, unregistered=True),
        JournalFilter(employee="-", attention=True),
        JournalFilter(query="warm-up"),
    ]
    statements: list[Any] = [
        journal_statement(dialect, where, limit=51, cursor=nothing) for where in pages
    ]
    statements += [
        _ENTRY.params(ids=[0]),
        _ENTRY_SINCE.params(since=INT64_MAX, limit=1),
        _PARTICIPANTS.params(ids=[0]),
        _RECORDINGS.params(ids=[0]),
        _LEGS.params(ids=[0]),
        _TRANSFERS.params(ids=[0]),
        sa.select(JournalState.journal_id, JournalState.last_version).where(JournalState.id == 1),
        sa.select(EmployeeExtension.extension).where(EmployeeExtension.employee_id == "-"),
    ]
    for statement in statements:
        (await session.execute(statement)).all()
    # And the journal's first page, for real: the screen opened first after a restart.
    ids, _ = await page_ids(session, JournalFilter())
    await load_entries(session, ids, timeline=False)


async def explain(
    session: AsyncSession, statement: sa.Select[Any] | sa.CompoundSelect[Any] | sa.TextClause
) -> list[str]:
    """The engine's plan for ``statement`` (``EXPLAIN QUERY PLAN`` / ``EXPLAIN``), with the
    statement's own bound parameters: for tests and the benchmark, to show index use."""
    connection = await session.connection()
    dialect = connection.dialect
    compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    processors = compiled._bind_processors
    positional = tuple(
        processor(params[name]) if callable(processor := processors.get(name)) else params[name]
        for name in compiled.positiontup or ()
    )
    prefix = "EXPLAIN QUERY PLAN " if dialect.name == "sqlite" else "EXPLAIN "
    result = await connection.exec_driver_sql(prefix + compiled.string, positional)
    if dialect.name == "sqlite":
        return [str(row[-1]) for row in result]
    return [str(row[0]) for row in result]
