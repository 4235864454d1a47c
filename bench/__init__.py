"""Benchmarks for birdtrap: stage costs, the daemon against its bound, and a naive pipeline.

Kept out of tests/ on purpose (STYLE.md section 8): timings are run by hand or on the target
device and read as ratios, never asserted. `python -m bench --help` lists the options.
"""
