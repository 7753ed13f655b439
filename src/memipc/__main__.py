"""``python -m memipc`` runs the command line, as the ``memipc`` script does."""

from memipc.cli import main

raise SystemExit(main())
