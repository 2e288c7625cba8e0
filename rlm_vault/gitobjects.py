"""Git's object format, in-process: loose objects and tree entries, no git process.

Used for the common case of a commit of files rlm-vault itself just wrote: hashing a blob, patching the
few trees on its path and writing them as loose objects costs a few milliseconds even when a folder holds
ten thousand notes, where `update-index` + `write-tree` rewrote an index and re-checked every entry.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import zlib
from pathlib import Path

__all__ = ["DIR_MODE", "Entries", "Tree", "parse_tree", "read_loose", "serialize_tree", "write_loose"]

DIR_MODE = "40000"
STORE_OVER = 1024 * 1024  # an object bigger than this is written without compression
Entries = dict[str, tuple[str, str]]  # name -> (mode, hex sha)


def object_path(objects: Path, sha: str) -> Path:
    return objects / sha[:2] / sha[2:]


def write_loose(objects: Path, kind: str, data: bytes) -> str:
    """Store an object as git does (zlib of '<kind> <size>\\0<data>', named by its SHA-1); returns the SHA-1.

    `objects` is the repository's objects folder of a SHA-1 repository. An object already stored has
    its time refreshed, as git does: `git gc` prunes only unreachable objects older than two weeks, and
    the commit about to reference this one must not lose it to a prune running now.
    """
    raw = f"{kind} {len(data)}\0".encode() + data
    sha = hashlib.sha1(raw).hexdigest()
    path = object_path(objects, sha)
    try:
        os.utime(path)
        return sha
    except OSError:
        pass  # not stored yet (or another user's file we may not touch: a fresh copy replaces it)
    # git's own default is level 1; a tree of a folder of tens of thousands of notes (megabytes, rewritten
    # by every commit to it) is stored, not compressed: 30 ms less per write at 60,000 notes, and the
    # housekeeping packs it (with deltas) once the bytes written add up (git.HOUSEKEEPING_BYTES).
    packed = zlib.compress(raw, 0 if len(raw) > STORE_OVER else 1)
    tmp = path.parent / f"tmp_obj_{os.getpid()}_{sha[:12]}"
    for attempt in range(5):
        # `git prune` (run by gc) removes an empty fan-out folder at any moment, also between our
        # mkdir and our write: make it again and retry, as git's own object writer does.
        try:
            path.parent.mkdir(exist_ok=True)
            tmp.write_bytes(packed)
            os.replace(tmp, path)
            return sha
        except FileNotFoundError:
            if attempt == 4:
                raise
    return sha


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
    """A tree object's entries, kept in git's order with each entry already serialised.

    Patching one entry of a folder of ten thousand notes is a bisect and a list insert, and the object's
    data one `join`: no re-sorting or re-encoding of every entry on each commit. Entries are looked up
    by bisection too, so a tree holds two lists and no per-entry mapping (a 60,000-note folder is two
    lists of bytes that each patched version shares).
    """

    __slots__ = ("items", "keys")

    def __init__(self, keys: list[bytes], items: list[bytes]) -> None:
        self.keys, self.items = keys, items

    @classmethod
    def build(cls, entries: Entries) -> Tree:
        order = sorted(entries, key=lambda name: _key(name, entries[name][0]))
        return cls([_key(n, entries[n][0]) for n in order], [_item(n, *entries[n]) for n in order])

    @classmethod
    def parse(cls, data: bytes) -> Tree:
        """A tree from a tree object's data (already in git's order)."""
        keys: list[bytes] = []
        items: list[bytes] = []
        at = 0
        while at < len(data):
            space = data.index(b" ", at)
            nul = data.index(b"\0", space)
            name = data[space + 1 : nul]
            keys.append(name + b"/" if data[at:space] == DIR_MODE.encode() else name)
            items.append(data[at : nul + 21])
            at = nul + 21
        return cls(keys, items)

    def __len__(self) -> int:
        return len(self.items)

    def _find(self, name: str) -> int | None:
        raw = name.encode("utf-8", "surrogateescape")
        for key in (raw, raw + b"/"):  # a file, or a folder of that name
            at = bisect.bisect_left(self.keys, key)
            if at < len(self.keys) and self.keys[at] == key:
                return at
        return None

    def get(self, name: str) -> tuple[str, str] | None:
        """(mode, hex sha) of the entry `name`, or None."""
        at = self._find(name)
        return None if at is None else _entry(self.items[at])[1]

    @property
    def entries(self) -> Entries:
        """Every entry, name -> (mode, hex sha), in git's order."""
        return dict(_entry(item) for item in self.items)

    def patched(self, changes: dict[str, tuple[str, str] | None]) -> Tree:
        """A new tree with entries set (mode, sha) or removed (None)."""
        keys, items = list(self.keys), list(self.items)
        for name, entry in changes.items():
            old = Tree(keys, items)._find(name)
            if old is not None:
                del keys[old], items[old]
            if entry is not None:
                key = _key(name, entry[0])
                at = bisect.bisect_left(keys, key)
                keys.insert(at, key)
                items.insert(at, _item(name, *entry))
        return Tree(keys, items)

    def data(self) -> bytes:
        return b"".join(self.items)


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
