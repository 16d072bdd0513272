"""``python -m reclra``: the ``reclra`` command line (see :mod:`reclra.cli`)."""

from __future__ import annotations

import sys

from reclra.cli import main

if __name__ == "__main__":
    sys.exit(main())
