"""Layer 2: damage and loss detection for the SQLite data directory.

Every stored record carries a CRC-32 of its text and its key (session, name, revision, kind),
checked when the file is read at start: a flipped byte is refused, never served. Every commit
also counts its changes in the ``meta`` table *and*, after ``COMMIT`` returns, in the seal file
``dspex.seal`` beside the data file. At start the two must agree: a data file that holds fewer
changes than the seal acknowledged lost acknowledged writes (a damaged, truncated or deleted WAL,
or a data file restored from an older copy) and the server refuses to start, naming the file.
``accept_loss`` starts a new store generation instead: every session's next revision skips the
lost ones, so no revision number is issued twice, and resuming from a lost revision is refused.
"""

from __future__ import annotations

import json
import os
import sqlite3
import zlib
from pathlib import Path
from typing import Final, NamedTuple

import dspex.errors as errors

__all__ = ["SEAL_NAME", "Seal", "Stored", "check_pages", "seal_text", "unseal_text"]

SEAL_NAME: Final = "dspex.seal"
_SEAL_BYTES: Final = 64


class Stored(NamedTuple):
    """Where a record lives, for the checksum and for the error that names it."""

    session_id: str
    name: str
    revision: int
    kind: str


def seal_text(where: Stored, text: str) -> str:
    """``text`` prefixed with the CRC-32 of itself and its key (8 hex digits and ``:``)."""
    return f"{_crc(where, text):08x}:{text}"


def unseal_text(where: Stored, stored: str, path: Path) -> str:
    """The record text of ``stored``, after checking its CRC.

    Raises:
        StoreDataError: the checksum does not match (the file was damaged).
    """
    crc, sep, text = stored.partition(":")
    if not sep or len(crc) != 8 or crc != f"{_crc(where, text):08x}":
        raise errors.StoreDataError(
            f"the data file {path} is damaged: the record of {where.name!r} at revision "
            f"{where.revision} in session {where.session_id!r} fails its checksum; restore the "
            "directory from a backup (the server did not start and served nothing from it)",
            directory=str(path.parent),
        )
    return text


def _crc(where: Stored, text: str) -> int:
    key = f"{where.session_id}\0{where.name}\0{where.revision}\0{where.kind}\0"
    return zlib.crc32(text.encode(), zlib.crc32(key.encode()))


def check_pages(db: sqlite3.Connection, path: Path) -> None:
    """SQLite's own structural check of every page (``PRAGMA quick_check``).

    Raises:
        StoreDataError: the file's structure is damaged.
    """
    problems = [row[0] for row in db.execute("PRAGMA quick_check(5)")]
    if problems != ["ok"]:
        raise errors.StoreDataError(
            f"the data file {path} is damaged ({'; '.join(problems)}); restore the directory "
            "from a backup (the server did not start)",
            directory=str(path.parent),
        )


class Seal:
    """The seal file: the store generation and how many changes were acknowledged.

    Written (``pwrite``, no flush of its own) after each commit returned, so it never claims
    more than the data file holds unless the data file lost what it acknowledged.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / SEAL_NAME
        existed = self.path.exists()
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self.found: tuple[int, int] | None = self._read() if existed else None

    def _read(self) -> tuple[int, int]:
        text = os.pread(self.fd, _SEAL_BYTES, 0).decode(errors="replace").strip()
        try:
            generation, changes = (int(part) for part in text.split())
        except ValueError:
            raise errors.StoreDataError(
                f"the seal file {self.path} is damaged ({text!r}); restore the directory from "
                "a backup, or start with --accept-data-loss to begin a new generation",
                directory=str(self.path.parent),
            ) from None
        return generation, changes

    def write(self, generation: int, changes: int) -> None:
        """Record what the data file now holds (after its ``COMMIT`` returned)."""
        os.pwrite(self.fd, f"{generation} {changes}".ljust(_SEAL_BYTES - 1).encode() + b"\n", 0)

    def write_durably(self, generation: int, changes: int) -> None:
        """``write`` and flush it (new files and new generations)."""
        self.write(generation, changes)
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def lost_changes(seal: Seal, held: int, data_path: Path, *, new_file: bool) -> int:
    """How many acknowledged changes the data file lost (0: none), from the seal's count.

    Raises:
        StoreDataError: a data file that exists without its seal (it was replaced or the seal
            deleted).
    """
    if seal.found is None:
        if held and not new_file:
            raise errors.StoreDataError(
                f"the seal file {seal.path} is missing beside {data_path}, which holds {held} "
                "changes: the directory was tampered with or partly restored; restore it whole, "
                "or start with --accept-data-loss to begin a new generation",
                directory=str(data_path.parent),
            )
        return 0
    return max(0, seal.found[1] - held)


def loss_error(data_path: Path, seal: Seal, held: int) -> errors.StoreDataError:
    """The refusal to start on a data file that lost acknowledged changes."""
    acknowledged = seal.found[1] if seal.found else 0
    return errors.StoreDataError(
        f"the data file {data_path} lost acknowledged writes: it holds {held} changes but "
        f"{acknowledged} were acknowledged ({seal.path}); its write-ahead log "
        f"{data_path.name}-wal was damaged, truncated or deleted, or the file was restored from "
        "an older copy. Restore the directory from a backup, or start with --accept-data-loss "
        "to accept the loss and begin a new store generation (lost revisions are never reused)",
        directory=str(data_path.parent),
        held=held,
        acknowledged=acknowledged,
    )


def lost_range_text(first: int, last: int, generation: int) -> str:
    """The meta value recording a session's lost revisions."""
    return json.dumps([first, last, generation])
