"""The label-efficiency benchmark: does the queue save labels?

Run from the checkout: `python -m benchmarks.label_efficiency --help`.

Modules, each importing only those after it: `cli` (the command line), `simulation` (the
annotation loop and `run_benchmark`), `report` (JSON, markdown, plots), `metrics` (AUBC,
label efficiency, the summary), `config` (`BenchConfig`, `CycleRow`, the shared names),
`digits_data` (the generated dataset).
"""
