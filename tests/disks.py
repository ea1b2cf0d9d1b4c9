"""Small filesystems of their own (tmpfs), so that a test meets a full disk for real."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.unavailable import unavailable


@contextmanager
def small_filesystem(folder: Path, kib: int, mode: str = "0700") -> Iterator[Path]:
    """`folder` (created) holds a filesystem of `kib` KiB until the block ends."""
    if os.geteuid() != 0:
        unavailable("mounting a small filesystem for a full disk needs root")
    folder.mkdir(parents=True)
    options = f"size={kib}k,mode={mode}"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "golive-small", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)
