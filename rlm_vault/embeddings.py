"""Semantic vectors: the `Embedder` protocol, the model2vec embedder (loaded in the background) and
the vector store, a `.npz` cache keyed by note id and content hash (never pickled objects) whose rows
live in a `.npy` file beside it, memory-mapped read-only so every process on the vault shares its pages.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from rlm_vault.errors import CacheError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from rlm_vault.index import SearchDoc

    Matrix = NDArray[np.float32]
else:
    Matrix = Any

__all__ = ["DISABLED", "Embedder", "Loadable", "Model2VecEmbedder", "VectorStore", "embed_text"]

DISABLED = frozenset({"", "none", "off", "false", "0"})
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
    """A model2vec `StaticModel` (hub name or local folder) loaded in a background thread.

    Until it has loaded, `status()` is (False, reason) and callers search with BM25 only; nothing
    ever waits for the load except `wait()`.
    """

    def __init__(self, model: str, max_length: int | None = 512) -> None:
        self.name = model
        self.max_length = max_length
        self._model: Any = None
        self._dim = 0
        self._error = ""
        self._thread: threading.Thread | None = None
        self._started = threading.Lock()

    @property
    def disabled(self) -> bool:
        return self.name.strip().lower() in DISABLED

    @property
    def dim(self) -> int:
        return self._dim

    def start_loading(self) -> None:
        """Start loading the model in a daemon thread (once; a no-op when disabled)."""
        with self._started:
            if self._thread is None and not self.disabled:
                self._thread = threading.Thread(target=self._load, name="rlm-vault-model", daemon=True)
                self._thread.start()

    def _load(self) -> None:
        try:
            from model2vec import StaticModel

            model = StaticModel.from_pretrained(self.name)
            self._dim = int(model.encode(["probe"]).shape[1])
            self._model = model
        except Exception as exc:  # noqa: BLE001 - an optional model failing in any way leaves BM25 on
            self._error = f"{type(exc).__name__}: {exc}".strip()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the load finished (for CLI commands and tests); True if the model is ready."""
        self.start_loading()
        if self._thread is not None:
            self._thread.join(timeout)
        return self._model is not None

    def status(self) -> tuple[bool, str]:
        """(enabled, reason) for status and doctor."""
        if self.disabled:
            return False, f"semantic search is off (model {self.name!r}); search is BM25-only"
        if self._model is not None:
            return True, f"model {self.name!r} loaded ({self._dim} dimensions)"
        if self._error:
            return False, f"model {self.name!r} could not be loaded: {self._error}; search is BM25-only"
        if self._thread is None:
            return False, f"model {self.name!r} is not loaded yet; search is BM25-only"
        return False, f"model {self.name!r} is loading; search is BM25-only until it is ready"

    def embed(self, texts: list[str]) -> Matrix:
        """Unit vectors for `texts`, shape (len(texts), dim)."""
        if self._model is None:
            raise CacheError(self.status()[1])
        try:
            vectors = self._model.encode(list(texts), max_length=self.max_length, use_multiprocessing=False)
        except Exception as exc:
            raise CacheError(f"model {self.name!r} failed to embed: {exc!r}") from exc
        return normalise(vectors)


SAVE_BATCH = 64  # changed vectors kept in memory before the file is rewritten
SAVE_SECONDS = 30.0


class VectorStore:
    """Vectors of one embedder: a `.npz` file (ids, content hashes, model name, and the name of the
    `.npy` file holding the float32 rows), replaced atomically; each `.npy` is written once, under a
    new name, and memory-mapped, so a reader never sees half a file and processes share the rows.
    """

    def __init__(self, path: Path, embedder: Embedder) -> None:
        import numpy as np

        self.path = Path(path)
        self.embedder = embedder
        self._ids: list[str] = []
        self._row: dict[str, int] = {}
        self._shas: list[str] = []
        self._matrix: Matrix = np.zeros((0, 0), dtype=np.float32)
        self._file_stamp: tuple[int, int] | None = None
        self.embedded = 0  # texts embedded by this store since it was made (tests count skips with it)
        self._unsaved = 0
        self._saved_at = time.monotonic()
        self.reload()

    # -- reading -----------------------------------------------------------------------------
    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size

    def reload(self) -> None:
        """Read the file if another process (or nobody) changed it since we last read or wrote it.

        A file for another model, or one that cannot be read, is dropped: it is a cache.
        """
        stamp = self._stat()
        if stamp == self._file_stamp:
            return
        self._set(*self._read())
        self._file_stamp = stamp

    def _read(self) -> tuple[list[str], list[str], Any]:
        for _ in range(3):  # a writer may replace the file and drop the rows file between our two reads
            try:
                return self._read_once()
            except FileNotFoundError:
                continue
            except Exception:  # noqa: BLE001 - any damage in a deletable cache means "embed again"
                return [], [], None
        return [], [], None

    def _read_once(self) -> tuple[list[str], list[str], Any]:
        import numpy as np

        if not self.path.exists():
            return [], [], None
        with np.load(self.path, allow_pickle=False) as data:
            if str(data["model"]) != self.embedder.name:
                return [], [], None
            ids, shas = data["ids"].tolist(), data["shas"].tolist()
            if "matrix" not in data.files:  # the older single-file layout: read once, rewritten at next save
                return ids, shas, data["vectors"].astype(np.float32)
            rows = self.path.parent / Path(str(data["matrix"])).name
        matrix = np.load(rows, mmap_mode="r", allow_pickle=False)
        if matrix.dtype != np.float32 or matrix.ndim != 2 or len(matrix) != len(ids):
            raise CacheError(f"vectors at {rows} do not match {self.path}")
        return ids, shas, matrix

    def _set(self, ids: list[str], shas: list[str], matrix: Any) -> None:
        import numpy as np

        self._ids, self._shas = list(ids), list(shas)
        self._row = {doc_id: i for i, doc_id in enumerate(self._ids)}
        self._matrix = matrix if matrix is not None else np.zeros((0, 0), dtype=np.float32)

    def stamps(self) -> dict[str, str]:
        """id -> sha256 of every stored vector."""
        return dict(zip(self._ids, self._shas, strict=True))

    def __len__(self) -> int:
        return len(self._ids)

    # -- writing -----------------------------------------------------------------------------
    def sync(self, docs: Sequence[SearchDoc], progress: Progress | None = None) -> int:
        """Make the store hold exactly `docs`: embed new or changed ones, drop the others, save.

        Returns how many texts were embedded (0 when every content hash matched).
        """
        keep = {doc.id for doc in docs}
        gone = [doc_id for doc_id in self._ids if doc_id not in keep]
        return self.update(docs, gone, progress)

    def update(
        self, upserts: Sequence[SearchDoc] = (), deletes: Iterable[str] = (), progress: Progress | None = None
    ) -> int:
        """Embed the `upserts` whose hash changed and drop `deletes`, then save once."""
        stale = [doc for doc in upserts if self._sha(doc.id) != doc.sha256]
        doomed = {doc_id for doc_id in deletes if doc_id in self._row}
        if not stale and not doomed:
            return 0
        self._drop(doomed)
        for start in range(0, len(stale), BATCH):
            self._put(stale[start : start + BATCH])
            if progress:
                progress(min(start + BATCH, len(stale)), len(stale))
        self._unsaved += len(stale) + len(doomed)
        # Rewriting megabytes for every note written one at a time would dominate a write-then-search:
        # small changes are saved in batches (and at close); a lost batch is re-embedded next time.
        if (
            self._unsaved >= SAVE_BATCH
            or not self.path.exists()
            or time.monotonic() - self._saved_at > SAVE_SECONDS
        ):
            self.save()
        return len(stale)

    def flush(self) -> None:
        """Save changes kept in memory (at close)."""
        if self._unsaved:
            self.save()

    def _sha(self, doc_id: str) -> str | None:
        row = self._row.get(doc_id)
        return None if row is None else self._shas[row]

    def _drop(self, doomed: set[str]) -> None:
        import numpy as np

        if not doomed:
            return
        keep = [i for i, doc_id in enumerate(self._ids) if doc_id not in doomed]
        rows = np.array(keep, dtype=np.intp)
        self._set([self._ids[i] for i in keep], [self._shas[i] for i in keep], self._matrix[rows])

    def _put(self, docs: Sequence[SearchDoc]) -> None:
        import numpy as np

        vectors = self.embedder.embed([embed_text(doc) for doc in docs])
        self.embedded += len(docs)
        if self._matrix.shape[1] != vectors.shape[1]:
            self._set([], [], np.zeros((0, vectors.shape[1]), dtype=np.float32))
        if (
            not self._matrix.flags.writeable
        ):  # the shared read-only map: changed in a private copy until saved
            self._matrix = np.array(self._matrix)
        new_rows = []
        for doc, vector in zip(docs, vectors, strict=True):
            row = self._row.get(doc.id)
            if row is None:
                new_rows.append(vector)
                self._row[doc.id] = len(self._ids)
                self._ids.append(doc.id)
                self._shas.append(doc.sha256)
            else:
                self._matrix[row] = vector
                self._shas[row] = doc.sha256
        if new_rows:
            self._matrix = np.vstack([self._matrix, np.stack(new_rows)])

    def save(self) -> None:
        """Write the file atomically (temp file in the same folder, then os.replace)."""
        import numpy as np

        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            rows = self._write_rows(self._matrix.astype(np.float32, copy=False))
            arrays = {
                "ids": np.array(self._ids, dtype=f"<U{max(map(len, self._ids), default=1)}"),
                "shas": np.array(self._shas, dtype=f"<U{max(map(len, self._shas), default=1)}"),
                "matrix": np.array(rows.name),
                "model": np.array(self.embedder.name),
            }
            self._write(arrays)
            self._drop_old_rows(keep=rows)
        except OSError as exc:
            raise CacheError(f"vectors could not be saved to {self.path}: {exc}") from exc
        self._matrix = np.load(rows, mmap_mode="r", allow_pickle=False)  # shared pages from now on
        self._file_stamp = self._stat()
        self._unsaved, self._saved_at = 0, time.monotonic()

    def _rows_prefix(self) -> str:
        return f"{self.path.stem}-rows-"

    def _write_rows(self, matrix: Any) -> Path:
        """The rows in a new `.npy` file of their own (never rewritten: readers may have it mapped)."""
        import numpy as np

        fd, tmp = tempfile.mkstemp(prefix=self._rows_prefix(), suffix=".npy", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.save(handle, matrix, allow_pickle=False)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return Path(tmp)

    def _drop_old_rows(self, keep: Path) -> None:
        # A process that still maps an old file keeps reading it (Linux frees it at unmap); one that
        # reads the index file after this finds the new name.
        for old in self.path.parent.glob(f"{self._rows_prefix()}*.npy"):
            if old != keep:
                old.unlink(missing_ok=True)

    def _write(self, arrays: dict[str, Any]) -> None:
        import numpy as np

        fd, tmp = tempfile.mkstemp(prefix=".embeddings-", suffix=".npz", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, **arrays)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def clear(self) -> None:
        """Forget every vector and delete the files."""
        self._set([], [], None)
        self.path.unlink(missing_ok=True)
        if self.path.parent.is_dir():
            self._drop_old_rows(keep=self.path)
        self._file_stamp = None

    # -- querying ----------------------------------------------------------------------------
    def similar(self, vector: Any, k: int, allowed_ids: set[str] | None = None) -> list[tuple[str, float]]:
        """The `k` stored ids closest to `vector` (cosine), among `allowed_ids` when given."""
        import numpy as np

        rows = self._rows(allowed_ids)
        if not len(self._ids) or (rows is not None and not len(rows)):
            return []
        matrix = self._matrix if rows is None else self._matrix[rows]
        scores = matrix @ np.asarray(vector, dtype=np.float32)
        top = np.argsort(-scores)[:k] if k >= len(scores) else _top(scores, k)
        ids = self._ids if rows is None else [self._ids[r] for r in rows]
        return [(ids[i], float(scores[i])) for i in top]

    def _rows(self, allowed_ids: set[str] | None) -> Any:
        import numpy as np

        if allowed_ids is None:
            return None
        return np.array(sorted(self._row[i] for i in allowed_ids if i in self._row), dtype=np.intp)

    def cosines(self, vector: Any, ids: Iterable[str]) -> dict[str, float]:
        """Cosine of `vector` with each stored id among `ids` (unknown ids are left out)."""
        import numpy as np

        known = [doc_id for doc_id in ids if doc_id in self._row]
        if not known:
            return {}
        rows = self._matrix[np.array([self._row[i] for i in known], dtype=np.intp)]
        return dict(zip(known, (rows @ np.asarray(vector, dtype=np.float32)).tolist(), strict=True))


def _top(scores: Any, k: int) -> Any:
    import numpy as np

    part = np.argpartition(-scores, k)[:k]
    return part[np.argsort(-scores[part])]
