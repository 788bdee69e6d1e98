"""What every stage shares: the failure type the CLI turns into an exit code (defined in pipeline.errors, where
the libraries raise it)."""

from __future__ import annotations

from pipeline.errors import StageFailed  # noqa: F401  (re-exported for the stage modules)
