"""``python -m bench``: run every benchmark row and print the comparison table."""

from .run import main

raise SystemExit(main())
