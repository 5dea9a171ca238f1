"""`python -m builder` is the same as the `pybuild` command."""

from builder.cli import main

raise SystemExit(main())
