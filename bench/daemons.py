"""Running ``pbxjournal run`` as a real subprocess from a benchmark: the command, an
environment that finds this checkout and leaves the configuration file in charge, a free
port."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

__all__ = ["ROOT", "child_env", "free_port", "pbxjournal_command"]

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
