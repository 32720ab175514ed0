"""``python -m emostream``: the command line."""

import sys

from emostream.apps.cli import main

sys.exit(main())
