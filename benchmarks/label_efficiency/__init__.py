"""The label-efficiency benchmark v2: how many annotator seconds does the queue save?

Run from the checkout: `python -m benchmarks.label_efficiency --help`.

Modules, each importing only those after it: `cli` (the command line), `runner` (the base
model, the full-data references and the process-parallel units), `simulation` (one scenario
and seed: every arm and recipe on the product's own code), `training` (the two recipes and
the test yardstick), `coldstart` (the pool's own encoder: its near-duplicate groups and
first-batch picks), `report` (JSON, markdown, plots), `metrics` (AUBC, budgets to a target,
savings, near-duplicate precision and recall, the summary), `config` (`BenchConfig`,
`CycleRow`, the scenarios and arms), `digits_data` (the generated pools), `streams` and
`rendering` (frame sequences and drawing primitives).
"""
