"""The label-efficiency benchmark: does the queue save labels?

Run from the checkout: `python -m benchmarks.label_efficiency --help`.
"""
