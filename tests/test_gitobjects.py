"""Commits built in-process must be the commits git itself would build from the same files."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest
from helpers import git, git_status
from hypothesis import given
from hypothesis import strategies as st

from rlm_vault import gitobjects
from rlm_vault.vault import Vault

# Names whose order differs between plain sorting and git's (a folder sorts as "name/").
NAMES = ["a.md", "a-b.md", "a", "a0.md", "b.md", "é.md", "日本.md", "z.md", "a.b.md"]


def git_tree_of_worktree(root: Path) -> str:
    """The tree git builds from the work tree, in a throwaway index."""
    env = {**os.environ, "GIT_INDEX_FILE": str(root / ".git" / "check-index")}
    subprocess.run(["git", "-C", str(root), "add", "-A", "."], env=env, check=True, capture_output=True)
    tree = subprocess.run(
        ["git", "-C", str(root), "write-tree"], env=env, check=True, capture_output=True, text=True
    )
    os.unlink(env["GIT_INDEX_FILE"])
    return tree.stdout.strip()


def test_random_writes_and_deletes_give_git_s_own_trees(tmp_path: Path) -> None:
    vault = Vault.open(tmp_path / "v")
    rng = random.Random(7)
    present: set[str] = set()
    for step in range(60):
        folder = rng.choice(["insights", "chunks/P", "chunks/P-2", "chunks/a", "archive/P"])
        path = f"{folder}/{rng.choice(NAMES)}"
        if folder == "chunks/a" and path.endswith("/a"):
            continue
        with vault.transaction() as tx:
            tx.message = f"step {step}"
            if path in present and rng.random() < 0.4:
                tx.delete(path)
                present.discard(path)
            else:
                tx.write(path, f"---\nid: {step}\n---\nbody {rng.random()}\n")
                present.add(path)
        assert git(vault.root, "rev-parse", "HEAD^{tree}").strip() == git_tree_of_worktree(vault.root), step
        assert git_status(vault.root) == []
    assert (
        subprocess.run(
            ["git", "-C", str(vault.root), "fsck", "--strict"], capture_output=True, check=False
        ).returncode
        == 0
    )


def test_a_file_git_would_normalise_goes_through_git(tmp_path: Path) -> None:
    vault = Vault.open(tmp_path / "v")
    with vault.transaction() as tx:
        tx.message = "crlf"
        tx.write("insights/crlf.md", "---\nid: crlf\n---\nline one\r\nline two\r\n")
    assert git(vault.root, "rev-parse", "HEAD^{tree}").strip() == git_tree_of_worktree(vault.root)
    assert git_status(vault.root) == []


def test_custom_attributes_turn_the_in_process_path_off(tmp_path: Path) -> None:
    vault = Vault.open(tmp_path / "v")
    (vault.root / ".gitattributes").write_text("*.md filter=something\n")
    assert vault.git._fast_path_safe() is False


def test_tree_entries_round_trip() -> None:
    entries = {
        "b.md": ("100644", "1" * 40),
        "a": ("40000", "2" * 40),
        "a.md": ("100644", "3" * 40),
        "日本.md": ("100755", "4" * 40),
    }
    data = gitobjects.serialize_tree(entries)
    assert gitobjects.parse_tree(data) == entries
    assert list(gitobjects.parse_tree(data)) == ["a.md", "a", "b.md", "日本.md"]  # "a/" sorts after "a.md"


@pytest.mark.parametrize("kind", ["blob", "tree", "commit"])
def test_loose_objects_are_what_git_reads(tmp_path: Path, kind: str) -> None:
    vault = Vault.open(tmp_path / "v")
    if kind == "blob":
        data = b"hello\n"
    elif kind == "tree":
        blob = gitobjects.write_loose(vault.root / ".git" / "objects", "blob", b"x\n")
        data = gitobjects.serialize_tree({"x.md": ("100644", blob)})
    else:
        tree = git(vault.root, "rev-parse", "HEAD^{tree}").strip()
        data = f"tree {tree}\nauthor A <a@b> 1 +0000\ncommitter A <a@b> 1 +0000\n\nmsg\n".encode()
    sha = gitobjects.write_loose(vault.root / ".git" / "objects", kind, data)
    assert git(vault.root, "cat-file", "-t", sha).strip() == kind
    assert gitobjects.read_loose(vault.root / ".git" / "objects", sha) == (kind, data)


def test_a_fan_out_folder_pruned_under_a_write_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`git prune` may remove an empty fan-out folder between mkdir's "exists" and its is-a-folder check:
    Path.mkdir then raises FileExistsError for a folder that is gone. The write makes it again."""
    vault = Vault.open(tmp_path / "v")
    objects = vault.root / ".git" / "objects"
    data = b"a note written while git gc prunes\n"
    real_mkdir, raised = Path.mkdir, []

    def pruned_meanwhile(self: Path, *args: object, **kwargs: object) -> None:
        if self.parent == objects and not raised:
            raised.append(self)
            raise FileExistsError(17, "File exists", str(self))
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", pruned_meanwhile)
    sha = gitobjects.write_loose(objects, "blob", data)
    assert raised and git(vault.root, "cat-file", "blob", sha) == data.decode()


def test_a_big_tree_is_stored_uncompressed_and_git_reads_it(tmp_path: Path) -> None:
    vault = Vault.open(tmp_path / "v")
    objects = vault.root / ".git" / "objects"
    blob = gitobjects.write_loose(objects, "blob", b"x\n")
    entries = {f"note-{n:06}.md": ("100644", blob) for n in range(gitobjects.STORE_OVER // 40)}
    data = gitobjects.serialize_tree(entries)
    assert len(data) > gitobjects.STORE_OVER
    sha = gitobjects.write_loose(objects, "tree", data)
    assert gitobjects.object_path(objects, sha).stat().st_size > len(data)  # stored, not compressed
    assert git(vault.root, "cat-file", "-t", sha).strip() == "tree"
    assert len(git(vault.root, "ls-tree", sha).splitlines()) == len(entries)
    assert gitobjects.read_loose(objects, sha) == ("tree", data)


@given(
    st.dictionaries(
        st.sampled_from(NAMES + ["b", "c.md", "z"]), st.sampled_from(["100644", "40000"]), max_size=8
    ),
    st.lists(
        st.dictionaries(
            st.sampled_from(NAMES + ["b", "c.md", "z"]),
            st.one_of(st.none(), st.sampled_from(["100644", "40000", "100755"])),
            max_size=20,
        ),
        max_size=4,
    ),
)
def test_a_patched_tree_is_the_tree_built_from_its_entries(
    start: dict[str, str], rounds: list[dict[str, str | None]]
) -> None:
    for limit in (gitobjects.PATCH_LIMIT, 0):  # spliced entry by entry, and built again in one go
        for numpy_offsets in (False, True):  # a hook's Python array, a server's numpy array
            saved, gitobjects.PATCH_LIMIT = gitobjects.PATCH_LIMIT, limit
            try:
                _patch_rounds(start, rounds, numpy_offsets)
            finally:
                gitobjects.PATCH_LIMIT = saved


def _patch_rounds(start: dict[str, str], rounds: list[dict[str, str | None]], numpy_offsets: bool) -> None:
    from array import array

    import numpy as np

    sha = "ab" * 20
    entries = {name: (mode, sha) for name, mode in start.items()}
    built = gitobjects.Tree.build(entries)
    offsets = list(built._starts)
    tree = gitobjects.Tree(
        built.data(), np.array(offsets, dtype=np.int64) if numpy_offsets else array("q", offsets)
    )
    for n, changes in enumerate(rounds):
        patch = {name: None if mode is None else (mode, f"{n:02x}" * 20) for name, mode in changes.items()}
        tree = tree.patched(patch)
        for name, entry in patch.items():
            if entry is None:
                entries.pop(name, None)
            else:
                entries[name] = entry
        assert tree.data() == gitobjects.Tree.build(entries).data()
        assert (
            tree.entries
            == dict(gitobjects.Tree.parse(tree.data()).entries)
            == {k: entries[k] for k in tree.entries}
        )
        assert all(tree.get(name) == entries.get(name) for name in NAMES)


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 1_280_000])
def test_stored_blocks_are_a_zlib_stream_of_the_object(size: int) -> None:
    import zlib

    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    header = f"tree {len(data)}\0".encode()
    stream = b"".join(bytes(piece) for piece in gitobjects._stored(header, data))
    assert zlib.decompress(stream) == header + data
