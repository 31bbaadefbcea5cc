"""`python -m kimi_mcp` works like the `kimi-mcp` command."""

import sys

from .cli import main

sys.exit(main())
