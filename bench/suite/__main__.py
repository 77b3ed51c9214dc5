"""Entry point of `python -m bench.suite`."""

import sys

from bench.suite.cli import main

sys.exit(main())
