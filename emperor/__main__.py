"""``python -m emperor`` is the same as the ``emperor`` command."""

from emperor.cli import main

raise SystemExit(main())
