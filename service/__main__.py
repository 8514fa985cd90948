"""`python -m service` is the `tenure` command."""

from service.faces.cli import main

raise SystemExit(main())
