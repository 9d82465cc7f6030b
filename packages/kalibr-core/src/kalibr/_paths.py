"""Where Kalibr keeps its files by default."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DB_ENV_VAR", "default_db_location"]

DB_ENV_VAR = "KALIBR_DB"


def default_db_location() -> str:
    """``$KALIBR_DB`` if set (a path or a store URL), else ``kalibr.db`` in the user's data folder (created)."""
    configured = os.environ.get(DB_ENV_VAR, "").strip()
    if configured:
        return configured
    import platformdirs

    folder = Path(platformdirs.user_data_dir("kalibr", appauthor=False))
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder / "kalibr.db")
