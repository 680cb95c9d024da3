"""``python -m sgdlab ...``: the same command line as the ``sgdlab`` script."""

import sys

from sgdlab.cli import main

sys.exit(main())
