"""Files only their owner may read: keys, backups, dumps, crash reports.

They are created owner-only from their first byte (0600 files in 0700 folders), never written
first and chmodded after: in between, anyone on the machine could open them.
"""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE, FOLDER_MODE = 0o600, 0o700


def private_dir(path: Path) -> Path:
    """`path` and any missing parents, each new one 0700."""
    if not path.is_dir():
        private_dir(path.parent)
        path.mkdir(mode=FOLDER_MODE, exist_ok=True)
    return path


def create_private(path: Path) -> int:
    """A new, empty 0600 file (its folders made private too), opened for writing; an existing
    file or a link in its place is refused."""
    private_dir(path.parent)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)


def write_private(path: Path, data: bytes) -> None:
    with os.fdopen(create_private(path), "wb") as file:
        file.write(data)


def reserve_private(path: Path) -> Path:
    """An empty 0600 file for a tool that then writes into it (copies keep the mode)."""
    os.close(create_private(path))
    return path
