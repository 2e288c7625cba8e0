"""The vault packs itself: `git gc --auto` started in the background after writes, by git's own rules.

Real vaults, real git processes: writes keep going while gc runs in other processes, and a gc killed
with SIGKILL leaves a vault that still writes and that `git fsck` finds clean.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from helpers import gc_settled

from rlm_vault import git as git_module
from rlm_vault.git import clean_env
from rlm_vault.vault import Vault


def sh(cwd: Path, *args: str, check: bool = True) -> str:
    return subprocess.run(
        ["git", "-C", str(cwd), *args], capture_output=True, text=True, check=check, env=clean_env()
    ).stdout


def counts(vault: Path) -> dict[str, int]:
    out = sh(vault, "count-objects", "-v")
    return {k: int(v) for k, v in (line.split(": ") for line in out.splitlines())}


def in_fanout_17(n: int, salt: str) -> list[str]:
    """Note texts whose blobs land in objects/17, the folder git counts to estimate loose objects."""
    found = []
    i = 0
    while len(found) < n:
        text = f"---\nid: {salt}-{i}\n---\nfan-out note {salt} {i}\n"
        data = text.encode()
        if hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest().startswith("17"):
            found.append(text)
        i += 1
    return found


def write(vault: Vault, rel: str, text: str) -> None:
    with vault.transaction() as tx:
        tx.message = f"write: {rel}"
        tx.write(rel, text)


def assert_sound(vault: Path) -> None:
    assert sh(vault, "fsck", "--strict", "--no-dangling") == ""
    assert sh(vault, "status", "--porcelain", "--untracked-files=all", "--", "insights", "chunks") == ""


@pytest.fixture
def eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """Look after every write and allow a gc at any time (the real pace is every 8 writes, 30 s apart)."""
    monkeypatch.setattr(git_module, "HOUSEKEEPING_EVERY", 1)
    monkeypatch.setattr(git_module, "HOUSEKEEPING_INTERVAL", 0.0)


def test_a_new_vault_gets_its_own_gc_auto_and_keeps_a_persons_value(tmp_path: Path) -> None:
    vault = Vault.open(tmp_path / "v")
    assert sh(vault.root, "config", "--local", "gc.auto").strip() == str(git_module.GC_AUTO)
    sh(vault.root, "config", "gc.auto", "0")
    Vault.open(vault.root)
    assert sh(vault.root, "config", "--local", "gc.auto").strip() == "0"


@pytest.mark.usefixtures("eager")
def test_writes_pack_the_vault_by_themselves(tmp_path: Path) -> None:
    vault = Vault.open(tmp_path / "v")
    sh(vault.root, "config", "gc.auto", "100000")
    for n in range(40):
        write(vault, f"insights/plain-{n}.md", f"---\nid: plain-{n}\n---\nnote {n}\n")
    assert counts(vault.root)["packs"] == 0
    written = counts(vault.root)["count"]
    sh(vault.root, "config", "gc.auto", "256")  # git's estimate: more than one loose object in objects/17
    for n, text in enumerate(in_fanout_17(3, "pack")):
        write(vault, f"insights/fan-{n}.md", text)
    gc_settled(vault.root)

    after = counts(vault.root)
    assert after["packs"] >= 1
    assert after["in-pack"] >= written
    assert after["count"] < 20  # only what the last writes added while or after gc ran
    assert len(sh(vault.root, "ls-tree", "--name-only", "HEAD", "insights/").split()) == 43
    write(vault, "insights/after.md", "---\nid: after\n---\nafter gc\n")  # packed trees are read by git
    assert_sound(vault.root)


@pytest.mark.usefixtures("eager")
def test_a_warning_an_hour_old_does_not_stop_the_vault_from_packing(tmp_path: Path) -> None:
    """`gc --auto` leaves gc.log when young unreachable objects stay loose (a bulk import's objects before
    its commit); git's own rule would then skip every automatic gc for a day."""
    vault = Vault.open(tmp_path / "v")
    sh(vault.root, "config", "gc.auto", "100000")
    for n in range(20):
        write(vault, f"insights/plain-{n}.md", f"---\nid: plain-{n}\n---\nnote {n}\n")
    log = vault.root / ".git" / "gc.log"
    log.write_text("warning: There are too many unreachable loose objects; run 'git prune' to remove them.\n")
    two_hours_ago = time.time() - 7200
    os.utime(log, (two_hours_ago, two_hours_ago))
    sh(vault.root, "config", "gc.auto", "256")
    for n, text in enumerate(in_fanout_17(3, "logged")):
        write(vault, f"insights/fan-{n}.md", text)
    gc_settled(vault.root)
    assert counts(vault.root)["packs"] >= 1
    assert_sound(vault.root)


@pytest.mark.usefixtures("eager")
def test_large_trees_are_packed_although_git_counts_few_objects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder of many notes rewrites a large tree per write: bytes, not object counts, fill `.git` then."""
    monkeypatch.setattr(git_module, "HOUSEKEEPING_BYTES", 200_000)
    vault = Vault.open(tmp_path / "v")
    sh(vault.root, "config", "gc.auto", "100000")  # git's own count rule will not fire
    with vault.transaction() as tx:
        tx.message = "a large folder"
        for n in range(2000):
            tx.write(f"chunks/P/note-{n:05d}.md", f"note {n}\n", sync=False)
    vault = Vault.open(vault.root)  # a fresh process: nothing written by it yet
    for n in range(4):  # each write rewrites the 2,000-entry tree (~80 KB)
        write(vault, f"chunks/P/new-{n}.md", f"new {n}\n")
    assert vault.git._gc_child is not None
    vault.git._gc_child.wait(timeout=120)
    after = counts(vault.root)
    assert after["packs"] >= 1 and after["in-pack"] >= 2000
    assert_sound(vault.root)


def test_a_vault_with_gc_auto_0_is_never_packed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(git_module, "HOUSEKEEPING_EVERY", 1)
    monkeypatch.setattr(git_module, "HOUSEKEEPING_BYTES", 1)
    vault = Vault.open(tmp_path / "v")
    sh(vault.root, "config", "gc.auto", "0")
    vault = Vault.open(vault.root)
    for n, text in enumerate(in_fanout_17(3, "never")):
        write(vault, f"insights/fan-{n}.md", text)
    assert vault.git.housekeep() is False
    assert counts(vault.root)["packs"] == 0


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from rlm_vault import git
    from rlm_vault.vault import Vault

    git.HOUSEKEEPING_EVERY = 1
    git.HOUSEKEEPING_INTERVAL = 0.0
    vault = Vault.open(Path(sys.argv[1]))
    me, n = sys.argv[2], int(sys.argv[3])
    for i in range(n):
        with vault.transaction() as tx:
            tx.message = f"write: {me} {i}"
            tx.write(f"insights/{me}-{i}.md", f"---\\nid: {me}-{i}\\n---\\nwriter {me} note {i}\\n" * 3)
    """
)


def test_concurrent_writers_and_gc_lose_nothing(tmp_path: Path) -> None:
    vault = Vault.open(tmp_path / "v")
    sh(vault.root, "config", "gc.auto", "1")  # every writer's housekeeping starts gc when it may
    stop = threading.Event()
    gc_runs: list[int] = []

    def full_gc_in_a_loop() -> None:
        # A person's own `git gc` (full repack, pack-refs, reflog expire, two-week prune) beside the writers.
        while not stop.is_set():
            proc = subprocess.run(["git", "-C", str(vault.root), "gc", "-q"], env=clean_env(), check=False)
            gc_runs.append(proc.returncode)

    loop = threading.Thread(target=full_gc_in_a_loop)
    loop.start()
    try:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        writers = [
            subprocess.Popen(
                [sys.executable, "-c", WRITER, str(vault.root), f"w{k}", "30"],
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
            for k in range(3)
        ]
        errors = [w.communicate(timeout=300)[1] for w in writers]
    finally:
        stop.set()
        loop.join()
    assert [w.returncode for w in writers] == [0, 0, 0], errors
    gc_settled(vault.root)

    assert gc_runs, "the gc loop never ran"
    names = set(sh(vault.root, "ls-tree", "--name-only", "HEAD", "insights/").split())
    assert names >= {f"insights/w{k}-{i}.md" for k in range(3) for i in range(30)}
    subjects = sh(vault.root, "log", "--format=%s").splitlines()
    assert sum(s.startswith("write: w") for s in subjects) == 90
    assert counts(vault.root)["packs"] >= 1
    assert_sound(vault.root)


def wait_for_gc_pid(vault: Path, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return int((vault / ".git" / "gc.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            time.sleep(0.001)
    raise AssertionError("no gc started")


@pytest.mark.usefixtures("eager")
@pytest.mark.parametrize("delay", [0.0, 0.05, 0.3])
def test_kill_9_of_gc_leaves_a_vault_that_writes(tmp_path: Path, delay: float) -> None:
    vault = Vault.open(tmp_path / "v")
    sh(vault.root, "config", "gc.auto", "256")
    sh(vault.root, "config", "gc.autoDetach", "false")  # the gc is the process housekeeping started
    with vault.transaction() as tx:  # enough objects that packing takes a while
        tx.message = "bulk"
        for n in range(1500):
            tx.write(f"chunks/P/{n}.md", os.urandom(1500).hex(), sync=False)
    for n, text in enumerate(in_fanout_17(3, f"kill{delay}")):
        write(vault, f"insights/fan-{n}.md", text)

    pid = wait_for_gc_pid(vault.root)
    time.sleep(delay)
    try:
        os.killpg(pid, signal.SIGKILL)  # gc and the repack / pack-objects it runs
        killed = True
    except ProcessLookupError:
        killed = False  # it finished first
    assert killed or delay > 0
    if vault.git._gc_child is not None:
        vault.git._gc_child.wait(timeout=30)

    # The dead gc's gc.pid stops neither writes nor the next gc (these writes start one).
    write(vault, "insights/after-kill.md", "---\nid: after-kill\n---\nwritten after the kill\n")
    restarted = Vault.open(vault.root)  # a server starting after the kill
    for n, text in enumerate(in_fanout_17(3, f"again{delay}")):
        write(restarted, f"insights/again-{n}.md", text)
    for g in (vault.git, restarted.git):
        if g._gc_child is not None:
            g._gc_child.wait(timeout=120)
    gc_settled(vault.root)

    after = counts(vault.root)
    assert after["packs"] >= 1 and after["count"] < 100  # the 1,500 loose blobs were packed after all
    assert_sound(vault.root)
    names = sh(vault.root, "ls-tree", "-r", "--name-only", "HEAD").split()
    assert "insights/after-kill.md" in names and "insights/again-2.md" in names
    assert sum(n.startswith("chunks/P/") for n in names) == 1500


@pytest.mark.usefixtures("eager")
def test_what_many_short_processes_write_adds_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hooks and CLI commands each write one large tree: their bytes count together, not per process."""
    monkeypatch.setattr(git_module, "HOUSEKEEPING_BYTES", 200_000)
    vault = Vault.open(tmp_path / "v")
    sh(vault.root, "config", "gc.auto", "100000")
    with vault.transaction() as tx:
        tx.message = "a large folder"
        for n in range(2000):
            tx.write(f"chunks/P/note-{n:05d}.md", f"note {n}\n", sync=False)
    started = []
    for n in range(4):  # four processes, one ~80 KB tree each: none reaches the limit alone
        process = Vault.open(vault.root)
        write(process, f"chunks/P/new-{n}.md", f"new {n}\n")
        if process.git._gc_child is not None:
            started.append(process.git._gc_child)
    assert started, "the vault's tally never started a repack"
    started[0].wait(timeout=120)
    assert counts(vault.root)["packs"] >= 1
    assert_sound(vault.root)
