"""Where golive keeps what outlives a run: run journals, records, backups, demo hosts."""

from __future__ import annotations

import os
from pathlib import Path


def golive_home() -> Path:
    """$GOLIVE_HOME, or ~/.golive."""
    return Path(os.environ.get("GOLIVE_HOME", "~/.golive")).expanduser()


def runs_dir() -> Path:
    return golive_home() / "runs"
