"""``python -m attnbook ...`` is the ``attnbook`` command (see :mod:`attnbook.cli`)."""

import sys

from attnbook.cli import main

sys.exit(main())
