"""config: defaults < TOML file < environment, and every bad value named by its key."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import config
from config import (
    AttentionWindow,
    ConfigError,
    Employee,
    HttpClient,
    Settings,
    load_settings,
    parse_duration,
    settings_reference,
)

EXAMPLE = Path(config.__file__).with_name("pbxjournal.example.toml")


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pbxjournal.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path | None, environ: dict[str, str] | None = None) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={} if environ is None else environ)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


def attribute(settings: Settings, dotted: str) -> object:
    value: object = settings
    for name in dotted.split("."):
        value = getattr(value, name)
    return value


# --- layers -----------------------------------------------------------------------------------


def test_defaults_load_without_file_or_environment() -> None:
    settings = load_settings(environ={})

    assert settings == Settings()
    assert settings.ami.host == "127.0.0.1"
    assert settings.ami.port == 5038
    assert settings.ami.reconnect_max == 60.0
    assert settings.pbx.tz == ZoneInfo("Europe/Moscow")
    assert settings.pbx.extension_re.fullmatch("101")
    assert not settings.pbx.extension_re.fullmatch("beeline")
    assert settings.recordings.formats == ("wav", "WAV", "mp3", "gsm", "ogg")
    assert (settings.http.host, settings.http.port) == ("127.0.0.1", 8080)
    assert settings.rules.attention_window == AttentionWindow(86400.0)
    assert settings.employees == ()
    assert settings.log.numbers == "masked"


def test_file_overrides_defaults_and_keeps_the_rest(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        """
        [ami]
        host = "10.0.0.5"
        connect_timeout = 3
        reconnect_max = "2m"
        [pbx]
        timezone = "Asia/Yekaterinburg"
        trunks = ["beeline", "mts"]
        max_call_duration = "1h30m"
        [http]
        listen = "[::1]:9090"
        [rules]
        attention_window = "end_of_day"
        [employees]
        101 = "Иванова Анна"
        [employees.102]
        name = "Petrov Ivan"
        id = "000000017"
        """,
    )

    settings = load_settings(path, environ={})

    assert settings.ami.host == "10.0.0.5"
    assert settings.ami.connect_timeout == 3.0
    assert settings.ami.reconnect_max == 120.0
    assert settings.ami.port == 5038
    assert settings.pbx.tz == ZoneInfo("Asia/Yekaterinburg")
    assert settings.pbx.trunks == ("beeline", "mts")
    assert settings.pbx.max_call_duration == 5400.0
    assert settings.pbx.name == "main"
    assert (settings.http.host, settings.http.port) == ("::1", 9090)
    assert settings.rules.attention_window.end_of_day
    assert settings.employees == (
        Employee(id="101", extension="101", name="Иванова Анна"),
        Employee(id="000000017", extension="102", name="Petrov Ivan"),
    )
    assert settings.find_employee("102") == settings.employees[1]
    assert settings.find_employee("999") is None
    assert settings.log == Settings().log


@pytest.mark.parametrize(
    ("variable", "text", "dotted", "expected"),
    [
        ("PBXJOURNAL_AMI__HOST", "10.0.0.5", "ami.host", "10.0.0.5"),
        ("PBXJOURNAL_AMI__PORT", "5039", "ami.port", 5039),
        ("PBXJOURNAL_AMI__SECRET", "s3cret", "ami.secret", "s3cret"),
        ("PBXJOURNAL_AMI__CONNECT_TIMEOUT", "1m30s", "ami.connect_timeout", 90.0),
        ("PBXJOURNAL_AMI__PING_INTERVAL", "2.5", "ami.ping_interval", 2.5),
        ("PBXJOURNAL_PBX__DEFAULT_REGION", "by", "pbx.default_region", "BY"),
        ("PBXJOURNAL_PBX__TRUNKS", "beeline, mts,,rt", "pbx.trunks", ("beeline", "mts", "rt")),
        ("PBXJOURNAL_PBX__TRUNKS", '["sip-out"]', "pbx.trunks", ("sip-out",)),
        ("PBXJOURNAL_PBX__TRUNKS", "", "pbx.trunks", ()),
        ("PBXJOURNAL_RECORDINGS__FORMATS", "mp3", "recordings.formats", ("mp3",)),
        (
            "PBXJOURNAL_STORAGE__URL",
            "postgresql+asyncpg://j@db/j",
            "storage.url",
            "postgresql+asyncpg://j@db/j",
        ),
        ("PBXJOURNAL_HTTP__LISTEN", "0.0.0.0:8081", "http.listen", "0.0.0.0:8081"),
        (
            "PBXJOURNAL_HTTP__CLIENTS",
            '[{"name": "1c", "token": "abc.DEF-1"}]',
            "http.clients",
            (HttpClient(name="1c", token="abc.DEF-1"),),
        ),
        (
            "PBXJOURNAL_RULES__ATTENTION_WINDOW",
            "end_of_day",
            "rules.attention_window",
            AttentionWindow(None),
        ),
        (
            "PBXJOURNAL_RULES__ATTENTION_WINDOW",
            "90m",
            "rules.attention_window",
            AttentionWindow(5400.0),
        ),
        (
            "PBXJOURNAL_EMPLOYEES",
            '{"201": "Smirnova Olga", "202": {"name": "Kuznetsov Dmitry"}}',
            "employees",
            (Employee("201", "201", "Smirnova Olga"), Employee("202", "202", "Kuznetsov Dmitry")),
        ),
        ("PBXJOURNAL_LOG__LEVEL", "DEBUG", "log.level", "debug"),
    ],
)
def test_environment_overrides_file(
    tmp_path: Path, variable: str, text: str, dotted: str, expected: object
) -> None:
    # The file sets every one of these keys to something else, so the override is visible.
    path = write_toml(
        tmp_path,
        """
        [ami]
        host = "pbx.example"
        port = 6000
        secret = "from-file"
        connect_timeout = "5s"
        ping_interval = "20s"
        [pbx]
        default_region = "KZ"
        trunks = ["from-file"]
        [recordings]
        formats = ["wav"]
        [storage]
        url = "sqlite+aiosqlite:///journal.sqlite3"
        [http]
        listen = "127.0.0.1:7000"
        [[http.clients]]
        name = "from-file"
        username = "file"
        password = "file"
        [rules]
        attention_window = "2h"
        [employees]
        101 = "From File"
        [log]
        level = "error"
        """,
    )
    from_file = load_settings(path, environ={})
    assert attribute(from_file, dotted) != expected

    settings = load_settings(path, environ={variable: text, "PBXJOURNAL_AMI__USERNAME": "env"})

    assert attribute(settings, dotted) == expected
    assert settings.ami.username == "env"
    assert settings.pbx.timezone == "Europe/Moscow"


def test_environ_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PBXJOURNAL_AMI__HOST", "192.0.2.7")

    assert load_settings().ami.host == "192.0.2.7"


def test_other_variables_are_ignored() -> None:
    environ = {"PATH": "/usr/bin", "PBXJOURNAL_CONFIG": "/etc/x.toml", "AMI__HOST": "x"}

    assert load_settings(environ=environ) == Settings()


# --- problems ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ('[ami]\nhots = "x"', "unknown key 'ami.hots' (did you mean 'ami.host'?)"),
        ('[ami]\nqwerty = "x"', "unknown key 'ami.qwerty'"),
        ('[amii]\nhost = "x"', "unknown section 'amii' (did you mean 'ami'?)"),
        ("ami = 5", "ami: expected a table [ami], got 5"),
        ('[ami]\nport = "abc"', "ami.port: expected an integer from 1 to 65535, got 'abc'"),
        ("[ami]\nport = 70000", "ami.port: expected an integer from 1 to 65535, got 70000"),
        ("[ami]\nport = true", "ami.port: expected an integer from 1 to 65535, got true"),
        ("[ami]\nport = 5038.0", "ami.port: expected an integer from 1 to 65535, got 5038.0"),
        ("[ami]\nhost = 10", "ami.host: expected a host name or address without spaces, got 10"),
        ('[ami]\nusername = " "', "ami.username: expected a non-empty string, got ' '"),
        (
            "[ami]\nconnect_timeout = 0",
            "ami.connect_timeout: expected a duration greater than 0s "
            "(seconds, or like 90s, 15m, 1h30m), got 0",
        ),
        (
            '[ami]\nreconnect_min = "10s"\nreconnect_max = "5s"',
            "ami.reconnect_max: must be at least ami.reconnect_min (10s), got 5s",
        ),
        (
            '[pbx]\nname = "main office"',
            "pbx.name: expected a name of letters, digits, '_', '.' or '-', got 'main office'",
        ),
        (
            '[pbx]\ntimezone = "Europe/Moskow"',
            "pbx.timezone: unknown time zone 'Europe/Moskow' (did you mean 'Europe/Moscow'?)",
        ),
        ('[pbx]\ntimezone = "/etc/passwd"', "pbx.timezone: unknown time zone '/etc/passwd'"),
        (
            '[pbx]\ndefault_region = "XX"',
            "pbx.default_region: unknown region 'XX' "
            "(expected a two-letter code known to phonenumbers, like 'RU')",
        ),
        (
            "[pbx]\nextension_pattern = '^(\\d'",
            "pbx.extension_pattern: invalid regular expression '^(\\\\d': "
            "missing ), unterminated subpattern at position 1",
        ),
        (
            '[pbx]\ntrunks = "beeline"',
            "pbx.trunks: expected an array of endpoint names, got 'beeline'",
        ),
        (
            '[pbx]\ntrunks = ["ok", "not ok"]',
            "pbx.trunks[1]: expected an endpoint name without spaces or commas, got 'not ok'",
        ),
        (
            '[pbx]\nhangup_grace = "soon"',
            "pbx.hangup_grace: expected a duration from 0s to 1m "
            "(seconds, or like 90s, 15m, 1h30m), got 'soon'",
        ),
        (
            '[pbx]\nhangup_grace = "2m"',
            "pbx.hangup_grace: expected a duration from 0s to 1m "
            "(seconds, or like 90s, 15m, 1h30m), got '2m'",
        ),
        (
            '[pbx]\nhangup_grace = "-1s"',
            "pbx.hangup_grace: expected a duration from 0s to 1m "
            "(seconds, or like 90s, 15m, 1h30m), got '-1s'",
        ),
        (
            '[pbx]\nmax_call_duration = "30s"',
            "pbx.max_call_duration: expected a duration of at least 1m "
            "(seconds, or like 90s, 15m, 1h30m), got '30s'",
        ),
        (
            '[recordings]\ndirectories = ["spool"]',
            "recordings.directories[0]: expected an absolute path, got 'spool'",
        ),
        (
            '[recordings]\nformats = [".wav"]',
            "recordings.formats[0]: expected a file extension without the dot, like 'wav', "
            "got '.wav'",
        ),
        (
            '[storage]\nurl = "mysql://journal:hunter2@db/journal"',
            "storage.url: expected a URL starting with sqlite+aiosqlite:// or "
            "postgresql+asyncpg://, got 'mysql://journal:***@db/journal'",
        ),
        (
            '[http]\nlisten = "localhost"',
            "http.listen: expected host:port (IPv6 as [::1]:8080), got 'localhost'",
        ),
        (
            '[http]\nlisten = "::1:8080"',
            "http.listen: expected host:port (IPv6 as [::1]:8080), got '::1:8080'",
        ),
        ('[http]\nlisten = "300.1.1.1:80"', "http.listen: not an IPv4 address: '300.1.1.1:80'"),
        ('[http]\nlisten = "[pbx]:80"', "http.listen: not an IPv6 address in brackets: '[pbx]:80'"),
        (
            '[http]\nlisten = "pbx:99999"',
            "http.listen: port must be from 0 to 65535, got 'pbx:99999'",
        ),
        ('[http]\nlisten = "my_host:80"', "http.listen: not a host name or address: 'my_host:80'"),
        (
            '[[http.clients]]\nname = "1c"\nusername = "onec"',
            "http.clients[0].password: is required when username is set",
        ),
        (
            '[[http.clients]]\nname = "1c"',
            "http.clients[0]: needs username and password, or token, or both",
        ),
        ('[[http.clients]]\ntoken = "abc"', "http.clients[0].name: is required"),
        (
            '[[http.clients]]\nname = "1c"\ntoken = "abc"\n'
            '[[http.clients]]\nname = "1c"\ntoken = "def"',
            "http.clients[1].name: same name '1c' as http.clients[0]",
        ),
        (
            '[[http.clients]]\nname = "a"\ntoken = "abc"\n'
            '[[http.clients]]\nname = "b"\ntoken = "abc"',
            "http.clients[1].token: same token as http.clients[0]",
        ),
        (
            '[[http.clients]]\nname = "1c"\ntokn = "abc"',
            "unknown key 'http.clients[0].tokn' (did you mean 'http.clients[0].token'?)",
        ),
        (
            '[rules]\nattention_window = "tomorrow"',
            "rules.attention_window: expected a duration greater than 0s (like 90m, 24h) "
            "or \"end_of_day\", got 'tomorrow'",
        ),
        ('[employees]\n101 = ""', "employees.101: expected a non-empty string, got ''"),
        ("[employees]\n101 = 5", "employees.101: expected a name or a table, got 5"),
        (
            '[employees]\n"1 01" = "Petrov Ivan"',
            "employees.1 01: expected an extension of letters, digits, '_', '.' or '-', got '1 01'",
        ),
        (
            '[employees.101]\nnmae = "Petrov Ivan"',
            "unknown key 'employees.101.nmae' (did you mean 'employees.101.name'?)",
        ),
        ('[employees.101]\nid = "7"', "employees.101.name: is required"),
        (
            '[employees]\n101 = {name = "A", id = "7"}\n102 = {name = "B", id = "7"}',
            "employees.102.name: id '7' is named 'A' at employees.101, got 'B'",
        ),
        (
            '[log]\nlevel = "verbose"',
            "log.level: expected one of debug, info, warning, error, got 'verbose'",
        ),
        ('[log]\nnumbers = "some"', "log.numbers: expected one of full, masked, got 'some'"),
    ],
)
def test_file_problem_names_the_key(tmp_path: Path, toml: str, problem: str) -> None:
    assert problems_of(write_toml(tmp_path, toml)) == (problem,)


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        (
            {"PBXJOURNAL_AMI__PORT": "abc"},
            "PBXJOURNAL_AMI__PORT (ami.port): expected an integer from 1 to 65535, got 'abc'",
        ),
        (
            {"PBXJOURNAL_AMI__PORT": "0"},
            "PBXJOURNAL_AMI__PORT (ami.port): expected an integer from 1 to 65535, got 0",
        ),
        (
            {"PBXJOURNAL_AMI__HOTS": "x"},
            "PBXJOURNAL_AMI__HOTS: unknown key 'ami.hots' (did you mean PBXJOURNAL_AMI__HOST?)",
        ),
        (
            {"PBXJOURNAL_AIM__HOST": "x"},
            "PBXJOURNAL_AIM__HOST: unknown section 'aim' (did you mean PBXJOURNAL_AMI__HOST?)",
        ),
        (
            {"PBXJOURNAL_AMI_HOST": "x"},
            "PBXJOURNAL_AMI_HOST: not a setting (did you mean PBXJOURNAL_AMI__HOST?)",
        ),
        (
            {"PBXJOURNAL_PBX__HANGUP_GRACE": "3 sec"},
            "PBXJOURNAL_PBX__HANGUP_GRACE (pbx.hangup_grace): expected a duration from 0s to 1m "
            "(seconds, or like 90s, 15m, 1h30m), got '3 sec'",
        ),
        (
            {"PBXJOURNAL_PBX__TIMEZONE": "Mars/Olympus"},
            "PBXJOURNAL_PBX__TIMEZONE (pbx.timezone): unknown time zone 'Mars/Olympus'",
        ),
        (
            {"PBXJOURNAL_PBX__TRUNKS": '["a", 1]'},
            "PBXJOURNAL_PBX__TRUNKS (pbx.trunks[1]): "
            "expected an endpoint name without spaces or commas, got 1",
        ),
        (
            {"PBXJOURNAL_PBX__TRUNKS": '["a"'},
            "PBXJOURNAL_PBX__TRUNKS (pbx.trunks): expected an array of endpoint names as JSON: "
            "Expecting ',' delimiter at char 4",
        ),
        (
            {"PBXJOURNAL_HTTP__CLIENTS": '{"name": "1c"}'},
            "PBXJOURNAL_HTTP__CLIENTS (http.clients): expected an array of tables, got a table",
        ),
        (
            {"PBXJOURNAL_HTTP__CLIENTS": '[{"name": "1c", "password": "x"}]'},
            "PBXJOURNAL_HTTP__CLIENTS (http.clients[0].username): is required when password is set",
        ),
        (
            {"PBXJOURNAL_EMPLOYEES": '{"101": {"name": "A", "role": "x"}}'},
            "PBXJOURNAL_EMPLOYEES: unknown key 'employees.101.role'",
        ),
        (
            {"PBXJOURNAL_EMPLOYEES__101": "Ivanova Anna"},
            "PBXJOURNAL_EMPLOYEES__101: employees are set as one JSON object in "
            "PBXJOURNAL_EMPLOYEES",
        ),
        (
            {"PBXJOURNAL_AMI__RECONNECT_MAX": "0.5"},
            "PBXJOURNAL_AMI__RECONNECT_MAX (ami.reconnect_max): "
            "must be at least ami.reconnect_min (1s), got 0.5s",
        ),
    ],
)
def test_environment_problem_names_the_variable(environ: dict[str, str], problem: str) -> None:
    assert problems_of(None, environ) == (problem,)


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        """
        [ami]
        port = "abc"
        hots = "x"
        [pbx]
        timezone = "Europe/Moskow"
        [http]
        listen = "nowhere"
        """,
    )

    problems = problems_of(path, {"PBXJOURNAL_LOG__FORMAT": "xml"})

    assert [line.split(":")[0] for line in problems] == [
        "ami.port",
        "unknown key 'ami.hots' (did you mean 'ami.host'?)",
        "pbx.timezone",
        "http.listen",
        "PBXJOURNAL_LOG__FORMAT (log.format)",
    ]


def test_relation_is_not_checked_against_a_rejected_value(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[ami]\nreconnect_min = "forever"\nreconnect_max = "1s"')

    assert problems_of(path) == (
        "ami.reconnect_min: expected a duration greater than 0s "
        "(seconds, or like 90s, 15m, 1h30m), got 'forever'",
    )


def test_missing_file_is_reported_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"

    assert problems_of(path) == (f"{path}: cannot read: No such file or directory",)


def test_directory_instead_of_file_is_reported(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path)

    assert problem.startswith(f"{tmp_path}: cannot read: ")


def test_toml_syntax_error_is_reported_with_its_position(tmp_path: Path) -> None:
    path = write_toml(tmp_path, '[ami]\nhost = "127.0.0.1\n')

    (problem,) = problems_of(path)

    assert problem.startswith(f"{path}: TOML syntax error: ")
    assert "line 2" in problem


def test_file_that_is_not_utf8_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "cp1251.toml"
    path.write_bytes('[employees]\n101 = "Иванова"\n'.encode("cp1251"))

    assert problems_of(path) == (f"{path}: not UTF-8 text",)


def test_a_broken_file_does_not_hide_environment_problems(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[ami")

    problems = problems_of(path, {"PBXJOURNAL_AMI__PORT": "x"})

    assert len(problems) == 2
    assert problems[1].startswith("PBXJOURNAL_AMI__PORT (ami.port): ")


# --- secrets ----------------------------------------------------------------------------------


def test_secrets_stay_out_of_repr(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        """
        [ami]
        secret = "ami-s3cret"
        [storage]
        url = "postgresql+asyncpg://journal:db-s3cret@db.local/journal"
        [[http.clients]]
        name = "1c"
        username = "onec"
        password = "basic-s3cret"
        token = "bearer-s3cret"
        """,
    )

    settings = load_settings(path, environ={})
    text = repr(settings)

    assert settings.ami.secret == "ami-s3cret"
    assert settings.http.clients[0].password == "basic-s3cret"
    assert settings.http.clients[0].token == "bearer-s3cret"
    assert settings.storage.url == "postgresql+asyncpg://journal:db-s3cret@db.local/journal"
    assert "s3cret" not in text
    assert "onec" in text
    assert "postgresql+asyncpg://journal:***@db.local/journal" in text


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ("[ami]\nsecret = 20240101", "ami.secret: expected a string, got an integer"),
        (
            '[[http.clients]]\nname = "1c"\ntoken = "20240101 x"',
            "http.clients[0].token: expected a bearer token of letters, digits and -._~+/ "
            "(RFC 6750), got a string",
        ),
    ],
)
def test_secrets_stay_out_of_problems(tmp_path: Path, toml: str, problem: str) -> None:
    assert problems_of(write_toml(tmp_path, toml)) == (problem,)


# --- the example file and the reference -------------------------------------------------------


def test_example_file_loads_with_its_employees() -> None:
    settings = load_settings(EXAMPLE, environ={})

    assert [(e.extension, e.name) for e in settings.employees] == [
        ("101", "Ivanova Anna"),
        ("102", "Petrov Ivan"),
        ("103", "Sidorova Maria"),
        ("104", "Kuznetsov Dmitry"),
        ("105", "Smirnova Olga"),
    ]
    # Apart from the employees, the example documents the defaults and nothing else.
    assert dataclasses.replace(settings, employees=()) == Settings()


def test_example_file_writes_out_every_key() -> None:
    document = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    written = {
        f"{section}.{key}"
        for section, table in document.items()
        for key in table
        if section != "employees"
    }
    settings_keys = {
        key
        for key, _, _, _ in settings_reference()
        if not key.startswith(("employees", "http.clients"))
    }

    assert written == settings_keys


def test_example_client_works_once_uncommented(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    start = text.index("# [[http.clients]]")
    end = text.index("\n\n", start)
    block = text[start:end]
    path = write_toml(tmp_path, text.replace(block, block.replace("# ", "")))

    (client,) = load_settings(path, environ={}).http.clients

    assert client.name == "1c"
    assert client.username == "onec"
    assert client.token


def test_reference_covers_every_field() -> None:
    rows = settings_reference()
    keys = [key for key, _, _, _ in rows]
    expected = set()
    for part in dataclasses.fields(Settings):
        if part.name == "employees":
            expected |= {
                "employees",
                "employees.<extension>",
                "employees.<extension>.id",
                "employees.<extension>.name",
                "employees.<extension>.mobile",
            }
            continue
        section = getattr(Settings(), part.name)
        expected |= {f"{part.name}.{setting.name}" for setting in dataclasses.fields(section)}
    expected |= {f"http.clients[].{f.name}" for f in dataclasses.fields(HttpClient)}

    assert len(keys) == len(set(keys))
    assert set(keys) == expected
    assert all(kind and default and doc for _, kind, default, doc in rows)


@pytest.mark.parametrize(
    "row",
    [
        row
        for row in settings_reference()
        if "<" not in row[0] and "[]" not in row[0] and row[0] != "employees"
    ],
    ids=lambda row: row[0],
)
def test_reference_default_reads_back_as_the_default(
    tmp_path: Path, row: tuple[str, str, str, str]
) -> None:
    key, _, default, _ = row
    section, name = key.split(".")
    path = write_toml(tmp_path, f"[{section}]\n{name} = {default}\n")

    assert load_settings(path, environ={}) == Settings()


# --- values -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("15m", 900.0),
        ("24h", 86400.0),
        ("2d", 172800.0),
        ("1h30m", 5400.0),
        ("1h 30m 15s", 5415.0),
        ("1.5h", 5400.0),
        ("90", 90.0),
        ("0.25", 0.25),
        ("0", 0.0),
        (" 10S ", 10.0),
        (45, 45.0),
        (2.5, 2.5),
    ],
)
def test_parse_duration_reads(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "",
        "s",
        "-5s",
        "-5",
        -1,
        "5x",
        "1h-30m",
        "30m1h",
        "1m1m",
        "1,5h",
        "nan",
        "inf",
        float("inf"),
        float("nan"),
        True,
        "ten seconds",
        "1h30",
    ],
)
def test_parse_duration_rejects(text: str | float) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        ("127.0.0.1:8080", "127.0.0.1", 8080),
        ("0.0.0.0:0", "0.0.0.0", 0),
        ("[::1]:8080", "::1", 8080),
        ("[::]:443", "::", 443),
        ("journal.pbx.local:80", "journal.pbx.local", 80),
    ],
)
def test_listen_splits_into_host_and_port(listen: str, host: str, port: int) -> None:
    settings = load_settings(environ={"PBXJOURNAL_HTTP__LISTEN": listen})

    assert (settings.http.host, settings.http.port) == (host, port)


def test_extensions_sharing_an_id_are_one_employee(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        """
        [employees.101]
        name = "Ivanova Anna"
        id = "ivanova"
        [employees.201]
        name = "Ivanova Anna"
        id = "ivanova"
        """,
    )

    employees = load_settings(path, environ={}).employees

    assert [(e.id, e.extension) for e in employees] == [("ivanova", "101"), ("ivanova", "201")]


def test_attention_window_closes_after_its_duration() -> None:
    missed_at = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)

    closes_at = AttentionWindow(3600.0).closes_at(missed_at, ZoneInfo("Europe/Moscow"))

    assert closes_at == datetime(2026, 3, 1, 23, 0, tzinfo=UTC)


def test_attention_window_closes_at_local_midnight_for_end_of_day() -> None:
    moscow = ZoneInfo("Europe/Moscow")
    # 20:30 UTC is 23:30 in Moscow: the window closes half an hour later, not at UTC midnight.
    missed_at = datetime(2026, 3, 1, 20, 30, tzinfo=UTC)

    closes_at = AttentionWindow(None).closes_at(missed_at, moscow)

    assert closes_at == datetime(2026, 3, 2, 0, 0, tzinfo=moscow)
    assert closes_at - missed_at == AttentionWindow(1800.0).closes_at(missed_at, moscow) - missed_at


def test_attention_window_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="aware"):
        AttentionWindow(None).closes_at(datetime(2026, 3, 1, 12, 0), ZoneInfo("Europe/Moscow"))


def test_settings_are_frozen() -> None:
    settings = load_settings(environ={})

    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.ami.port = 1  # type: ignore[misc]


def test_public_names_are_exported() -> None:
    assert set(config.__all__) <= set(dir(config))
    assert {
        "Settings",
        "ConfigError",
        "load_settings",
        "parse_duration",
        "settings_reference",
    } <= set(config.__all__)
    assert os.fspath(config.DEFAULT_CONFIG_PATH) == "/etc/pbxjournal/pbxjournal.toml"
