"""`python -m web` is the `tenure` command."""

from web.cli import main

raise SystemExit(main())
