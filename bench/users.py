"""Moved to `autohas_edge.server.demo.population` (the one population module).

Only `bench/bench_sdk.py` still imports this name; delete this file once it imports from there.
"""

from autohas_edge.server.demo.population import SHIFTS, User, global_test_split, make_user

__all__ = ["SHIFTS", "User", "global_test_split", "make_user"]
