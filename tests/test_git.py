"""rlm_vault.git.Git against real repositories in tmp folders."""

from __future__ import annotations

import getpass
import os
import socket
import time
from pathlib import Path

import pytest
from helpers import commit_count, git, git_log, git_status, new_repo, tracked, write

from rlm_vault.errors import GitError
from rlm_vault.git import FALLBACK_EMAIL, Git, machine_identity


@pytest.fixture
def repo(tmp_path: Path) -> Git:
    return new_repo(tmp_path / "repo")


def changed_in(repo: Git, commit: str) -> set[str]:
    out = git(repo.root, "show", "--name-only", "--format=", "-z", commit)
    return {p for p in out.split("\0") if p}


def tree(repo: Git) -> set[str]:
    return set(git(repo.root, "ls-tree", "-r", "--name-only", "-z", "HEAD").split("\0")) - {""}


def author(repo: Git, rev: str = "HEAD") -> str:
    return git(repo.root, "log", "-1", "--format=%an <%ae>|%cn <%ce>", rev).strip()


def test_init_makes_an_empty_repo_on_main(repo: Git) -> None:
    assert repo.is_repo()
    assert repo.head() is None
    assert git(repo.root, "symbolic-ref", "HEAD").strip() == "refs/heads/main"


def test_first_commit_has_no_parent_and_moves_head(repo: Git) -> None:
    write(repo, "insights/a.md", "a\n")
    commit = repo.commit_paths(["insights/a.md"], "first: a")
    assert commit is not None and repo.head() == commit
    assert git(repo.root, "rev-list", "--parents", "-n1", "HEAD").split() == [commit]
    assert git_log(repo.root) == ["first: a"]
    assert git_status(repo.root) == []


def test_commit_paths_commits_exactly_the_listed_paths(repo: Git) -> None:
    write(repo, "insights/a.md", "a1\n")
    write(repo, "insights/b.md", "b1\n")
    repo.commit_paths(["insights/a.md", "insights/b.md"], "init")
    write(repo, "insights/a.md", "a2\n")
    write(repo, "insights/b.md", "b2 edited by a person\n")
    write(repo, "insights/untracked.md", "new file\n")

    commit = repo.commit_paths(["insights/a.md"], "update: a")

    assert commit is not None
    assert changed_in(repo, commit) == {"insights/a.md"}
    assert tree(repo) == {"insights/a.md", "insights/b.md"}
    assert repo.show(commit, "insights/b.md") == b"b1\n"
    status = git_status(repo.root)
    assert any(line.endswith("insights/b.md") and line.startswith(" M") for line in status)
    assert "?? insights/untracked.md" in status
    assert not any("insights/a.md" in line for line in status)


def test_commit_paths_does_not_sweep_in_a_file_the_person_staged(repo: Git) -> None:
    """A person who ran `git add` on their own edit must not see it committed under the server's message."""
    write(repo, "insights/a.md", "a1\n")
    write(repo, "insights/b.md", "b1\n")
    repo.commit_paths(["insights/a.md", "insights/b.md"], "init")
    write(repo, "insights/b.md", "b2 staged by a person\n")
    write(repo, "insights/staged-new.md", "new and staged\n")
    git(repo.root, "add", "insights/b.md", "insights/staged-new.md")
    write(repo, "insights/a.md", "a2\n")

    commit = repo.commit_paths(["insights/a.md"], "update: a")

    assert commit is not None
    assert changed_in(repo, commit) == {"insights/a.md"}
    assert repo.show(commit, "insights/b.md") == b"b1\n"


def test_deleted_path_is_committed_as_a_deletion(repo: Git) -> None:
    write(repo, "insights/a.md", "a\n")
    write(repo, "insights/keep.md", "k\n")
    repo.commit_paths(["insights/a.md", "insights/keep.md"], "init")
    (repo.root / "insights/a.md").unlink()

    commit = repo.commit_paths(["insights/a.md"], "forget: a")

    assert commit is not None
    assert tree(repo) == {"insights/keep.md"}
    assert git_log(repo.root) == ["forget: a", "init"]
    assert git_status(repo.root) == []


def test_deleting_a_path_git_never_saw_is_a_no_op(repo: Git) -> None:
    write(repo, "insights/a.md", "a\n")
    repo.commit_paths(["insights/a.md"], "init")
    assert repo.commit_paths(["insights/never-existed.md"], "forget: ghost") is None
    assert commit_count(repo.root) == 1


def test_no_change_returns_none_and_makes_no_commit(repo: Git) -> None:
    write(repo, "insights/a.md", "a\n")
    first = repo.commit_paths(["insights/a.md"], "init")
    assert repo.commit_paths(["insights/a.md"], "again") is None
    assert repo.commit_paths([], "nothing") is None
    assert repo.head() == first
    assert git_log(repo.root) == ["init"]


def test_paths_with_spaces_and_unicode(repo: Git) -> None:
    rel = "chunks/Mon Projet/2026-11-24 café 日本.md"
    write(repo, rel, "x\n")
    commit = repo.commit_paths([rel], "chunk: unicode")
    assert commit is not None
    assert repo.show(commit, rel) == b"x\n"
    assert tracked(repo, "chunks") == [rel]
    assert [c.message for c in repo.log(rel)] == ["chunk: unicode"]


def test_multi_line_message_is_kept(repo: Git) -> None:
    write(repo, "insights/a.md", "a\n")
    commit = repo.commit_paths(["insights/a.md"], "remember: a (fact/low)\n\nbody line")
    assert commit is not None
    assert git(repo.root, "log", "-1", "--format=%B").strip() == "remember: a (fact/low)\n\nbody line"


def test_env_identity_is_used_when_set(repo: Git) -> None:
    write(repo, "insights/a.md", "a\n")
    repo.commit_paths(["insights/a.md"], "m")
    assert author(repo) == "Test Author <author@example.com>|Test Author <author@example.com>"


@pytest.fixture
def no_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No GIT_* identity, an empty HOME and XDG config, no system config."""
    for key in [k for k in os.environ if k.startswith("GIT_")]:
        monkeypatch.delenv(key)
    for key in ("EMAIL", "USER", "LOGNAME"):
        monkeypatch.delenv(key, raising=False)
    empty = tmp_path / "empty-home"
    (empty / "xdg").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(empty))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(empty / "xdg"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@pytest.mark.usefixtures("no_identity")
def test_commit_without_any_identity_names_the_machine(repo: Git) -> None:
    assert Git(repo.root).run("config", "user.name", check=False).strip() == ""
    write(repo, "insights/a.md", "a\n")
    commit = repo.commit_paths(["insights/a.md"], "remember: a")
    assert commit is not None
    user, host = getpass.getuser(), socket.gethostname().split(".")[0]
    expected = f"{user}@{host} <{user}@{host}>"
    assert author(repo) == f"{expected}|{expected}"
    write(repo, "insights/a.md", "a2\n")
    assert repo.commit_paths(["insights/a.md"], "update: a") is not None
    assert commit_count(repo.root) == 2
    assert repo.log("insights/a.md")[0].author == expected  # what rlm_history shows


@pytest.mark.usefixtures("no_identity")
def test_a_configured_author_names_commits_when_git_has_no_identity(
    repo: Git, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_AUTHOR", "Build Box <ci@example.org>")
    write(repo, "insights/a.md", "a\n")
    assert Git(repo.root).commit_paths(["insights/a.md"], "m") is not None
    assert author(repo) == "Build Box <ci@example.org>|Build Box <ci@example.org>"
    assert machine_identity({"RLM_AUTHOR": "Solo Name"}) == ("Solo Name", FALLBACK_EMAIL)
    assert machine_identity({"RLM_AUTHOR": "x <a>b>"})[0] != "x"  # malformed: the machine's name instead


@pytest.mark.usefixtures("no_identity")
def test_repo_user_identity_is_used(repo: Git) -> None:
    git(repo.root, "config", "user.name", "Repo Person")
    git(repo.root, "config", "user.email", "person@example.org")
    g = Git(repo.root)  # identity is read once per Git object
    write(repo, "insights/a.md", "a\n")
    assert g.commit_paths(["insights/a.md"], "m") is not None
    assert author(g) == "Repo Person <person@example.org>|Repo Person <person@example.org>"


def test_log_lists_commits_of_one_path_newest_first(repo: Git) -> None:
    for n in range(3):
        write(repo, "insights/a.md", f"a{n}\n")
        repo.commit_paths(["insights/a.md"], f"a: {n}")
        write(repo, "insights/other.md", f"o{n}\n")
        repo.commit_paths(["insights/other.md"], f"other: {n}")

    log = repo.log("insights/a.md")

    assert [c.message for c in log] == ["a: 2", "a: 1", "a: 0"]
    assert all(len(c.commit) == 40 for c in log)
    assert log[0].date[:4].isdigit() and "T" in log[0].date
    assert repo.show(log[-1].commit, "insights/a.md") == b"a0\n"
    assert [c.message for c in repo.log("insights/a.md", limit=2)] == ["a: 2", "a: 1"]
    assert repo.log("insights/none.md") == []


def test_log_lists_the_deletion_of_a_path(repo: Git) -> None:
    write(repo, "insights/a.md", "a\n")
    repo.commit_paths(["insights/a.md"], "remember: a")
    (repo.root / "insights/a.md").unlink()
    repo.commit_paths(["insights/a.md"], "forget: a")
    assert [c.message for c in repo.log("insights/a.md")] == ["forget: a", "remember: a"]


def test_stale_index_lock_is_removed_and_fresh_one_kept(repo: Git) -> None:
    lock = repo.root / ".git" / "index.lock"
    lock.write_text("")
    old = time.time() - 60
    os.utime(lock, (old, old))
    assert repo.remove_stale_index_lock(older_than=10.0) is True
    assert not lock.exists()

    lock.write_text("")
    assert repo.remove_stale_index_lock(older_than=10.0) is False
    assert lock.exists()
    assert repo.remove_stale_index_lock(older_than=10.0) is False  # still fresh, still kept
    lock.unlink()
    assert repo.remove_stale_index_lock(older_than=10.0) is False  # nothing there


def test_a_persons_index_lock_does_not_block_commits_and_the_index_catches_up(repo: Git) -> None:
    write(repo, "insights/a.md", "a\n")
    lock = repo.root / ".git" / "index.lock"
    lock.write_text("")
    assert repo.commit_paths(["insights/a.md"], "while locked") is not None
    assert lock.read_text() == ""  # a fresh lock is never taken away
    lock.unlink()
    write(repo, "insights/b.md", "b\n")
    repo.commit_paths(["insights/b.md"], "after")
    assert repo.status() == []  # the person's index now has both files


def test_stale_index_lock_is_removed(repo: Git) -> None:
    lock = repo.root / ".git" / "index.lock"
    lock.write_text("")
    assert repo.remove_stale_index_lock(older_than=10.0) is False
    old = time.time() - 60
    os.utime(lock, (old, old))
    assert repo.remove_stale_index_lock(older_than=10.0) is True
    assert not lock.exists()


def test_a_status_never_takes_the_persons_index_lock(repo: Git) -> None:
    """git's own `status` saves a refresh of the index under index.lock; ours must not (a kill would leave
    the lock, and a person's `git commit` racing it would fail)."""
    write(repo, "insights/a.md", "a\n")
    repo.commit_paths(["insights/a.md"], "a")
    index = repo.root / ".git" / "index"
    later = time.time() + 5
    os.utime(repo.root / "insights/a.md", (later, later))  # the index's stat data is now stale
    before = index.stat().st_mtime_ns
    assert repo.status() == []
    assert index.stat().st_mtime_ns == before
    git(repo.root, "status", "--porcelain")  # (git alone rewrites it)
    assert index.stat().st_mtime_ns != before


def test_a_write_leaves_no_owner_mark_and_a_dead_owners_lock_goes(repo: Git) -> None:
    write(repo, "insights/a.md", "a\n")
    repo.commit_paths(["insights/a.md"], "a", own=True)
    git_dir = repo.root / ".git"
    assert not list(git_dir.glob("rlm-vault-index-owner.*"))

    lock = git_dir / "index.lock"
    lock.write_text("")
    assert repo.clear_orphaned_index_lock() is False and lock.exists()  # nobody's mark: a person's
    dead = git_dir / "rlm-vault-index-owner.999999999"  # no such process
    dead.touch()
    an_hour_ago = time.time() - 3600
    os.utime(dead, (an_hour_ago, an_hour_ago))  # killed long before a person's git took the lock
    assert repo.clear_orphaned_index_lock() is False and lock.exists() and not dead.exists()
    dead.touch()  # killed while it held the lock
    assert repo.clear_orphaned_index_lock() is True and not lock.exists()
    assert not list(git_dir.glob("rlm-vault-index-owner.*"))


def test_failed_command_raises_git_error_with_details(repo: Git) -> None:
    with pytest.raises(GitError) as info:
        repo.run("show", "no-such-rev:nothing")
    assert info.value.returncode != 0
    assert info.value.cmd == ["show", "no-such-rev:nothing"]
    assert info.value.stderr
    assert "git show" in str(info.value)


def test_status_and_tracked(repo: Git) -> None:
    write(repo, "insights/a.md", "a\n")
    repo.commit_paths(["insights/a.md"], "init")
    write(repo, "insights/b.md", "b\n")
    assert tracked(repo, "insights") == ["insights/a.md"]
    assert repo.status() == [("??", "insights/b.md")]
    assert repo.status("insights/a.md") == []


def test_is_repo_false_for_plain_folder(tmp_path: Path) -> None:
    assert Git(tmp_path).is_repo() is False


def test_head_moves_in_process_as_update_ref_would(repo: Git) -> None:
    write(repo, "insights/a.md", "a\n")
    repo.commit_paths(["insights/a.md"], "first")
    first = repo.head()
    write(repo, "insights/b.md", "b\n")
    second = repo.commit_paths(["insights/b.md"], "second\n\nwith a body")
    assert (repo.root / ".git" / "refs" / "heads" / "main").read_text() == f"{second}\n"
    assert not (repo.root / ".git" / "refs" / "heads" / "main.lock").exists()
    for log in ("HEAD", "refs/heads/main"):
        last = (repo.root / ".git" / "logs" / log).read_text().splitlines()[-1]
        assert last.startswith(f"{first} {second} ") and last.endswith("\tcommit: second")
    assert git(repo.root, "reflog", "-1", "--format=%H %gs").strip() == f"{second} commit: second"
    assert git(repo.root, "fsck", "--strict", "--no-dangling").strip() == ""


def test_a_ref_update_hook_or_a_held_lock_gets_git_s_own_update_ref(repo: Git) -> None:
    write(repo, "insights/a.md", "a\n")
    repo.commit_paths(["insights/a.md"], "first")
    hook = repo.root / ".git" / "hooks" / "reference-transaction"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text('#!/bin/sh\necho "$1" >> "$(git rev-parse --git-dir)/ref-hook.log"\n')
    hook.chmod(0o755)
    write(repo, "insights/b.md", "b\n")
    repo.commit_paths(["insights/b.md"], "watched")
    assert "committed" in (repo.root / ".git" / "ref-hook.log").read_text()  # git ran the hook
    hook.unlink()
    lock = repo.root / ".git" / "refs" / "heads" / "main.lock"
    lock.write_text("")
    write(repo, "insights/c.md", "c\n")
    with pytest.raises(GitError):
        repo.commit_paths(["insights/c.md"], "while another git holds the branch")
    assert lock.read_text() == ""  # never taken from its holder
    lock.unlink()
    assert repo.commit_paths(["insights/c.md"], "after") is not None
