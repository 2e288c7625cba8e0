"""kill -9 at random (seeded) moments: every acknowledged write survives, nothing blocks the next one.

A child process (child.py) writes and prints each id the moment its call returns; the parent SIGKILLs
it (alone, or with its whole process group, git children included) and then reopens the vault the way
a restarted server does. Also: kills during a retention run and during sync, and broken caches.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from relkit import CHILD, commit_count, deadline, dirty, fsck_clean, git, temp_files, tracked

from rlm_vault.config import Config
from rlm_vault.service import MemoryService, open_service
from rlm_vault.vault import Vault

pytestmark = pytest.mark.reliability

SEED = 20261127


class Child:
    """child.py in its own session, its acknowledged writes read line by line from a pipe."""

    def __init__(self, vault: Path, *args: str) -> None:
        env = {
            **os.environ,
            "RLM_VAULT_DIR": str(vault),
            "RLM_PROJECT": "CrashProj",
            "RLM_EMBEDDING_MODEL": "none",
        }
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), *args],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        self.acked: list[tuple[str, str, str]] = []
        assert self.read() is not None and self.acked.pop()[0] == "ready"

    def read(self) -> tuple[str, str, str] | None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            return None
        kind, note_id, path = line.split()
        self.acked.append((kind, note_id, path))
        return kind, note_id, path

    def kill(self, group: bool) -> None:
        """SIGKILL the child, or its whole process group (a git command it runs dies with it)."""
        if group:
            os.killpg(self.proc.pid, signal.SIGKILL)
        else:
            self.proc.kill()
        self.proc.wait(timeout=10)
        assert self.proc.stdout is not None
        for line in self.proc.stdout.read().splitlines():  # lines already in the pipe were acknowledged
            kind, note_id, path = line.split()
            self.acked.append((kind, note_id, path))
        self.proc.stdout.close()


def reopen(vault: Path) -> MemoryService:
    """What a restarted server does, bounded: open (recover) and build a service."""
    with deadline(20, "reopening the vault after a kill"):
        config = Config(vault=vault, project="CrashProj", embedding_model="none", lock_timeout=1.0)
        return open_service(config)


def assert_recovered(vault: Path, acked: list[tuple[str, str, str]]) -> None:
    files = tracked(vault)
    for kind, note_id, path in acked:
        if kind in ("chunk", "insight"):
            assert (vault / path).is_file(), f"acknowledged {kind} {note_id} lost after kill"
            assert path in files, f"acknowledged {kind} {note_id} is a file but not in git"
    assert temp_files(vault) == []
    assert dirty(vault) == [], "the tree is not clean after restart"
    assert not list((vault / ".rlm" / "pending").glob("*.json")), "a write journal was left behind"


def assert_next_write_is_quick(service: MemoryService, text: str) -> None:
    started = time.monotonic()
    result = service.chunk(text, project="CrashProj")
    assert time.monotonic() - started < 1.0, "a stale lock slowed the next write"
    assert result["path"] in tracked(service.vault.root) and dirty(service.vault.root) == []


def test_sigkill_during_writes_loses_no_acknowledged_write(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    vault = tmp_path / "vault"
    Vault.open(vault)
    acked: list[tuple[str, str, str]] = []
    for rnd in range(12):
        child = Child(vault, "write", "200")
        for _ in range(rng.randint(1, 25)):
            assert child.read() is not None
        time.sleep(rng.uniform(0, 0.03))  # lands anywhere inside the next write: file, journal, git
        child.kill(group=rnd % 2 == 1)
        acked += child.acked
        index_lock = vault / ".git" / "index.lock"
        if index_lock.exists():
            # The kill landed while git updated the person's own index. That lock is never removed at once
            # (a person's `git commit` holds it while their editor is open); the data is in HEAD already.
            # Let the 10 s it waits for pass; the next write brings the index in step.
            os.utime(index_lock, (time.time() - 11, time.time() - 11))
            reopen(vault).chunk(f"write that clears the index lock, round {rnd}", project="CrashProj")
        service = reopen(vault)
        assert_recovered(vault, acked)
        assert_next_write_is_quick(service, f"written right after kill round {rnd}")
    assert fsck_clean(vault) == ""
    assert len({a[1] for a in acked if a[0] == "chunk"}) == sum(a[0] == "chunk" for a in acked)


def test_a_write_the_crash_left_uncommitted_is_committed_at_start(tmp_path: Path) -> None:
    """The window the journal exists for: the file is on disk, the process died before the commit."""
    vault = tmp_path / "vault"
    Vault.open(vault)
    before = commit_count(vault)
    child = Child(vault, "die-before-commit")
    assert child.proc.wait(timeout=30) == 137
    orphan = [p for p in dirty(vault) if p.startswith("?? chunks/")]
    assert len(orphan) == 1 and list((vault / ".rlm" / "pending").glob("*.json"))
    reopen(vault)
    assert commit_count(vault) == before + 1
    assert git(vault, "log", "-1", "--format=%s").startswith("chunk: ")
    assert orphan[0][3:] in tracked(vault)
    assert dirty(vault) == []


@pytest.mark.parametrize("lock", [".git/rlm-vault-index.lock", ".git/HEAD.lock", ".git/refs/heads/main.lock"])
def test_a_git_lock_left_by_a_killed_git_does_not_block_the_next_write(tmp_path: Path, lock: str) -> None:
    """What kill -9 of the process group leaves when it lands inside read-tree, update-index or update-ref."""
    vault = tmp_path / "vault"
    service = reopen(Vault.open(vault).root)
    service.chunk("before the kill", project="CrashProj")
    stale = vault / lock
    stale.write_text("half-written by a git that was killed\n")
    os.utime(stale, (time.time() - 5, time.time() - 5))
    assert_next_write_is_quick(reopen(vault), "after the kill")
    assert not stale.exists()


def _old_chunks(vault: Path, count: int, start: int = 0) -> dict[str, bytes]:
    """Add `count` chunks dated 2020 (due for archive) in one commit; returns every active chunk's bytes."""
    from rlm_vault.bulk import NewChunk, write_many

    service = open_service(Config(vault=vault, project="CrashProj", embedding_model="none"))
    new = [
        NewChunk(
            f"old chunk number {i}\n" + "line of an old session\n" * 5,
            "CrashProj",
            "2020-01-01T00:00:00Z",
            summary=f"old {i}",
        )
        for i in range(start, start + count)
    ]
    write_many(service, [], new, f"import: {count} old chunks")
    return {c.id: (vault / c.path).read_bytes() for c in service.fresh().chunks()}


def _archive_state(service: MemoryService, originals: dict[str, bytes]) -> tuple[int, int]:
    """(active, archived); fails if any chunk is neither, or an archive differs from the original bytes."""
    active = {c.id for c in service.fresh().chunks()}
    archived = service.archive.paths()
    for note_id, raw in originals.items():
        if note_id in archived:
            assert service.archive.read(archived[note_id])[0] == raw, f"archive of {note_id} differs"
        else:
            assert note_id in active, f"{note_id} is neither active nor archived after a kill"
    return len(active & set(originals)), len(set(archived) & set(originals))


def test_sigkill_during_a_retention_run_loses_no_chunk(tmp_path: Path) -> None:
    rng = random.Random(SEED + 1)
    vault = tmp_path / "vault"
    originals: dict[str, bytes] = {}
    cut_short = 0
    for rnd in range(3):
        originals.update(_old_chunks(vault, 60, start=rnd * 60))
        child = Child(vault, "archive")
        for _ in range(rng.randint(1, 58)):  # the child reports each chunk it has moved
            assert child.read() is not None
        time.sleep(rng.uniform(0, 0.005))
        child.kill(group=rnd % 2 == 0)
        service = reopen(vault)
        assert_recovered(vault, [])
        _archive_state(service, originals)
        cut_short += child.acked[-1][0] != "archived"
    assert cut_short >= 1, "no kill landed inside a retention run; the test proved nothing"
    service = reopen(vault)
    service.retention_run()
    assert _archive_state(service, originals) == (0, len(originals))
    assert dirty(vault) == [] and fsck_clean(vault) == ""
    some = sorted(originals)[7]
    service.restore(some)
    assert (vault / "chunks" / "CrashProj" / f"{some}.md").read_bytes() == originals[some]


def test_sigkill_during_sync_loses_nothing_on_either_side(tmp_path: Path) -> None:
    rng = random.Random(SEED + 2)
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    vault, other_dir = tmp_path / "vault", tmp_path / "other"
    reopen(Vault.open(vault).root).set_remote(str(remote))
    other = reopen(Vault.open(other_dir).root)
    other.set_remote(str(remote))
    acked: list[tuple[str, str, str]] = []
    theirs = []
    for rnd in range(6):
        theirs.append(other.remember(f"from the other machine, round {rnd}")["path"])
        other.sync()  # the child's next sync has something to merge
        child = Child(vault, "sync", "40")
        for _ in range(rng.randint(1, 6)):
            assert child.read() is not None
        time.sleep(rng.uniform(0, 0.05))
        child.kill(group=rnd % 2 == 0)
        acked += child.acked
        service = reopen(vault)
        assert fsck_clean(vault) == ""
        for kind, _, path in acked:
            if kind == "chunk":
                assert (vault / path).is_file() and path in tracked(vault)
        with deadline(60, "sync after a killed sync"):
            service.sync()
        assert (dirty(vault), temp_files(vault)) == ([], [])
    other.sync()
    mine = {path for kind, _, path in acked if kind == "chunk"}
    for side in (vault, other_dir):
        files = tracked(side)
        assert mine <= files and set(theirs) <= files, f"a memory is missing in {side.name} after sync"
        assert fsck_clean(side) == ""
    assert not [p for p in tracked(vault) if ".conflict-" in p]  # no false conflicts either


# ---------------------------------------------------------------------------------- broken caches


def _searchable(tmp_path: Path, embedder: object = None) -> MemoryService:
    model = str(embedder) if embedder else "none"
    config = Config(vault=tmp_path / "vault", project="Cache", embedding_model=model)
    service = open_service(config)
    service.chunk("The pelican colony nests on the northern cliffs", summary="pelicans", project="Cache")
    service.chunk("Kubernetes rollout stalled on the readiness probe", summary="rollout", project="Cache")
    service.remember("Always pin the walrus operator version in CI", category="decision")
    return service


def _top(service: MemoryService, query: str) -> str:
    return service.search(query, limit=3)["results"][0]["summary"]


def _fresh(service: MemoryService) -> MemoryService:
    """A new process's view of the same vault and caches."""
    return open_service(service.config)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "delete_toc"])
def test_a_broken_text_index_is_rebuilt_and_search_still_answers(tmp_path: Path, damage: str) -> None:
    service = _searchable(tmp_path)
    assert _top(service, "pelican cliffs") == "pelicans"
    index = service.vault.cache / "index"
    for f in index.iterdir():
        if damage == "truncate":
            f.write_bytes(f.read_bytes()[: max(1, f.stat().st_size // 3)])
        elif damage == "garbage":
            f.write_bytes(os.urandom(max(64, f.stat().st_size)))
        elif damage == "empty":
            f.write_bytes(b"")
        elif f.name.endswith(".toc"):
            f.unlink()
    fresh = _fresh(service)
    with deadline(30, "search over a broken index"):
        assert _top(fresh, "pelican cliffs") == "pelicans"
        assert _top(fresh, "readiness probe") == "rollout"
        assert fresh.doctor()["caches"] in (
            [],
            [c for c in fresh.doctor()["caches"] if c.startswith("rebuilt")],
        )
    assert fresh.searcher.engine().status(fresh.fresh().hashes())["index_missing_or_stale"] == 0


def test_garbage_vectors_and_access_log_are_rebuilt(tmp_path: Path) -> None:
    from tinymodel import build_tiny_model

    model = build_tiny_model(
        [
            "the",
            "pelican",
            "colony",
            "nests",
            "on",
            "northern",
            "cliffs",
            "kubernetes",
            "rollout",
            "stalled",
            "readiness",
            "probe",
            "always",
            "pin",
            "walrus",
            "operator",
            "version",
            "ci",
        ],
        tmp_path / "tiny",
    )
    service = _searchable(tmp_path, model)
    assert service.wait_for_model(30)
    assert _top(service, "pelican") == "pelicans"
    state = service.vault.root / ".rlm"
    assert (service.vault.cache / "embeddings.npz").is_file()
    (service.vault.cache / "embeddings.npz").write_bytes(b"PK\x03\x04 this is not a zip" + os.urandom(300))
    (state / "access.json").write_bytes(b'{"2026": [unterminated \xff')
    fresh = _fresh(service)
    assert fresh.wait_for_model(30)
    with deadline(30, "search over garbage vectors"):
        assert _top(fresh, "pelican") == "pelicans"
        assert _top(fresh, "walrus") != ""
        fresh.peek(fresh.list_chunks()["chunks"][0]["id"])  # counts an access over a broken access.json
    assert fresh.store.access.all() != {}
    assert fresh.doctor()["caches"] == []
    shutil.rmtree(state)  # deleting .rlm/ loses nothing
    assert _top(_fresh(service), "rollout") == "rollout"


def test_sigkill_while_a_sync_is_fetching_loses_nothing(tmp_path: Path) -> None:
    """The fetch runs without the vault lock: a kill there leaves the vault as it was, writable at once."""
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    vault, other_dir = tmp_path / "vault", tmp_path / "other"
    reopen(Vault.open(vault).root).set_remote(str(remote))
    other = reopen(Vault.open(other_dir).root)
    other.set_remote(str(remote))
    started = tmp_path / "fetch.started"
    slow = tmp_path / "slow-upload-pack.sh"
    slow.write_text(f'#!/bin/sh\ntouch "{started}"\nsleep 60\nexec git-upload-pack "$@"\n')
    slow.chmod(0o755)
    theirs = []
    acked: list[tuple[str, str, str]] = []
    for rnd in range(2):
        theirs.append(other.remember(f"from the other machine while fetching, round {rnd}")["path"])
        other.sync()
        git(vault, "config", "remote.origin.uploadpack", str(slow))
        started.unlink(missing_ok=True)
        child = Child(vault, "sync", "3")
        assert child.read() is not None  # the chunk is acknowledged; its sync is fetching next
        with deadline(30, "the slow fetch to start"):
            while not started.exists():
                time.sleep(0.02)
        head = git(vault, "rev-parse", "HEAD").strip()
        child.kill(group=rnd == 0)
        acked += child.acked
        service = reopen(vault)
        assert git(vault, "rev-parse", "HEAD").strip() == head  # nothing merged, nothing half-done
        assert fsck_clean(vault) == "" and dirty(vault) == []
        with deadline(10, "a write right after the kill"):
            service.remember(f"written at once after the kill, round {rnd}")
        git(vault, "config", "--unset", "remote.origin.uploadpack")
        with deadline(60, "sync after a kill during fetch"):
            service.sync()
    other.sync()
    mine = {path for kind, _, path in acked if kind == "chunk"}
    for side in (vault, other_dir):
        assert mine | set(theirs) <= tracked(side)
        assert fsck_clean(side) == ""


def test_sigkill_after_the_push_before_the_folder_takes_the_merge_loses_nothing(tmp_path: Path) -> None:
    """A clean merge is pushed before the vault folder moves to it: a kill in between loses nothing."""
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    vault, other_dir = tmp_path / "vault", tmp_path / "other"
    reopen(Vault.open(vault).root).set_remote(str(remote))
    other = reopen(Vault.open(other_dir).root)
    other.set_remote(str(remote))
    theirs = other.remember("from the other machine, merged in memory")["path"]
    other.sync()
    pushed = tmp_path / "pushed"
    hook = remote / "hooks" / "post-receive"  # runs once the remote branch moved; the push waits for it
    hook.write_text(f'#!/bin/sh\ntouch "{pushed}"\nsleep 60\n')
    hook.chmod(0o755)
    child = Child(vault, "sync", "3")
    assert child.read() is not None  # the chunk is acknowledged; its sync merges and pushes next
    head = git(vault, "rev-parse", "HEAD").strip()
    with deadline(30, "the push to land"):
        while not pushed.exists():
            time.sleep(0.02)
    child.kill(group=True)
    landed = git(remote, "rev-parse", "HEAD").strip()
    assert git(remote, "rev-list", "--parents", "-1", landed).split()[1:] == [
        head,
        git(other_dir, "rev-parse", "HEAD").strip(),
    ]
    hook.unlink()
    service = reopen(vault)
    assert git(vault, "rev-parse", "HEAD").strip() == head and theirs not in tracked(vault)
    assert fsck_clean(vault) == "" and dirty(vault) == []
    with deadline(60, "sync after a kill between push and fast-forward"):
        assert service.sync()["pushed"] == 0
    assert git(vault, "rev-parse", "HEAD").strip() == landed  # it fast-forwards to what the remote took
    other.sync()
    mine = {path for kind, _, path in child.acked if kind == "chunk"}
    for side in (vault, other_dir):
        assert mine | {theirs} <= tracked(side) and dirty(side) == []
        assert fsck_clean(side) == ""
