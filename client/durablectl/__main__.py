"""``python -m durablectl``: the same as the ``durablectl`` command."""

from durablectl.cli import main

raise SystemExit(main())
