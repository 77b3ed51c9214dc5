"""`python -m bench.suite`: the benchmark suite that judges the search (issue 20).

Every method searches the engine's default joint space of a task under the same budget of
device-seconds; every incumbent is retrained by one function on train+val and tested. See
`bench/suite/cli.py` for the presets and `bench/RESULTS.md` for the figures.
"""
