"""The person's index written in-process after a commit, checked by real git in tmp repositories."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import git, git_status, new_repo, write

from rlm_vault import git as git_module
from rlm_vault import gitindex
from rlm_vault.git import Git


@pytest.fixture
def repo(tmp_path: Path) -> Git:
    """A vault-like repository: split index, version 4 (Git.tune), one commit."""
    g = new_repo(tmp_path / "vault")
    g.tune()
    write(g, "README.md", "hello\n")
    g.commit_paths(["README.md"], "start")
    return g


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[str]]]:
    """Every git command a Git ran, as its argument list."""
    calls: list[list[str]] = []
    real = Git._spawn

    def spy(self: Git, args: list[str], *rest: object, **kw: object) -> object:
        calls.append(list(args))
        return real(self, args, *rest, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Git, "_spawn", spy)
    yield calls


def commit(repo: Git, paths: list[str], message: str = "memory") -> str | None:
    return repo.commit_paths(paths, message, own=True)


def in_step(repo: Git) -> None:
    """The index is HEAD's tree exactly, the work tree matches it, and git finds nothing wrong."""
    assert git_status(repo.root) == []
    assert git(repo.root, "diff", "--cached", "--name-only", "HEAD") == ""
    staged = git(repo.root, "ls-files", "-s").splitlines()
    committed = git(repo.root, "ls-tree", "-r", "HEAD").splitlines()
    assert [line.replace(" blob ", " ").replace(" 0\t", "\t") for line in staged] == [
        line.replace(" blob ", " ") for line in committed
    ]
    assert git(repo.root, "write-tree") == git(repo.root, "rev-parse", "HEAD^{tree}")
    subprocess.run(["git", "-C", str(repo.root), "fsck", "--no-dangling"], check=True, capture_output=True)


def linked(repo: Git) -> str:
    """The shared index file the person's index links to."""
    data = (repo.root / ".git" / "index").read_bytes()
    at = data.index(b"link")
    return "sharedindex." + data[at + 8 : at + 28].hex()


def update_index_runs(calls: list[list[str]]) -> int:
    return sum("update-index" in call for call in calls)


def test_new_notes_reach_the_index_without_git(repo: Git, spawned: list[list[str]]) -> None:
    for n in range(5):
        write(repo, f"chunks/App/2026-12-01_App_{n:03d}.md", f"chunk {n}\n")
        assert commit(repo, [f"chunks/App/2026-12-01_App_{n:03d}.md"]) is not None
    write(repo, "insights/écrit à la main.md", "accents\n")
    commit(repo, ["insights/écrit à la main.md"])
    assert update_index_runs(spawned) == 0
    in_step(repo)


def test_a_changed_note_that_the_shared_index_holds_takes_its_place(
    repo: Git, spawned: list[list[str]]
) -> None:
    write(repo, "sessions/today.md", "first\n")
    commit(repo, ["sessions/today.md"])
    git(repo.root, "-c", "splitIndex.maxPercentChange=0", "update-index", "--split-index")
    before = linked(repo)
    assert b"sessions/today.md" in (repo.root / ".git" / before).read_bytes()  # now a shared entry
    spawned.clear()
    write(repo, "sessions/today.md", "first\nsecond\n")
    commit(repo, ["sessions/today.md"])
    assert update_index_runs(spawned) == 0 and linked(repo) == before
    in_step(repo)
    # git reads it, changes its own entries and writes the index again: the new version stays.
    write(repo, "mine.txt", "a person's file\n")
    git(repo.root, "add", "mine.txt")
    assert git(repo.root, "diff", "--cached", "--name-only", "HEAD").split() == ["mine.txt"]
    assert git(repo.root, "rev-parse", ":sessions/today.md") == git(
        repo.root, "rev-parse", "HEAD:sessions/today.md"
    )
    git(repo.root, "-c", "splitIndex.maxPercentChange=0", "update-index", "--split-index")
    assert git(repo.root, "rev-parse", ":sessions/today.md") == git(
        repo.root, "rev-parse", "HEAD:sessions/today.md"
    )


def test_what_a_person_staged_stays_staged_and_out_of_the_commit(repo: Git) -> None:
    write(repo, "README.md", "hello\nedited by hand\n")
    git(repo.root, "add", "README.md")
    write(repo, "insights/a.md", "a\n")
    sha = commit(repo, ["insights/a.md"])
    assert git(repo.root, "show", "--name-only", "--format=", str(sha)).split() == ["insights/a.md"]
    assert git(repo.root, "diff", "--cached", "--name-only", "HEAD").split() == ["README.md"]
    assert git_status(repo.root) == ["M  README.md"]


def test_the_cached_trees_along_a_new_path_are_invalidated(repo: Git) -> None:
    write(repo, "chunks/App/a.md", "a\n")
    write(repo, "insights/b.md", "b\n")
    commit(repo, ["chunks/App/a.md", "insights/b.md"])
    git(repo.root, "write-tree")  # fills the index's cached trees
    assert b"TREE" in (repo.root / ".git" / "index").read_bytes()
    write(repo, "chunks/App/c.md", "c\n")
    commit(repo, ["chunks/App/c.md"])
    in_step(repo)  # write-tree from the index gives HEAD's tree, not the cached one of before


def test_a_removed_note_is_left_to_git(repo: Git, spawned: list[list[str]]) -> None:
    write(repo, "insights/a.md", "a\n")
    commit(repo, ["insights/a.md"])
    (repo.root / "insights" / "a.md").unlink()
    commit(repo, ["insights/a.md"])
    assert update_index_runs(spawned) == 1
    in_step(repo)


def test_a_small_part_past_its_share_gets_a_new_shared_index(
    repo: Git, spawned: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gitindex, "RESPLIT_CAP", 3)
    monkeypatch.setattr(gitindex, "RESPLIT_FLOOR", 3)
    monkeypatch.setattr(git_module, "SHARED_INDEX_EXPIRE", "now")
    first = linked(repo)
    for n in range(9):  # the 4th and 8th write find 3 entries in the small part
        write(repo, f"chunks/{n}.md", f"{n}\n")
        # Older than the index: git keeps an entry as new as its index in the small part ("racily clean").
        os.utime(repo.root / "chunks" / f"{n}.md", (time.time() - 60, time.time() - 60))
        commit(repo, [f"chunks/{n}.md"])
    assert [call[:2] for call in spawned if "update-index" in call] == [
        ["-c", "splitIndex.maxPercentChange=0"]
    ] * 2
    assert linked(repo) != first
    assert [p.name for p in (repo.root / ".git").glob("sharedindex.*")] == [linked(repo)]  # old ones expired
    in_step(repo)


def test_a_held_index_lock_delays_the_entries_until_it_is_released(repo: Git) -> None:
    lock = repo.root / ".git" / "index.lock"
    lock.write_text("")
    write(repo, "insights/a.md", "a\n")
    assert commit(repo, ["insights/a.md"]) is not None
    assert lock.read_text() == ""  # never taken from its holder
    lock.unlink()
    write(repo, "insights/b.md", "b\n")
    commit(repo, ["insights/b.md"])
    in_step(repo)


@pytest.mark.parametrize("version", [2, 3, 4])
def test_every_index_version_git_writes(repo: Git, version: int) -> None:
    git(repo.root, "config", "index.version", str(version))
    git(
        repo.root,
        "-c",
        "splitIndex.maxPercentChange=0",
        "update-index",
        f"--index-version={version}",
        "--split-index",
    )
    long_name = "chunks/" + "x" * 200 + ".md"
    for rel in ["insights/a.md", long_name, "insights/b.md"]:
        write(repo, rel, f"{rel}\n")
        commit(repo, [rel])
    if version == 3:
        git(repo.root, "update-index", "--skip-worktree", "insights/b.md")  # extended flags: version 3
    (repo.root / "README.md").chmod(0o755)
    git(repo.root, "add", "README.md")
    git(repo.root, "commit", "-q", "-m", "a person's commit")
    write(repo, "insights/a.md", "changed\n")
    commit(repo, ["insights/a.md"])
    in_step(repo)
    assert int.from_bytes((repo.root / ".git" / "index").read_bytes()[4:8], "big") == version


def test_an_index_that_is_not_split_is_left_to_git(repo: Git, spawned: list[list[str]]) -> None:
    git(repo.root, "update-index", "--no-split-index")
    git(repo.root, "config", "core.splitIndex", "false")
    write(repo, "insights/a.md", "a\n")
    commit(repo, ["insights/a.md"])
    assert update_index_runs(spawned) == 1
    in_step(repo)


def test_a_required_extension_it_does_not_know_leaves_the_index_untouched(repo: Git) -> None:
    index = repo.root / ".git" / "index"
    data = index.read_bytes()[:-20] + b"xtra" + (4).to_bytes(4, "big") + b"data"
    index.write_bytes(data + hashlib.sha1(data).digest())
    write(repo, "insights/a.md", "a\n")
    st = (repo.root / "insights" / "a.md").lstat()
    staged = [gitindex.Staged("insights/a.md", 0o100644, "0" * 40, st)]
    before = index.read_bytes()
    assert gitindex.PersonIndex(repo.root / ".git").stage(staged) is gitindex.Outcome.GIT
    assert index.read_bytes() == before and not (repo.root / ".git" / "index.lock").exists()


def test_a_file_changed_after_its_commit_shows_as_changed(repo: Git) -> None:
    write(repo, "insights/a.md", "one\n")
    commit(repo, ["insights/a.md"])
    path = repo.root / "insights" / "a.md"
    mtime = path.stat().st_mtime_ns
    path.write_text("two\n", encoding="utf-8")  # same size, same mtime: only ctime and content differ
    os.utime(path, ns=(mtime, mtime))
    assert git_status(repo.root) == [" M insights/a.md"]


def test_random_writes_keep_the_index_equal_to_head(repo: Git, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gitindex, "RESPLIT_CAP", 12)
    monkeypatch.setattr(gitindex, "RESPLIT_FLOOR", 1)
    rng = random.Random(7)
    names = [
        f"{folder}/{n:02d}.md"
        for folder in ("chunks/App", "chunks/Web", "insights", "sessions")
        for n in range(8)
    ]
    for step in range(60):
        picked = rng.sample(names, rng.choice([1, 1, 1, 2, 3]))
        for rel in picked:
            if (repo.root / rel).exists() and rng.random() < 0.2:
                (repo.root / rel).unlink()
            else:
                write(repo, rel, f"{rel} at step {step}\n" * rng.randint(1, 4))
        commit(repo, picked)
        if step % 15 == 14:
            git(repo.root, "status", "--porcelain")  # git refreshes and may write the index itself
    in_step(repo)


def test_an_index_git_changed_between_two_writes_is_read_again(repo: Git) -> None:
    write(repo, "insights/a.md", "a\n")
    commit(repo, ["insights/a.md"])
    write(repo, "notes-of-mine.txt", "mine\n")
    git(repo.root, "add", "notes-of-mine.txt")  # git rewrites the index this process wrote last
    write(repo, "insights/b.md", "b\n")
    commit(repo, ["insights/b.md"])
    assert git(repo.root, "diff", "--cached", "--name-only", "HEAD").split() == ["notes-of-mine.txt"]
    git(repo.root, "rm", "-q", "--cached", "notes-of-mine.txt")
    (repo.root / "notes-of-mine.txt").unlink()
    write(repo, "insights/c.md", "c\n")
    commit(repo, ["insights/c.md"])
    in_step(repo)


def test_the_private_index_of_other_commits_is_never_split(repo: Git) -> None:
    write(repo, "insights/a.md", "a\n")
    repo.commit_paths(["insights/a.md"], "through plumbing")  # not own: the private index
    private = (repo.root / ".git" / "rlm-vault-index").read_bytes()
    assert private[:4] == b"DIRC" and b"link" not in private  # no link to a shared index
    in_step(repo)


def test_a_write_keeps_the_shared_index_it_links_to_from_expiring(repo: Git) -> None:
    shared = repo.root / ".git" / linked(repo)
    old = time.time() - 2 * 3600
    os.utime(shared, (old, old))
    write(repo, "insights/a.md", "a\n")
    commit(repo, ["insights/a.md"])
    assert shared.stat().st_mtime > time.time() - 60  # as git freshens it when it writes a split index
