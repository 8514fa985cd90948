"""`python -m service` is the `tenure` command (without ``serve``, which is the web layer's)."""

import sys

from service.supervisor import early

early.start_for(sys.argv[1:])  # before the heavy imports below: see service.supervisor.early

from service.faces.cli import main  # noqa: E402

raise SystemExit(main())
