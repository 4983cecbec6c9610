"""``python -m server.cli.load``: run the load benchmark (same flags as ``aptfleet load``)."""

import sys

from server.cli.load.command import main

sys.exit(main())
