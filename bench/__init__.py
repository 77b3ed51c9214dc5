"""Benchmarks: each writes its own section of bench/RESULTS.md."""
