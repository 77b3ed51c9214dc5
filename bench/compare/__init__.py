"""AutoHAS vs NAS-only, HPO-only, random search and Optuna TPE at equal compute (issue 7)."""
