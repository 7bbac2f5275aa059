"""``python -m tensorguard``: the ``tensorguard`` command."""

import sys

from tensorguard.cli import main

sys.exit(main())
