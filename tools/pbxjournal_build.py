"""The build backend: setuptools', after a check of the Python version.

pip resolves a project's dependencies before it looks at its ``Requires-Python``, so an
install on Python 3.10 used to end in ``No matching distribution found for
sqlalchemy[asyncio]>=2.1``. Building (``pip install .``, ``pip wheel .``) now stops first,
with a message about Python.
"""

import sys

if sys.version_info < (3, 11):  # noqa: UP036 - this file runs on the Python being checked
    raise SystemExit(
        f"pbxjournal needs Python 3.11 or newer; this is Python {sys.version.split()[0]} "
        f"({sys.executable}). Create the virtualenv with python3.11 or newer "
        "(Debian 12: python3; Ubuntu 24.04: python3; Ubuntu 22.04: python3.11 from the "
        "deadsnakes PPA, or pyenv)."
    )

from setuptools.build_meta import *  # noqa: F403
