"""The joint architecture + hyper-parameter search engine (AutoHAS), see docs/architecture.md §2-4."""

from server.search.config import SearchConfig
from server.search.data import Dataset, load_dataset
from server.search.rundir import load_model
from server.search.runner import ProgressEvent, SearchCancelled, run_search

__all__ = [
    "Dataset",
    "ProgressEvent",
    "SearchCancelled",
    "SearchConfig",
    "load_dataset",
    "load_model",
    "run_search",
]
