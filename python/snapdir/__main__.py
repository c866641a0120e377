"""``python -m snapdir``: the command line."""

from .cli import main

raise SystemExit(main())
