"""Git's object format, in-process: loose objects and tree entries, no git process.

Used for the common case of a commit of files rlm-vault itself just wrote: hashing a blob, patching the
few trees on its path and writing them as loose objects costs a few milliseconds even when a folder holds
ten thousand notes, where `update-index` + `write-tree` rewrote an index and re-checked every entry.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import zlib
from array import array
from collections.abc import Iterable
from itertools import accumulate
from pathlib import Path
from typing import Any

__all__ = ["DIR_MODE", "Entries", "Tree", "parse_tree", "read_loose", "serialize_tree", "write_loose"]

DIR_MODE = "40000"
STORE_OVER = 1024 * 1024  # an object bigger than this is written without compression
PATCH_LIMIT = 16  # entries changed at once past which a tree is built again rather than spliced
Entries = dict[str, tuple[str, str]]  # name -> (mode, hex sha)


def object_path(objects: Path, sha: str) -> Path:
    return objects / sha[:2] / sha[2:]


def write_loose(objects: Path, kind: str, data: bytes) -> str:
    """Store an object as git does (zlib of '<kind> <size>\\0<data>', named by its SHA-1); returns the SHA-1.

    `objects` is the repository's objects folder of a SHA-1 repository. An object already stored has
    its time refreshed, as git does: `git gc` prunes only unreachable objects older than two weeks, and
    the commit about to reference this one must not lose it to a prune running now.
    """
    header = f"{kind} {len(data)}\0".encode()
    digest = hashlib.sha1(header)
    digest.update(data)
    sha = digest.hexdigest()
    path = object_path(objects, sha)
    try:
        os.utime(path)
        return sha
    except OSError:
        pass  # not stored yet (or another user's file we may not touch: a fresh copy replaces it)
    # git's own default is level 1; a tree of a folder of tens of thousands of notes (megabytes, rewritten
    # by every commit to it) is stored, not compressed: 30 ms less per write at 60,000 notes, and the
    # housekeeping packs it (with deltas) once the bytes written add up (git.HOUSEKEEPING_BYTES).
    packed = _stored(header, data) if len(data) > STORE_OVER else zlib.compress(header + data, 1)
    # One temp file per thread: two threads storing the same object must not write into one file.
    tmp = path.parent / f"tmp_obj_{os.getpid()}_{threading.get_ident()}_{sha[:12]}"
    for attempt in range(5):
        # `git prune` (run by gc) removes an empty fan-out folder at any moment, also between our
        # mkdir and our write, or between mkdir's "exists" and its check that it is a folder
        # (FileExistsError): make it again and retry, as git's own object writer does.
        try:
            path.parent.mkdir(exist_ok=True)
            with open(tmp, "wb") as handle:
                handle.writelines([packed] if isinstance(packed, bytes) else packed)
            os.replace(tmp, path)
            return sha
        except (FileNotFoundError, FileExistsError):
            if attempt == 4:
                raise
    return sha


def _stored(header: bytes, data: bytes) -> list[bytes | memoryview]:
    """`header + data` as a zlib stream of stored (uncompressed) blocks, what zlib level 0 writes, without
    copying the data through zlib: pieces for one `writelines`."""
    view = memoryview(data)
    pieces: list[bytes | memoryview] = [b"\x78\x01", _block(len(header), last=not view), header]
    for at in range(0, len(view), 65535):
        part = view[at : at + 65535]
        pieces += [_block(len(part), last=at + 65535 >= len(view)), part]
    return [*pieces, zlib.adler32(data, zlib.adler32(header)).to_bytes(4, "big")]


def _block(size: int, last: bool) -> bytes:
    """The header of a stored deflate block of `size` bytes (at most 65,535)."""
    return bytes([1 if last else 0]) + size.to_bytes(2, "little") + (size ^ 0xFFFF).to_bytes(2, "little")


def read_loose(objects: Path, sha: str) -> tuple[str, bytes] | None:
    """(kind, data) of a loose object, or None when it is packed (or missing)."""
    try:
        raw = zlib.decompress(object_path(objects, sha).read_bytes())
    except (OSError, zlib.error):
        return None
    header, _, data = raw.partition(b"\0")
    kind, _, size = header.decode("ascii", "replace").partition(" ")
    return (kind, data) if size.isdigit() and int(size) == len(data) else None


def _key(name: str, mode: str) -> bytes:
    # git orders entries by name, a folder as if its name ended with '/'.
    raw = name.encode("utf-8", "surrogateescape")
    return raw + b"/" if mode == DIR_MODE else raw


def _item(name: str, mode: str, sha: str) -> bytes:
    return mode.encode() + b" " + name.encode("utf-8", "surrogateescape") + b"\0" + bytes.fromhex(sha)


class Tree:
    """A tree object as git stores it: its data, and where each entry starts.

    Patching one entry of a folder of tens of thousands of notes is a binary search over the entries and
    one splice of the data: no list of entries is copied, re-sorted or joined on each commit, and a
    60,000-note folder is its 3.6 MB of data plus 0.5 MB of offsets in memory (not 60,000 objects).
    """

    __slots__ = ("_data", "_starts")

    def __init__(self, data: bytes, starts: Any) -> None:
        self._data, self._starts = data, starts

    @classmethod
    def build(cls, entries: Entries) -> Tree:
        order = sorted(entries, key=lambda name: _key(name, entries[name][0]))
        items = [_item(n, *entries[n]) for n in order]
        return cls(
            b"".join(items), _offsets(accumulate((len(i) for i in items[:-1]), initial=0) if items else [])
        )

    @classmethod
    def parse(cls, data: bytes) -> Tree:
        """A tree from a tree object's data (already in git's order)."""
        starts = []
        at = 0
        while at < len(data):
            starts.append(at)
            at = data.index(b"\0", at) + 21
        return cls(bytes(data), _offsets(starts))

    def __len__(self) -> int:
        return len(self._starts)

    def _span(self, i: int) -> tuple[int, int]:
        end = int(self._starts[i + 1]) if i + 1 < len(self._starts) else len(self._data)
        return int(self._starts[i]), end

    def _key_at(self, i: int) -> bytes:
        start, _ = self._span(i)
        space = self._data.index(b" ", start)
        nul = self._data.index(b"\0", space)
        name = self._data[space + 1 : nul]
        return name + b"/" if self._data[start:space] == DIR_MODE.encode() else name

    def _position(self, key: bytes) -> int:
        """The index of the first entry whose key is not below `key`."""
        lo, hi = 0, len(self._starts)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._key_at(mid) < key:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _find(self, name: str) -> int | None:
        raw = name.encode("utf-8", "surrogateescape")
        for key in (raw, raw + b"/"):  # a file, or a folder of that name
            at = self._position(key)
            if at < len(self._starts) and self._key_at(at) == key:
                return at
        return None

    def get(self, name: str) -> tuple[str, str] | None:
        """(mode, hex sha) of the entry `name`, or None."""
        at = self._find(name)
        if at is None:
            return None
        start, end = self._span(at)
        return _entry(self._data[start:end])[1]

    @property
    def entries(self) -> Entries:
        """Every entry, name -> (mode, hex sha), in git's order."""
        return dict(_entry(self._data[slice(*self._span(i))]) for i in range(len(self._starts)))

    def patched(self, changes: dict[str, tuple[str, str] | None]) -> Tree:
        """A new tree with entries set (mode, sha) or removed (None)."""
        if len(changes) > PATCH_LIMIT:  # a bulk change: one rebuild, not a splice of the data per entry
            entries = self.entries
            for name, entry in changes.items():
                if entry is None:
                    entries.pop(name, None)
                else:
                    entries[name] = entry
            return Tree.build(entries)
        data, starts = self._data, self._starts
        for name, entry in changes.items():
            tree = Tree(data, starts)
            old = tree._find(name)
            if old is not None:
                start, end = tree._span(old)
                data = _joined(data, start, end, b"")
                starts = _spliced(starts, old, None, start - end)
            if entry is not None:
                item = _item(name, *entry)
                at = Tree(data, starts)._position(_key(name, entry[0]))
                offset = int(starts[at]) if at < len(starts) else len(data)
                data = _joined(data, offset, offset, item)
                starts = _spliced(starts, at, offset, len(item))
        return Tree(data, starts)

    def data(self) -> bytes:
        return self._data


def _joined(data: bytes, start: int, end: int, item: bytes) -> bytes:
    """`data` with `data[start:end]` replaced by `item`, copied once (a folder's tree is megabytes)."""
    view = memoryview(data)
    return b"".join((view[:start], item, view[end:]))


def _offsets(values: Iterable[int]) -> Any:
    """Entry offsets as a numpy array when numpy is loaded already (a server), else a Python array: a
    hook's one write must not pay for importing numpy, a server's many writes into a 60,000-note
    folder must not pay 6 ms each for shifting offsets in Python."""
    if "numpy" in sys.modules:
        import numpy as np

        return np.fromiter(values, dtype=np.int64)
    return array("q", values)


def _spliced(starts: Any, at: int, offset: int | None, shift: int) -> Any:
    """`starts` with the entry at `at` removed (offset None) or `offset` inserted there, and every later
    entry moved by `shift` bytes."""
    if isinstance(starts, array) and "numpy" in sys.modules and len(starts) > 4096:
        starts = _offsets(starts)  # numpy was loaded since (the server's caches opened)
    if isinstance(starts, array):
        tail = starts[at + (1 if offset is None else 0) :]
        head = starts[:at] + (array("q") if offset is None else array("q", [offset]))
        return head + array("q", (x + shift for x in tail))
    import numpy as np

    if offset is None:
        out = np.delete(starts, at)
        out[at:] += shift
    else:
        out = np.insert(starts, at, offset)
        out[at + 1 :] += shift
    return out


def _entry(item: bytes) -> tuple[str, tuple[str, str]]:
    space = item.index(b" ")
    nul = item.index(b"\0", space)
    name = item[space + 1 : nul].decode("utf-8", "surrogateescape")
    return name, (item[:space].decode("ascii"), item[nul + 1 : nul + 21].hex())


def parse_tree(data: bytes) -> Entries:
    """The entries of a tree object's data."""
    return Tree.parse(data).entries


def serialize_tree(entries: Entries) -> bytes:
    """A tree object's data, entries in git's order (a folder sorts as if its name ended with '/')."""
    return Tree.build(entries).data()
