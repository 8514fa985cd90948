"""`python -m web` is the `tenure` command."""

from web.entry import main

raise SystemExit(main())
