"""`python -m builder` is the same as the `pybuild` command."""

from builder.entry import main

raise SystemExit(main())
