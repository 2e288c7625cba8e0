"""Vaults git keeps somewhere other than a plain SHA-1 `<vault>/.git`, a hostile environment, signing.

The in-process commit path is only taken where it is exact; every other repository goes through git's
own plumbing and must behave the same: writes, reads, history, revert, a clean tree and `git fsck`.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import FakeClock

from rlm_vault import service as service_module
from rlm_vault.config import Config
from rlm_vault.git import _plain_layout, clean_env
from rlm_vault.service import MemoryService
from rlm_vault.vault import Vault


def sh(cwd: Path, *args: str) -> str:
    """git as a person runs it, with no GIT_* redirection from the test environment."""
    return subprocess.run(
        ["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True, env=clean_env()
    ).stdout


def make_sha256(tmp: Path) -> Path:
    vault = tmp / "vault"
    vault.mkdir()
    sh(vault, "init", "-q", "--object-format=sha256")
    return vault


def make_worktree(tmp: Path) -> Path:
    store = tmp / "store"
    store.mkdir()
    sh(store, "init", "-q")
    sh(store, "commit", "-q", "--allow-empty", "-m", "store")
    vault = tmp / "vault"
    sh(store, "worktree", "add", "-q", "-b", "memory", str(vault))
    sh(vault, "checkout", "-q", "--orphan", "vault")  # an unborn branch: rlm-vault creates the vault
    return vault


def make_separate(tmp: Path) -> Path:
    vault = tmp / "vault"
    vault.mkdir()
    sh(vault, "init", "-q", f"--separate-git-dir={tmp / 'elsewhere.git'}")
    return vault


def make_alternates(tmp: Path) -> Path:
    donor = tmp / "donor"
    donor.mkdir()
    sh(donor, "init", "-q")
    (donor / "shared.md").write_text("shared\n")
    (donor / ".gitignore").write_text(".rlm/\n")
    sh(donor, "add", "shared.md", ".gitignore")
    sh(donor, "commit", "-q", "-m", "donor")
    vault = tmp / "vault"
    sh(tmp, "clone", "-q", "--shared", str(donor), str(vault))
    assert (vault / ".git" / "objects" / "info" / "alternates").exists()
    Vault.init(vault, force=True)  # a clone with other files becomes a vault only when asked
    return vault


LAYOUTS: dict[str, Callable[[Path], Path]] = {
    "sha256": make_sha256,
    "linked worktree": make_worktree,
    "separate git dir": make_separate,
    "alternates": make_alternates,
}


def open_service(vault: Path, clock: FakeClock) -> MemoryService:
    config = Config(vault=vault, project="TestProj", embedding_model="none", scan_interval=0.0)
    return service_module.open_service(config, clock=clock)


@pytest.mark.parametrize("kind", list(LAYOUTS))
def test_vault_in_an_unusual_repository_goes_through_git_and_works(
    tmp_path: Path, clock: FakeClock, kind: str
) -> None:
    vault = LAYOUTS[kind](tmp_path)
    service = open_service(vault, clock)
    layout = service.vault.git.layout()
    assert layout.in_process is False

    note = service.remember("The staging port is 8080.", category="fact")
    clock.advance(minutes=5)
    service.update(note["id"], content="The staging port is 9090.")
    chunk = service.chunk("Deploy notes: the rollout stalled on the readiness probe.", summary="rollout")
    with service.vault.transaction() as tx:  # a file git would normalise, through the private index
        tx.message = "crlf"
        tx.write("insights/crlf.md", "---\nid: crlf\n---\nline one\r\nline two\r\n")

    assert "9090" in service.insight(note["id"]).content
    assert service.peek(chunk["id"])["content"].startswith("Deploy notes")
    commits = service.history(note["id"])["commits"]
    assert [c["message"].split(":")[0] for c in commits] == ["update", "remember"]
    assert len(commits[0]["commit"]) == (64 if kind == "sha256" else 40)
    service.revert(note["id"], commits[-1]["commit"])
    assert "8080" in service.insight(note["id"]).content

    assert sh(vault, "status", "--porcelain", "--untracked-files=all") == ""
    assert sh(vault, "fsck", "--strict", "--no-dangling") == ""
    assert sh(vault, "log", "-1", "--format=%s").strip().startswith("revert:")
    # A new process (a second window) reads the same history.
    again = open_service(vault, clock)
    assert again.history(note["id"])["commits"][0]["message"].startswith("revert:")


def test_sha256_vault_created_by_rlm_vault_commits_its_template(tmp_path: Path) -> None:
    vault = make_sha256(tmp_path)
    opened = Vault.open(vault)
    assert len(opened.git.head() or "") == 64
    assert "init: new rlm-vault" in sh(vault, "log", "--format=%s")
    assert sh(vault, "status", "--porcelain", "--untracked-files=all") == ""


def test_sha256_vault_leaves_no_sha1_objects(tmp_path: Path, clock: FakeClock) -> None:
    vault = make_sha256(tmp_path)
    service = open_service(vault, clock)
    for n in range(3):
        service.remember(f"fact number {n} about sha256 repositories")
    names = [p.parent.name + p.name for p in (vault / ".git" / "objects").glob("??/*")]
    assert names and all(len(name) == 64 for name in names)


def test_plain_vault_takes_the_in_process_path(tmp_path: Path) -> None:
    vault = Vault.open(tmp_path / "vault")
    layout = vault.git.layout()
    assert layout.plain and layout.in_process and layout.object_format == "sha1"
    assert layout.git_dir == vault.root / ".git"


@pytest.mark.parametrize(
    "config",
    [
        "[core]\n\tworktree = /somewhere/else\n",
        "[include]\n\tpath = other.config\n",
        "[extensions]\n\tpartialclone = origin\n",
        "[core\n",
    ],
)
def test_a_config_the_reader_does_not_understand_asks_git(tmp_path: Path, config: str) -> None:
    vault = Vault.open(tmp_path / "vault")
    assert _plain_layout(vault.root) is not None
    with (vault.root / ".git" / "config").open("a") as handle:
        handle.write(config)
    assert _plain_layout(vault.root) is None


# ---------------------------------------------------------------------------------- the environment


@pytest.fixture
def other_repo(tmp_path: Path) -> Path:
    other = tmp_path / "other"
    other.mkdir()
    sh(other, "init", "-q")
    (other / "theirs.md").write_text("theirs\n")
    sh(other, "add", "theirs.md")
    sh(other, "commit", "-q", "-m", "theirs")
    return other


def snapshot(repo: Path) -> dict[str, tuple[int, int]]:
    """Every file of a repository (work tree and .git) with its size and mtime."""
    return {
        str(p.relative_to(repo)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(repo.rglob("*"))
        if p.is_file()
    }


def test_git_variables_pointing_elsewhere_do_not_redirect_the_vault(
    tmp_path: Path, other_repo: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = open_service(tmp_path / "vault", clock)
    service.remember("written before the environment changed")
    before = snapshot(other_repo)
    head = sh(other_repo, "rev-parse", "HEAD")
    monkeypatch.setenv("GIT_DIR", str(other_repo / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other_repo))
    monkeypatch.setenv("GIT_INDEX_FILE", str(other_repo / ".git" / "index"))
    monkeypatch.setenv("GIT_OBJECT_DIRECTORY", str(other_repo / ".git" / "objects"))
    monkeypatch.setenv("GIT_COMMON_DIR", str(other_repo / ".git"))
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", "'core.worktree'='/nowhere'")

    fresh = open_service(tmp_path / "vault", clock)  # a server started in that environment
    note = fresh.remember("written with GIT_DIR pointing at another repository")
    fresh.chunk("A chunk written with the hostile environment.", summary="hostile")
    commits = fresh.history(note["id"])["commits"]
    fresh.revert(note["id"], commits[0]["commit"])
    with fresh.vault.transaction() as tx:  # the plumbing path too
        tx.message = "crlf"
        tx.write("insights/crlf.md", "---\nid: crlf\n---\na\r\nb\r\n")

    for key in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR"):
        monkeypatch.delenv(key)
    monkeypatch.delenv("GIT_CONFIG_PARAMETERS")
    assert snapshot(other_repo) == before
    assert sh(other_repo, "rev-parse", "HEAD") == head
    log = sh(fresh.vault.root, "log", "--format=%s")
    assert "crlf" in log and note["id"] in log
    assert sh(fresh.vault.root, "status", "--porcelain", "--untracked-files=all") == ""


def test_clean_env_keeps_identity_transport_and_user_config() -> None:
    env = {
        "GIT_DIR": "x",
        "GIT_WORK_TREE": "x",
        "GIT_INDEX_FILE": "x",
        "GIT_NAMESPACE": "x",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES": "x",
        "GIT_CEILING_DIRECTORIES": "x",
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "core.worktree",
        "GIT_CONFIG_VALUE_0": "/x",
        "GIT_AUTHOR_NAME": "A",
        "GIT_COMMITTER_EMAIL": "a@b",
        "GIT_SSH_COMMAND": "ssh -i key",
        "GIT_ASKPASS": "askpass",
        "GIT_SSL_CAINFO": "ca.pem",
        "GIT_CONFIG_GLOBAL": "g",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TRACE": "1",
        "HOME": "/home/x",
    }
    assert set(clean_env(env)) == {
        "GIT_AUTHOR_NAME",
        "GIT_COMMITTER_EMAIL",
        "GIT_SSH_COMMAND",
        "GIT_ASKPASS",
        "GIT_SSL_CAINFO",
        "GIT_CONFIG_GLOBAL",
        "GIT_CONFIG_NOSYSTEM",
        "GIT_TRACE",
        "HOME",
    }


# ---------------------------------------------------------------------------------- signing


@pytest.mark.parametrize("kind", ["plain", "sha256"])
def test_commit_gpgsign_in_the_users_config_does_not_stop_writes_and_nothing_is_signed(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Memory commits are never signed: with signing forced and no usable key, every write still commits."""
    calls = tmp_path / "gpg-calls"
    gpg = tmp_path / "fake-gpg"
    gpg.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit 1\n')
    gpg.chmod(gpg.stat().st_mode | stat.S_IXUSR)
    home = Path(os.environ["HOME"])
    (home / ".gitconfig").write_text(
        f"[commit]\n\tgpgsign = true\n[user]\n\tsigningkey = NO-SUCH-KEY\n[gpg]\n\tprogram = {gpg}\n"
    )
    assert (
        subprocess.run(  # git itself would refuse to commit here
            ["git", "-C", str(tmp_path), "init", "-q", "probe"], check=True, env=clean_env()
        ).returncode
        == 0
    )
    (tmp_path / "probe" / "f").write_text("f")
    sh(tmp_path / "probe", "add", "f")
    assert (
        subprocess.run(
            ["git", "-C", str(tmp_path / "probe"), "commit", "-q", "-m", "x"],
            capture_output=True,
            env=clean_env(),
            check=False,
        ).returncode
        != 0
    )
    calls.unlink(missing_ok=True)

    vault = make_sha256(tmp_path) if kind == "sha256" else tmp_path / "vault"
    service = open_service(vault, clock)  # the template commit goes through commit-tree
    note = service.remember("a memory in a vault whose owner signs commits")
    service.chunk("a chunk in that vault", summary="signed?")
    with service.vault.transaction() as tx:
        tx.message = "crlf"
        tx.write("insights/crlf.md", "---\nid: crlf\n---\na\r\nb\r\n")

    assert note["commit"]
    assert not calls.exists()
    assert "gpgsig" not in sh(vault, "cat-file", "-p", "HEAD")
    assert sh(vault, "log", "--format=%G?").split() == ["N"] * len(sh(vault, "log", "--format=%H").split())
