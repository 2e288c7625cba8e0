"""Immutable segments of the text index: numpy arrays in one file, memory-mapped by every reader.

A segment holds, for its documents (numbered 0..n-1): the sorted term vocabulary of every field with
CSR postings (doc numbers and term frequencies), the token count of each scored field, and the
columns filters and re-ranking read (ids, hashes, kind, project, dates, entities...). It is written
once under a fresh name and never changed: deletions live outside it (see `index.py`), and segments
are merged by `merge`, from their arrays alone. A segment is one file of raw arrays and a JSON header, so
nothing in a cache folder can run code; a missing, truncated or garbled file raises `CacheError`.
"""

from __future__ import annotations

import bisect
import json
import mmap
import os
import sys
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rlm_vault import textproc
from rlm_vault.errors import CacheError

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["COLUMNS", "FIELDS", "WORDS", "Document", "Segment", "SegmentData", "build", "merge", "write"]

FORMAT = 1
FIELDS = ("summary", "body", "meta")  # scored text fields, in the order of the `lengths` columns
WORDS = len(FIELDS)  # the fuzzy-grep field: folded words, stop words kept, no frequencies needed
_BODY = FIELDS.index("body")
COLUMNS = ("kind", "project", "domain", "category", "importance", "role")  # small sets of values
_SEP = "\x00"

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Document:
    """One document as a segment stores it: texts to analyse, columns to keep."""

    id: str
    sha256: str
    created: str
    size: int
    columns: tuple[str, ...]  # in COLUMNS order
    entities: tuple[str, ...]
    texts: tuple[str, ...]  # in FIELDS order; fuzzy grep's words are those of the body


@dataclass(slots=True)
class SegmentData:
    """A segment's arrays in memory, before `write`."""

    arrays: dict[str, np.ndarray]
    count: int


def _key(field: int, term: str) -> bytes:
    return bytes((field,)) + term.encode("utf-8", "surrogatepass")


def _joined(values: Sequence[str]) -> np.ndarray:
    """Strings as one NUL-separated UTF-8 blob (a NUL inside a value is dropped)."""
    text = _SEP.join(v.replace(_SEP, "") for v in values)
    return np.frombuffer(text.encode("utf-8", "surrogatepass"), dtype=np.uint8).copy()


def _split(blob: np.ndarray, count: int) -> list[str]:
    """The strings of a `_joined` blob; a count that does not match means the file is damaged."""
    values = blob.tobytes().decode("utf-8", "surrogatepass").split(_SEP) if count else []
    if len(values) != count:
        raise ValueError(f"expected {count} strings, found {len(values)}")
    return values


def _vocabulary(keys: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted byte keys as a blob and their offsets (len + 1)."""
    offsets = np.zeros(len(keys) + 1, dtype=np.int64)
    np.cumsum([len(k) for k in keys], out=offsets[1:])
    return np.frombuffer(b"".join(keys), dtype=np.uint8).copy(), offsets


def _csr(keys: list[bytes], key_of: np.ndarray, docs: np.ndarray, tfs: np.ndarray | None) -> dict[str, Any]:
    """Postings grouped by sorted key: `keys` may repeat (they are unified), docs ascend per key."""
    unique = sorted(set(keys))
    rank = {k: i for i, k in enumerate(unique)}
    remap = np.fromiter((rank[k] for k in keys), dtype=np.int32, count=len(keys))
    del rank
    terms = remap[key_of] if len(key_of) else np.zeros(0, dtype=np.int32)
    post_offsets = np.zeros(len(unique) + 1, dtype=np.int64)
    np.cumsum(np.bincount(terms, minlength=len(unique)), out=post_offsets[1:])
    order = np.argsort(terms, kind="stable")  # stable: postings were appended in doc order
    del terms
    blob, key_offsets = _vocabulary(unique)
    out = {"keys": blob, "key_offsets": key_offsets, "offsets": post_offsets, "docs": docs[order]}
    if tfs is not None:
        out["tfs"] = tfs[order]
    return out


def _small(values: np.ndarray) -> np.ndarray:
    return values.astype(np.uint16) if not len(values) or values.max() < 65536 else values.astype(np.uint32)


def build(docs: Sequence[Document], progress: Progress | None = None) -> SegmentData:
    """Analyse `docs` into one segment's arrays."""
    term_ids: dict[bytes, int] = {}
    key_of, doc_of, tf_of = array("i"), array("i"), array("I")
    lengths = np.zeros((len(docs), len(FIELDS)), dtype=np.uint32)
    entity_ids: dict[bytes, int] = {}
    ent_key, ent_doc = array("i"), array("i")
    for n, doc in enumerate(docs):
        words: Iterable[str] = ()
        for field, text in enumerate(doc.texts):
            if field == _BODY:
                tokens, vocabulary = textproc.analyse(text)
                words = sorted(vocabulary)
            else:
                tokens = textproc.tokens(text) if text else []
            lengths[n, field] = len(tokens)
            for term, tf in Counter(tokens).items():
                key = _key(field, term)
                key_of.append(term_ids.setdefault(key, len(term_ids)))
                doc_of.append(n)
                tf_of.append(tf)
        for word in words:
            key_of.append(term_ids.setdefault(_key(WORDS, word), len(term_ids)))
            doc_of.append(n)
            tf_of.append(1)
        for entity in dict.fromkeys(_entity_tokens(doc.entities)):
            ent_key.append(entity_ids.setdefault(entity.encode("utf-8", "surrogatepass"), len(entity_ids)))
            ent_doc.append(n)
        if progress and ((n + 1) % 200 == 0 or n + 1 == len(docs)):
            progress(n + 1, len(docs))
    arrays = _columns(docs)
    arrays["lengths"] = lengths
    postings = _csr(list(term_ids), np.frombuffer(key_of, dtype=np.int32), _docs(doc_of), _tfs(tf_of))
    arrays.update({f"terms_{k}": v for k, v in postings.items()})
    entities = _csr(list(entity_ids), np.frombuffer(ent_key, dtype=np.int32), _docs(ent_doc), None)
    arrays.update({f"entities_{k}": v for k, v in entities.items()})
    return SegmentData(arrays, len(docs))


def _docs(values: array[int]) -> np.ndarray:
    return np.frombuffer(values, dtype=np.int32).copy() if len(values) else np.zeros(0, dtype=np.int32)


def _tfs(values: array[int]) -> np.ndarray:
    return _small(np.frombuffer(values, dtype=np.uint32)) if len(values) else np.zeros(0, dtype=np.uint16)


def _entity_tokens(entities: Iterable[str]) -> Iterable[str]:
    """Entities as the entity filter compares them: split at commas, stripped, lowercased."""
    for entity in entities:
        for part in entity.split(","):
            if part := part.strip().lower():
                yield part


def _columns(docs: Sequence[Document]) -> dict[str, np.ndarray]:
    arrays = {
        "ids": _joined([d.id for d in docs]),
        "sha": _joined([d.sha256 for d in docs]),
        "created": np.array([d.created.encode("utf-8", "surrogatepass") for d in docs], dtype=np.bytes_)
        if docs
        else np.zeros(0, dtype="S1"),
        "size": np.array([d.size for d in docs], dtype=np.int64),
    }
    for i, name in enumerate(COLUMNS):
        values = [d.columns[i] for d in docs]
        table = sorted(set(values))
        code = {v: c for c, v in enumerate(table)}
        arrays[f"col_{name}"] = np.array([code[v] for v in values], dtype=np.int32)
        arrays[f"col_{name}_values"] = _joined(table)
        arrays[f"col_{name}_count"] = np.array([len(table)], dtype=np.int64)
    return arrays


MAGIC = b"RLMSEGMENT\n"
_ALIGN = 64


def write(data: SegmentData, folder: Path, name: str) -> None:
    """Write `data` as `folder/name.arrays`, one file (`name` is published only once this returns).

    Layout: MAGIC, an 8-byte little-endian header size, a JSON header (format, document count and,
    per array, dtype, shape and offset), then the arrays, each aligned to 64 bytes.
    """
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {key: np.ascontiguousarray(values) for key, values in data.arrays.items()}
    entries: dict[str, dict[str, Any]] = {}
    offsets: dict[str, int] = {}
    offset = 0
    for key, values in arrays.items():
        offsets[key] = offset
        entries[key] = {"dtype": values.dtype.str, "shape": list(values.shape), "offset": offset}
        offset += -(-values.nbytes // _ALIGN) * _ALIGN
    header = json.dumps({"format": FORMAT, "count": data.count, "arrays": entries}).encode()
    start = -(-(len(MAGIC) + 8 + len(header)) // _ALIGN) * _ALIGN
    with (folder / f"{name}.arrays").open("wb") as file:
        file.write(MAGIC + len(header).to_bytes(8, "little") + header)
        for key, values in arrays.items():
            file.seek(start + offsets[key])
            file.write(values.data if values.size else b"")
        file.truncate(start + offset)


def _open(path: Path) -> tuple[int, dict[str, np.ndarray]]:
    """The document count and arrays of a segment file, memory-mapped read-only."""
    with path.open("rb") as file:
        head = file.read(len(MAGIC) + 8)
        if head[: len(MAGIC)] != MAGIC or len(head) < len(MAGIC) + 8:
            raise ValueError(f"{path.name} is not a segment file")
        info = json.loads(file.read(int.from_bytes(head[len(MAGIC) :], "little")))
        if info["format"] != FORMAT:
            raise ValueError(f"segment format {info['format']}, expected {FORMAT}")
        size = os.fstat(file.fileno()).st_size
        start = -(-file.tell() // _ALIGN) * _ALIGN
        mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    arrays = {}
    for key, entry in info["arrays"].items():
        dtype = np.dtype(entry["dtype"])
        if dtype.hasobject:
            raise ValueError(f"{path.name}: {key} holds Python objects")
        shape = tuple(int(n) for n in entry["shape"])
        begin = start + int(entry["offset"])
        count = int(np.prod(shape))
        if begin + count * dtype.itemsize > size:
            raise ValueError(f"{path.name} is truncated ({key} ends past {size} bytes)")
        arrays[key] = np.frombuffer(mapped, dtype=dtype, count=count, offset=begin).reshape(shape)
    return int(info["count"]), arrays


class Segment:
    """A written segment, opened read-only; its arrays are shared with every process through the page cache."""

    def __init__(self, folder: Path, name: str) -> None:
        self.name = name
        try:
            self.count, self._a = _open(folder / f"{name}.arrays")
            self._check()
            self.ids = list(
                map(sys.intern, _split(self._a["ids"], self.count))
            )  # shared with the other caches
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise CacheError(f"index segment {name} in {folder} is damaged: {exc!r}") from exc
        self._entities: list[str] | None = None
        self._columns: dict[str, list[str]] = {}

    def _check(self) -> None:
        a, n = self._a, self.count
        for name in ("sha", "ids"):
            if a[name].dtype != np.uint8:
                raise ValueError(f"{name} has dtype {a[name].dtype}")
        if a["lengths"].shape != (n, len(FIELDS)) or len(a["created"]) != n or len(a["size"]) != n:
            raise ValueError("per-document arrays disagree with the document count")
        for prefix in ("terms_", "entities_"):
            offsets, key_offsets = a[prefix + "offsets"], a[prefix + "key_offsets"]
            if len(offsets) != len(key_offsets) or int(offsets[-1]) != len(a[prefix + "docs"]):
                raise ValueError(f"{prefix}postings disagree with their offsets")
            if int(key_offsets[-1]) != len(a[prefix + "keys"]):
                raise ValueError(f"{prefix}keys disagree with their offsets")
        if len(a["terms_tfs"]) != len(a["terms_docs"]):
            raise ValueError("term frequencies disagree with postings")
        for name in COLUMNS:
            if len(a[f"col_{name}"]) != n:
                raise ValueError(f"column {name} disagrees with the document count")

    def array(self, name: str) -> np.ndarray:
        return self._a[name]

    @property
    def lengths(self) -> np.ndarray:
        return self._a["lengths"]

    @property
    def created(self) -> np.ndarray:
        return self._a["created"]

    def shas(self) -> list[str]:
        """The content hash of every document, in doc order."""
        return _split(self._a["sha"], self.count)

    def column(self, name: str) -> list[str]:
        """The value of column `name` of every document, in doc order."""
        table = self.values(name)
        return [table[c] for c in self._a[f"col_{name}"].tolist()]

    def values(self, name: str) -> list[str]:
        """The distinct values of column `name`, indexed by code."""
        if name not in self._columns:
            self._columns[name] = _split(self._a[f"col_{name}_values"], int(self._a[f"col_{name}_count"][0]))
        return self._columns[name]

    def codes(self, name: str) -> np.ndarray:
        return self._a[f"col_{name}"]

    def postings(self, field: int, term: str) -> tuple[np.ndarray, np.ndarray]:
        """(doc numbers, term frequencies) of `term` in `field`; empty arrays when absent."""
        i = self._find("terms_", _key(field, term))
        if i < 0:
            return _EMPTY_DOCS, _EMPTY_DOCS
        offsets = self._a["terms_offsets"]
        start, end = int(offsets[i]), int(offsets[i + 1])
        return self._a["terms_docs"][start:end], self._a["terms_tfs"][start:end]

    def _find(self, prefix: str, key: bytes) -> int:
        keys = _Keys(self._a[prefix + "keys"], self._a[prefix + "key_offsets"])
        i = bisect.bisect_left(keys, key)
        return i if i < len(keys) and keys[i] == key else -1

    def entity_docs(self, needle: str) -> np.ndarray:
        """Doc numbers with an entity containing `needle` (lowercase)."""
        if self._entities is None:
            keys = _Keys(self._a["entities_keys"], self._a["entities_key_offsets"])
            self._entities = [k.decode("utf-8", "surrogatepass") for k in keys]
        offsets, docs = self._a["entities_offsets"], self._a["entities_docs"]
        parts = [docs[offsets[i] : offsets[i + 1]] for i, e in enumerate(self._entities) if needle in e]
        return np.unique(np.concatenate(parts)) if parts else _EMPTY_DOCS

    def words(self) -> list[str]:
        """Every fuzzy-grep word of this segment."""
        keys = _Keys(self._a["terms_keys"], self._a["terms_key_offsets"])
        lo = bisect.bisect_left(keys, bytes((WORDS,)))
        return [keys[i][1:].decode("utf-8", "surrogatepass") for i in range(lo, len(keys))]


_EMPTY_DOCS = np.zeros(0, dtype=np.int32)


class _Keys(Sequence[bytes]):
    """A sorted vocabulary blob seen as a sequence of byte strings, for `bisect`."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray) -> None:
        self._blob = blob
        self._offsets = offsets

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: Any) -> Any:
        return self._blob[self._offsets[i] : self._offsets[i + 1]].tobytes()


def merge(parts: Sequence[tuple[Segment, NDArray[np.bool_]]]) -> SegmentData:
    """One segment holding the live documents of `parts` (segment, live mask), in order."""
    arrays: dict[str, np.ndarray] = {}
    renumbered: list[np.ndarray] = []
    base = 0
    for segment, live in parts:
        numbers = np.full(segment.count, -1, dtype=np.int64)
        numbers[live] = np.arange(base, base + int(live.sum()))
        renumbered.append(numbers)
        base += int(live.sum())
    for prefix in ("terms_", "entities_"):
        arrays.update({prefix + k: v for k, v in _merge_postings(parts, renumbered, prefix).items()})
    arrays.update(_merge_columns(parts))
    return SegmentData(arrays, base)


def _merge_postings(
    parts: Sequence[tuple[Segment, np.ndarray]], renumbered: list[np.ndarray], prefix: str
) -> dict[str, Any]:
    keys: list[bytes] = []
    key_of, docs, tfs = [], [], []
    for (segment, _), numbers in zip(parts, renumbered, strict=True):
        offsets = np.asarray(segment.array(prefix + "offsets"))
        seg_keys = _Keys(segment.array(prefix + "keys"), segment.array(prefix + "key_offsets"))
        seg_docs = numbers[np.asarray(segment.array(prefix + "docs"))]
        kept = seg_docs >= 0
        local = np.repeat(np.arange(len(seg_keys), dtype=np.int64) + len(keys), np.diff(offsets))
        key_of.append(local[kept])
        docs.append(seg_docs[kept].astype(np.int32))
        if prefix == "terms_":
            tfs.append(np.asarray(segment.array("terms_tfs"))[kept].astype(np.uint32))
        keys.extend(seg_keys[i] for i in range(len(seg_keys)))
    all_tfs = _small(np.concatenate(tfs)) if prefix == "terms_" else None
    return _csr(keys, np.concatenate(key_of), np.concatenate(docs), all_tfs)


def _merge_columns(parts: Sequence[tuple[Segment, np.ndarray]]) -> dict[str, np.ndarray]:
    ids = [i for s, live in parts for i, keep in zip(s.ids, live.tolist(), strict=True) if keep]
    shas = [h for s, live in parts for h, keep in zip(s.shas(), live.tolist(), strict=True) if keep]
    arrays = {
        "ids": _joined(ids),
        "sha": _joined(shas),
        "created": np.concatenate([np.asarray(s.created)[live] for s, live in parts]),
        "size": np.concatenate([np.asarray(s.array("size"))[live] for s, live in parts]),
        "lengths": np.concatenate([np.asarray(s.lengths)[live] for s, live in parts]),
    }
    for name in COLUMNS:
        table = sorted({v for s, _ in parts for v in s.values(name)})
        code = {v: c for c, v in enumerate(table)}
        mapped = [
            np.array([code[v] for v in s.values(name)], dtype=np.int32)[np.asarray(s.codes(name))[live]]
            for s, live in parts
        ]
        arrays[f"col_{name}"] = np.concatenate(mapped) if mapped else np.zeros(0, dtype=np.int32)
        arrays[f"col_{name}_values"] = _joined(table)
        arrays[f"col_{name}_count"] = np.array([len(table)], dtype=np.int64)
    return arrays
