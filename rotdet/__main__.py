"""``python -m rotdet``: the ``rotdet`` command."""

import sys

from rotdet.cli import main

sys.exit(main())
