"""The machine-wide model copy: written once, shared by real processes, checked, rebuilt when damaged."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from tinymodel import build_tiny_model

from rlm_vault.config import Config
from rlm_vault.embeddings import Model2VecEmbedder, normalise
from rlm_vault.errors import CacheError
from rlm_vault.modelcache import load_in_memory, open_shared
from rlm_vault.service import open_service

WORDS = ["database", "migration", "migrations", "failed", "cat", "food", "deploy", "pipeline", "schema"]
TEXTS = ["database migration failed", "cat food", "deploy the pipeline schema", "", "unknownword only"]

# A child process that maps the shared copy and prints its folder, inode and one vector.
CHILD = """
import json, os, sys
from dataclasses import replace
from pathlib import Path
from rlm_vault.modelcache import open_shared
enc = open_shared(sys.argv[1], Path(sys.argv[2]))
vec = enc.encode(["database migration failed"])[0]
inode = os.stat(enc.folder / "embeddings.npy").st_ino
print(json.dumps({"folder": str(enc.folder), "inode": inode, "vector": vec.tolist()}))
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(WORDS, tmp_path_factory.mktemp("model") / "tiny")


def child(model_dir: Path, cache: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(model_dir), str(cache)], stdout=subprocess.PIPE, text=True
    )


def answer(proc: subprocess.Popen[str]) -> dict[str, object]:
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    result: dict[str, object] = json.loads(out)
    return result


def copies(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if p.is_dir())


def test_copy_is_float16_memory_mapped_and_matches_the_model(model_dir: Path, tmp_path: Path) -> None:
    from model2vec import StaticModel

    enc = open_shared(str(model_dir), tmp_path)
    assert isinstance(enc.embedding, np.memmap) and enc.embedding.dtype == np.float16
    assert not enc.embedding.flags.writeable
    reference = normalise(StaticModel.from_pretrained(str(model_dir)).encode(TEXTS))
    ours = normalise(enc.encode(TEXTS))
    assert reference.dtype == ours.dtype == np.float32
    for got, want in zip(ours, reference, strict=True):
        if not want.any():  # a text without known words is a zero vector in both
            assert not got.any()
        else:
            assert float(got @ want) > 0.999


def test_int8_copy_stays_close(model_dir: Path, tmp_path: Path) -> None:
    exact = normalise(load_in_memory(str(model_dir), "float32").encode(TEXTS[:3]))
    small = normalise(open_shared(str(model_dir), tmp_path, dtype="int8").encode(TEXTS[:3]))
    assert np.all(np.einsum("ij,ij->i", exact, small) > 0.999)


def test_second_process_reuses_the_copy(model_dir: Path, tmp_path: Path) -> None:
    first = open_shared(str(model_dir), tmp_path)
    assert first.folder is not None
    files = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in first.folder.iterdir()}
    other = answer(child(model_dir, tmp_path))
    assert other["folder"] == str(first.folder)
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in first.folder.iterdir()} == files
    want = normalise(first.encode(["database migration failed"]))[0]
    assert float(normalise(np.array([other["vector"]]))[0] @ want) > 0.9999
    assert copies(tmp_path) == [first.folder]


def test_processes_starting_together_build_one_copy(model_dir: Path, tmp_path: Path) -> None:
    procs = [child(model_dir, tmp_path) for _ in range(3)]
    results = [answer(p) for p in procs]
    assert len({r["folder"] for r in results}) == 1
    assert len({r["inode"] for r in results}) == 1  # nobody rewrote what another one had written
    assert [p.name for p in copies(tmp_path)] == [Path(str(results[0]["folder"])).name]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".build-", ".trash-"))]


@pytest.mark.parametrize("damage", ["truncate", "flip_tail", "no_manifest", "bad_manifest", "no_tokenizer"])
def test_damaged_copy_is_rebuilt(model_dir: Path, tmp_path: Path, damage: str) -> None:
    folder = open_shared(str(model_dir), tmp_path).folder
    assert folder is not None
    matrix = folder / "embeddings.npy"
    good = matrix.read_bytes()
    if damage == "truncate":
        matrix.write_bytes(good[: len(good) // 2])
    elif damage == "flip_tail":
        matrix.write_bytes(good[:-8] + bytes(255 - b for b in good[-8:]))
    elif damage == "no_manifest":
        (folder / "manifest.json").unlink()
    elif damage == "bad_manifest":
        (folder / "manifest.json").write_text("{not json")
    else:
        (folder / "tokenizer.json").unlink()
    enc = open_shared(str(model_dir), tmp_path)
    assert enc.folder == folder and matrix.read_bytes() == good
    assert float(normalise(enc.encode(["cat food"]))[0] @ normalise(enc.encode(["cat food"]))[0]) > 0.999


def test_changed_model_gets_a_new_copy(model_dir: Path, tmp_path: Path) -> None:
    moved = build_tiny_model([*WORDS, "kibble"], tmp_path / "model")
    first = open_shared(str(moved), tmp_path / "cache").folder
    build_tiny_model([*WORDS, "kibble", "dog"], moved)  # same path, new files
    assert open_shared(str(moved), tmp_path / "cache").folder != first


@pytest.mark.parametrize("via", ["service", "mapped"])
def test_unwritable_cache_falls_back_to_a_private_model(model_dir: Path, tmp_path: Path, via: str) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder should be")
    embedder = Model2VecEmbedder(str(model_dir), cache_dir=blocked / "models", via=via)
    assert embedder.wait(60), embedder.status()
    assert embedder.folder is None and "not shared" in embedder.status()[1]
    assert embedder.embed(["cat food"]).shape == (1, 64)


def test_mapped_embedder_maps_the_shared_copy(model_dir: Path, tmp_path: Path) -> None:
    embedder = Model2VecEmbedder(str(model_dir), cache_dir=tmp_path, via="mapped")
    assert embedder.wait(60), embedder.status()
    assert embedder.folder is not None and embedder.folder.parent == tmp_path
    assert "mapped from" in embedder.status()[1]


def test_unknown_way_of_loading_is_refused() -> None:
    with pytest.raises(CacheError, match="service, mapped, memory"):
        Model2VecEmbedder("none", via="fork")


def test_model_none_disables_it_and_writes_no_copy(
    model_dir: Path, tmp_path: Path, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_EMBEDDING_MODEL", "none")
    config = Config.from_env()
    svc = open_service(replace(config, vault=tmp_path / "vault", create_vault=True))
    assert svc.searcher.embedder is None
    assert svc.wait_for_model(timeout=1) is False
    svc.search("anything")
    assert not (isolated_home / ".cache" / "rlm-vault" / "models").exists()


def test_vocabulary_quantized_model_matches(model_dir: Path, tmp_path: Path) -> None:
    """A model whose tokens share rows (mapping) and carry weights pools the way model2vec does."""
    from model2vec import StaticModel

    base = StaticModel.from_pretrained(str(model_dir))
    tokens = len(base.tokens)
    mapping = np.arange(tokens) % 4
    weights = np.linspace(0.5, 2.0, tokens).astype(np.float32)
    rows = np.asarray(base.embedding[:4], dtype=np.float32)
    quantized = StaticModel(rows, base.tokenizer, weights=weights, token_mapping=mapping, normalize=True)
    quantized.save_pretrained(str(tmp_path / "vq"))
    reference = normalise(StaticModel.from_pretrained(str(tmp_path / "vq")).encode(TEXTS[:3]))
    ours = normalise(open_shared(str(tmp_path / "vq"), tmp_path / "cache").encode(TEXTS[:3]))
    assert np.all(np.einsum("ij,ij->i", reference, ours) > 0.999)
