"""The one way rlm-vault takes a file lock: `fcntl.flock` on a file in `.rlm/`, released by the OS if the
process dies, so a killed writer never leaves the vault locked."""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import Busy, StorageError, storage_message

__all__ = ["file_lock"]


@contextmanager
def file_lock(path: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing); `Busy` after `timeout` seconds, if given.

    The lock is per open file, so two threads of one process exclude each other as two processes do.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    except OSError as exc:
        raise StorageError(storage_message(exc, path.parent), exc.errno) from exc
    try:
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            _acquire(fd, path, timeout)
        yield
    finally:
        os.close(fd)  # releases the flock


def _acquire(fd: int, path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        if time.monotonic() > deadline:
            raise Busy(
                f"the vault is busy: another writer held {path} for more than {timeout:.0f} s; try again"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
