"""The machine-wide copy of a model2vec model that every server maps instead of loading its own.

On first use the model's embedding matrix is written once, as float16 (or int8 with one scale per row),
into `<cache>/<name>-<dtype>-<key>/` with its tokenizer and a manifest; later processes memory-map it,
so the pages are shared. `StaticEncoder` embeds with the tokenizer and the mapped matrix the way
model2vec's `StaticModel.encode` does (tokens -> mean of rows); no pickle is ever loaded.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlm_vault.errors import CacheError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    Matrix = NDArray[np.float32]
else:
    Matrix = Any

__all__ = ["DTYPES", "StaticEncoder", "default_model_cache", "load_in_memory", "open_shared"]

log = logging.getLogger("rlm_vault")

FORMAT = 1  # bump when the folder layout changes: old folders are then simply not used
DTYPES = ("float16", "int8", "float32")
ARRAYS = ("embeddings", "scales", "weights", "mapping")
SOURCE_FILES = ("model.safetensors", "tokenizer.json", "config.json")
LOCK_WAIT = 300.0  # seconds a process waits for another one building the same copy, then loads alone
FULL_HASH_BYTES = 4 << 20
SAMPLE_BYTES = 64 << 10
SAMPLES = 16
GROUP_TOKENS = 16_384  # tokens whose float32 rows are gathered at once when embedding (16 MB at 256 dims)


def default_model_cache() -> Path:
    """Where shared model copies live: $XDG_CACHE_HOME/rlm-vault/models (or ~/.cache/...)."""
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(base) if base else Path.home() / ".cache") / "rlm-vault" / "models"


# ---------------------------------------------------------------------------------------------- encoder


@dataclass(frozen=True)
class StaticEncoder:
    """Tokenizer + (possibly memory-mapped) embedding rows: model2vec's mean pooling, in float32."""

    embedding: Any  # (rows, dim) float16 / int8 / float32, usually a read-only memmap
    tokenizer: Any  # tokenizers.Tokenizer, truncation set to max_length, no padding
    scales: Any = None  # (rows,) float32 when `embedding` is int8
    weights: Any = None  # (tokens,) float32 per-token weights (vocabulary-quantized models)
    mapping: Any = None  # (tokens,) int token -> row (vocabulary-quantized models)
    unk_id: int | None = None
    max_length: int | None = 512
    median_token_length: int = 1
    folder: Path | None = None  # the shared folder, None when loaded in memory

    @property
    def dim(self) -> int:
        return int(self.embedding.shape[1])

    def encode(self, texts: list[str]) -> Matrix:
        """Mean of the token rows of each text (zero row for a text without known tokens), float32."""
        import numpy as np

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        ids = self._ids(texts)
        group: list[int] = []
        size = 0
        for i, tokens in enumerate(ids):
            if tokens:
                group.append(i)
                size += len(tokens)
            if size >= GROUP_TOKENS:  # bounded: a batch of long notes gathered at once would hold ~100 MB
                self._pool(ids, group, out)
                group, size = [], 0
        if group:
            self._pool(ids, group, out)
        return out

    def _pool(self, ids: list[list[int]], group: list[int], out: Any) -> None:
        """Fill `out[group]` with the mean rows of those texts, gathering their rows in one go."""
        import numpy as np

        flat = np.fromiter(itertools.chain.from_iterable(ids[i] for i in group), np.intp)
        rows = self._rows(flat)
        start = 0
        for i in group:  # summing float16 slices into float32 is faster than converting them all first
            end = start + len(ids[i])
            out[i] = rows[start:end].sum(axis=0, dtype=np.float32) / (end - start)
            start = end

    def _ids(self, texts: list[str]) -> list[list[int]]:
        # model2vec cuts the characters first (max_length tokens of median length), then truncates tokens.
        if self.max_length is not None:
            cut = self.max_length * self.median_token_length
            texts = [text[:cut] for text in texts]
        encodings = self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        return [[t for t in e.ids if t != self.unk_id] for e in encodings]

    def _rows(self, tokens: Any) -> Any:
        """The rows of `tokens`, in the stored dtype unless scales or weights must multiply them."""
        import numpy as np

        index = tokens if self.mapping is None else self.mapping[tokens]
        rows = self.embedding[index]
        if self.scales is None and self.weights is None:
            return rows
        rows = np.asarray(rows, dtype=np.float32)
        if self.scales is not None:
            rows *= self.scales[index][:, None]
        if self.weights is not None:
            rows *= self.weights[tokens][:, None]
        return rows


# ---------------------------------------------------------------------------------------------- source


@dataclass(frozen=True)
class Source:
    """A model2vec model read from its folder, before it is converted."""

    arrays: dict[str, Any]  # embeddings (+ weights, mapping) as loaded
    tokenizer: Any
    config: dict[str, Any]


def source_folder(model: str) -> Path:
    """The local folder of `model`: itself, its Hugging Face cache snapshot, or a fresh download."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve()
    try:
        from model2vec.persistence.hf import maybe_get_cached_model_path

        cached = maybe_get_cached_model_path(model)
        if cached is not None and (cached / "tokenizer.json").exists():
            return cached
        return _download(model)
    except Exception as exc:
        raise CacheError(f"model {model!r} is neither a model2vec folder nor downloadable: {exc}") from exc


def _download(model: str) -> Path:
    import huggingface_hub
    from model2vec.persistence.datamodels import get_all_model2vec_paths

    patterns = [*get_all_model2vec_paths(), "README.md"]
    return Path(huggingface_hub.snapshot_download(model, repo_type="model", allow_patterns=patterns))


def read_source(folder: Path) -> Source:
    """Embeddings, tokenizer and config of the model2vec model in `folder`."""
    try:
        from model2vec.persistence import load_pretrained

        emb, tokenizer, config, _meta, weights, mapping = load_pretrained(folder, None, None, False)
    except Exception as exc:
        raise CacheError(f"model folder {folder} could not be read: {exc}") from exc
    arrays = {"embeddings": emb, "weights": weights, "mapping": mapping}
    return Source({k: v for k, v in arrays.items() if v is not None}, tokenizer, dict(config))


def convert(arrays: dict[str, Any], dtype: str) -> dict[str, Any]:
    """The arrays to store: embeddings in `dtype` (int8 gets one float32 scale per row)."""
    import numpy as np

    out = dict(arrays)
    emb = np.asarray(arrays["embeddings"], dtype=np.float32)
    if dtype == "int8":
        scales = np.abs(emb).max(axis=1) / 127.0
        safe = np.where(scales == 0, 1.0, scales)[:, None]
        out["embeddings"] = np.rint(emb / safe).astype(np.int8)
        out["scales"] = scales.astype(np.float32)
    else:
        out["embeddings"] = emb.astype(dtype)
    if "weights" in out:
        out["weights"] = np.asarray(out["weights"], dtype=np.float32)
    return out


def _unk_id(tokenizer: Any) -> int | None:
    """The unknown-token id model2vec drops from every text (word-level models emit it for unknown words)."""
    model = tokenizer.model
    if hasattr(model, "unk_token"):
        return None if model.unk_token is None else tokenizer.token_to_id(model.unk_token)
    unk = json.loads(tokenizer.to_str())["model"].get("unk_id")
    return None if unk is None else int(unk)


def _median_token_length(tokenizer: Any) -> int:
    import numpy as np

    return int(np.median([len(token) for token in tokenizer.get_vocab()]))


def _max_length(config: dict[str, Any]) -> int | None:
    value = config.get("max_length", 512)
    return None if value is None else int(value)


def _prepare(tokenizer: Any, max_length: int | None) -> Any:
    """The tokenizer as model2vec encodes with it: no padding, truncated to `max_length` tokens."""
    tokenizer.no_padding()
    if max_length is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(max_length)
    return tokenizer


def load_in_memory(model: str, dtype: str = "float32", max_length: int | None = 512) -> StaticEncoder:
    """Load `model` into this process only (no shared copy): the fallback, and the float32 reference."""
    source = read_source(source_folder(model))
    arrays = convert(source.arrays, dtype)
    return StaticEncoder(
        embedding=arrays["embeddings"],
        tokenizer=_prepare(source.tokenizer, max_length),
        scales=arrays.get("scales"),
        weights=arrays.get("weights"),
        mapping=arrays.get("mapping"),
        unk_id=_unk_id(source.tokenizer),
        max_length=max_length,
        median_token_length=_median_token_length(source.tokenizer),
    )


# ---------------------------------------------------------------------------------------------- shared copy


def cache_key(folder: Path, dtype: str) -> str:
    """Folder name of the shared copy: model name, dtype, and a hash of the source's path, sizes, mtimes."""
    files = []
    for name in SOURCE_FILES:
        path = folder / name
        st = path.stat() if path.exists() else None
        files.append([name, st.st_size if st else -1, st.st_mtime_ns if st else -1])
    stamp = json.dumps({"format": FORMAT, "dtype": dtype, "source": str(folder), "files": files})
    digest = hashlib.sha256(stamp.encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", folder.name if folder.name else "model")[:60]
    if re.fullmatch(r"[0-9a-f]{40}", name):  # a hub snapshot folder: use the repository name
        name = re.sub(r"^models--", "", folder.parent.parent.name)[:60]
    return f"{name}-{dtype}-{digest}"


def fingerprint(path: Path) -> str:
    """blake2b of a small file, or of its size and evenly spread samples for a big one (cheap to check)."""
    size = path.stat().st_size
    digest = hashlib.blake2b(str(size).encode(), digest_size=16)
    with path.open("rb") as handle:
        if size <= FULL_HASH_BYTES:
            digest.update(handle.read())
            return digest.hexdigest()
        for i in range(SAMPLES + 1):
            handle.seek((size - SAMPLE_BYTES) * i // SAMPLES)
            digest.update(handle.read(SAMPLE_BYTES))
    return digest.hexdigest()


def open_shared(
    model: str, cache_dir: Path | None = None, dtype: str = "float16", max_length: int | None = 512
) -> StaticEncoder:
    """Map the shared copy of `model` (building it first, once per machine, under a lock)."""
    if dtype not in DTYPES:
        raise CacheError(f"model dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    root = Path(cache_dir) if cache_dir is not None else default_model_cache()
    folder = source_folder(model)
    final = root / cache_key(folder, dtype)
    found = _open_valid(final, max_length)
    if found is not None:
        return found
    with _build_lock(root, final.name):
        found = _open_valid(final, max_length)  # another process may have built it while we waited
        if found is not None:
            return found
        _discard(final)
        _build(folder, final, dtype, model)
    found = _open_valid(final, max_length)
    if found is None:
        raise CacheError(f"the shared model copy {final} could not be read back after writing it")
    return found


@contextlib.contextmanager
def _build_lock(root: Path, name: str) -> Iterator[None]:
    """An exclusive flock on `<root>/.<name>.lock`; CacheError after LOCK_WAIT seconds."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / f".{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise CacheError(f"model cache folder {root} is not writable: {exc}") from exc
    try:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise CacheError(f"another process is still writing {root / name}") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)  # closing releases the lock (and the OS releases it if we are killed)


def _discard(final: Path) -> None:
    """Move a broken copy aside and delete it (processes that mapped its files keep them)."""
    if not final.exists():
        return
    log.warning("shared model copy %s is incomplete or damaged; rebuilding it", final)
    trash = final.with_name(f".trash-{final.name}-{os.getpid()}")
    os.replace(final, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _build(folder: Path, final: Path, dtype: str, model: str) -> None:
    """Write the copy into a temporary folder beside `final`, then rename it into place."""
    source = read_source(folder)
    arrays = convert(source.arrays, dtype)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{final.name}-", dir=final.parent))
    except OSError as exc:
        raise CacheError(f"model cache folder {final.parent} is not writable: {exc}") from exc
    try:
        manifest = _write_files(tmp, arrays, source, dtype, model, folder)
        _write_json(tmp / "manifest.json", manifest)
        os.rename(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CacheError(f"the shared model copy {final} could not be written: {exc}") from exc
    log.info("wrote the shared model copy %s", final)


def _write_files(
    tmp: Path, arrays: dict[str, Any], source: Source, dtype: str, model: str, folder: Path
) -> dict[str, Any]:
    import numpy as np

    for name, array in arrays.items():
        np.save(tmp / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
    source.tokenizer.save(str(tmp / "tokenizer.json"), pretty=False)
    files = [f"{name}.npy" for name in arrays] + ["tokenizer.json"]
    for name in files:
        with (tmp / name).open("rb") as handle:
            os.fsync(handle.fileno())
    return {
        "format": FORMAT,
        "model": model,
        "source": str(folder),
        "dtype": dtype,
        "shape": list(arrays["embeddings"].shape),
        "normalize": bool(source.config.get("normalize", False)),
        "max_length": _max_length(source.config),
        "unk_id": _unk_id(source.tokenizer),
        "median_token_length": _median_token_length(source.tokenizer),
        "files": {
            name: {"size": (tmp / name).stat().st_size, "hash": fingerprint(tmp / name)} for name in files
        },
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())


def _open_valid(final: Path, max_length: int | None) -> StaticEncoder | None:
    """The encoder over `final`, or None when it is missing, partial or damaged (it is then rebuilt)."""
    try:
        manifest = json.loads((final / "manifest.json").read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT:
            return None
        for name, want in manifest["files"].items():
            path = final / name
            if path.stat().st_size != want["size"] or fingerprint(path) != want["hash"]:
                return None
        return _map(final, manifest, max_length)
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - a damaged cache is rebuilt, never fatal
        log.warning("shared model copy %s cannot be used (%s)", final, exc)
        return None


def _map(final: Path, manifest: dict[str, Any], max_length: int | None) -> StaticEncoder:
    import numpy as np
    from tokenizers import Tokenizer

    arrays = {
        name: np.load(final / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        for name in ARRAYS
        if f"{name}.npy" in manifest["files"]
    }
    if list(arrays["embeddings"].shape) != manifest["shape"]:
        raise ValueError(f"embeddings.npy has shape {arrays['embeddings'].shape}, not {manifest['shape']}")
    return StaticEncoder(
        embedding=arrays["embeddings"],
        tokenizer=_prepare(Tokenizer.from_file(str(final / "tokenizer.json")), max_length),
        scales=arrays.get("scales"),
        weights=arrays.get("weights"),
        mapping=arrays.get("mapping"),
        unk_id=manifest["unk_id"],
        max_length=max_length,
        median_token_length=int(manifest["median_token_length"]),
        folder=final,
    )
