"""The journal's tables (SQLAlchemy 2 typed declarative), the same on SQLite and PostgreSQL.

Theory of operation
-------------------
One ``calls`` row per conversation, unique on ``(pbx, conversation_id)``, holding everything
the call object of DESIGN section 5 shows *and* the raw facts the rules read back
(normalised number, whether it was registered when the call ended, when its attention window
closes, whether it is settled). The parts of a call that come in lists (participants, legs,
transfers, recording parts) have their own tables, written only by the journal writer.

Times are epoch seconds in ``DOUBLE PRECISION``: the assembler and the rules speak epoch
floats, both engines store them exactly, keyset cursors compare them exactly, and the PBX's
time zone is applied only when a call object is rendered.

``version`` comes from the single row of ``journal_state``; see :mod:`storage.store` for why a
sequence is not enough. ``search_text`` is a lower-cased digest of everything search matches
(names and every written form of the number); a trigram index over it (FTS5 on SQLite,
``pg_trgm`` on PostgreSQL) is created by the migration, since neither fits the ORM's DDL.

Every filter of DESIGN section 1 has a ``(<filter column>, started_at, id)`` index, so a page
is an index range walked newest first. ORM classes never leave ``storage/``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Base",
    "Call",
    "CallComment",
    "CallLeg",
    "CallParticipant",
    "CallRecording",
    "CallTransfer",
    "Contact",
    "Customer",
    "Employee",
    "EmployeeExtension",
    "EmployeeMobile",
    "ExtensionCall",
    "JournalState",
    "OpenConversation",
    "PhoneNumber",
    "SearchKey",
    "SearchSuffix",
    "WebSession",
    "WebUser",
]

#: Auto-incremented 64-bit ids; SQLite only auto-increments an ``INTEGER PRIMARY KEY``.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        float: sa.Double(),
        str: sa.String(255),
        int: sa.Integer(),
        bool: sa.Boolean(),
    }


class JournalState(Base):
    """The one row (id 1) holding the last version handed out, locked by every writer, and
    the journal's identity."""

    __tablename__ = "journal_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    last_version: Mapped[int] = mapped_column(sa.BigInteger)
    #: A UUID made by the migration that created the journal (or gave an older one its
    #: identity), never changed after: ``GET /changes`` returns it so that a client notices
    #: when it talks to another journal than the one its saved version belongs to.
    journal_id: Mapped[str] = mapped_column(sa.String(36))
    #: The attention window the stored verdicts were computed with
    #: (:attr:`storage.rules.AttentionWindow.definition`); NULL: unknown (a journal written
    #: before migration 0009), re-evaluated once at the next start.
    rules_window: Mapped[str | None] = mapped_column(sa.String(100), nullable=True)


class Customer(Base):
    """A customer pushed by 1C (DESIGN 5, ``PUT /customers/{id}``)."""

    __tablename__ = "customers"
    #: The journal's join for a call's customer name, read from one index entry (migration
    #: 0014): a primary key on a text id is two descents, the key's index and the row.
    __table_args__ = (sa.Index("ix_customers_names", "id", "name"),)

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(500))
    updated_at: Mapped[float]


class Contact(Base):
    """A customer's contact person; ids are 1C's, unique across customers."""

    __tablename__ = "contacts"
    #: As ``ix_customers_names`` (migration 0014).
    __table_args__ = (sa.Index("ix_contacts_names", "id", "name"),)

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(
        sa.String(64), sa.ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(sa.String(500))


class PhoneNumber(Base):
    """A normalised number bound to a customer, or to one of its contact persons."""

    __tablename__ = "numbers"

    number: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    #: As 1C wrote it, for the directory view.
    raw: Mapped[str] = mapped_column(sa.String(64))
    customer_id: Mapped[str] = mapped_column(
        sa.String(64), sa.ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    contact_id: Mapped[str | None] = mapped_column(
        sa.String(64), sa.ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )


class Employee(Base):
    """An employee: seeded from ``[employees]`` at start, editable over HTTP later."""

    __tablename__ = "employees"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(500))


class EmployeeExtension(Base):
    """An extension (endpoint name) belongs to at most one employee."""

    __tablename__ = "employee_extensions"

    extension: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    employee_id: Mapped[str] = mapped_column(
        sa.String(64), sa.ForeignKey("employees.id", ondelete="CASCADE"), index=True
    )


class EmployeeMobile(Base):
    """An employee's external number (a mobile), normalised: at most one employee's."""

    __tablename__ = "employee_mobiles"

    number: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    #: As written (config or 1C), for ``GET /employees``.
    raw: Mapped[str] = mapped_column(sa.String(64))
    employee_id: Mapped[str] = mapped_column(
        sa.String(64), sa.ForeignKey("employees.id", ondelete="CASCADE"), index=True
    )
    #: The employee's order of their numbers.
    ordinal: Mapped[int]


#: A call's class: the columns of ``ix_calls_class`` before its order (migration 0007), which
#: ``extension_calls`` copies (migration 0011).
CALL_CLASS = (
    "direction",
    "answered",
    "attention",
    "first_contact",
    "unregistered",
    "status",
)


class Call(Base):
    """One journal row: one conversation."""

    __tablename__ = "calls"
    __table_args__ = (
        sa.UniqueConstraint("pbx", "conversation_id"),
        sa.Index("ix_calls_journal", "started_at", "id"),
        sa.Index("ix_calls_direction", "direction", "started_at", "id"),
        sa.Index("ix_calls_missed", "direction", "answered", "started_at", "id"),
        sa.Index("ix_calls_status", "status", "started_at", "id"),
        sa.Index("ix_calls_first_contact", "first_contact", "started_at", "id"),
        sa.Index("ix_calls_unregistered", "unregistered", "started_at", "id"),
        sa.Index("ix_calls_attention", "attention", "started_at", "id"),
        # Migration 0007: one range per combination of the flags, for combined filters.
        sa.Index(
            "ix_calls_class",
            *CALL_CLASS,
            "started_at",
            "id",
        ),
        # Migration 0015: with ``id``, a number's calls in journal order on PostgreSQL too.
        sa.Index("ix_calls_number", "number", "started_at", "id"),
        # The missed incoming calls (only those have a window) by number and end: the calls
        # an answered call may be the later contact of (storage.store, "Bounded reads").
        sa.Index(
            "ix_calls_number_missed",
            "number",
            "ended_at",
            sqlite_where=sa.text("window_closes_at IS NOT NULL"),
            postgresql_where=sa.text("window_closes_at IS NOT NULL"),
        ),
        sa.Index("ix_calls_window", "settled", "window_closes_at"),
        # Migration 0012: a customer's and a contact's calls in journal order (search by name).
        sa.Index("ix_calls_customer", "customer_id", "started_at", "id"),
        sa.Index("ix_calls_contact", "contact_id", "started_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    pbx: Mapped[str] = mapped_column(sa.String(64))
    #: The linkedid of the conversation's oldest channel: its identity on that PBX.
    conversation_id: Mapped[str] = mapped_column(sa.String(64))
    linkedids: Mapped[list[str]] = mapped_column(sa.JSON)
    started_at: Mapped[float]
    answered_at: Mapped[float | None]
    ended_at: Mapped[float]
    approximate_end: Mapped[bool]
    direction: Mapped[str] = mapped_column(sa.String(16))
    answered: Mapped[bool]
    #: Normalised (E.164 or digits); None for internal calls and hidden numbers.
    number: Mapped[str | None] = mapped_column(sa.String(32))
    #: As the PBX presented it.
    number_raw: Mapped[str | None] = mapped_column(sa.String(64))
    #: The caller withheld the number (kept in ``number``/``number_raw`` for calling back).
    number_withheld: Mapped[bool] = mapped_column(server_default=sa.false(), default=False)
    did: Mapped[str | None] = mapped_column(sa.String(64))
    #: The call this one returns (a click-to-call placed from the journal); not a foreign
    #: key: the returned call is informative, its row is never in the way of this one's.
    callback_of: Mapped[int | None] = mapped_column(BigId)
    ring_seconds: Mapped[float]
    talk_seconds: Mapped[float]
    queues: Mapped[list[str]] = mapped_column(sa.JSON)
    #: ``[path, started_at, channel]`` of each MixMonitor file the PBX announced.
    announced_recordings: Mapped[list[list[Any]]] = mapped_column(sa.JSON)
    recording_hints: Mapped[list[str]] = mapped_column(sa.JSON)
    status: Mapped[str] = mapped_column(sa.String(16))
    attention: Mapped[bool]
    first_contact: Mapped[bool]
    #: Bound to a customer when the call ended: drives the status, never changes after.
    registered_at_end: Mapped[bool]
    #: Not bound *now*: what the journal shows, follows binding and unbinding.
    unregistered: Mapped[bool]
    customer_id: Mapped[str | None] = mapped_column(
        sa.String(64), sa.ForeignKey("customers.id", ondelete="SET NULL")
    )
    contact_id: Mapped[str | None] = mapped_column(
        sa.String(64), sa.ForeignKey("contacts.id", ondelete="SET NULL")
    )
    window_closes_at: Mapped[float | None]
    settled: Mapped[bool]
    #: Hash of the finished call and its recordings: a rewrite of the same call bumps nothing.
    fingerprint: Mapped[str] = mapped_column(sa.String(64))
    search_text: Mapped[str] = mapped_column(sa.Text)
    version: Mapped[int] = mapped_column(sa.BigInteger, unique=True)


#: The columns of a participant a page reads besides its key (``storage.queries``).
PARTICIPANT_COLUMNS = (
    "extension",
    "role",
    "placed",
    "rang",
    "answered_at",
    "rang_at",
    "talk_seconds",
    "on_mobile",
)


class CallParticipant(Base):
    """An employee in a call, once, in the order of the call object.

    A call's participants are one read (migration 0011): SQLite stores the table in its key's
    order (``WITHOUT ROWID``: no rowid table behind the key's index), PostgreSQL carries every
    column in the key's index (``INCLUDE``: an index-only scan), so that a page of scattered
    calls reads one B-tree leaf per call instead of the index's and the table's."""

    __tablename__ = "call_participants"
    __table_args__ = (
        sa.PrimaryKeyConstraint("call_id", "ordinal", postgresql_include=list(PARTICIPANT_COLUMNS)),
        sa.Index("ix_call_participants_extension", "extension", "call_id"),
        {"sqlite_with_rowid": False},
    )

    call_id: Mapped[int] = mapped_column(BigId, sa.ForeignKey("calls.id", ondelete="CASCADE"))
    ordinal: Mapped[int]
    extension: Mapped[str] = mapped_column(sa.String(64))
    role: Mapped[str] = mapped_column(sa.String(16))
    placed: Mapped[bool]
    rang: Mapped[bool]
    answered_at: Mapped[float | None]
    rang_at: Mapped[float | None]
    talk_seconds: Mapped[float]
    #: Reached on one of their mobiles (over a trunk), not a desk phone.
    on_mobile: Mapped[bool] = mapped_column(server_default=sa.false(), default=False)


class ExtensionCall(Base):
    """ "Мои звонки" in journal order: one row per call and extension taking part in it, with
    the call's start and class (``ix_calls_class``'s columns), written by triggers on
    ``calls`` and ``call_participants`` (migration 0011), never by the ORM.

    Its key ``(extension, started_at, call_id)`` is an extension's calls newest first (the
    flags carried along: SQLite stores the table in that order, ``WITHOUT ROWID``; PostgreSQL
    keeps them in the key's index, ``INCLUDE``), and ``ix_extension_calls_class`` is one range
    per extension and class, as ``ix_calls_class`` is for the whole journal."""

    __tablename__ = "extension_calls"
    __table_args__ = (
        sa.PrimaryKeyConstraint(
            "extension", "started_at", "call_id", postgresql_include=list(CALL_CLASS)
        ),
        sa.Index("ix_extension_calls_class", "extension", *CALL_CLASS, "started_at", "call_id"),
        {"sqlite_with_rowid": False},
    )

    extension: Mapped[str] = mapped_column(sa.String(64))
    started_at: Mapped[float]
    #: Not a foreign key: the triggers delete the rows of a call that goes.
    call_id: Mapped[int] = mapped_column(BigId)
    direction: Mapped[str] = mapped_column(sa.String(16))
    answered: Mapped[bool]
    attention: Mapped[bool]
    first_contact: Mapped[bool]
    unregistered: Mapped[bool]
    status: Mapped[str] = mapped_column(sa.String(16))


class CallLeg(Base):
    """A stretch of time one employee phone talked with the counterpart."""

    __tablename__ = "call_legs"

    call_id: Mapped[int] = mapped_column(
        BigId, sa.ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True
    )
    ordinal: Mapped[int] = mapped_column(primary_key=True)
    extension: Mapped[str] = mapped_column(sa.String(64))
    connected_at: Mapped[float]
    disconnected_at: Mapped[float]
    #: The employee talked on one of their mobiles (over a trunk), not a desk phone.
    on_mobile: Mapped[bool] = mapped_column(server_default=sa.false(), default=False)


class CallTransfer(Base):
    """A blind, attended or blonde transfer, or a pickup."""

    __tablename__ = "call_transfers"

    call_id: Mapped[int] = mapped_column(
        BigId, sa.ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True
    )
    ordinal: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    at: Mapped[float]
    by_extension: Mapped[str | None] = mapped_column(sa.String(64))
    target_extension: Mapped[str | None] = mapped_column(sa.String(64))


class CallRecording(Base):
    """A recording part with audio; its id is the one of ``/api/v1/recordings/{id}``."""

    __tablename__ = "call_recordings"
    __table_args__ = (sa.UniqueConstraint("call_id", "pbx_path"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    call_id: Mapped[int] = mapped_column(BigId, sa.ForeignKey("calls.id", ondelete="CASCADE"))
    part: Mapped[int]
    #: The path the PBX announced: matches the part when the call is written again.
    pbx_path: Mapped[str] = mapped_column(sa.String(1024))
    #: Where this daemon found the file.
    file_path: Mapped[str] = mapped_column(sa.String(1024))
    started_at: Mapped[float]
    offset_seconds: Mapped[float]
    duration_seconds: Mapped[float | None]
    size: Mapped[int] = mapped_column(sa.BigInteger)


class CallComment(Base):
    """An employee's comment on a call (the comment icon)."""

    __tablename__ = "call_comments"

    call_id: Mapped[int] = mapped_column(
        BigId, sa.ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True
    )
    text: Mapped[str] = mapped_column(sa.Text)
    updated_at: Mapped[float]


class OpenConversation(Base):
    """A conversation still in progress, persisted so the daemon survives its own restart."""

    __tablename__ = "open_conversations"

    key: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    updated_at: Mapped[float]


class WebUser(Base):
    """A person who signs in to the web journal (``pbxjournal users``), as an employee."""

    __tablename__ = "web_users"

    login: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    #: The employee id or extension "Мои звонки" means (``GET /calls?employee=``).
    employee: Mapped[str] = mapped_column(sa.String(64))
    admin: Mapped[bool]
    #: ``scrypt$N$r$p$salt$hash`` (base64), see :mod:`httpd.web.accounts`.
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[float]
    password_changed_at: Mapped[float]


class WebSession(Base):
    """A signed-in browser: the SHA-256 of its cookie's token (never the token itself)."""

    __tablename__ = "web_sessions"

    token_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    login: Mapped[str] = mapped_column(
        sa.String(64), sa.ForeignKey("web_users.login", ondelete="CASCADE"), index=True
    )
    #: The token every write of this session must carry (``X-CSRF-Token``).
    csrf: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[float]
    expires_at: Mapped[float] = mapped_column(index=True)


#: Suffixes compare byte by byte on both engines (a range of them is "starts with").
SuffixText = sa.String(64).with_variant(sa.String(64, collation="C"), "postgresql")


class SearchKey(Base):
    """A thing calls are found by (``storage.searchkeys``): a number (kind ``n``), a customer
    (``c``), a contact person (``p``) or an extension (``e``), with its folded text and an
    upper bound of its newest call's start (migration 0012, written by the writer and the
    directory, never by the ORM's unit of work). ``WITHOUT ROWID`` on SQLite (migration 0013):
    a key's text is one B-tree descent, not the key's index and then the table."""

    __tablename__ = "search_keys"
    __table_args__ = (sa.PrimaryKeyConstraint("kind", "key"), {"sqlite_with_rowid": False})

    kind: Mapped[str] = mapped_column(sa.String(1))
    key: Mapped[str] = mapped_column(sa.String(64))
    text: Mapped[str] = mapped_column(sa.Text)
    last: Mapped[float]


class SearchSuffix(Base):
    """Every suffix of every word of a key's text, with the key's ``last``: the keys whose
    text holds a word are one range of the key (``storage.searchkeys``)."""

    __tablename__ = "search_suffixes"
    __table_args__ = (
        sa.PrimaryKeyConstraint("suffix", "kind", "key", postgresql_include=["last"]),
        {"sqlite_with_rowid": False},
    )

    suffix: Mapped[str] = mapped_column(SuffixText)
    kind: Mapped[str] = mapped_column(sa.String(1))
    key: Mapped[str] = mapped_column(sa.String(64))
    last: Mapped[float]
