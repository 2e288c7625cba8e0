"""Vault: template, transactions, crash recovery, path safety and the write lock, on real git."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from helpers import commit_count, git, git_log, git_status

from rlm_vault import markdown
from rlm_vault.errors import Busy, InvalidInput, InvalidNote, NoVault
from rlm_vault.vault import MARKER, Vault

NOTE = "---\nid: {id}\ntype: insight\n---\n{body}\n"


def tracked(root: Path) -> set[str]:
    return set(git(root, "ls-files", "-z").split("\0")) - {""}


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.rlm-tmp") if ".git" not in p.parts]


def pending(root: Path) -> list[Path]:
    folder = root / ".rlm" / "pending"
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def run_child(code: str, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,
        check=False,
    )  # type: ignore[call-overload]


@pytest.fixture
def vault(vault_dir: Path) -> Vault:
    return Vault.open(vault_dir)


# ---------------------------------------------------------------------------------------- template


def test_open_creates_the_template_with_one_init_commit(vault_dir: Path) -> None:
    vault = Vault.open(vault_dir)
    root = vault.root
    assert root == vault_dir
    for name in ("README.md", ".gitignore", ".gitattributes", "domains.yaml"):
        assert (root / name).is_file(), name
    for folder in ("insights", "chunks", "archive"):
        assert (root / folder).is_dir(), folder
    assert ".rlm/" in (root / ".gitignore").read_text().splitlines()
    assert "*.gz binary" in (root / ".gitattributes").read_text()
    assert "feature" in vault.read_domains()
    assert git_log(root) == ["init: new rlm-vault"]
    assert {"README.md", ".gitignore", ".gitattributes", "domains.yaml"} <= tracked(root)
    assert not any(p.startswith(".rlm/") for p in tracked(root))
    assert (root / ".rlm").is_dir()
    assert git_status(root) == []
    assert git(root, "symbolic-ref", "--short", "HEAD").strip() == "main"


def test_opening_again_adds_nothing(vault_dir: Path) -> None:
    first = Vault.open(vault_dir)
    head = first.git.head()
    before = {p: p.read_bytes() for p in vault_dir.rglob("*") if p.is_file() and ".git" not in p.parts}
    second = Vault.open(vault_dir)
    assert second.git.head() == head
    assert commit_count(vault_dir) == 1
    assert git_status(vault_dir) == []
    after = {p: p.read_bytes() for p in vault_dir.rglob("*") if p.is_file() and ".git" not in p.parts}
    assert {p: b for p, b in after.items() if ".rlm" not in p.parts} == {
        p: b for p, b in before.items() if ".rlm" not in p.parts
    }


def _folder_of_other_files(vault_dir: Path) -> None:
    vault_dir.mkdir()
    (vault_dir / "README.md").write_text("my own readme\n")
    (vault_dir / "notes.txt").write_text("keep me\n")
    (vault_dir / "insights").mkdir()
    (vault_dir / "insights" / "mine.md").write_text(NOTE.format(id="mine", body="hand written"))


def test_a_folder_of_other_files_is_never_opened_as_a_vault(vault_dir: Path) -> None:
    _folder_of_other_files(vault_dir)
    before = sorted(p.relative_to(vault_dir) for p in vault_dir.rglob("*"))
    with pytest.raises(NoVault, match="not an rlm-vault vault"):
        Vault.open(vault_dir)
    with pytest.raises(NoVault, match="--force"):
        Vault.init(vault_dir)
    assert sorted(p.relative_to(vault_dir) for p in vault_dir.rglob("*")) == before


def test_init_force_adopts_a_folder_and_keeps_its_files(vault_dir: Path) -> None:
    _folder_of_other_files(vault_dir)

    vault, how = Vault.init(vault_dir, force=True)

    assert how == "forced" and vault.examine() == "vault"
    assert (vault_dir / "README.md").read_text() == "my own readme\n"
    assert (vault_dir / "notes.txt").read_text() == "keep me\n"
    assert (vault_dir / "insights" / "mine.md").read_text() == NOTE.format(id="mine", body="hand written")
    assert (vault_dir / "domains.yaml").is_file()
    assert git_log(vault_dir) == ["init: new rlm-vault"]
    committed = git(vault_dir, "show", "--name-only", "--format=", "HEAD").split()
    assert "README.md" not in committed and "notes.txt" not in committed and MARKER in committed
    assert Vault.open(vault_dir, create=False).root == vault_dir


def test_a_git_repository_with_history_needs_force_and_keeps_it(vault_dir: Path) -> None:
    vault_dir.mkdir()
    git(vault_dir, "init", "-q")
    (vault_dir / "old.md").write_text("old\n")
    git(vault_dir, "add", "old.md")
    git(vault_dir, "commit", "-q", "-m", "person: old")
    with pytest.raises(NoVault, match="a git repository with other files"):
        Vault.init(vault_dir)
    with pytest.raises(NoVault):
        Vault.open(vault_dir)
    assert git_log(vault_dir) == ["person: old"]
    Vault.init(vault_dir, force=True)
    assert git_log(vault_dir) == ["init: new rlm-vault", "person: old"]
    assert (vault_dir / "old.md").read_text() == "old\n"


def test_a_missing_folder_is_created_only_when_allowed(vault_dir: Path) -> None:
    with pytest.raises(NoVault, match=r"no vault at .*: create one with `rlm-vault init "):
        Vault.open(vault_dir, create=False)
    assert not vault_dir.exists()
    _, how = Vault.init(vault_dir)
    assert how == "created" and (vault_dir / MARKER).is_file()
    assert MARKER in tracked(vault_dir)
    assert Vault.init(vault_dir)[1] == "exists"
    assert commit_count(vault_dir) == 1


def test_an_empty_folder_or_one_with_only_state_is_created(vault_dir: Path) -> None:
    (vault_dir / ".rlm").mkdir(parents=True)
    (vault_dir / ".rlm" / "hooks.log").write_text("a hook ran before the vault existed\n")
    assert Vault.init(vault_dir)[1] == "created"
    assert git_log(vault_dir) == ["init: new rlm-vault"]


def test_a_file_or_an_unreadable_folder_is_one_clear_error(tmp_path: Path) -> None:
    afile = tmp_path / "passwd"
    afile.write_text("root:x:0:0\n")
    for call in (lambda: Vault.init(afile), lambda: Vault.open(afile), lambda: Vault.open(afile / "sub")):
        with pytest.raises(NoVault) as err:
            call()
        assert "\n" not in str(err.value)
    with pytest.raises(NoVault, match="is a file"):
        Vault.init(afile)
    assert afile.read_text() == "root:x:0:0\n"
    if os.geteuid() != 0:  # root reads any folder
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o000)
        with pytest.raises(NoVault, match="cannot read"):
            Vault.open(locked)


def test_a_vault_made_before_the_marker_is_adopted_with_one_commit(vault_dir: Path) -> None:
    Vault.open(vault_dir)
    git(vault_dir, "rm", "-q", MARKER)
    git(vault_dir, "commit", "-q", "-m", "an older vault had no marker")
    assert Vault(vault_dir).examine() == "legacy"

    vault = Vault.open(vault_dir, create=False)

    assert vault.examine() == "vault"
    assert git_log(vault_dir)[0] == "init: mark this folder as an rlm-vault vault"
    assert git_status(vault_dir) == []


# ---------------------------------------------------------------------------------------- transactions


def test_transaction_writes_and_makes_one_commit(vault: Vault) -> None:
    with vault.transaction() as tx:
        tx.message = "remember: a (fact/low)"
        tx.write("insights/a.md", NOTE.format(id="a", body="alpha"))
        tx.write("chunks/P/c.md", NOTE.format(id="c", body="chunk"))
    assert tx.commit_id is not None and tx.commit_id == vault.git.head()
    assert git_log(vault.root) == ["remember: a (fact/low)", "init: new rlm-vault"]
    assert {"insights/a.md", "chunks/P/c.md"} <= tracked(vault.root)
    assert git_status(vault.root) == []
    assert pending(vault.root) == []
    assert temp_files(vault.root) == []
    assert markdown.parse(vault.read_bytes("insights/a.md").decode(), "a") == (
        {"id": "a", "type": "insight"},
        "alpha\n",
    )


def test_transaction_delete_commits_the_removal(vault: Vault) -> None:
    with vault.transaction() as tx:
        tx.message = "add"
        tx.write("insights/a.md", NOTE.format(id="a", body="alpha"))
    with vault.transaction() as tx:
        tx.message = "forget: a"
        tx.delete("insights/a.md")
    assert not (vault.root / "insights/a.md").exists()
    assert "insights/a.md" not in tracked(vault.root)
    assert git_log(vault.root)[0] == "forget: a"
    assert commit_count(vault.root) == 3


def test_transaction_without_message_refuses_to_write(vault: Vault) -> None:
    with pytest.raises(ValueError), vault.transaction() as tx:
        tx.write("insights/a.md", "x")
    assert not (vault.root / "insights/a.md").exists()
    assert commit_count(vault.root) == 1


def test_exception_in_transaction_restores_files_and_makes_no_commit(vault: Vault) -> None:
    old_a = NOTE.format(id="a", body="old alpha")
    old_c = NOTE.format(id="c", body="old gamma")
    with vault.transaction() as tx:
        tx.message = "setup"
        tx.write("insights/a.md", old_a)
        tx.write("insights/c.md", old_c)
    head = vault.git.head()

    with pytest.raises(RuntimeError, match="boom"), vault.transaction() as tx:
        tx.message = "doomed"
        tx.write("insights/a.md", NOTE.format(id="a", body="new alpha"))
        tx.write("insights/b.md", NOTE.format(id="b", body="brand new"))
        tx.write("chunks/New/x.md", NOTE.format(id="x", body="new in new folder"))
        tx.delete("insights/c.md")
        raise RuntimeError("boom")

    assert (vault.root / "insights/a.md").read_text() == old_a
    assert (vault.root / "insights/c.md").read_text() == old_c
    assert not (vault.root / "insights/b.md").exists()
    assert not (vault.root / "chunks/New/x.md").exists()
    assert vault.git.head() == head
    assert "doomed" not in git_log(vault.root)
    assert git_status(vault.root) == []
    assert pending(vault.root) == []
    assert temp_files(vault.root) == []


# ---------------------------------------------------------------------------------------- recovery


def test_recovery_commits_a_journaled_write_and_removes_temp_files(vault_dir: Path) -> None:
    Vault.open(vault_dir)
    (vault_dir / "insights" / "x.md").write_text(NOTE.format(id="x", body="written before the crash"))
    (vault_dir / ".rlm" / "pending").mkdir(parents=True, exist_ok=True)
    journal = vault_dir / ".rlm" / "pending" / "1700000000000000000-deadbeef.json"
    journal.write_text(json.dumps({"message": "remember: x (fact/low)", "paths": ["insights/x.md"]}))
    (vault_dir / "chunks" / "P").mkdir(parents=True)
    stray = [
        vault_dir / "insights" / ".x.md.4242.abcdef.rlm-tmp",
        vault_dir / "chunks" / "P" / ".c.md.1.abc123.rlm-tmp",
    ]
    for path in stray:
        path.write_text("half written")

    Vault.open(vault_dir)

    assert git_log(vault_dir) == ["remember: x (fact/low)", "init: new rlm-vault"]
    assert "insights/x.md" in tracked(vault_dir)
    assert not journal.exists()
    assert not any(p.exists() for p in stray)
    assert git_status(vault_dir) == []


def test_recovery_after_a_process_killed_inside_a_transaction(vault_dir: Path) -> None:
    Vault.open(vault_dir)
    child = run_child(
        """
        import os, signal, sys
        from pathlib import Path
        from rlm_vault.vault import Vault
        vault = Vault.open(Path(sys.argv[1]))
        with vault.transaction() as tx:
            tx.message = "chunk: P_001 saved before the crash"
            tx.write("chunks/P/P_001.md", "---\\nid: P_001\\ntype: chunk\\n---\\nlost?\\n")
            os.kill(os.getpid(), signal.SIGKILL)
    """,
        str(vault_dir),
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert (vault_dir / "chunks/P/P_001.md").exists()
    assert commit_count(vault_dir) == 1
    assert len(pending(vault_dir)) == 1

    Vault.open(vault_dir)

    assert git_log(vault_dir)[0] == "chunk: P_001 saved before the crash"
    assert "chunks/P/P_001.md" in tracked(vault_dir)
    assert pending(vault_dir) == []
    assert git_status(vault_dir) == []


def test_recovery_of_a_write_that_never_landed_makes_no_commit(vault_dir: Path) -> None:
    Vault.open(vault_dir)
    folder = vault_dir / ".rlm" / "pending"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "1-a.json").write_text(
        json.dumps({"message": "remember: ghost", "paths": ["insights/ghost.md"]})
    )
    (vault_dir / "insights" / ".ghost.md.7.abcdef.rlm-tmp").write_text("partial")
    Vault.open(vault_dir)
    assert commit_count(vault_dir) == 1
    assert pending(vault_dir) == []
    assert temp_files(vault_dir) == []


def test_recovery_ignores_journal_paths_outside_the_vault_and_broken_journals(
    vault_dir: Path, tmp_path: Path
) -> None:
    Vault.open(vault_dir)
    folder = vault_dir / ".rlm" / "pending"
    folder.mkdir(parents=True, exist_ok=True)
    (vault_dir / "insights" / "ok.md").write_text(NOTE.format(id="ok", body="fine"))
    (vault_dir / "notes.txt").write_text("a person's file, not ours")
    (folder / "1-a.json").write_text(
        json.dumps(
            {
                "message": "remember: ok",
                "paths": ["../outside.md", "/etc/passwd", "notes.txt", "insights/ok.md"],
            }
        )
    )
    (folder / "2-b.json").write_text("{not json")
    Vault.open(vault_dir)
    assert git_log(vault_dir)[0] == "remember: ok"
    assert git(vault_dir, "show", "--name-only", "--format=", "HEAD").split() == ["insights/ok.md"]
    assert pending(vault_dir) == []
    assert "?? notes.txt" in git_status(vault_dir)


# ---------------------------------------------------------------------------------------- path safety


@pytest.mark.parametrize(
    "relpath",
    [
        "../x.md",
        "/etc/passwd",
        "insights/../../x.md",
        "insights/../README.md",
        "",
        ".git/config",
        ".rlm/access.json",
        "insights/a\0.md",
    ],
)
def test_paths_outside_the_note_folders_are_refused(vault: Vault, relpath: str) -> None:
    with pytest.raises(InvalidInput):
        vault.path(relpath)
    assert vault.exists(relpath) is False
    with pytest.raises(InvalidInput), vault.transaction() as tx:
        tx.message = "evil"
        tx.write(relpath, "pwned")
    assert commit_count(vault.root) == 1


def test_nothing_is_written_outside_through_dotdot(vault: Vault) -> None:
    outside = vault.root.parent / "x.md"
    with pytest.raises(InvalidInput), vault.transaction() as tx:
        tx.message = "evil"
        tx.write("insights/../../x.md", "pwned")
    assert not outside.exists()


@pytest.mark.parametrize("relpath", ["chunks/evil/a.md", "chunks/evil/sub/a.md"])
def test_symlinked_folder_pointing_outside_is_refused(vault: Vault, tmp_path: Path, relpath: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (vault.root / "chunks" / "evil").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidInput), vault.transaction() as tx:
        tx.message = "chunk: evil"
        tx.write(relpath, "pwned")
    assert list(outside.rglob("*")) == []
    assert commit_count(vault.root) == 1
    with pytest.raises(InvalidInput):
        vault.read_bytes("chunks/evil/a.md")


def test_symlinked_note_file_is_not_followed(vault: Vault, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not touch")
    (vault.root / "insights" / "link.md").symlink_to(secret)
    with pytest.raises(InvalidNote):
        vault.read_bytes("insights/link.md")
    assert "insights/link.md" not in vault.scan_folder("insights")
    with vault.transaction() as tx:
        tx.message = "write over the link"
        tx.write("insights/link.md", NOTE.format(id="link", body="mine"))
    assert secret.read_text() == "do not touch"


# ---------------------------------------------------------------------------------------- the lock


HOLDER = """
    import sys
    from pathlib import Path
    from rlm_vault.vault import Vault
    vault = Vault(Path(sys.argv[1]))
    with vault.lock():
        print("locked", flush=True)
        sys.stdin.readline()
    print("released", flush=True)
"""


def test_lock_held_by_another_process_gives_busy(vault: Vault) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLDER), str(vault.root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "locked"
        waiting = Vault(vault.root, lock_timeout=0.2)
        with pytest.raises(Busy, match="busy"), waiting.lock():
            pass
        with pytest.raises(Busy), waiting.transaction() as tx:
            tx.message = "blocked"
            tx.write("insights/blocked.md", "x")
        assert not (vault.root / "insights/blocked.md").exists()
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
    finally:
        if holder.stdin:
            holder.stdin.close()
        holder.wait(timeout=30)
    with Vault(vault.root, lock_timeout=5).lock():
        pass
    assert commit_count(vault.root) == 1


def test_lock_held_by_another_thread_gives_busy(vault: Vault) -> None:
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with vault.lock():
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(30)
        with pytest.raises(Busy), Vault(vault.root, lock_timeout=0.1).lock():
            pass
    finally:
        release.set()
        thread.join(30)
    with Vault(vault.root, lock_timeout=5).lock():
        pass


def test_concurrent_threads_lose_no_commit(vault: Vault) -> None:
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(4):
                with vault.transaction() as tx:
                    tx.message = f"t{n}: {i}"
                    tx.write(f"insights/t{n}-{i}.md", NOTE.format(id=f"t{n}-{i}", body=str(i)))
        except BaseException as exc:  # noqa: BLE001 - collected for the assert below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert commit_count(vault.root) == 1 + 5 * 4
    assert len([p for p in tracked(vault.root) if p.startswith("insights/t")]) == 20
    assert git_status(vault.root) == []


WRITER = """
    import sys
    from pathlib import Path
    from rlm_vault.vault import Vault
    vault = Vault.open(Path(sys.argv[1]))
    name = sys.argv[2]
    for i in range(8):
        with vault.transaction() as tx:
            tx.message = f"{name}: {i}"
            tx.write(f"chunks/{name}/{i}.md", f"---\\nid: '{i}'\\n---\\n{name} {i}\\n")
"""


def test_concurrent_processes_lose_no_commit(vault: Vault) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(WRITER), str(vault.root), f"w{n}"],
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(3)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    assert commit_count(vault.root) == 1 + 3 * 8
    assert len([p for p in tracked(vault.root) if p.startswith("chunks/w")]) == 24
    assert git_status(vault.root) == []
    assert os.listdir(vault.root / ".rlm" / "pending") == []


def test_git_failure_at_commit_rolls_the_files_back(vault: Vault) -> None:
    """A git failure at commit time (here: the branch ref is locked by another git) leaves nothing behind."""
    from rlm_vault.errors import GitError

    with vault.transaction() as tx:
        tx.message = "setup"
        tx.write("insights/a.md", NOTE.format(id="a", body="old"))
    lock = vault.root / ".git" / "refs" / "heads" / "main.lock"
    lock.write_text("")
    with pytest.raises(GitError), vault.transaction() as tx:
        tx.message = "blocked"
        tx.write("insights/a.md", NOTE.format(id="a", body="new"))
        tx.write("insights/b.md", NOTE.format(id="b", body="new"))
    assert (vault.root / "insights/a.md").read_text() == NOTE.format(id="a", body="old")
    assert not (vault.root / "insights/b.md").exists()
    assert pending(vault.root) == []
    assert commit_count(vault.root) == 2
    lock.unlink()
    assert git_status(vault.root) == []
    with vault.transaction() as tx:
        tx.message = "after"
        tx.write("insights/b.md", NOTE.format(id="b", body="new"))
    assert git_log(vault.root)[0] == "after"
    assert git(vault.root, "show", "HEAD:insights/a.md") == NOTE.format(
        id="a", body="old"
    )  # the failed change is gone


def test_a_dead_writer_s_state_temp_file_is_removed_at_start(vault: Vault) -> None:
    """A kill while .rlm/catalog.json or access.json was being replaced leaves a temp file beside it."""
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=False
    )
    vault.cache.mkdir(parents=True, exist_ok=True)
    orphan = vault.cache / f".catalog.json.{dead.stdout.strip()}.abc123.rlm-tmp"
    orphan.write_text("{half")
    mine = vault.state / f".access.json.{os.getpid()}.def456.rlm-tmp"  # a live writer's: left alone
    mine.write_text("{")
    Vault.open(vault.root)
    assert not orphan.exists() and mine.exists()
