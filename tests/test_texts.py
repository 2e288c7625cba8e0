"""The shared bodies file for grep: appended, memory-mapped, keyed by content hash, deletable."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from test_index import make_doc

from rlm_vault.texts import TextStore


def test_bodies_are_shared_appended_and_keyed_by_hash(tmp_path: Path) -> None:
    writer = TextStore(tmp_path / "t.npz")
    docs = [make_doc("a", "café au lait\nsecond line"), make_doc("b", "kibble")]
    assert writer.update(docs) == 2 and writer.update(docs) == 0
    reader = TextStore(tmp_path / "t.npz")
    assert reader.body("a") == "café au lait\nsecond line"
    assert reader.body("a", sha256="another version") is None  # stored for an older text: not used
    data = next(tmp_path.glob("t-data-*"))
    writer.update([make_doc("c", "a third note")])
    assert next(tmp_path.glob("t-data-*")) == data  # appended to, not rewritten
    reader.reload()
    assert reader.body("c") == "a third note" and reader.body("b") == "kibble"


def test_dead_bodies_are_dropped_and_garbage_is_forgotten(tmp_path: Path) -> None:
    store = TextStore(tmp_path / "t.npz")
    store.update([make_doc("a", "x" * 100), make_doc("b", "y" * 100)])
    store.update([replace(make_doc("a", "short"), sha256="v2")], ["b"])
    assert len(list(tmp_path.glob("t-data-*"))) == 1 and store._size == len("short")
    assert TextStore(tmp_path / "t.npz").body("a") == "short"
    (tmp_path / "t.npz").write_bytes(b"PK\x03\x04 not a zip")
    broken = TextStore(tmp_path / "t.npz")
    assert len(broken) == 0 and broken.update([make_doc("a", "again")]) == 1
