"""Running ``pbxjournal run`` as a real subprocess from a benchmark: the command, an
environment that finds this checkout and leaves the configuration file in charge, a free
port, the configuration file."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.scenarios import EMPLOYEES

__all__ = ["ROOT", "child_env", "free_port", "pbxjournal_command", "write_config"]

ROOT = Path(__file__).resolve().parent.parent


def pbxjournal_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m``."""
    script = Path(sys.executable).with_name("pbxjournal")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pbxjournal"]


def child_env() -> dict[str, str]:
    """This environment with the checkout on ``PYTHONPATH`` and no ``PBXJOURNAL_*``
    variables: the configuration file is the whole configuration."""
    path = os.environ.get("PYTHONPATH")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + (os.pathsep + path if path else ""))
    for key in [k for k in env if k.startswith("PBXJOURNAL_")]:
        del env[key]
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def write_config(
    path: Path,
    *,
    ami_port: int,
    username: str,
    secret: str,
    pbx_name: str,
    grace: float,
    url: str,
    recordings: Path,
    http_port: int,
    ami: Mapping[str, str | float] | None = None,
    http_clients: Mapping[str, str] | None = None,
    log: Mapping[str, str] | None = None,
) -> None:
    """The configuration file of a benchmark's daemon: the fake PBX at ``ami_port``, the
    employees of the shared captures, JSON logs at info; ``ami`` adds AMI settings,
    ``http_clients`` one HTTP client (name, username, password), ``log`` log settings."""
    lines = [
        f"# Written by {Path(sys.argv[0]).name or 'a benchmark'}",
        "[ami]",
        'host = "127.0.0.1"',
        f"port = {ami_port}",
        f"username = {_toml(username)}",
        f"secret = {_toml(secret)}",
        *(f"{key} = {_toml(value)}" for key, value in (ami or {}).items()),
        "",
        "[pbx]",
        f"name = {_toml(pbx_name)}",
        f'hangup_grace = "{grace:g}s"',
        "",
        "[recordings]",
        f"directories = [{_toml(str(recordings))}]",
        "",
        "[storage]",
        f"url = {_toml(url)}",
        "",
        "[http]",
        f'listen = "127.0.0.1:{http_port}"',
    ]
    if http_clients:
        lines += ["", "[[http.clients]]"]
        lines += [f"{key} = {_toml(value)}" for key, value in http_clients.items()]
    lines += ["", "[employees]"]
    lines += [f"{_toml(ext)} = {_toml(name)}" for ext, name in EMPLOYEES.items()]
    lines += ["", "[log]", 'level = "info"', 'format = "json"']
    lines += [f"{key} = {_toml(value)}" for key, value in (log or {}).items()]
    path.write_text("\n".join(lines) + "\n", "utf-8")


def _toml(value: str | float) -> str:
    # A JSON string is a TOML basic string.
    return json.dumps(value, ensure_ascii=False)
