"""Helpers of the reliability suite: git state readers, temp-file finders, a hang guard.

Child processes get the isolated HOME, RLM_VAULT_DIR and git identity tests/conftest.py sets,
through os.environ.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from helpers import gc_settled

HERE = Path(__file__).resolve().parent
CHILD = HERE / "child.py"


def git(vault: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run(["git", "-C", str(vault), *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout


def tracked(vault: Path) -> set[str]:
    return set(git(vault, "ls-files", "-z").split("\0")) - {""}


def commit_count(vault: Path) -> int:
    return int(git(vault, "rev-list", "--count", "HEAD").strip())


def dirty(vault: Path) -> list[str]:
    """Porcelain status lines (untracked included); empty when the work tree is clean."""
    return git(vault, "status", "--porcelain", "--untracked-files=all").splitlines()


def fsck_clean(vault: Path) -> str:
    """'' when `git fsck --strict` finds nothing, else its output. A `git gc --auto` the writes started in
    the background is let finish first: a fsck racing it sees the loose objects it packs vanish."""
    gc_settled(vault, idle=0.2)  # git gc lets go of gc.pid for a fork only; fsck is called often
    proc = subprocess.run(
        ["git", "-C", str(vault), "fsck", "--strict", "--no-progress", "--no-dangling"],
        capture_output=True,
        text=True,
        check=False,
    )
    out = (proc.stdout + proc.stderr).strip()
    return "" if proc.returncode == 0 and "error" not in out and "missing" not in out else out


def temp_files(vault: Path) -> list[str]:
    """Temp files the writer leaves while a replace is in flight (`.<name>.<pid>.<hex>.rlm-tmp`)."""
    found = []
    for root, dirs, files in os.walk(vault):
        dirs[:] = [d for d in dirs if d != ".git"]
        found += [os.path.relpath(os.path.join(root, f), vault) for f in files if f.endswith(".rlm-tmp")]
    return found


def snapshot(folder: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` except under `skip` (the vault): path -> (size, mtime_ns)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        if Path(root) == skip or skip in Path(root).parents:
            dirs[:] = []
            continue
        for name in files:
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            out[path] = (st.st_size, st.st_mtime_ns)
    return out


@contextmanager
def deadline(seconds: float, what: str) -> Iterator[None]:
    """Fail (instead of hanging the suite) when the block runs longer than `seconds`."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"{what} ran longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def new_commits(vault: Path, base: str) -> list[tuple[str, list[str]]]:
    """(subject, paths changed) of each commit after `base`, oldest first."""
    out = git(vault, "log", "--reverse", "--format=%x1e%s", "--name-only", f"{base}..HEAD")
    commits = []
    for record in out.split("\x1e")[1:]:
        lines = [ln for ln in record.split("\n") if ln]
        commits.append((lines[0], lines[1:]))
    return commits


def write_batch(vault: str, worker: int, count: int, barrier: object, results: object) -> None:
    """A writer process (spawned): its own MemoryService, `count` writes alternating chunk and insight.

    Puts (worker, [(kind, id, path), ...]) on the `results` queue, or (worker, error text).
    """
    from rlm_vault.config import Config
    from rlm_vault.service import open_service

    done: list[tuple[str, str, str]] = []
    try:
        config = Config(vault=Path(vault), project="Conc", embedding_model="none", lock_timeout=120.0)
        service = open_service(config)
        barrier.wait(60)  # type: ignore[attr-defined]
        for i in range(count):
            if i % 2:
                r = service.remember(
                    f"insight from writer {worker} number {i} marker-w{worker}-i{i}", category="fact"
                )
                done.append(("insight", r["id"], r["path"]))
            else:
                r = service.chunk(
                    f"chunk from writer {worker} number {i}\nmarker-w{worker}-i{i}",
                    summary=f"w{worker} i{i}",
                    project="Conc",
                )
                done.append(("chunk", r["id"], r["path"]))
        results.put((worker, done))  # type: ignore[attr-defined]
    except BaseException as exc:  # noqa: BLE001 - the parent reports it; a silent child would look like a loss
        results.put((worker, f"{type(exc).__name__}: {exc}"))  # type: ignore[attr-defined]
