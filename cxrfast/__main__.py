"""`python -m cxrfast ...` runs the `cxrfast` command (cxrfast/cli.py)."""

from cxrfast.cli import main

raise SystemExit(main())
