"""``python -m hygie_w2l.cli``: the same as the ``hygie-w2l`` command."""

import sys

from hygie_w2l.cli import main

sys.exit(main())
