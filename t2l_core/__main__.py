"""``python -m t2l_core``: runs the command line (:mod:`t2l_core.cli.main`)."""

from .cli.main import main

raise SystemExit(main())
