"""``python -m rotdet.cli`` (README's torchrun line)."""

import sys

from rotdet.cli import main

sys.exit(main())
