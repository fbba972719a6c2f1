"""``python -m wardgate``: the same entry point as the ``wardgate`` command."""

from wardgate.cli import main

raise SystemExit(main())
