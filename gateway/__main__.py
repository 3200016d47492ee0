"""`python -m gateway serve --config PATH [--host H] [--port N]`."""

import sys

from gateway.cli import main

sys.exit(main())
