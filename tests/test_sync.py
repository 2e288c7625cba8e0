"""Sync through a real bare git remote: two vaults as two machines, conflicts, an unreachable remote."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from helpers import git, git_status

from rlm_vault.autosync import AutoSync
from rlm_vault.config import Config
from rlm_vault.errors import InvalidInput, VaultError
from rlm_vault.service import MemoryService, open_service
from rlm_vault.sync import clone_or_create
from rlm_vault.vault import Vault


def machine(root: Path, remote: Path, name: str) -> MemoryService:
    """A vault on one 'machine', set up the way `rlm-vault init --remote` does."""
    config = Config(vault=root / name, project="SyncProj", embedding_model="none")
    clone_or_create(config.vault, str(remote))
    svc = open_service(config)
    svc.set_remote(str(remote))
    svc.sync()
    return svc


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    return bare


def texts(svc: MemoryService) -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in (svc.vault.root / "insights").glob("*.md"))


def fsck(path: Path) -> None:
    proc = subprocess.run(
        ["git", "-C", str(path), "fsck", "--strict"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0 and "notice" not in proc.stderr, proc.stderr


def test_memories_from_both_machines_reach_both(tmp_path: Path, remote: Path) -> None:
    a = machine(tmp_path, remote, "A")
    a.remember("Fact X: the lighthouse code is xylophone42", category="fact")
    a.sync()
    b = machine(tmp_path, remote, "B")
    assert "xylophone42" in texts(b)  # the second machine cloned the first one's vault
    b.remember("Fact Y: the boat is named yellowtail77", category="fact")
    assert b.sync()["pushed"] >= 1
    assert a.sync()["pulled"] >= 1
    for svc in (a, b):
        assert "xylophone42" in texts(svc) and "yellowtail77" in texts(svc)
        assert git_status(svc.vault.root) == []
        fsck(svc.vault.root)
    fsck(remote)
    assert [i["content"] for i in a.recall("yellowtail77")["insights"]]  # the pulled note is readable at once


def test_conflicting_edits_keep_both_versions(tmp_path: Path, remote: Path) -> None:
    a = machine(tmp_path, remote, "A")
    note = a.remember("The staging port is 8080.", category="fact")
    a.sync()
    b = machine(tmp_path, remote, "B")
    a.update(note["id"], content="The staging port is 9090 (set on A).")
    b.update(note["id"], content="The staging port is 7070 (set on B).")
    a.sync()
    result = b.sync()
    assert len(result["conflicts"]) == 1 and ".conflict-" in result["conflicts"][0]
    a.sync()
    for svc in (a, b):
        text = texts(svc)
        assert "9090 (set on A)" in text and "7070 (set on B)" in text
        assert "<<<<<<<" not in text and ">>>>>>>" not in text
        assert not (svc.vault.root / ".git" / "MERGE_HEAD").exists()
        assert svc.status()["conflicts"] == result["conflicts"]
        fsck(svc.vault.root)
    assert "7070 (set on B)" in (b.vault.root / note["path"]).read_text()  # local version stays in place
    assert "sync: merge" in git(b.vault.root, "log", "--format=%s")


def test_hand_edits_are_committed_before_the_pull(tmp_path: Path, remote: Path) -> None:
    a = machine(tmp_path, remote, "A")
    note = a.remember("Original hand-editable note.")
    path = a.vault.root / note["path"]
    path.write_text(path.read_text().replace("Original", "Edited by hand"))
    a.sync()
    assert "external:" in git(a.vault.root, "log", "--format=%s", "-3")
    assert "Edited by hand" in git(remote, "show", f"HEAD:{note['path']}")


def test_an_unreachable_remote_is_a_clear_error_and_changes_nothing(tmp_path: Path) -> None:
    config = Config(vault=tmp_path / "solo", project="P", embedding_model="none")
    svc = open_service(config)
    svc.remember("Stays local.")
    svc.set_remote(str(tmp_path / "no-such-remote.git"))
    head = svc.vault.git.head()
    with pytest.raises(VaultError, match="cannot reach|cannot fetch"):
        svc.sync()
    assert svc.vault.git.head() == head and git_status(svc.vault.root) == []
    with pytest.raises(VaultError, match="nothing was created"):
        clone_or_create(tmp_path / "new", str(tmp_path / "no-such-remote.git"))
    assert not (tmp_path / "new").exists()


def test_sync_without_remote_says_how_to_set_one(service: MemoryService) -> None:
    with pytest.raises(InvalidInput, match="remote set"):
        service.sync()
    with pytest.raises(InvalidInput):
        service.set_remote("--upload-pack=evil")


def test_automatic_sync_pulls_at_start_and_pushes_after_writes(tmp_path: Path, remote: Path) -> None:
    a = machine(tmp_path, remote, "A")
    b = machine(tmp_path, remote, "B")
    b.remember("Written on B before A's server starts.")
    b.sync()
    auto = AutoSync(a.syncer, a.store, 0.2).start()
    deadline = time.monotonic() + 20
    while "before A's server" not in texts(a) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "before A's server" in texts(a)
    a.remember("Written on A, pushed by itself.")
    while "pushed by itself" not in git(remote, "log", "-p", "-1") and time.monotonic() < deadline:
        time.sleep(0.1)
    auto.stop()
    assert "pushed by itself" in git(remote, "log", "-p", "-1")


def test_a_merge_a_kill_interrupted_is_undone_at_the_next_start(tmp_path: Path, remote: Path) -> None:
    a = machine(tmp_path, remote, "A")
    note = a.remember("Shared fact: port 8080.")
    a.sync()
    b = machine(tmp_path, remote, "B")
    a.update(note["id"], content="Shared fact: port 9090.")
    a.sync()
    b.update(note["id"], content="Shared fact: port 7070.")
    git_b = b.vault.git
    git_b.run(
        "fetch",
        "-q",
        "origin",
        f"+refs/heads/{git_b.run('config', 'rlm-vault.branch').strip()}:refs/remotes/origin/vault",
    )
    (b.vault.state / "merging").write_text("refs/remotes/origin/vault")
    git_b.run_status(
        "merge", "--no-commit", "--no-ff", "refs/remotes/origin/vault"
    )  # conflicts, as a kill finds it
    assert git_b.merging()
    Vault.open(b.vault.root)  # the next start
    assert not git_b.merging() and git_status(b.vault.root) == []
    result = b.sync()
    assert len(result["conflicts"]) == 1
    assert "<<<<<<<" not in texts(b)


def test_a_persons_own_merge_in_progress_is_left_alone(tmp_path: Path, remote: Path) -> None:
    a = machine(tmp_path, remote, "A")
    a.remember("x")
    (a.vault.root / ".git" / "MERGE_HEAD").write_text(a.vault.git.head() + "\n")
    with pytest.raises(VaultError, match="merge is in progress"):
        a.sync()
    assert (a.vault.root / ".git" / "MERGE_HEAD").exists()
