"""`python -m benchmarks.label_efficiency`: see cli.main."""

from benchmarks.label_efficiency.cli import main

raise SystemExit(main())
