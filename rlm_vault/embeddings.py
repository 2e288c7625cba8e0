"""Semantic vectors: the `Embedder` protocol, the model2vec embedder (loaded in the background) and
the vector store, a `.npz` cache keyed by note id and content hash (never pickled objects) whose rows
live in a `.npy` file beside it, memory-mapped read-only so every process on the vault shares its pages.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from rlm_vault.errors import CacheError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from rlm_vault.index import SearchDoc
    from rlm_vault.modelcache import StaticEncoder
    from rlm_vault.modelserver import ModelClient

    Matrix = NDArray[np.float32]
else:
    Matrix = Any

__all__ = [
    "DISABLED",
    "Embedder",
    "Loadable",
    "Model2VecEmbedder",
    "VectorStore",
    "download_progress",
    "embed_text",
]

DISABLED = frozenset({"", "none", "off", "false", "0"})
log = logging.getLogger("rlm_vault")
VIA = ("service", "mapped", "memory")  # how Model2VecEmbedder holds its model (see its docstring)
Progress = Callable[[int, int], None]
BATCH = 256


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 rows of width `dim`."""

    name: str

    @property
    def dim(self) -> int: ...

    def embed(self, texts: list[str]) -> Matrix: ...


@runtime_checkable
class Loadable(Protocol):
    """An embedder that may still be loading, or may have failed to load."""

    def status(self) -> tuple[bool, str]: ...


def embedder_ready(embedder: Embedder | None) -> bool:
    """True when `embedder` can embed now (an embedder without `status()` always can)."""
    if embedder is None:
        return False
    return embedder.status()[0] if isinstance(embedder, Loadable) else True


def embed_text(doc: SearchDoc) -> str:
    """The text of a note that its vector represents."""
    return f"{doc.summary}\n{doc.body}" if doc.summary else doc.body


def normalise(vectors: Any) -> Matrix:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    import numpy as np

    matrix = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit: Matrix = (matrix / np.where(norms == 0, np.float32(1), norms)).astype(np.float32, copy=False)
    return unit


class Model2VecEmbedder:
    """A model2vec model (hub name or local folder) loaded in a background thread.

    `via` says how the model is held: "service" (default) sends texts to the one model process of the
    machine (`modelserver`), "mapped" memory-maps the machine-wide float16 copy (`modelcache`) in this
    process, "memory" loads it into this process only. Each falls back to the next if it cannot work.
    Until it has loaded, `status()` is (False, reason) and callers search with BM25 only; nothing
    ever waits for the load except `wait()`.
    """

    def __init__(
        self,
        model: str,
        max_length: int | None = 512,
        *,
        cache_dir: Path | None = None,
        dtype: str = "float16",
        via: str = "service",
    ) -> None:
        if via not in VIA:
            raise CacheError(f"model loading {via!r} is not one of {', '.join(VIA)}")
        self.name = model
        self.max_length = max_length
        self.cache_dir = cache_dir  # None: modelcache.default_model_cache()
        self.dtype = dtype
        self.via = via
        self._model: StaticEncoder | ModelClient | None = None
        self._dim = 0
        self._error = ""
        self._where = ""  # how the model is held, for status()
        self._thread: threading.Thread | None = None
        self._started = threading.Lock()
        self._since = 0.0  # time.time() when loading started: files the download wrote since then

    @property
    def disabled(self) -> bool:
        return self.name.strip().lower() in DISABLED

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def folder(self) -> Path | None:
        """The shared copy this process maps itself, or None (served, private, or not loaded)."""
        return getattr(self._model, "folder", None)

    def start_loading(self) -> None:
        """Start loading the model in a daemon thread (once; a no-op when disabled)."""
        with self._started:
            if self._thread is None and not self.disabled:
                self._since = time.time()
                self._thread = threading.Thread(target=self._load, name="rlm-vault-model", daemon=True)
                self._thread.start()

    def _load(self) -> None:
        try:
            model = self._open()
            self._dim = int(model.encode(["probe"]).shape[1])
            self._model = model
        except Exception as exc:  # noqa: BLE001 - an optional model failing in any way leaves BM25 on
            self._error = f"{type(exc).__name__}: {exc}".strip()

    def _open(self) -> StaticEncoder | ModelClient:
        """The first way that works: the model process, this process mapping the copy, a private load."""
        from rlm_vault.modelcache import load_in_memory, open_shared
        from rlm_vault.modelserver import ModelClient

        if self.via == "service":
            try:
                client = ModelClient(self.name, self.cache_dir, self.dtype, self.max_length)
                info = client.connect()
                self._where = f"served by the machine's model process from {info.get('folder')}"
                return client
            except CacheError as exc:
                log.warning("model %r: no model process (%s); loading it here", self.name, exc)
        if self.via in ("service", "mapped"):
            try:
                encoder = open_shared(self.name, self.cache_dir, self.dtype, self.max_length)
                self._where = f"mapped from {encoder.folder}"
                return encoder
            except CacheError as exc:  # e.g. a read-only cache folder: still search by meaning
                log.warning("model %r is not shared between processes: %s", self.name, exc)
        self._where = "not shared"
        return load_in_memory(self.name, self.dtype, self.max_length)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the load finished (for CLI commands and tests); True if the model is ready."""
        self.start_loading()
        if self._thread is not None:
            self._thread.join(timeout)
        return self._model is not None

    def status(self) -> tuple[bool, str]:
        """(enabled, reason): what a person reads in status and doctor."""
        name = repr(self.name)
        if self.disabled:
            return False, f"semantic search is off (model {name}); keyword search only"
        if self._model is not None:
            return True, f"model {name} loaded ({self._dim} dimensions, {self._where})"
        if self._error:
            how = "loaded" if looks_like_path(self.name) else "downloaded"
            return False, (
                f"model {name} could not be {how}: {one_line(self._error)}; keyword search only; "
                "set RLM_EMBEDDING_MODEL=none or a local path"
            )
        if self._thread is None:
            return False, f"model {name} configured, loads on first search; keyword search until then"
        return False, f"model {name} {self._progress()}; keyword search until it is ready"

    def _progress(self) -> str:
        seconds = int(time.time() - self._since)
        written = None if looks_like_path(self.name) else download_progress(self.name, self._since)
        if written is not None:
            return f"downloading ({written / 1e6:.0f} MB so far, {seconds} s)"
        return f"loading ({seconds} s)"

    def embed(self, texts: list[str]) -> Matrix:
        """Unit vectors for `texts`, shape (len(texts), dim)."""
        model = self._model
        if model is None:
            raise CacheError(self.status()[1])
        try:
            vectors = model.encode(list(texts))
        except Exception as exc:  # noqa: BLE001 - translated (or recovered from) just below
            vectors = self._retry_here(texts, exc)
        return normalise(vectors)

    def _retry_here(self, texts: list[str], exc: Exception) -> Matrix:
        """The model process is gone for good: hold the model in this process from now on."""
        from rlm_vault.modelserver import ModelClient

        if not isinstance(self._model, ModelClient):
            raise CacheError(f"model {self.name!r} failed to embed: {exc!r}") from exc
        log.warning("model process for %r lost (%s); loading the model in this process", self.name, exc)
        self._model.close()
        self.via = "mapped"
        try:
            self._model = self._open()
            return self._model.encode(list(texts))
        except Exception as again:  # becomes the error the caller knows
            raise CacheError(f"model {self.name!r} failed to embed: {again!r}") from again


def looks_like_path(model: str) -> bool:
    """True when the model names a folder (absolute, relative, ~, or existing) rather than a hub id."""
    text = model.strip()
    return text.startswith(("/", "~", ".")) or "\\" in text or text.count("/") > 1 or Path(text).exists()


def one_line(text: str, width: int = 200) -> str:
    """The first non-empty line of an error, cut to `width` characters."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= width else line[: width - 1] + "…"


def hub_cache() -> Path:
    """The Hugging Face hub cache folder the download writes to (its own setting when installed)."""
    try:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)
    except ImportError:
        home = os.environ.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")
        return Path(os.environ.get("HF_HUB_CACHE") or Path(home) / "hub")


def download_progress(model: str, since: float) -> int | None:
    """Bytes of hub model `model` written to the cache since `since` (time.time()); None if none."""
    folder = hub_cache() / f"models--{model.strip().replace('/', '--')}" / "blobs"
    try:
        stats = [entry.stat() for entry in os.scandir(folder)]
    except OSError:
        return None
    fresh = [st.st_size for st in stats if st.st_mtime >= since]
    return sum(fresh) if fresh else None


COMPACT_SHARE = 0.5  # rows no id points to, beyond which the rows file is written anew
DOT_BLOCK = 8192  # int8 rows widened to float32 at a time by a search (8 MB)


class VectorStore:
    """Vectors of one embedder, in two files beside each other.

    - `<name>.npz`: ids, content hashes, each id's row, the model name and the rows file's name;
      replaced atomically at every save, and small (no vectors in it).
    - `<name>-rows-*.i8`: int8 rows (each row's float32 scale is in the `.npz`), only ever appended to,
      memory-mapped read-only by every process on the vault, so they share its pages. A search reads
      every row: int8 keeps that a quarter of float32 (25 MB at 100,000 notes, not 100), for cosines
      within 0.005 of float32 and the same LoCoMo figures. A new or changed note appends its row; rows
      no id points to any more are dropped by writing a new rows file once they are half of it.

    A reader maps as many rows as the `.npz` it read names, so a writer appending never disturbs it.
    Saves happen at every change: they append a few rows and rewrite the small `.npz`.
    """

    def __init__(self, path: Path, embedder: Embedder) -> None:
        import numpy as np

        self.path = Path(path)
        self.embedder = embedder
        self._ids: list[str] = []
        self._all_rows: Any = None  # the row of each of `_ids`, computed once per change (100k per query)
        self._row: dict[str, int] = {}  # id -> row in the rows file (or in `_fresh` past its end)
        self._shas: dict[str, str] = {}
        self._rows_file: Path | None = None
        self._matrix: Any = np.zeros((0, 0), dtype=np.int8)  # the mapped rows
        self._scales: Any = np.zeros(0, dtype=np.float32)  # row n is `_matrix[n] * _scales[n]`
        self._fresh: list[Any] = []  # rows embedded since the last save, not in the file yet
        self._file_stamp: tuple[int, int] | None = None
        self.embedded = 0  # texts embedded by this store since it was made (tests count skips with it)
        self.reload()

    # -- reading -----------------------------------------------------------------------------
    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def reload(self) -> None:
        """Read the files if another process (or nobody) changed them since we last read or wrote them.

        Files for another model, or that cannot be read, are dropped: they are a cache.
        """
        stamp = self._stat()
        if stamp == self._file_stamp:
            return
        self._set(*self._read())
        self._file_stamp = stamp

    def _read(self) -> tuple[dict[str, str], dict[str, int], Path | None, Any, Any]:
        for _ in range(3):  # a writer may replace the file and drop the rows file between our two reads
            try:
                return self._read_once()
            except FileNotFoundError:
                continue
            except Exception:  # noqa: BLE001 - any damage in a deletable cache means "embed again"
                break
        return {}, {}, None, None, None

    def _read_once(self) -> tuple[dict[str, str], dict[str, int], Path | None, Any, Any]:
        import numpy as np

        if not self.path.exists():
            return {}, {}, None, None, None
        with np.load(self.path, allow_pickle=False) as data:
            if str(data["model"]) != self.embedder.name or "scales" not in data.files:
                return {}, {}, None, None, None  # another model, or an older layout (float32 rows)
            ids = [sys.intern(i.decode()) for i in data["ids"].tolist()]  # one string per id, all caches
            shas = [sys.intern(h.decode()) for h in data["shas"].tolist()]  # shared with the other caches
            rows = [int(r) for r in data["rows"].tolist()]
            count, dim = int(data["count"]), int(data["dim"])
            rows_file = self.path.parent / Path(str(data["rows_file"])).name
            scales = np.array(data["scales"], dtype=np.float32)
        matrix = np.memmap(rows_file, dtype=np.int8, mode="r", shape=(count, dim)) if count else None
        if any(not 0 <= r < count for r in rows) or len(scales) != count:
            raise CacheError(f"vectors index {self.path} does not match {rows_file}")
        return dict(zip(ids, shas, strict=True)), dict(zip(ids, rows, strict=True)), rows_file, matrix, scales

    def _set(
        self, shas: dict[str, str], rows: dict[str, int], rows_file: Path | None, matrix: Any, scales: Any
    ) -> None:
        import numpy as np

        self._shas, self._row, self._rows_file = shas, rows, rows_file
        self._ids, self._all_rows = list(rows), None
        self._matrix = matrix if matrix is not None else np.zeros((0, 0), dtype=np.int8)
        self._scales = scales if matrix is not None else np.zeros(0, dtype=np.float32)
        self._fresh = []

    def stamps(self) -> Mapping[str, str]:
        """id -> sha256 of every stored vector (the store's own map, not a copy: 100,000 entries)."""
        return self._shas

    def __len__(self) -> int:
        return len(self._row)

    # -- writing -----------------------------------------------------------------------------
    def sync(self, docs: Sequence[SearchDoc], progress: Progress | None = None) -> int:
        """Make the store hold exactly `docs`: embed new or changed ones, drop the others, save.

        Returns how many texts were embedded (0 when every content hash matched).
        """
        keep = {doc.id for doc in docs}
        gone = [doc_id for doc_id in self._row if doc_id not in keep]
        return self.update(docs, gone, progress)

    def update(
        self, upserts: Sequence[SearchDoc] = (), deletes: Iterable[str] = (), progress: Progress | None = None
    ) -> int:
        """Embed the `upserts` whose hash changed and drop `deletes`, then save once."""
        stale = [doc for doc in upserts if self._shas.get(doc.id) != doc.sha256]
        doomed = {doc_id for doc_id in deletes if doc_id in self._row}
        if not stale and not doomed:
            return 0
        for doc_id in doomed:
            del self._row[doc_id], self._shas[doc_id]
        for start in range(0, len(stale), BATCH):
            self._put(stale[start : start + BATCH])
            if progress:
                progress(min(start + BATCH, len(stale)), len(stale))
        self._ids, self._all_rows = list(self._row), None
        self.save()
        return len(stale)

    def flush(self) -> None:
        """Save rows kept in memory (every change is saved at once: nothing is left for close)."""
        if self._fresh:
            self.save()

    def _put(self, docs: Sequence[SearchDoc]) -> None:
        vectors = self.embedder.embed([embed_text(doc) for doc in docs])
        self.embedded += len(docs)
        if self._dim() not in (0, vectors.shape[1]):  # another width: nothing stored is usable
            self._set({}, {}, None, None, None)
        for doc, vector in zip(docs, vectors, strict=True):
            self._row[doc.id] = self._count() + len(self._fresh)
            self._shas[doc.id] = doc.sha256
            self._fresh.append(vector)

    def _dim(self) -> int:
        if self._fresh:
            return len(self._fresh[0])
        return int(self._matrix.shape[1]) if self._matrix.size else 0

    def _count(self) -> int:
        return int(self._matrix.shape[0]) if self._matrix.size else 0

    def save(self) -> None:
        """Append new rows (or write a new rows file when half of it is dead), then replace the `.npz`."""
        import numpy as np

        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            dead = self._count() + len(self._fresh) - len(self._row)
            if self._rows_file is None or dead > COMPACT_SHARE * max(self._count(), 1):
                self._compact()
            elif self._fresh:
                rows, scales = quantized(np.asarray(self._fresh, dtype=np.float32))
                with open(self._rows_file, "ab") as handle:
                    handle.write(rows.tobytes())
                self._scales = np.concatenate([self._scales[: self._count()], scales])
            self._write_index()
        except OSError as exc:
            raise CacheError(f"vectors could not be saved to {self.path}: {exc}") from exc
        self._remap()
        self._file_stamp = self._stat()

    def _compact(self) -> None:
        """Write the live rows to a new rows file, in id order, and point every id at its new row."""
        import numpy as np

        ids = list(self._row)
        rows, scales = quantized(np.asarray([self._vector(i) for i in ids], dtype=np.float32))
        fd, tmp = tempfile.mkstemp(prefix=f"{self.path.stem}-rows-", suffix=".i8", dir=self.path.parent)
        with os.fdopen(fd, "wb") as handle:
            if ids:
                handle.write(rows.tobytes())
        self._row, self._all_rows = {doc_id: n for n, doc_id in enumerate(ids)}, None
        self._rows_file, self._fresh, self._scales = Path(tmp), [], scales
        self._matrix = (
            np.memmap(tmp, dtype=np.int8, mode="r", shape=rows.shape)
            if ids
            else np.zeros((0, 0), dtype=np.int8)
        )

    def _write_index(self) -> None:
        import numpy as np

        assert self._rows_file is not None
        ids = list(self._row)
        arrays: dict[str, Any] = {
            "ids": np.array([i.encode() for i in ids], dtype=bytes),
            "shas": np.array([self._shas[i].encode() for i in ids], dtype=bytes),
            "rows": np.array([self._row[i] for i in ids], dtype=np.int64),
            "count": np.array(self._count() + len(self._fresh)),
            "dim": np.array(self._dim()),
            "rows_file": np.array(self._rows_file.name),
            "scales": np.asarray(self._scales, dtype=np.float32),
            "model": np.array(self.embedder.name),
        }
        fd, tmp = tempfile.mkstemp(prefix=".embeddings-", suffix=".npz", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, **arrays)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._drop_old_rows(keep=self._rows_file)

    def _remap(self) -> None:
        import numpy as np

        count, dim = self._count() + len(self._fresh), self._dim()
        assert self._rows_file is not None
        self._matrix = (
            np.memmap(self._rows_file, dtype=np.int8, mode="r", shape=(count, dim))
            if count and dim
            else np.zeros((0, 0), dtype=np.int8)
        )
        self._fresh = []

    def _vector(self, doc_id: str) -> Any:
        row = self._row[doc_id]
        if row < self._count():
            return self._matrix[row].astype("float32") * self._scales[row]
        return self._fresh[row - self._count()]

    def _drop_old_rows(self, keep: Path) -> None:
        # A process that still maps an old file keeps reading it (Linux frees it at unmap); one that
        # reads the index file after this finds the new name.
        for old in self.path.parent.glob(f"{self.path.stem}-rows-*"):
            if old != keep:
                old.unlink(missing_ok=True)

    def clear(self) -> None:
        """Forget every vector and delete the files."""
        self._set({}, {}, None, None, None)
        self.path.unlink(missing_ok=True)
        if self.path.parent.is_dir():
            self._drop_old_rows(keep=self.path)
        self._file_stamp = None

    # -- querying ----------------------------------------------------------------------------
    def similar(self, vector: Any, k: int, allowed_ids: set[str] | None = None) -> list[tuple[str, float]]:
        """The `k` stored ids closest to `vector` (cosine), among `allowed_ids` when given."""
        import numpy as np

        ids = self._ids if allowed_ids is None else [i for i in self._ids if i in allowed_ids]
        if not ids or not self._count():
            return []
        if allowed_ids is None:
            if self._all_rows is None or len(self._all_rows) != len(ids):
                self._all_rows = np.fromiter((self._row[i] for i in ids), dtype=np.intp, count=len(ids))
            rows = self._all_rows
        else:
            rows = np.fromiter((self._row[i] for i in ids), dtype=np.intp, count=len(ids))
        if 2 * len(ids) >= self._count():
            # Most rows wanted: one pass over the file's pages, the few others (replaced or filtered out)
            # scored for nothing, rather than a copy of the wanted rows (25 MB at 100,000 notes).
            scores = _dot(self._matrix, self._scales, vector)[rows]
        else:
            scores = _dot(self._matrix[rows], self._scales[rows], vector)
        top = np.argsort(-scores)[:k] if k >= len(scores) else _top(scores, k)
        return [(ids[i], float(scores[i])) for i in top]

    def cosines(self, vector: Any, ids: Iterable[str]) -> dict[str, float]:
        """Cosine of `vector` with each stored id among `ids` (unknown ids are left out)."""
        import numpy as np

        known = [doc_id for doc_id in ids if doc_id in self._row]
        if not known:
            return {}
        at = np.array([self._row[i] for i in known], dtype=np.intp)
        return dict(zip(known, _dot(self._matrix[at], self._scales[at], vector).tolist(), strict=True))


def _dot(rows: Any, scales: Any, vector: Any) -> Any:
    """Each int8 row times its scale times `vector`, a block of rows at a time, without BLAS.

    `matrix @ vector` wakes OpenBLAS's thread pool, whose threads then spin for a while: on two busy
    cores that cost rlm_search 39 ms of CPU instead of 15 at 2,000 chunks + 1,000 insights.
    """
    import numpy as np

    query = np.asarray(vector, dtype=np.float32)
    out = np.empty(len(rows), dtype=np.float32)
    for start in range(0, len(rows), DOT_BLOCK):
        block = np.asarray(rows[start : start + DOT_BLOCK], dtype=np.float32)
        out[start : start + DOT_BLOCK] = (
            np.einsum("ij,j->i", block, query) * scales[start : start + DOT_BLOCK]
        )
    return out


def quantized(rows: Any) -> tuple[Any, Any]:
    """float32 rows as int8 rows and one float32 scale each (row ~ int8 row * scale)."""
    import numpy as np

    peak = np.abs(rows).max(axis=1) if rows.size else np.zeros(len(rows), dtype=np.float32)
    scales = np.where(peak > 0, peak / 127, 1).astype(np.float32)
    return np.clip(np.rint(rows / scales[:, None]), -127, 127).astype(np.int8), scales


def _top(scores: Any, k: int) -> Any:
    import numpy as np

    part = np.argpartition(-scores, k)[:k]
    return part[np.argsort(-scores[part])]
