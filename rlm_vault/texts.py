"""Note bodies for grep, in one memory-mapped file per vault: a deletable cache keyed by id and content hash.

A regex grep reads every note that does not match; opening thousands of small files costs ~35 us each
here, while the catalog keeps no bodies (a server's memory must not grow with the vault's text). So the
bodies live in an append-only UTF-8 file that every process on the vault maps read-only and shares,
beside a small `.npz` index (ids, hashes, offsets, lengths) replaced atomically at every save. Bodies no
id points to any more are dropped by writing a new file once they are half of it.
"""

from __future__ import annotations

import mmap
import os
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlm_vault.errors import CacheError

if TYPE_CHECKING:
    from rlm_vault.index import SearchDoc

__all__ = ["TextStore"]

COMPACT_SHARE = 0.5
LENGTH = (1 << 32) - 1  # the length bits of a span


def _span(packed: int) -> tuple[int, int]:
    """(offset, length) of a packed span."""
    return packed >> 32, packed & LENGTH


class TextStore:
    """Bodies at `<name>.npz` (the index) and `<name>-data-*.txt` (the UTF-8 bytes, appended to)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._shas: dict[str, str] = {}
        # id -> offset << 32 | length in the data file: one int per note, not a tuple of two (9 MB less at
        # 100,000 notes); a note's text is far below 4 GiB (content limit), the file may be any size.
        self._spans: dict[str, int] = {}
        self._data: Path | None = None
        self._size = 0  # bytes of the data file this process knows of
        self._map: mmap.mmap | None = None
        self._stamp: tuple[int, int] | None = None
        self.reload()

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def reload(self) -> None:
        """Read the index again if another process saved since we last read or wrote it."""
        stamp = self._stat()
        if stamp == self._stamp:
            return
        for _ in range(3):  # the data file may be replaced between reading the index and opening it
            try:
                self._read()
                break
            except FileNotFoundError:
                continue
            except Exception:  # noqa: BLE001 - any damage in a deletable cache means "read the notes again"
                self._forget()
                break
        else:
            self._forget()
        self._stamp = stamp

    def _read(self) -> None:
        import numpy as np

        if not self.path.exists():
            self._forget()
            return
        with np.load(self.path, allow_pickle=False) as data:
            ids = [sys.intern(i.decode()) for i in data["ids"].tolist()]  # one string per id, all caches
            shas = [sys.intern(h.decode()) for h in data["shas"].tolist()]  # shared with the other caches
            spans = zip(data["offsets"].tolist(), data["lengths"].tolist(), strict=True)
            size, name = int(data["size"]), str(data["data"])
        data_file = self.path.parent / Path(name).name
        self._open(data_file, size)
        self._shas = dict(zip(ids, shas, strict=True))
        self._spans = {i: int(o) << 32 | int(n) for i, (o, n) in zip(ids, spans, strict=True)}
        if any(o + n > size for o, n in map(_span, self._spans.values())):
            raise CacheError(f"note texts index {self.path} points past the end of {data_file}")

    def _open(self, data_file: Path, size: int) -> None:
        self._close()
        self._data, self._size = data_file, size
        if size:
            with open(data_file, "rb") as handle:
                self._map = mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_READ)

    def _close(self) -> None:
        if self._map is not None:
            self._map.close()
        self._map = None

    def _forget(self) -> None:
        self._close()
        self._shas, self._spans, self._data, self._size = {}, {}, None, 0

    def stamps(self) -> Mapping[str, str]:
        """id -> sha256 of every stored body (the store's own map, not a copy: 100,000 entries)."""
        return self._shas

    def __len__(self) -> int:
        return len(self._shas)

    def body(self, doc_id: str, sha256: str = "") -> str | None:
        """The stored body of `doc_id` (None when absent, or stored for another content hash)."""
        span = self._spans.get(doc_id)
        if span is None or self._map is None or (sha256 and self._shas.get(doc_id) != sha256):
            return None
        offset, length = _span(span)
        return self._map[offset : offset + length].decode("utf-8")

    def update(self, upserts: Sequence[SearchDoc] = (), deletes: Iterable[str] = ()) -> int:
        """Store the `upserts` whose hash changed and drop `deletes`, then save; returns bodies written."""
        stale = [doc for doc in upserts if self._shas.get(doc.id) != doc.sha256]
        doomed = [doc_id for doc_id in deletes if doc_id in self._shas]
        if not stale and not doomed:
            return 0
        for doc_id in doomed:
            del self._shas[doc_id], self._spans[doc_id]
        for doc in stale:  # their old bodies are dead too, whatever happens next
            self._spans.pop(doc.id, None)
        try:
            self._save(stale)
        except OSError as exc:
            raise CacheError(f"note texts could not be saved to {self.path}: {exc}") from exc
        return len(stale)

    def _save(self, fresh: Sequence[SearchDoc]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A body of 4 GiB or more (no note rlm-vault writes) is not stored: grep reads it from its file.
        encoded = [(doc, raw) for doc in fresh if len(raw := doc.body.encode("utf-8")) <= LENGTH]
        live = sum(span & LENGTH for span in self._spans.values())
        if self._data is None or self._size - live > COMPACT_SHARE * max(self._size, 1):
            self._compact(encoded)
        else:
            with open(self._data, "ab") as handle:
                handle.seek(0, os.SEEK_END)
                start = handle.tell()
                if start != self._size:  # another process appended without us seeing it: start anew
                    handle.close()
                    self._compact(encoded)
                    self._write_index()
                    return
                for doc, raw in encoded:
                    handle.write(raw)
                    self._place(doc, start, len(raw))
                    start += len(raw)
            self._open(self._data, start)
        self._write_index()

    def _place(self, doc: SearchDoc, offset: int, length: int) -> None:
        self._shas[doc.id], self._spans[doc.id] = doc.sha256, offset << 32 | length

    def _compact(self, encoded: list[tuple[SearchDoc, bytes]]) -> None:
        """Write every live body and the new ones to a new data file."""
        kept = [(doc_id, self.body(doc_id) or "") for doc_id in self._spans]
        fd, tmp = tempfile.mkstemp(prefix=f"{self.path.stem}-data-", suffix=".txt", dir=self.path.parent)
        offset = 0
        with os.fdopen(fd, "wb") as handle:
            for doc_id, text in kept:
                raw = text.encode("utf-8")
                handle.write(raw)
                self._spans[doc_id] = offset << 32 | len(raw)
                offset += len(raw)
            for doc, raw in encoded:
                handle.write(raw)
                self._place(doc, offset, len(raw))
                offset += len(raw)
        self._open(Path(tmp), offset)

    def _write_index(self) -> None:
        import numpy as np

        assert self._data is not None
        ids = list(self._spans)
        arrays: dict[str, Any] = {
            "ids": np.array([i.encode() for i in ids], dtype=bytes),
            "shas": np.array([self._shas[i].encode() for i in ids], dtype=bytes),
            "offsets": np.array([self._spans[i] >> 32 for i in ids], dtype=np.int64),
            "lengths": np.array([self._spans[i] & LENGTH for i in ids], dtype=np.int64),
            "size": np.array(self._size),
            "data": np.array(self._data.name),
        }
        fd, tmp = tempfile.mkstemp(prefix=".texts-", suffix=".npz", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, **arrays)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        for old in self.path.parent.glob(f"{self.path.stem}-data-*"):
            if old != self._data:
                old.unlink(missing_ok=True)  # a process still mapping it keeps reading it
        self._stamp = self._stat()

    def clear(self) -> None:
        """Forget every body and delete the files."""
        self._forget()
        self.path.unlink(missing_ok=True)
        for old in self.path.parent.glob(f"{self.path.stem}-data-*") if self.path.parent.is_dir() else ():
            old.unlink(missing_ok=True)
        self._stamp = None
