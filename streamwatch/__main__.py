"""`python -m streamwatch` = the `streamwatch` command."""

from __future__ import annotations

import sys

from streamwatch.cli import main

sys.exit(main())
