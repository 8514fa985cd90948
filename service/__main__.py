"""`python -m service` is the `tenure` command."""

from service.cli import main

raise SystemExit(main())
