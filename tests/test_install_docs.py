"""docs/operations.md's install steps work in the order written, as far as a test can run them:
the files they install exist, the commands they run exist, and the users and directories that
systemd-sysusers and systemd-tmpfiles make (into a scratch root) let `pbxjournal migrate`
create the journal before the first start. An install on a Python that is too old stops with a
message about Python."""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pbxjournal.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "operations.md"


def install_steps() -> list[list[str]]:
    text = DOC.read_text("utf-8")
    section = text[text.index("## 1. Install") : text.index("## 2.")]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    steps = []
    for raw in block.group(1).splitlines():
        line = raw.split("  #", 1)[0].strip()
        if line and not line.startswith("#"):
            for part in line.split("&&"):
                steps.append(shlex.split(part))
    return steps


def test_every_file_the_steps_install_is_in_the_repository() -> None:
    installs = [s for s in install_steps() if s[0] == "install" and "-d" not in s]
    assert len(installs) == 4
    for step in installs:
        source = step[-2]
        assert (ROOT / source).is_file(), source


def test_every_pbxjournal_command_of_the_steps_exists() -> None:
    parser = build_parser()
    commands = [s for s in install_steps() if any(w.endswith("/bin/pbxjournal") for w in s)]
    assert [
        s[s.index(next(w for w in s if w.endswith("/bin/pbxjournal"))) + 1] for s in commands
    ] == [
        "check-config",
        "migrate",
    ]
    for step in commands:
        at = next(i for i, w in enumerate(step) if w.endswith("/bin/pbxjournal"))
        args = parser.parse_args(step[at + 1 :])  # exits on an unknown command or option
        assert args.config == Path("/etc/pbxjournal/pbxjournal.toml")
        assert step[:3] == ["runuser", "-u", "pbxjournal"]  # as the daemon's user


def test_sysusers_and_tmpfiles_make_the_directories_before_the_first_start(
    tmp_path: Path,
) -> None:
    sysusers, tmpfiles = shutil.which("systemd-sysusers"), shutil.which("systemd-tmpfiles")
    if sysusers is None or tmpfiles is None:
        pytest.skip("systemd-sysusers/systemd-tmpfiles are not installed here")
    steps = install_steps()
    order = [s[0] for s in steps]
    # The users and directories come before the configuration and before migrate.
    assert order.index("systemd-sysusers") < order.index("runuser")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    subprocess.run(
        [sysusers, f"--root={root}", str(ROOT / "systemd" / "pbxjournal.sysusers.conf")],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [tmpfiles, f"--root={root}", "--create", str(ROOT / "systemd/pbxjournal.tmpfiles.conf")],
        check=True,
        capture_output=True,
    )
    user = next(
        line.split(":")
        for line in (root / "etc" / "passwd").read_text().splitlines()
        if line.startswith("pbxjournal:")
    )
    uid, gid = int(user[2]), int(user[3])
    state = root / "var" / "lib" / "pbxjournal"
    config = root / "etc" / "pbxjournal"
    assert (state.stat().st_uid, state.stat().st_gid) == (uid, gid)
    assert stat.S_IMODE(state.stat().st_mode) == 0o750
    assert (config.stat().st_uid, config.stat().st_gid) == (0, gid)
    # migrate, as the steps say, before the first start: the journal can be created there.
    example = (ROOT / "config" / "pbxjournal.example.toml").read_text("utf-8")
    (config / "pbxjournal.toml").write_text(example, "utf-8")
    database = state / "journal.sqlite3"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PBXJOURNAL_")}
    environ["PBXJOURNAL_STORAGE__URL"] = f"sqlite+aiosqlite:///{database}"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pbxjournal",
            "migrate",
            "--config",
            str(config / "pbxjournal.toml"),
        ],
        capture_output=True,
        text=True,
        env=environ,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert database.is_file()


def test_building_on_python_3_10_stops_with_a_message_about_python() -> None:
    """The build backend checks the version first (pip would otherwise fail on a
    dependency with `No matching distribution found for sqlalchemy[asyncio]>=2.1`)."""
    found = sorted(glob.glob("/root/.pyenv/versions/3.10*/bin/python")) + [
        p for p in (shutil.which("python3.10"),) if p
    ]
    if not found:
        pytest.skip("no Python 3.10 on this machine")
    result = subprocess.run(
        [found[0], str(ROOT / "tools" / "pbxjournal_build.py")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 1
    assert "pbxjournal needs Python 3.11 or newer; this is Python 3.10" in result.stderr
