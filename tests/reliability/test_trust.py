"""What arrives from a shared remote is data: cache files it carries are never read (no pickle from a
remote is ever loaded), and a tracked `.rlm` symlink never sends the vault's writes elsewhere."""

from __future__ import annotations

import os
import pickle
import subprocess
from pathlib import Path

import pytest

from rlm_vault.config import Config
from rlm_vault.service import MemoryService, open_service
from rlm_vault.sync import clone_or_create

pytestmark = pytest.mark.reliability


class Payload:
    """Unpickling this runs a command: what an attacker would put in a Whoosh TOC."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, ...]]:
        return (os.system, (f"touch {self.marker}",))


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout


def machine(tmp_path: Path, remote: Path, name: str) -> MemoryService:
    config = Config(vault=tmp_path / name, project=name, embedding_model="none", scan_interval=0.0)
    how = clone_or_create(config.vault, str(remote))
    service = open_service(config)
    if how != "cloned":
        service.set_remote(str(remote))
    return service


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    return bare


def attacker_pushes(tmp_path: Path, remote: Path, files: dict[str, bytes], links: dict[str, str]) -> None:
    work = tmp_path / "attacker"
    subprocess.run(["git", "clone", "-q", str(remote), str(work)], check=True)
    for rel, data in files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_bytes(data)
    for rel, target in links.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).symlink_to(target)
    git(work, "add", "-f", "--", *files, *links)
    git(work, "commit", "-q", "-m", "innocent notes")
    git(work, "push", "-q", "origin", "HEAD")


def test_a_pickled_index_from_the_remote_is_never_loaded(tmp_path: Path, remote: Path) -> None:
    victim = machine(tmp_path, remote, "victim")
    victim.remember("The victim's own memory about kiwis.")
    victim.search("kiwis")  # its caches exist
    victim.sync()
    marker = tmp_path / "pwned"
    evil = pickle.dumps(Payload(marker))
    attacker_pushes(
        tmp_path,
        remote,
        {".rlm/index/_MAIN_9999.toc": evil, ".rlm/index/MAIN_WRITELOCK": b"", "insights/x.md": b"hi\n"},
        {},
    )
    victim.sync()
    assert victim.search("kiwis")["results"]
    fresh = open_service(victim.config)
    fresh.search("kiwis")
    fresh.reindex(wait_model=False)
    clone = machine(tmp_path, remote, "newcomer")  # `init --remote` on a new machine
    clone.search("kiwis")
    assert not marker.exists()
    assert not str(victim.vault.cache).startswith(str(victim.vault.root))


def test_a_tracked_rlm_symlink_never_redirects_writes(tmp_path: Path, remote: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "index").mkdir(parents=True)
    (outside / "index" / "keep.txt").write_text("a file of someone else's")
    seed = machine(tmp_path, remote, "seed")
    seed.remember("Seed memory.")
    seed.sync()
    attacker_pushes(tmp_path, remote, {}, {".rlm": str(outside)})
    victim = machine(tmp_path, remote, "victim")
    assert not (victim.vault.root / ".rlm").is_symlink()
    victim.remember("Written after the clone.")
    victim.search("memory")
    victim.reindex(wait_model=False)
    victim.sync()
    assert sorted(p.relative_to(outside).as_posix() for p in outside.rglob("*")) == [
        "index",
        "index/keep.txt",
    ]
    assert (outside / "index" / "keep.txt").read_text() == "a file of someone else's"
