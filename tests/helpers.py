"""Small helpers for tests: read a vault's git state the way a person would."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rlm_vault.git import Git


def git(vault: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(vault), *args], capture_output=True, text=True, check=True).stdout


def git_log(vault: Path) -> list[str]:
    """Commit subjects, newest first."""
    return git(vault, "log", "--format=%s").splitlines()


def git_status(vault: Path) -> list[str]:
    """Porcelain status lines, untracked files included; empty when the tree is clean."""
    return git(vault, "status", "--porcelain", "--untracked-files=all").splitlines()


def commit_count(vault: Path) -> int:
    return int(git(vault, "rev-list", "--count", "HEAD").strip())


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 24, 15, 30, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def tracked(repo: object, *paths: str) -> list[str]:
    """Files git tracks under `paths` in the repository of a `Git` wrapper."""
    root = repo.root
    out = git(root, "ls-files", "-z", "--", *paths)
    return [p for p in out.split("\0") if p]


def new_repo(root: Path) -> Git:
    """An empty git repository at `root` (made), on `main`, through rlm-vault's own wrapper."""
    root.mkdir(parents=True)
    repo = Git(root)
    repo.init()
    return repo


def write(repo: Git, rel: str, text: str) -> None:
    """Write a file of the repository's work tree, its folders made."""
    path = repo.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def gc_settled(vault: Path, timeout: float = 120, idle: float = 1.0) -> None:
    """Wait until no gc has held gc.pid for `idle` seconds (it lets go of it for a fork to move to the
    background)."""
    deadline = time.monotonic() + timeout
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < idle:
        assert time.monotonic() < deadline, "git gc did not finish"
        try:
            os.kill(int((vault / ".git" / "gc.pid").read_text().split()[0]), 0)
            idle_since = time.monotonic()
        except (OSError, ValueError, IndexError):
            pass
        time.sleep(0.02)
