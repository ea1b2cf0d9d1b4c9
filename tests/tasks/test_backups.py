"""A host's backup counts only once it reads back whole."""

from __future__ import annotations

import gzip
import io
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from golive.errors import BackupError
from golive.manifest import sha256_of
from golive.releases import Archive
from tasks.backups import verify


def backup_of(path: Path, files: int = 50) -> Archive:
    with tarfile.open(path, "w:gz") as tar:
        for n in range(files):
            data = bytes([n]) * 10_000
            info = tarfile.TarInfo(f"current/file{n}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return Archive(path, sha256_of(path), path.stat().st_size)


def test_a_whole_backup_verifies(tmp_path: Path) -> None:
    verify("web1", backup_of(tmp_path / "web1.tar.gz"))


def test_a_backup_cut_short_on_the_host_does_not_read_back_even_with_its_own_checksum(
    tmp_path: Path,
) -> None:
    whole = backup_of(tmp_path / "whole.tar.gz").path.read_bytes()
    cut = tmp_path / "web1.tar.gz"
    cut.write_bytes(whole[: len(whole) // 2])

    with pytest.raises(BackupError, match=r"web1\.tar\.gz does not read back: .*gzip"):
        verify("web1", Archive(cut, sha256_of(cut), cut.stat().st_size))


def test_a_backup_whose_data_was_damaged_does_not_read_back(tmp_path: Path) -> None:
    path = tmp_path / "web1.tar.gz"
    raw = bytearray(gzip.decompress(backup_of(path).path.read_bytes()))
    raw[600] ^= 0xFF  # inside the first member's data: only the gzip checksum can tell
    damaged = bytearray(gzip.compress(bytes(raw)))
    damaged[-8:-4] = gzip.compress(bytes(gzip.decompress(path.read_bytes())))[-8:-4]
    path.write_bytes(bytes(damaged))

    with pytest.raises(BackupError, match=r"does not read back: .*crc error"):
        verify("web1", Archive(path, sha256_of(path), path.stat().st_size))


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (lambda raw: raw[: len(raw) // 2], "premature end"),
        (lambda raw: raw[:100] + bytes([raw[100] ^ 0xFF]) + raw[101:], "Decoding error"),
        # the end of the frame is zstd's checksum: tar would read every member and see nothing
        (lambda raw: raw[:-1] + bytes([raw[-1] ^ 0xFF]), "doesn't match checksum"),
    ],
    ids=["cut short", "data changed", "checksum changed"],
)
def test_a_zstd_backup_verifies_and_one_damaged_does_not_read_back(
    tmp_path: Path, damage: Callable[[bytes], bytes], said: str
) -> None:
    plain = backup_of(tmp_path / "web1.tar.gz").path
    packed = tmp_path / "web1.tar.zst"
    subprocess.run(["sh", "-c", f"gunzip -c {plain} | zstd -1 -q > {packed}"], check=True)
    verify("web1", Archive(packed, sha256_of(packed), packed.stat().st_size))
    packed.write_bytes(damage(packed.read_bytes()))

    with pytest.raises(BackupError, match=rf"web1\.tar\.zst does not read back: .*{said}"):
        verify("web1", Archive(packed, sha256_of(packed), packed.stat().st_size))
