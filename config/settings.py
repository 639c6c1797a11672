"""Settings for pbxjournal: defaults, then a TOML file, then the environment.

Theory of operation
-------------------
Every setting is a field of a frozen dataclass. The field's metadata carries its
documentation (``"doc"``) and its *kind* (``"kind"``): a small object that knows how to read
the value from TOML, how to read it from an environment string, and how to write its default
in the reference. The loader is driven by that schema alone. It walks the TOML document and
then the ``PBXJOURNAL_<SECTION>__<KEY>`` variables, converts what it finds, and collects every
problem instead of stopping at the first; only when there are none does it build the
dataclasses. A new setting is therefore one field with a kind and a doc: the loader, the error
messages and `settings_reference()` follow from it.

The dataclasses do not validate themselves. Construct them directly only where the values are
yours (tests); anything read from outside goes through `load_settings`.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import os
import re
import string
import tomllib
import unicodedata
import zoneinfo
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn
from urllib.parse import urlsplit

import phonenumbers

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ENV_PREFIX",
    "SCOPES",
    "AmiSettings",
    "AttentionWindow",
    "ConfigError",
    "Employee",
    "HttpClient",
    "HttpSettings",
    "LogSettings",
    "OriginateSettings",
    "PbxSettings",
    "RecordingsSettings",
    "RulesSettings",
    "Settings",
    "StorageSettings",
    "WriterSettings",
    "load_settings",
    "parse_duration",
    "settings_reference",
]

DEFAULT_CONFIG_PATH: Final = Path("/etc/pbxjournal/pbxjournal.toml")
ENV_PREFIX: Final = "PBXJOURNAL_"


class ConfigError(Exception):
    """The settings could not be loaded. `problems` holds one line per problem, each naming
    the key (and the environment variable, when the value came from one)."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


# --- durations --------------------------------------------------------------------------------

_NUMBER: Final = r"[0-9]+(?:\.[0-9]+)?"
_PLAIN_SECONDS: Final = re.compile(_NUMBER)
_DURATION_TEXT: Final = re.compile(rf"(?:{_NUMBER}[dhms])+")
_DURATION_PART: Final = re.compile(rf"({_NUMBER})([dhms])")
_UNIT_SECONDS: Final = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str | float) -> float:
    """Seconds in `text`: a number of seconds (``90``, ``"1.5"``) or units in descending
    order (``"90s"``, ``"15m"``, ``"24h"``, ``"2d"``, ``"1h30m"``). Raises ValueError for
    anything negative, non-finite or unreadable."""
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        compact = "".join(text.split()).lower()
        if _PLAIN_SECONDS.fullmatch(compact):
            seconds = float(compact)
        elif _DURATION_TEXT.fullmatch(compact):
            seconds = _sum_duration_parts(compact, text)
        else:
            raise ValueError(
                f"not a duration: {text!r} (use seconds or units like 90s, 15m, 24h, 2d, 1h30m)"
            )
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"not a non-negative duration: {text!r}")
    return seconds


def _sum_duration_parts(compact: str, text: str) -> float:
    units = "dhms"
    seconds = 0.0
    previous = -1
    for number, unit in _DURATION_PART.findall(compact):
        # "30m1h" and "1m1m" are typos more often than intent.
        if units.index(unit) <= previous:
            raise ValueError(f"not a duration: {text!r} (units must go d, h, m, s, once each)")
        previous = units.index(unit)
        seconds += float(number) * _UNIT_SECONDS[unit]
    return seconds


def _format_duration(seconds: float) -> str:
    """The shortest h/m/s spelling that `parse_duration` reads back to `seconds`."""
    if seconds != int(seconds):
        return f"{seconds:g}s"
    remaining = int(seconds)
    parts = []
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


# --- problems and kinds -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Problem:
    key: str  # dotted key, e.g. "ami.port" or "http.clients[0].name"
    message: str  # for an unknown key or section: the "did you mean" hint, possibly empty
    unknown: str = ""  # "key" or "section" when the key itself is not in the schema


class _Invalid(Exception):
    def __init__(self, *problems: _Problem) -> None:
        super().__init__(*problems)
        self.problems = problems


def _type_phrase(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def _describe(value: object) -> str:
    """The value as the user wrote it, shortened, for "got ..."."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"  # may hold credentials
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _did_you_mean(name: str, candidates: Iterable[str], render: Callable[[str], str]) -> str:
    matches = difflib.get_close_matches(name, list(candidates), n=1)
    return f" (did you mean {render(matches[0])}?)" if matches else ""


def _toml_literal(value: object) -> str:
    if isinstance(value, str):
        # A literal string keeps regular expressions readable: '^\d{2,6}$'.
        if "\\" in value and "'" not in value and "\n" not in value:
            return f"'{value}'"
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_literal(item) for item in value) + "]"
    return repr(value)


class _Kind:
    """How one setting is read from TOML and from an environment string, and shown in docs."""

    def label(self) -> str:
        """The type column of the reference."""
        raise NotImplementedError

    def expected(self) -> str:
        """Completes "expected ..." in error messages."""
        raise NotImplementedError

    def from_toml(self, value: object, key: str) -> object:
        raise NotImplementedError

    def from_env(self, text: str, key: str) -> object:
        return self.from_toml(text, key)

    def literal(self, value: object) -> str:
        return _toml_literal(value)

    def reject(
        self, key: str, value: object, message: str = "", *, secret: bool = False
    ) -> NoReturn:
        shown = _type_phrase(value) if secret else _describe(value)
        raise _Invalid(_Problem(key, message or f"expected {self.expected()}, got {shown}"))


@dataclass(frozen=True)
class _String(_Kind):
    """A string; `check` returns the value to keep or raises ValueError (its message, if any,
    replaces the generic one)."""

    type_label: str = "string"
    expectation: str = "a string"
    check: Callable[[str], str] | None = None
    secret: bool = False  # never echo the value, not even in an error

    def label(self) -> str:
        return self.type_label

    def expected(self) -> str:
        return self.expectation

    def from_toml(self, value: object, key: str) -> object:
        if not isinstance(value, str):
            self.reject(key, value, secret=self.secret)
        if self.check is None:
            return value
        try:
            return self.check(value)
        except ValueError as exc:
            self.reject(key, value, str(exc), secret=self.secret)


@dataclass(frozen=True)
class _Integer(_Kind):
    minimum: int
    maximum: int

    def label(self) -> str:
        return f"integer {self.minimum}..{self.maximum}"

    def expected(self) -> str:
        return f"an integer from {self.minimum} to {self.maximum}"

    def from_toml(self, value: object, key: str) -> object:
        if isinstance(value, bool) or not isinstance(value, int):
            self.reject(key, value)
        if not self.minimum <= value <= self.maximum:
            self.reject(key, value)
        return value

    def from_env(self, text: str, key: str) -> object:
        if not re.fullmatch(r"-?[0-9]+", text.strip()):
            self.reject(key, text)
        return self.from_toml(int(text), key)


@dataclass(frozen=True)
class _Duration(_Kind):
    minimum: float = 0.0
    maximum: float | None = None
    above_minimum: bool = False  # the minimum itself is not allowed (a zero timeout)

    def _range(self) -> tuple[str, str]:
        low = _format_duration(self.minimum)
        if self.maximum is not None:
            high = _format_duration(self.maximum)
            return f"{low}..{high}", f"from {low} to {high}"
        if self.above_minimum:
            return f"> {low}", f"greater than {low}"
        return f">= {low}", f"of at least {low}"

    def label(self) -> str:
        return f"duration {self._range()[0]}"

    def expected(self) -> str:
        return f"a duration {self._range()[1]} (seconds, or like 90s, 15m, 1h30m)"

    def from_toml(self, value: object, key: str) -> object:
        if not isinstance(value, str | int | float):
            self.reject(key, value)
        try:
            seconds = parse_duration(value)
        except ValueError:
            self.reject(key, value)
        too_low = seconds <= self.minimum if self.above_minimum else seconds < self.minimum
        if too_low or (self.maximum is not None and seconds > self.maximum):
            self.reject(key, value)
        return seconds

    def literal(self, value: object) -> str:
        assert isinstance(value, float)
        return f'"{_format_duration(value)}"'


@dataclass(frozen=True)
class _StringList(_Kind):
    """An array of strings in TOML; in the environment a JSON array or comma-separated."""

    item: _String
    type_label: str
    expectation: str

    def label(self) -> str:
        return self.type_label

    def expected(self) -> str:
        return self.expectation

    def from_toml(self, value: object, key: str) -> object:
        if not isinstance(value, list):
            self.reject(key, value)
        items: list[object] = []
        problems: list[_Problem] = []
        for index, element in enumerate(value):
            try:
                items.append(self.item.from_toml(element, f"{key}[{index}]"))
            except _Invalid as exc:
                problems.extend(exc.problems)
        if problems:
            raise _Invalid(*problems)
        return tuple(items)

    def from_env(self, text: str, key: str) -> object:
        if text.strip().startswith("["):
            return self.from_toml(_json_value(self, text, key), key)
        return self.from_toml([part.strip() for part in text.split(",") if part.strip()], key)


def _json_value(kind: _Kind, text: str, key: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        # exc.msg and the position only: the text may hold passwords.
        kind.reject(key, text, f"expected {kind.expected()} as JSON: {exc.msg} at char {exc.pos}")


def _read_table(
    table: Mapping[str, object],
    prefix: str,
    kinds: Mapping[str, _Kind],
    required: Iterable[str] = (),
) -> tuple[dict[str, object], list[_Problem]]:
    """Known keys of `table` converted by their kinds, and the problems met on the way."""
    values: dict[str, object] = {}
    problems: list[_Problem] = []
    suggested = set()
    for name, value in table.items():
        key = f"{prefix}.{name}"
        kind = kinds.get(name)
        if kind is None:
            # Above 0.6: "role" is not a misspelt "mobile".
            matches = difflib.get_close_matches(name, list(kinds), n=1, cutoff=0.61)
            suggested.update(matches)
            hint = f" (did you mean '{prefix}.{matches[0]}'?)" if matches else ""
            problems.append(_Problem(key, hint, unknown="key"))
            continue
        try:
            values[name] = kind.from_toml(value, key)
        except _Invalid as exc:
            problems.extend(exc.problems)
    # A misspelt required key is reported once, as the typo.
    missing = [name for name in required if name not in table and name not in suggested]
    problems.extend(_Problem(f"{prefix}.{name}", "is required") for name in missing)
    return values, problems


# --- checks for string settings ---------------------------------------------------------------

_NAME_RE: Final = re.compile(r"[A-Za-z0-9_.-]+")
_NAME_PHRASE: Final = "letters, digits, '_', '.' or '-'"
_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9._~+/-]+=*")  # RFC 6750 b64token
_URL_SCHEMES: Final = ("sqlite+aiosqlite://", "postgresql+asyncpg://")
_HOSTNAME_RE: Final = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
)
_LISTEN_RE: Final = re.compile(
    r"\[(?P<ipv6>[^\]]+)\]:(?P<port6>[0-9]{1,5})|(?P<host>[^:\[\]]+):(?P<port>[0-9]{1,5})"
)


def _matching(pattern: re.Pattern[str]) -> Callable[[str], str]:
    def check(text: str) -> str:
        if not pattern.fullmatch(text):
            raise ValueError
        return text

    return check


def _ip_address(text: str) -> str:
    return str(ipaddress.ip_address(text.strip()))


def _non_blank(text: str) -> str:
    if not text.strip():
        raise ValueError
    return text


def _choice(*options: str) -> _String:
    def check(text: str) -> str:
        if text.lower() not in options:
            raise ValueError
        return text.lower()

    listed = ", ".join(options)
    return _String(f"one of: {listed}", f"one of {listed}", check)


def _check_timezone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        hint = _did_you_mean(name, zoneinfo.available_timezones(), repr)
        raise ValueError(f"unknown time zone {name!r}{hint}") from exc
    return name


def _check_region(code: str) -> str:
    if code.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(
            f"unknown region {code!r} (expected a two-letter code known to phonenumbers, like 'RU')"
        )
    return code.upper()


def _check_regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {text!r}: {exc}") from exc
    return text


def _split_listen(text: str) -> tuple[str, int]:
    """Host and port of "host:port" or "[ipv6]:port"; ValueError naming the problem."""
    match = _LISTEN_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"expected host:port (IPv6 as [::1]:8080), got {text!r}")
    port = int(match["port6"] or match["port"])
    if port > 65535:
        raise ValueError(f"port must be from 0 to 65535, got {text!r}")
    if match["ipv6"] is not None:
        host = match["ipv6"]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"not an IPv6 address in brackets: {text!r}") from None
        return host, port
    host = match["host"]
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"not an IPv4 address: {text!r}") from None
    elif not _HOSTNAME_RE.fullmatch(host):
        raise ValueError(f"not a host name or address: {text!r}")
    return host, port


def _check_listen(text: str) -> str:
    _split_listen(text)
    return text


def _redact_url(url: str) -> str:
    """`url` with the password, if any, replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unreadable URL>"
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:***@{hostport}").geturl()


def _check_database_url(text: str) -> str:
    if not text.startswith(_URL_SCHEMES):
        raise ValueError(
            "expected a URL starting with sqlite+aiosqlite:// or postgresql+asyncpg://, "
            f"got {_redact_url(text)!r}"
        )
    return text


def _check_absolute(text: str) -> str:
    if not os.path.isabs(text):
        raise ValueError
    return text


_TEXT: Final = _String("non-empty string", "a non-empty string", _non_blank)
_NAME: Final = _String(f"name ({_NAME_PHRASE})", f"a name of {_NAME_PHRASE}", _matching(_NAME_RE))
_HOST: Final = _String(
    "host name or address", "a host name or address without spaces", _matching(re.compile(r"\S+"))
)
_SECRET: Final = _String("string (secret)", "a string", secret=True)
_NON_EMPTY_SECRET: Final = _String(
    "non-empty string (secret)", "a non-empty string", _non_blank, secret=True
)
_TOKEN: Final = _String(
    "token (secret)",
    "a bearer token of letters, digits and -._~+/ (RFC 6750)",
    _matching(_TOKEN_RE),
    secret=True,
)
_USERNAME: Final = _String(
    "user name", "a user name without spaces or ':'", _matching(re.compile(r"[^\s:]+"))
)
_TIMEZONE: Final = _String(
    "time zone name", "a time zone name like 'Europe/Moscow'", _check_timezone
)
_REGION: Final = _String("region code", "a region code like 'RU'", _check_region)
_REGEX: Final = _String("regular expression", "a regular expression", _check_regex)
_LISTEN: Final = _String("host:port", "host:port (IPv6 as [::1]:8080)", _check_listen)
_DATABASE_URL: Final = _String("SQLAlchemy URL", "a SQLAlchemy URL", _check_database_url)
_TIMEOUT: Final = _Duration(above_minimum=True)


def _no_control_characters(text: str) -> str:
    """AMI is a line protocol: a CR or LF in a header value would end it early (and could
    inject headers); no control character has a place in a user name or a secret."""
    if any(unicodedata.category(char) == "Cc" for char in text):
        raise ValueError("must not contain control characters (CR, LF, tab, ...)")
    return text


_AMI_USERNAME: Final = _String(
    "non-empty string without control characters",
    "a non-empty string",
    lambda text: _no_control_characters(_non_blank(text)),
)
_AMI_SECRET: Final = _String(
    "string without control characters (secret)",
    "a string",
    _no_control_characters,
    secret=True,
)


def _meta(doc: str, kind: _Kind, *, shown_default: str | None = None) -> dict[str, object]:
    """Field metadata: `doc` for the reference, `kind` for the loader, and `shown_default` to
    describe a default the dataclass itself does not carry."""
    meta: dict[str, object] = {"doc": doc, "kind": kind}
    if shown_default is not None:
        meta["shown_default"] = shown_default
    return meta


# --- sections ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AmiSettings:
    """[ami]: how to reach and watch the Asterisk Manager Interface."""

    host: str = field(
        default="127.0.0.1", metadata=_meta("Host name or address of the AMI server.", _HOST)
    )
    port: int = field(
        default=5038, metadata=_meta("TCP port of the AMI server.", _Integer(1, 65535))
    )
    username: str = field(
        default="pbxjournal", metadata=_meta("AMI user from manager.conf.", _AMI_USERNAME)
    )
    secret: str = field(
        default="",
        repr=False,
        metadata=_meta("Password of the AMI user. Never logged.", _AMI_SECRET),
    )
    connect_timeout: float = field(
        default=10.0,
        metadata=_meta(
            "Give up a TCP connect (up to the banner) that takes longer; Login is an action.",
            _TIMEOUT,
        ),
    )
    action_timeout: float = field(
        default=10.0,
        metadata=_meta("Give up waiting for the response to an AMI action after this.", _TIMEOUT),
    )
    ping_interval: float = field(
        default=15.0, metadata=_meta("Send an AMI Ping this often to detect a dead link.", _TIMEOUT)
    )
    ping_timeout: float = field(
        default=5.0,
        metadata=_meta(
            "Drop the connection and reconnect if a Ping is unanswered after this.", _TIMEOUT
        ),
    )
    reconnect_min: float = field(
        default=1.0,
        metadata=_meta(
            "First delay before reconnecting; it grows after each failure up to reconnect_max.",
            _TIMEOUT,
        ),
    )
    reconnect_max: float = field(
        default=60.0,
        metadata=_meta(
            "Longest delay between reconnect attempts; at least reconnect_min.", _TIMEOUT
        ),
    )


@dataclass(frozen=True, slots=True)
class PbxSettings:
    """[pbx]: the PBX this daemon watches and how to read its channels and numbers."""

    name: str = field(
        default="main",
        metadata=_meta("Name of this PBX, stored with every call (the 'pbx' field).", _NAME),
    )
    timezone: str = field(
        default="Europe/Moscow",
        metadata=_meta(
            "IANA time zone of the PBX: local days for rules, times shown to 1C.", _TIMEZONE
        ),
    )
    default_region: str = field(
        default="RU",
        metadata=_meta(
            "Region (ISO 3166 alpha-2) for reading numbers dialled without a country code.",
            _REGION,
        ),
    )
    extension_pattern: str = field(
        default=r"^\d{2,6}$",
        metadata=_meta(
            "Regular expression matched against a channel's endpoint name (101 in "
            "PJSIP/101-0000001a: between the technology and the last '-'); a match is an "
            "employee phone.",
            _REGEX,
        ),
    )
    trunks: tuple[str, ...] = field(
        default=(),
        metadata=_meta(
            "Endpoint names that are trunks even if they match extension_pattern.",
            _StringList(
                _String(
                    "endpoint name",
                    "an endpoint name without spaces or commas",
                    _matching(re.compile(r"[^\s,]+")),
                ),
                "list of endpoint names",
                "an array of endpoint names",
            ),
        ),
    )
    hangup_grace: float = field(
        default=3.0,
        metadata=_meta(
            "After the last channel hangs up, wait this long for late merges and recordings "
            "before finishing the call.",
            _Duration(0.0, 60.0),
        ),
    )
    max_call_duration: float = field(
        default=43200.0,
        metadata=_meta(
            "A conversation open longer than this is expired (its end was never seen).",
            _Duration(60.0),
        ),
    )

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def extension_re(self) -> re.Pattern[str]:
        return re.compile(self.extension_pattern)


@dataclass(frozen=True, slots=True)
class RecordingsSettings:
    """[recordings]: where the recording files of calls are found."""

    directories: tuple[str, ...] = field(
        default=("/var/spool/asterisk/monitor",),
        metadata=_meta(
            "Absolute directories searched for recording files, in order.",
            _StringList(
                _String("absolute path", "an absolute path", _check_absolute),
                "list of absolute paths",
                "an array of absolute paths",
            ),
        ),
    )
    formats: tuple[str, ...] = field(
        default=("wav", "WAV", "mp3", "gsm", "ogg"),
        metadata=_meta(
            "File extensions (without the dot) tried for a recording, in order.",
            _StringList(
                _String(
                    "extension",
                    "a file extension without the dot, like 'wav'",
                    _matching(re.compile(r"[A-Za-z0-9]+")),
                ),
                "list of file extensions",
                "an array of file extensions",
            ),
        ),
    )


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """[storage]: the journal database."""

    url: str = field(
        default="sqlite+aiosqlite:////var/lib/pbxjournal/journal.sqlite3",
        metadata=_meta(
            "SQLAlchemy URL: sqlite+aiosqlite:////path/file.sqlite3 or "
            "postgresql+asyncpg://user:password@host/db.",
            _DATABASE_URL,
        ),
    )

    @property
    def redacted_url(self) -> str:
        """The URL with its password replaced by ***, for logs."""
        return _redact_url(self.url)

    def __repr__(self) -> str:
        return f"StorageSettings(url={self.redacted_url!r})"


@dataclass(frozen=True, slots=True)
class WriterSettings:
    """[writer]: how finished calls wait for the database, and how long a stop may take."""

    spool: str = field(
        default="",
        metadata=_meta(
            "Absolute path of the spool: the file where finished calls wait, fsynced, while "
            "the database refuses or cannot keep up (written out when it takes writes again; "
            "it survives kill -9). Empty: next to a SQLite journal (FILE-spool-PBX.jsonl), "
            "else $STATE_DIRECTORY/spool-PBX.jsonl (systemd's StateDirectory), else "
            "~/.local/state/pbxjournal/spool-PBX.jsonl.",
            _String(
                "absolute path or empty",
                "an absolute path, or empty for the default",
                lambda text: text if not text else _check_absolute(text),
            ),
        ),
    )
    max_pending: int = field(
        default=10_000,
        metadata=_meta(
            "Finished calls held in memory at most: more waiting for the database go to the "
            "spool (so do all of them while writes fail).",
            _Integer(1, 10_000_000),
        ),
    )
    stop_timeout: float = field(
        default=20.0,
        metadata=_meta(
            "How long a stop (SIGTERM) may take: calls still queued are spooled for the next "
            "start rather than written first. Keep it below the unit's TimeoutStopSec.",
            _Duration(minimum=1.0, maximum=3600.0),
        ),
    )


#: What an API client may do (``[[http.clients]] scopes``): read the journal, change it, ring
#: phones (click-to-call), read the Prometheus metrics.
SCOPES: Final = ("read", "write", "originate", "metrics")
#: The scopes of a client whose table names none: what every client could do before scopes.
DEFAULT_SCOPES: Final = ("read", "write")


@dataclass(frozen=True)
class _Scopes(_StringList):
    """A non-empty list of scopes, each once."""

    def from_toml(self, value: object, key: str) -> object:
        scopes = super().from_toml(value, key)
        assert isinstance(scopes, tuple)
        if not scopes:
            raise _Invalid(_Problem(key, f"must name at least one of {', '.join(SCOPES)}"))
        return tuple(dict.fromkeys(scopes))


_SCOPES_KIND: Final = _Scopes(
    _choice(*SCOPES), "list of scopes", f"an array of scopes ({', '.join(SCOPES)})"
)


@dataclass(frozen=True, slots=True)
class HttpClient:
    """One [[http.clients]] entry: a client allowed to call the API, with HTTP Basic
    credentials (username and password), a Bearer token, or both."""

    name: str = field(metadata=_meta("Client name, used in logs; unique.", _TEXT))
    username: str | None = field(
        default=None, metadata=_meta("HTTP Basic user name; unique; needs password.", _USERNAME)
    )
    password: str | None = field(
        default=None,
        repr=False,
        metadata=_meta("HTTP Basic password; needs username.", _NON_EMPTY_SECRET),
    )
    token: str | None = field(
        default=None,
        repr=False,
        metadata=_meta("Bearer token (Authorization: Bearer <token>); unique.", _TOKEN),
    )
    scopes: tuple[str, ...] = field(
        default=DEFAULT_SCOPES,
        metadata=_meta(
            "What the client may do: read (GET the journal, directory, live calls), write "
            "(change them), originate (click-to-call: POST /api/v1/originate), metrics "
            "(GET /metrics only; read includes it). A request outside them is answered 403 "
            "naming the scope.",
            _SCOPES_KIND,
        ),
    )


@dataclass(frozen=True)
class _Clients(_Kind):
    """[[http.clients]] in TOML; a JSON array of the same tables in the environment."""

    def label(self) -> str:
        return "array of tables"

    def expected(self) -> str:
        return "an array of tables"

    def from_toml(self, value: object, key: str) -> object:
        if not isinstance(value, list):
            self.reject(key, value)
        kinds = _kinds_of(HttpClient)
        clients: list[HttpClient] = []
        problems: list[_Problem] = []
        seen: dict[str, dict[object, str]] = {"name": {}, "username": {}, "token": {}}
        for index, entry in enumerate(value):
            entry_key = f"{key}[{index}]"
            if not isinstance(entry, dict):
                problems.append(_Problem(entry_key, f"expected a table, got {_type_phrase(entry)}"))
                continue
            values, found = _read_table(entry, entry_key, kinds, required=("name",))
            if not any(problem.unknown for problem in found):  # a typo explains the rest
                found.extend(_credential_problems(entry.keys(), entry_key))
            for attribute, owners in seen.items():
                found.extend(
                    _duplicate_problems(values.get(attribute), attribute, owners, entry_key)
                )
            problems.extend(found)
            if not found:
                clients.append(
                    HttpClient(
                        name=str(values["name"]),
                        username=_optional_text(values.get("username")),
                        password=_optional_text(values.get("password")),
                        token=_optional_text(values.get("token")),
                        scopes=_scopes_or_default(values.get("scopes")),
                    )
                )
        if problems:
            raise _Invalid(*problems)
        return tuple(clients)

    def from_env(self, text: str, key: str) -> object:
        return self.from_toml(_json_value(self, text, key), key)

    def literal(self, value: object) -> str:
        return "[]" if value == () else "[...]"


def _optional_text(value: object) -> str | None:
    return None if value is None else str(value)


def _scopes_or_default(value: object) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_SCOPES
    assert isinstance(value, tuple)
    return tuple(str(scope) for scope in value)


def _credential_problems(present: Iterable[str], key: str) -> list[_Problem]:
    """Basic needs both halves; a client needs Basic or Bearer. Judged on the keys written,
    so that a rejected password is not reported a second time as missing."""
    has = set(present)
    if "username" in has and "password" not in has:
        return [_Problem(f"{key}.password", "is required when username is set")]
    if "password" in has and "username" not in has:
        return [_Problem(f"{key}.username", "is required when password is set")]
    if "username" not in has and "token" not in has:
        return [_Problem(key, "needs username and password, or token, or both")]
    return []


def _duplicate_problems(
    value: object, attribute: str, owners: dict[object, str], key: str
) -> list[_Problem]:
    if value is None:
        return []
    if value in owners:
        shown = "" if attribute == "token" else f" {value!r}"  # never echo a token
        return [_Problem(f"{key}.{attribute}", f"same {attribute}{shown} as {owners[value]}")]
    owners[value] = key
    return []


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """[http]: the API server 1C talks to."""

    listen: str = field(
        default="127.0.0.1:8080",
        metadata=_meta(
            "Address to listen on: host:port, IPv6 as [::1]:8080; port 0 picks a free port.",
            _LISTEN,
        ),
    )
    clients: tuple[HttpClient, ...] = field(
        default=(),
        metadata=_meta(
            "Clients allowed to call the API ([[http.clients]] tables). In the environment, a "
            "JSON array of the same tables, replacing the file's list.",
            _Clients(),
        ),
    )
    header_timeout: float = field(
        default=10.0,
        metadata=_meta(
            "A request's line and headers must arrive within this, counted from the connection "
            "(or from the first byte of the next request on a kept-alive one); then 408 and "
            "the connection is closed.",
            _TIMEOUT,
        ),
    )
    body_timeout: float = field(
        default=60.0,
        metadata=_meta(
            "A request's whole body must arrive within this after its headers; then 408 and the "
            "connection is closed. Answers that are slow to come (the /changes long-poll) are "
            "not limited.",
            _TIMEOUT,
        ),
    )
    idle_timeout: float = field(
        default=75.0,
        metadata=_meta(
            "A kept-alive connection idle this long between requests is closed.", _TIMEOUT
        ),
    )
    max_connections: int = field(
        default=256,
        metadata=_meta(
            "Open client connections at most; one more is answered 503 and closed. Keep it well "
            "below the unit's LimitNOFILE.",
            _Integer(1, 100_000),
        ),
    )
    trusted_proxies: tuple[str, ...] = field(
        default=(),
        metadata=_meta(
            "Addresses of reverse proxies in front of the daemon whose X-Forwarded-Proto and "
            "X-Forwarded-For are believed: the web journal's cookies are Secure when the "
            "proxy says https, and sign-in failures are counted per forwarded address.",
            _StringList(
                _String("IP address", "an IP address", _ip_address),
                "list of IP addresses",
                "an array of IP addresses",
            ),
        ),
    )

    @property
    def host(self) -> str:
        """Host part of `listen`, without IPv6 brackets."""
        return _split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return _split_listen(self.listen)[1]


def _template(*fields: str, required: str | None = None) -> Callable[[str], str]:
    """A check for a ``str.format`` template naming only ``fields`` (``required`` at least)."""
    allowed = ", ".join(f"{{{name}}}" for name in fields)

    def check(text: str) -> str:
        _no_control_characters(_non_blank(text))
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
        except ValueError as exc:
            raise ValueError(f"not a template ({exc}): {text!r}") from None
        unknown = sorted(names - set(fields))
        if unknown:
            raise ValueError(f"unknown field {{{unknown[0]}}} in {text!r}; known: {allowed}")
        if required is not None and required not in names:
            raise ValueError(f"must contain {{{required}}}, got {text!r}")
        return text

    return check


_CONTEXT_RE: Final = re.compile(r"[A-Za-z0-9_.+-]+")


@dataclass(frozen=True, slots=True)
class OriginateSettings:
    """[originate]: click-to-call (POST /api/v1/originate): the AMI Originate that rings an
    employee's phone and, once they pick up, dials the customer. The AMI user needs the
    ``originate`` write permission in manager.conf."""

    channel: str = field(
        default="PJSIP/{extension}",
        metadata=_meta(
            "The channel rung first, the employee's phone; {extension} is their extension. "
            "FreePBX: Local/{extension}@from-internal (its follow-me, recording and "
            "caller-id rules apply).",
            _String(
                "channel template",
                "a channel like PJSIP/{extension}",
                _template("extension", required="extension"),
            ),
        ),
    )
    context: str = field(
        default="default",
        metadata=_meta(
            "Dialplan context the customer's number is dialled in once the employee answers "
            "(it must reach the outbound routes). FreePBX: from-internal.",
            _String(
                "dialplan context", "a context name (letters, digits, _.+-)", _matching(_CONTEXT_RE)
            ),
        ),
    )
    exten: str = field(
        default="{national}",
        metadata=_meta(
            "The extension dialled in that context, from the normalised number: {national} "
            "(as dialled at home, 89161234567 in Russia), {e164} (+79161234567) or {digits} "
            "(79161234567).",
            _String(
                "extension template",
                "a template of {national}, {e164}, {digits}",
                _template("national", "e164", "digits"),
            ),
        ),
    )
    timeout: float = field(
        default=30.0,
        metadata=_meta(
            "How long the employee's phone rings before the call back fails as not answered "
            "(Originate's Timeout).",
            _Duration(1.0, 600.0),
        ),
    )
    allow: str = field(
        default="",
        metadata=_meta(
            "Regular expression the number (E.164, like +79161234567) must match whole to be "
            "called. Empty: numbers of pbx.default_region only, not premium-rate ones.",
            _String(
                "regular expression or empty",
                "a regular expression, or empty for the default",
                lambda text: text if not text else _check_regex(text),
            ),
        ),
    )

    @property
    def allow_re(self) -> re.Pattern[str] | None:
        return re.compile(self.allow) if self.allow else None


@dataclass(frozen=True, slots=True)
class AttentionWindow:
    """How long after a missed call a later contact still counts as handling it: a fixed
    number of seconds, or (seconds None) until the end of the missed call's local day."""

    seconds: float | None = field(
        default=86400.0,
        metadata={"doc": "Length of the window; None means until local midnight."},
    )

    @property
    def end_of_day(self) -> bool:
        return self.seconds is None

    def closes_at(self, missed_at: datetime, tz: tzinfo) -> datetime:
        """When the window of a call missed at `missed_at` (an aware datetime) closes; `tz`
        is the PBX time zone, which decides where the day ends."""
        if missed_at.tzinfo is None:
            raise ValueError("missed_at must be an aware datetime")
        if self.seconds is not None:
            return missed_at + timedelta(seconds=self.seconds)
        next_day = missed_at.astimezone(tz).date() + timedelta(days=1)
        return datetime.combine(next_day, time(0), tzinfo=tz)


@dataclass(frozen=True)
class _Window(_Kind):
    def label(self) -> str:
        return 'duration > 0s or "end_of_day"'

    def expected(self) -> str:
        return 'a duration greater than 0s (like 90m, 24h) or "end_of_day"'

    def from_toml(self, value: object, key: str) -> object:
        if value == "end_of_day":
            return AttentionWindow(None)
        try:
            seconds = _TIMEOUT.from_toml(value, key)
        except _Invalid:
            self.reject(key, value)
        assert isinstance(seconds, float)
        return AttentionWindow(seconds)

    def literal(self, value: object) -> str:
        assert isinstance(value, AttentionWindow)
        if value.seconds is None:
            return '"end_of_day"'
        return f'"{_format_duration(value.seconds)}"'


@dataclass(frozen=True, slots=True)
class RulesSettings:
    """[rules]: parameters of the journal rules (DESIGN section 1)."""

    attention_window: AttentionWindow = field(
        default=AttentionWindow(86400.0),
        metadata=_meta(
            "How long after a missed call a later contact still counts as handling it: a "
            'duration, or "end_of_day" for the rest of the local day (pbx.timezone).',
            _Window(),
        ),
    )


def _check_phone_number(text: str) -> str:
    if not any(ch.isdigit() for ch in text) or len(text) > 64:
        raise ValueError
    return text


def _as_tuple(value: object) -> tuple[object, ...]:
    return value if isinstance(value, tuple) else ()


@dataclass(frozen=True, slots=True)
class Employee:
    """An employee phone from [employees]: `101 = "Ivanova Anna"`, or the long form
    `[employees.101]` with `name` and an optional `id`."""

    id: str = field(
        metadata=_meta(
            "Employee id shared with 1C; several extensions may carry the same id.",
            _TEXT,
            shown_default="the extension",
        )
    )
    extension: str = field(
        metadata=_meta(
            "The table key: the endpoint name of the employee's phone; the short form "
            '101 = "Name" sets only the name.',
            _String(
                f"extension ({_NAME_PHRASE})",
                f"an extension of {_NAME_PHRASE}",
                _matching(_NAME_RE),
            ),
            shown_default="(table key)",
        )
    )
    name: str = field(metadata=_meta("Name shown in the journal.", _TEXT))
    mobile: tuple[str, ...] = field(
        default=(),
        metadata=_meta(
            "The employee's external numbers (mobiles) in any written form, long form only: "
            "a call forwarded over a trunk to one of them and connected to the caller was "
            "answered by this employee, on the mobile.",
            _StringList(
                _String(
                    "phone number",
                    "a phone number with at least one digit",
                    _check_phone_number,
                ),
                "list of phone numbers",
                "an array of phone numbers",
            ),
        ),
    )


@dataclass(frozen=True)
class _Employees(_Kind):
    """[employees] in TOML; a JSON object of the same shape in the environment."""

    def label(self) -> str:
        return "table"

    def expected(self) -> str:
        return "a table of extension = name"

    def from_toml(self, value: object, key: str) -> object:
        if not isinstance(value, dict):
            self.reject(key, value)
        kinds = _kinds_of(Employee)
        extension_kind = kinds.pop("extension")
        employees: list[Employee] = []
        problems: list[_Problem] = []
        for extension, entry in value.items():
            entry_key = f"{key}.{extension}"
            try:
                extension_kind.from_toml(extension, entry_key)
                if isinstance(entry, str):
                    values = {"name": kinds["name"].from_toml(entry, entry_key)}
                elif isinstance(entry, dict):
                    values, found = _read_table(entry, entry_key, kinds, required=("name",))
                    if found:
                        raise _Invalid(*found)
                else:
                    raise _Invalid(
                        _Problem(entry_key, f"expected a name or a table, got {_describe(entry)}")
                    )
            except _Invalid as exc:
                problems.extend(exc.problems)
                continue
            employees.append(
                Employee(
                    id=str(values.get("id", extension)),
                    extension=extension,
                    name=str(values["name"]),
                    mobile=tuple(str(n) for n in _as_tuple(values.get("mobile", ()))),
                )
            )
        problems.extend(_conflicting_names(employees, key))
        if problems:
            raise _Invalid(*problems)
        return tuple(employees)

    def from_env(self, text: str, key: str) -> object:
        return self.from_toml(_json_value(self, text, key), key)

    def literal(self, value: object) -> str:
        return "{}" if value == () else "{...}"


def _conflicting_names(employees: Sequence[Employee], key: str) -> list[_Problem]:
    """One id is one person: extensions sharing an id must agree on the name."""
    first: dict[str, Employee] = {}
    problems = []
    for employee in employees:
        other = first.setdefault(employee.id, employee)
        if other.name != employee.name:
            problems.append(
                _Problem(
                    f"{key}.{employee.extension}.name",
                    f"id {employee.id!r} is named {other.name!r} at {key}.{other.extension}, "
                    f"got {employee.name!r}",
                )
            )
    return problems


@dataclass(frozen=True, slots=True)
class LogSettings:
    """[log]: structured logs on stdout."""

    level: str = field(
        default="info",
        metadata=_meta("Lowest level logged.", _choice("debug", "info", "warning", "error")),
    )
    format: str = field(
        default="auto",
        metadata=_meta(
            "auto: pretty on a terminal, JSON otherwise; or force json or console.",
            _choice("auto", "json", "console"),
        ),
    )
    numbers: str = field(
        default="masked",
        metadata=_meta(
            "Whether phone numbers appear in full or masked in info-level logs.",
            _choice("full", "masked"),
        ),
    )


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the daemon is configured with. Build it with `load_settings`."""

    ami: AmiSettings = field(default_factory=AmiSettings, metadata={"doc": AmiSettings.__doc__})
    pbx: PbxSettings = field(default_factory=PbxSettings, metadata={"doc": PbxSettings.__doc__})
    recordings: RecordingsSettings = field(
        default_factory=RecordingsSettings, metadata={"doc": RecordingsSettings.__doc__}
    )
    storage: StorageSettings = field(
        default_factory=StorageSettings, metadata={"doc": StorageSettings.__doc__}
    )
    http: HttpSettings = field(default_factory=HttpSettings, metadata={"doc": HttpSettings.__doc__})
    originate: OriginateSettings = field(
        default_factory=OriginateSettings, metadata={"doc": OriginateSettings.__doc__}
    )
    rules: RulesSettings = field(
        default_factory=RulesSettings, metadata={"doc": RulesSettings.__doc__}
    )
    employees: tuple[Employee, ...] = field(
        default=(),
        metadata=_meta(
            "Employee phones, extension = name. In the environment, PBXJOURNAL_EMPLOYEES holds "
            "a JSON object of the same shape, replacing the file's table.",
            _Employees(),
        ),
    )
    log: LogSettings = field(default_factory=LogSettings, metadata={"doc": LogSettings.__doc__})
    writer: WriterSettings = field(
        default_factory=WriterSettings, metadata={"doc": WriterSettings.__doc__}
    )

    def find_employee(self, extension: str) -> Employee | None:
        for employee in self.employees:
            if employee.extension == extension:
                return employee
        return None


_SECTIONS: Final[Mapping[str, type[DataclassInstance]]] = {
    "ami": AmiSettings,
    "pbx": PbxSettings,
    "recordings": RecordingsSettings,
    "storage": StorageSettings,
    "http": HttpSettings,
    "originate": OriginateSettings,
    "rules": RulesSettings,
    "log": LogSettings,
    "writer": WriterSettings,
}


def _kind_of(setting: dataclasses.Field[Any]) -> _Kind:
    kind = setting.metadata["kind"]
    if not isinstance(kind, _Kind):
        raise TypeError(f"{setting.name}: metadata 'kind' is not a kind")
    return kind


def _kinds_of(cls: type[DataclassInstance]) -> dict[str, _Kind]:
    return {setting.name: _kind_of(setting) for setting in dataclasses.fields(cls)}


def _env_name(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section.upper()}__{key.upper()}"


# --- loading ----------------------------------------------------------------------------------


def _render(problem: _Problem, variable: str | None) -> str:
    if problem.unknown:
        text = f"unknown {problem.unknown} '{problem.key}'{problem.message}"
        return f"{variable}: {text}" if variable else text
    where = f"{variable} ({problem.key})" if variable else problem.key
    return f"{where}: {problem.message}"


class _Collector:
    """Values converted from each layer in precedence order, with every problem met."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, object]] = {section: {} for section in _SECTIONS}
        self.employees: object = None
        self.variables: dict[str, str] = {}  # dotted key -> the variable that set it
        self.failed: set[str] = set()
        self.problems: list[str] = []

    def report(self, problems: Iterable[_Problem], variable: str | None = None) -> None:
        for problem in problems:
            self.failed.add(problem.key)
            self.problems.append(_render(problem, variable))

    def add_file(self, path: Path) -> None:
        try:
            with path.open("rb") as stream:
                document = tomllib.load(stream)
        except OSError as exc:
            self.problems.append(f"{path}: cannot read: {exc.strerror or exc}")
        except UnicodeDecodeError:
            self.problems.append(f"{path}: not UTF-8 text")
        except tomllib.TOMLDecodeError as exc:
            self.problems.append(f"{path}: TOML syntax error: {exc}")
        else:
            self.add_document(document)

    def add_document(self, document: Mapping[str, object]) -> None:
        for section, table in document.items():
            if section == "employees":
                self._set_employees(table, None)
            elif section not in _SECTIONS:
                hint = _did_you_mean(section, [*_SECTIONS, "employees"], repr)
                self.report([_Problem(section, hint, unknown="section")])
            elif not isinstance(table, dict):
                message = f"expected a table [{section}], got {_describe(table)}"
                self.report([_Problem(section, message)])
            else:
                values, problems = _read_table(table, section, _kinds_of(_SECTIONS[section]))
                self.values[section].update(values)
                self.report(problems)

    def add_environ(self, environ: Mapping[str, str]) -> None:
        for variable in sorted(environ):
            if variable.startswith(ENV_PREFIX):
                self._add_variable(variable, environ[variable])

    def _add_variable(self, variable: str, text: str) -> None:
        name = variable.removeprefix(ENV_PREFIX).lower()
        section, separator, key = name.partition("__")
        if name == "employees":
            self._set_employees(text, variable)
        elif not separator:
            # Other PBXJOURNAL_* variables may belong to the CLI; only flag near misses.
            near = {f"{s}_{k}": _env_name(s, k) for s, c in _SECTIONS.items() for k in _kinds_of(c)}
            if name in near:
                self.problems.append(f"{variable}: not a setting (did you mean {near[name]}?)")
        elif section == "employees":
            self.problems.append(
                f"{variable}: employees are set as one JSON object in {ENV_PREFIX}EMPLOYEES"
            )
        elif section not in _SECTIONS:
            hint = _did_you_mean(section, _SECTIONS, lambda match: _env_name(match, key))
            self.report([_Problem(section, hint, unknown="section")], variable)
        else:
            kinds = _kinds_of(_SECTIONS[section])
            if key not in kinds:
                hint = _did_you_mean(key, kinds, lambda match: _env_name(section, match))
                self.report([_Problem(f"{section}.{key}", hint, unknown="key")], variable)
                return
            dotted = f"{section}.{key}"
            try:
                self.values[section][key] = kinds[key].from_env(text, dotted)
            except _Invalid as exc:
                self.report(exc.problems, variable)
            else:
                self.variables[dotted] = variable

    def _set_employees(self, value: object, variable: str | None) -> None:
        try:
            if variable is None:
                self.employees = _EMPLOYEES.from_toml(value, "employees")
            else:
                assert isinstance(value, str)
                self.employees = _EMPLOYEES.from_env(value, "employees")
        except _Invalid as exc:
            self.report(exc.problems, variable)

    def build(self) -> Settings:
        sections: dict[str, Any] = {
            name: dataclasses.replace(cls(), **self.values[name]) for name, cls in _SECTIONS.items()
        }
        if self.employees is not None:
            sections["employees"] = self.employees
        settings = dataclasses.replace(Settings(), **sections)
        for involved, problem in _relation_problems(settings):
            if not self.failed & involved:
                self.report([problem], self.variables.get(problem.key))
        if self.problems:
            raise ConfigError(self.problems)
        return settings


def _relation_problems(settings: Settings) -> list[tuple[frozenset[str], _Problem]]:
    """Checks between settings: the keys involved (a check is skipped when one of them was
    already rejected) and the problem, reported on the key most likely wrong."""
    found = []
    ami = settings.ami
    if ami.reconnect_max < ami.reconnect_min:
        message = (
            f"must be at least ami.reconnect_min ({_format_duration(ami.reconnect_min)}), "
            f"got {_format_duration(ami.reconnect_max)}"
        )
        involved = frozenset({"ami.reconnect_min", "ami.reconnect_max"})
        found.append((involved, _Problem("ami.reconnect_max", message)))
    return found


_EMPLOYEES: Final = _Employees()


def load_settings(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Defaults, overridden by the TOML file at `path` (none if None), overridden by the
    PBXJOURNAL_<SECTION>__<KEY> variables of `environ` (os.environ if None).

    Raises ConfigError listing every problem found, one per line."""
    collector = _Collector()
    if path is not None:
        collector.add_file(Path(path))
    collector.add_environ(os.environ if environ is None else environ)
    return collector.build()


def settings_reference() -> list[tuple[str, str, str, str]]:
    """(key, type, default, doc) for every setting, in schema order, for generated docs."""
    rows: list[tuple[str, str, str, str]] = []
    for part in dataclasses.fields(Settings):
        if part.name == "employees":
            rows.append(_reference_row("employees", part))
            entry = {setting.name: setting for setting in dataclasses.fields(Employee)}
            # The extension is the table key, not a key inside the table.
            rows.append(_reference_row("employees.<extension>", entry.pop("extension")))
            rows.extend(
                _reference_row(f"employees.<extension>.{name}", setting)
                for name, setting in entry.items()
            )
            continue
        for setting in dataclasses.fields(_SECTIONS[part.name]):
            rows.append(_reference_row(f"{part.name}.{setting.name}", setting))
            if isinstance(_kind_of(setting), _Clients):
                rows.extend(
                    _reference_row(f"{part.name}.{setting.name}[].{client.name}", client)
                    for client in dataclasses.fields(HttpClient)
                )
    return rows


def _reference_row(key: str, setting: dataclasses.Field[Any]) -> tuple[str, str, str, str]:
    kind = _kind_of(setting)
    shown = setting.metadata.get("shown_default")
    if shown is None:
        if setting.default is dataclasses.MISSING:
            shown = "required"
        elif setting.default is None:
            shown = "unset"
        else:
            shown = kind.literal(setting.default)
    return key, kind.label(), str(shown), str(setting.metadata["doc"])
