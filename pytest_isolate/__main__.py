"""``python -m pytest_isolate ...`` is the ``pytest-isolate`` command."""

import sys

from .cli import main

sys.exit(main())
