"""The person's git index brought in step with a commit rlm-vault made, in-process, as git would write it.

After each commit the files it took must show as committed in `git status`, so `.git/index` gets their new
blob names and stat data. `git update-index` reads the whole index to do that: at 100,000 notes, a 26 ms
read of an 11 MB shared index for one new entry. A vault's index is split (`core.splitIndex`, set by
`Git.tune`): `.git/index` holds only the entries changed since the shared index was written, a link to the
shared index and two bitmaps (entries deleted or replaced there). A changed or new file is one more entry
in that small file: git, reading it, lets an entry there take the place of the shared entry of the same
path (split-index.c `merge_base_index` -> `add_index_entry`). This module writes exactly that, under git's
own `index.lock`, with the file's stat data taken before its content was hashed, so that a file changed
since shows as changed.

Anything it does not do as git would is left to git (`Outcome.GIT`): a removed path (its bit in the shared
index's delete bitmap needs the position of the entry there), an index that is not split, an index version
or required extension this does not know, a merge in progress, a conflicted path, a file that changed while
it was hashed. Once the small file holds a fifth of the shared one's entries (git's own default, within
RESPLIT_FLOOR and RESPLIT_CAP so that reading it stays cheap), git writes a new shared index
(`Outcome.RESPLIT`).
"""

from __future__ import annotations

import enum
import hashlib
import os
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

__all__ = ["Held", "LockFile", "Outcome", "PersonIndex", "Staged"]

RESPLIT_CAP = 500  # entries in the small file past which git writes a new shared index
RESPLIT_SHARE = 5  # ... or a fifth of the shared index's entries (splitIndex.maxPercentChange = 20)
RESPLIT_FLOOR = 64  # ... but never fewer: a small vault's index is cheap to read either way
# Seconds after which a write touches the shared index it links to, as git does: one in use stays younger
# than any expiry (git.SHARED_INDEX_EXPIRE), and a reader that opened the index just before a new shared
# index was written still finds it.
FRESHEN_AFTER = 600.0
_HEAD = struct.Struct(">4sII")
_EXTENDED = 0x4000
_STAGE = 0x3000
_NAME_MASK = 0xFFF
# Extensions kept as they are (resolve-undo, the link to the shared index) or rewritten (the cached
# trees); every other optional one (uppercase) describes entries or offsets this rewrite would make
# stale, and git rebuilds it when it wants it: untracked cache, fsmonitor, offset tables.
_KEPT = frozenset([b"REUC", b"link"])


class Outcome(enum.Enum):
    DONE = "done"  # the index shows the staged files
    GIT = "git"  # `git update-index` must do it
    RESPLIT = "resplit"  # ... and write a new shared index


class Held(Exception):
    """Another git holds `index.lock`: nothing was written; try again later."""


@dataclass(frozen=True)
class Staged:
    """A file as committed: its path, git mode (0o100644 or 0o100755), blob name and stat before reading."""

    path: str
    mode: int
    sha: str
    stat: os.stat_result


@dataclass
class _Entry:
    head: bytes  # stat data, object name, flags (and extended flags): 62 or 64 bytes
    name: bytes
    raw: bytes = b""  # the entry as the file holds it...
    after: bytes = b""  # ... written after the entry of this name (version 4 names share prefixes)

    @property
    def stage(self) -> int:
        return (int.from_bytes(self.head[60:62], "big") & _STAGE) >> 12


@dataclass
class _Parsed:
    version: int
    entries: list[_Entry]  # replacements of shared entries first (no name), then the others by name
    extensions: list[tuple[bytes, bytes]]


class LockFile:
    """git's lock-file protocol for `target` (the index here, a branch ref in `git.Git._swap_head`):
    `<target>.lock` created exclusively (FileExistsError while another git holds it), written through
    `handle`, renamed over `target` by `commit()`; left without a commit (an error, a compare that
    failed), it is removed and `target` is as it was."""

    def __init__(self, target: Path, mode: int = 0o666) -> None:
        self.target = target
        self.path = target.with_name(target.name + ".lock")
        self.handle = os.fdopen(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb")
        self._done = False

    def commit(self) -> None:
        self.handle.close()
        os.replace(self.path, self.target)
        self._done = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        if not self._done:
            self.handle.close()
            self.path.unlink(missing_ok=True)


class PersonIndex:
    """The person's index of one repository (`<git_dir>/index`), kept parsed between this process's writes:
    while the file is the one it wrote last (same inode, size and times), it is not read again."""

    def __init__(self, git_dir: Path) -> None:
        self.git_dir = git_dir
        self._known: tuple[tuple[int, ...], _Parsed] | None = None

    def stage(self, staged: Sequence[Staged]) -> Outcome:
        """Show `staged` in the index; raises Held when another git holds its lock."""
        if not staged or (self.git_dir / "MERGE_HEAD").exists():
            return Outcome.GIT
        index = self.git_dir / "index"
        try:
            lock = LockFile(index)
        except FileExistsError:
            raise Held(str(index) + ".lock") from None
        except OSError:
            return Outcome.GIT
        known, self._known = self._known, None
        try:
            with lock:
                parsed = self._read(index, known)
                if parsed is None:
                    return Outcome.GIT
                outcome, data = _rewritten(self.git_dir, parsed, staged)
                if outcome is Outcome.DONE:
                    lock.handle.write(data)
                    lock.commit()
                    self._known = (_identity(index.stat()), parsed)
                return outcome
        except OSError:
            return Outcome.GIT

    @staticmethod
    def _read(index: Path, known: tuple[tuple[int, ...], _Parsed] | None) -> _Parsed | None:
        try:
            if known is not None and _identity(index.stat()) == known[0]:
                return known[1]
            return _parse(index.read_bytes())
        except OSError:
            return None


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _rewritten(git_dir: Path, parsed: _Parsed, staged: Sequence[Staged]) -> tuple[Outcome, bytes]:
    """The index file with `staged` in it; `parsed` becomes what it holds (DONE only)."""
    version, entries, extensions = parsed.version, parsed.entries, parsed.extensions
    link = dict(extensions).get(b"link")
    if link is None or len(link) < 20:
        return Outcome.GIT, b""
    shared = git_dir / f"sharedindex.{link[:20].hex()}"
    base = _entry_count(shared)
    if base is None:
        return Outcome.GIT, b""
    replaced = [e for e in entries if not e.name]
    own = {e.name: e for e in entries if e.name}
    if any(e.name for e in entries[: len(replaced)]) or len(own) != len(entries) - len(replaced):
        return Outcome.GIT, b""  # replacements first, one entry per path: all git ever writes here
    for item in staged:
        name = item.path.encode("utf-8", "surrogateescape")
        old = own.get(name)
        if (old is not None and old.stage) or not name or b"\0" in name:
            return Outcome.GIT, b""
        if version < 3 and len(name) > _NAME_MASK:
            return Outcome.GIT, b""
        own[name] = _Entry(_entry_head(item, len(name)), name)
    if len(replaced) + len(own) > min(RESPLIT_CAP, max(base // RESPLIT_SHARE, RESPLIT_FLOOR)):
        return Outcome.RESPLIT, b""
    ordered = [*replaced, *(own[name] for name in sorted(own))]
    body = [_HEAD.pack(b"DIRC", version, len(ordered))]
    previous = b""
    for entry in ordered:
        body.append(_encode(entry, version, previous))
        previous = entry.name
    paths = [item.path.encode("utf-8", "surrogateescape") for item in staged]
    kept = []
    for signature, content in extensions:
        if signature == b"TREE":
            try:
                content = _invalidated(content, paths)
            except ValueError:
                continue  # unreadable: git rebuilds the cached trees when it wants them
        elif signature not in _KEPT:
            continue
        kept.append((signature, content))
        body.append(signature + len(content).to_bytes(4, "big") + content)
    out = b"".join(body)
    _freshen(shared)
    parsed.entries, parsed.extensions = ordered, kept
    return Outcome.DONE, out + hashlib.sha1(out).digest()


def _parse(data: bytes) -> _Parsed | None:
    """An index file's version, entries and extensions; None for anything this module does not write."""
    if len(data) < _HEAD.size + 20:
        return None
    signature, version, count = _HEAD.unpack_from(data)
    if signature != b"DIRC" or version not in (2, 3, 4):
        return None
    end = len(data) - 20
    if data[end:] != bytes(20) and hashlib.sha1(memoryview(data)[:end]).digest() != data[end:]:
        return None
    entries: list[_Entry] = []
    pos, previous = _HEAD.size, b""
    try:
        for _ in range(count):
            begin = pos
            flags = int.from_bytes(data[pos + 60 : pos + 62], "big")
            size = 62
            if flags & _EXTENDED:
                if version < 3:
                    return None
                size = 64
            head = data[pos : pos + size]
            if version == 4:
                strip, start = _varint(data, pos + size)
                stop = data.index(b"\0", start)
                if strip > len(previous):
                    return None
                name = previous[: len(previous) - strip] + data[start:stop]
                pos = stop + 1
            else:
                start = pos + size
                stop = (
                    data.index(b"\0", start)
                    if flags & _NAME_MASK == _NAME_MASK
                    else start + (flags & _NAME_MASK)
                )
                name = data[start:stop]
                pos += (size + len(name) + 8) & ~7
            entries.append(_Entry(head, name, data[begin:pos], previous))
            previous = name
    except (ValueError, IndexError):
        return None
    extensions: list[tuple[bytes, bytes]] = []
    while pos + 8 <= end:
        signature, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "big")
        if pos + 8 + size > end or (signature[:1].islower() and signature != b"link"):
            return None  # a required extension this does not know (a sparse index, say)
        extensions.append((signature, data[pos + 8 : pos + 8 + size]))
        pos += 8 + size
    return _Parsed(version, entries, extensions) if pos == end else None


def _entry_head(item: Staged, namelen: int) -> bytes:
    st = item.stat
    fields = (
        int(st.st_ctime_ns // 1_000_000_000),
        int(st.st_ctime_ns % 1_000_000_000),
        int(st.st_mtime_ns // 1_000_000_000),
        int(st.st_mtime_ns % 1_000_000_000),
        st.st_dev,
        st.st_ino,
        item.mode,
        st.st_uid,
        st.st_gid,
        st.st_size,
    )
    return (
        struct.pack(">10I", *(value & 0xFFFFFFFF for value in fields))
        + bytes.fromhex(item.sha)
        + min(namelen, _NAME_MASK).to_bytes(2, "big")
    )


def _encode(entry: _Entry, version: int, previous: bytes) -> bytes:
    """The entry as the file holds it after the entry named `previous` (and remembered so)."""
    if entry.raw and (version != 4 or entry.after == previous):
        return entry.raw
    if version == 4:
        common = 0
        limit = min(len(previous), len(entry.name))
        while common < limit and previous[common] == entry.name[common]:
            common += 1
        raw = entry.head + _encode_varint(len(previous) - common) + entry.name[common:] + b"\0"
    else:
        size = (len(entry.head) + len(entry.name) + 8) & ~7
        raw = (entry.head + entry.name).ljust(size, b"\0")
    entry.raw, entry.after = raw, previous
    return raw


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """git's offset varint (varint.c): returns the value and the position after it."""
    byte = data[pos]
    value = byte & 0x7F
    while byte & 0x80:
        pos += 1
        byte = data[pos]
        value = ((value + 1) << 7) | (byte & 0x7F)
    return value, pos + 1


def _encode_varint(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        value -= 1
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


@dataclass
class _Tree:
    name: bytes
    count: int  # index entries the tree covers; -1: invalid (no object name)
    sha: bytes
    children: list[_Tree]


def _invalidated(tree: bytes, paths: Sequence[bytes]) -> bytes:
    """The cached-tree extension with every tree along `paths` marked invalid (entry count -1)."""
    if not tree:
        return tree
    pos = 0

    def read() -> _Tree:
        nonlocal pos
        stop = tree.index(b"\0", pos)
        line = tree.index(b"\n", stop)
        count, subtrees = (int(x) for x in tree[stop + 1 : line].split(b" "))
        node = _Tree(tree[pos:stop], count, b"", [])
        pos = line + 1
        if count >= 0:
            node.sha, pos = tree[pos : pos + 20], pos + 20
        node.children = [read() for _ in range(subtrees)]
        return node

    def write(node: _Tree) -> bytes:
        head = node.name + b"\0" + f"{node.count} {len(node.children)}\n".encode()
        return head + (node.sha if node.count >= 0 else b"") + b"".join(map(write, node.children))

    root = read()
    for path in paths:
        trail = [root]
        for part in path.split(b"/")[:-1]:
            child = next((child for child in trail[-1].children if child.name == part), None)
            if child is None:
                break
            trail.append(child)
        for node in trail:
            node.count = -1
    return write(root)


def _entry_count(shared: Path) -> int | None:
    try:
        with open(shared, "rb") as handle:
            head = handle.read(_HEAD.size)
    except OSError:
        return None
    if len(head) != _HEAD.size:
        return None
    signature, _, count = _HEAD.unpack(head)
    return int(count) if signature == b"DIRC" else None


def _freshen(shared: Path) -> None:
    """Touch the shared index as git does when it writes an index linked to it, so no cleanup expires it."""
    try:
        if time.time() - shared.stat().st_mtime > FRESHEN_AFTER:
            os.utime(shared)
    except OSError:
        pass
