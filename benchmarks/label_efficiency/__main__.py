"""`python -m benchmarks.label_efficiency`: see simulation.main."""

from benchmarks.label_efficiency.simulation import main

raise SystemExit(main())
