"""``python -m pbxjournal``: the same command line as the ``pbxjournal`` script."""

import sys

from pbxjournal.cli import main

sys.exit(main())
