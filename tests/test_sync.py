"""Sync through a real bare git remote: two vaults as two machines, conflicts, an unreachable remote."""

from __future__ import annotations

import os
import subprocess
import threading
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


def test_two_conflicts_on_one_note_in_one_second_keep_every_version(
    tmp_path: Path, remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rlm_vault.sync as sync_module

    monkeypatch.setattr(sync_module, "_stamp", lambda: "20260101T000000Z")  # every merge in one second
    a = machine(tmp_path, remote, "A")
    note = a.remember("The boiler pressure is 1 bar.", category="fact")
    a.sync()
    b = machine(tmp_path, remote, "B")
    a.update(note["id"], content="The boiler pressure is 2 bar (A, first).")
    a.sync()
    b.update(note["id"], content="The boiler pressure is 3 bar (B).")
    assert len(b.sync()["conflicts"]) == 1  # B keeps A's first version in a conflict file
    a.update(note["id"], content="The boiler pressure is 4 bar (A, second).")
    second = a.sync()["conflicts"]  # B's version arrives beside A's first one, not over it
    assert len(second) == 1
    text = texts(a)
    for version in ("2 bar (A, first)", "3 bar (B)", "4 bar (A, second)"):
        assert version in text
    assert len(set(git(a.vault.root, "ls-files", "insights").split())) == 3


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


def test_the_index_lock_of_a_server_killed_inside_git_is_taken_away_at_the_next_start(
    tmp_path: Path, remote: Path
) -> None:
    a = machine(tmp_path, remote, "A")
    a.remember("Shared fact: the cache is warm at 9.")
    a.sync()
    b = machine(tmp_path, remote, "B")
    a.remember("Shared fact: backups run at 3.")
    a.sync()
    git_dir = b.vault.root / ".git"
    lock = git_dir / "index.lock"
    dead = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True, check=True).stdout.strip()

    lock.write_text("held by a person's git commit")  # no mark: a person's, left alone
    (git_dir / f"rlm-vault-index-owner.{os.getpid()}").touch()  # a live server may be writing it
    Vault.open(b.vault.root)
    assert lock.exists()
    (git_dir / f"rlm-vault-index-owner.{os.getpid()}").unlink()
    Vault.open(b.vault.root)
    assert lock.exists()

    (git_dir / f"rlm-vault-index-owner.{dead}").touch()  # a server killed while its git held the lock
    Vault.open(b.vault.root)
    assert not lock.exists() and not list(git_dir.glob("rlm-vault-index-owner.*"))
    assert b.sync()["pulled"] >= 1
    assert "backups run at 3" in "".join(p.read_text() for p in (b.vault.root / "insights").glob("*.md"))


def test_a_persons_own_merge_in_progress_is_left_alone(tmp_path: Path, remote: Path) -> None:
    a = machine(tmp_path, remote, "A")
    a.remember("x")
    (a.vault.root / ".git" / "MERGE_HEAD").write_text(a.vault.git.head() + "\n")
    with pytest.raises(VaultError, match="merge is in progress"):
        a.sync()
    assert (a.vault.root / ".git" / "MERGE_HEAD").exists()


def gate(tmp_path: Path, name: str, program: str) -> Path:
    """A wrapper around `program` (git-upload-pack or git-receive-pack) that announces itself with the file
    `<name>.started` and waits until the file `<name>.go` exists: a remote as slow as the test wants."""
    script = tmp_path / f"{name}.sh"
    started, go = tmp_path / f"{name}.started", tmp_path / f"{name}.go"
    script.write_text(
        "#!/bin/sh\n"
        f'touch "{started}"\n'
        f'i=0; while [ ! -e "{go}" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done\n'
        f'exec {program} "$@"\n'
    )
    script.chmod(0o755)
    return script


def wait_for(path: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


def test_writes_never_wait_for_a_slow_fetch_or_push(tmp_path: Path, remote: Path) -> None:
    other = machine(tmp_path, remote, "B")
    other.remember("Written on B: the harbour opens at dawn.")
    other.sync()
    config = Config(vault=tmp_path / "A", project="SyncProj", embedding_model="none", lock_timeout=3.0)
    clone_or_create(config.vault, str(remote))
    a = open_service(config)
    a.set_remote(str(remote))
    a.sync()
    a.remember("Written on A before the slow sync.")
    git(a.vault.root, "config", "remote.origin.uploadpack", str(gate(tmp_path, "fetch", "git-upload-pack")))
    git(a.vault.root, "config", "remote.origin.receivepack", str(gate(tmp_path, "push", "git-receive-pack")))
    other.remember("Written on B while A is fetching.")
    other.sync()
    results: list[object] = []
    worker = threading.Thread(target=lambda: results.append(a.sync()))
    worker.start()
    wait_for(tmp_path / "fetch.started")
    # The fetch is held open; a write that had to wait for it would fail with Busy after 3 s.
    during_fetch = a.remember("Remembered while the sync is fetching.")
    assert worker.is_alive() and not (tmp_path / "push.started").exists()
    (tmp_path / "fetch.go").touch()
    wait_for(tmp_path / "push.started")
    during_push = a.remember("Remembered while the sync is pushing.")
    assert worker.is_alive()
    (tmp_path / "push.go").touch()
    worker.join(60)
    assert not worker.is_alive() and isinstance(results[0], dict) and results[0]["pulled"] >= 1
    assert "while A is fetching" in texts(a)
    assert {during_fetch["path"], during_push["path"]} <= set(git(a.vault.root, "ls-files").split())
    a.sync()
    assert "while the sync is pushing" in git(remote, "log", "-p", "-3")


def test_only_notes_travel_and_other_files_are_reported(tmp_path: Path, remote: Path) -> None:
    a = machine(tmp_path, remote, "A")
    root = a.vault.root
    note = a.remember("A note that travels.")
    (root / ".obsidian").mkdir()
    (root / ".obsidian" / "app.json").write_text('{"theme": "dark"}')
    (root / "Untitled.md").write_text("scratch\n")
    (root / ".env").write_text("DEBUG=1\n")
    (root / "domains.yaml").write_text((root / "domains.yaml").read_text() + "\n# mine\n")
    hand = root / note["path"]
    hand.write_text(hand.read_text().replace("travels", "travels, edited by hand"))
    result = a.sync()
    assert result["untracked"] == [".env", ".obsidian/app.json", "Untitled.md"]
    assert result["refused"] == []
    shipped = set(git(remote, "ls-tree", "-r", "--name-only", "HEAD").split())
    assert {note["path"], "domains.yaml"} <= shipped
    assert not {".env", ".obsidian/app.json", "Untitled.md"} & shipped
    assert "edited by hand" in git(remote, "show", f"HEAD:{note['path']}")
    assert a.status()["untracked"] == result["untracked"]
    assert a.doctor()["untracked"] == result["untracked"]
    assert (root / ".env").read_text() == "DEBUG=1\n"  # left where it was


SECRET = "ANTHROPIC_API_KEY=sk-ant-api03-" + "Zq8xT2mKp9vLw4RbN7cYd1Hf6Gj3Sa5E" * 2 + "AA"


def test_a_secret_typed_into_a_note_never_reaches_the_remote(tmp_path: Path, remote: Path) -> None:
    a = machine(tmp_path, remote, "A")
    note = a.remember("The deploy key lives in the vault of the ops team.")
    a.sync()
    path = a.vault.root / note["path"]
    clean = path.read_text()
    path.write_text(clean + f"\n{SECRET}\n")
    fresh = a.vault.root / "insights" / "2020-01-01-pasted.md"
    fresh.write_text(clean.replace(note["id"], "2020-01-01-pasted") + f"\n{SECRET}\n")
    a.remember("A later write commits pending hand edits first.")  # the write path is scanned too
    result = a.sync()
    assert sorted(r["path"] for r in result["refused"]) == sorted(
        [note["path"], "insights/2020-01-01-pasted.md"]
    )
    assert "API key" in result["refused"][0]["reason"] or "key" in result["refused"][0]["reason"].lower()
    assert "sk-ant-api03" not in git(remote, "log", "--all", "-p")
    assert "sk-ant-api03" not in git(a.vault.root, "log", "--all", "-p")
    assert {r["path"] for r in a.status()["refused"]} == {r["path"] for r in result["refused"]}
    path.write_text(clean.replace("ops team", "ops team (checked)"))  # the person removes the secret
    fresh.unlink()
    assert a.sync()["refused"] == []
    assert "(checked)" in git(remote, "show", f"HEAD:{note['path']}")


def test_a_tracked_rlm_from_the_remote_is_never_merged(tmp_path: Path, remote: Path) -> None:
    a = machine(tmp_path, remote, "A")
    a.remember("Local note on A.")
    a.sync()
    index_file = a.vault.root / ".rlm" / "index" / "_MAIN_9999.toc"
    index_file.parent.mkdir(parents=True, exist_ok=True)
    index_file.write_bytes(b"local cache")
    outside = tmp_path / "outside"
    outside.mkdir()
    for attack in ("file", "symlink"):
        hostile = tmp_path / f"hostile-{attack}"
        git(tmp_path, "clone", "-q", str(remote), str(hostile))
        if attack == "file":
            (hostile / ".rlm" / "index").mkdir(parents=True)
            (hostile / ".rlm" / "index" / "_MAIN_9999.toc").write_bytes(b"attacker pickle")
        else:
            (hostile / ".rlm").symlink_to(outside)
        (hostile / "insights" / f"2020-01-01-{attack}.md").write_text(
            f"---\nid: 2020-01-01-{attack}\ntype: insight\n---\nA real note next to the {attack}.\n"
        )
        git(hostile, "add", "-f", "-A")
        git(hostile, "commit", "-q", "-m", f"hostile {attack}")
        git(hostile, "push", "-q", "origin", "HEAD")
        result = a.sync()
        assert result["warnings"] and ".rlm" in result["warnings"][0]
        assert index_file.read_bytes() == b"local cache"
        assert not (a.vault.root / ".rlm").is_symlink() and list(outside.iterdir()) == []
        assert git(a.vault.root, "ls-files", ".rlm") == ""
        assert f"A real note next to the {attack}" in texts(a)  # the rest of the change is merged
        assert git(remote, "ls-tree", "HEAD", ".rlm") == ""  # and the remote is clean again
        fsck(a.vault.root)
    clone = tmp_path / "fresh"
    git(tmp_path, "clone", "-q", str(remote), str(tmp_path / "hostile-again"))
    hostile = tmp_path / "hostile-again"
    (hostile / ".rlm").mkdir()
    (hostile / ".rlm" / "x").write_text("attacker")
    git(hostile, "add", "-f", "-A")
    git(hostile, "commit", "-q", "-m", "hostile again")
    git(hostile, "push", "-q", "origin", "HEAD")
    assert clone_or_create(clone, str(remote)) == "cloned"
    assert not (clone / ".rlm" / "x").exists() and git(clone, "ls-files", ".rlm") == ""


def test_history_names_the_machine_that_remembered(
    tmp_path: Path, remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        monkeypatch.delenv(key)  # each machine's own git identity decides, as on real machines
    for name, who in (("A", "Alice on A <alice@a.example>"), ("B", "Bob on B <bob@b.example>")):
        (tmp_path / name).mkdir()
        git(tmp_path / name, "init", "-q")
        git(tmp_path / name, "config", "user.name", who.split(" <")[0])
        git(tmp_path / name, "config", "user.email", who.split("<")[1].rstrip(">"))
    a = machine(tmp_path, remote, "A")
    note = a.remember("Shared note, first written on A.")
    a.sync()
    b = machine(tmp_path, remote, "B")
    b.update(note["id"], content="Shared note, changed on B.")
    b.sync()
    a.sync()
    rows = a.history(note["id"])["commits"]
    assert [r["author"] for r in rows] == ["Bob on B <bob@b.example>", "Alice on A <alice@a.example>"]
    assert "Bob on B" in git(a.vault.root, "log", "-1", "--format=%an", "--", note["path"])


def test_a_refused_push_is_an_error_that_says_what_to_do(tmp_path: Path, remote: Path) -> None:
    a = machine(tmp_path, remote, "A")
    b = machine(tmp_path, remote, "B")
    b.remember("Written on B before the remote turned read-only for A.")
    b.sync()
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'Permission denied: this key may only read' >&2\nexit 1\n")
    hook.chmod(0o755)
    a.remember("Kept locally when the remote refuses it.")
    with pytest.raises(VaultError, match="cannot push.*Permission denied.*access.*kept locally"):
        a.sync()
    assert "Kept locally" in texts(a) and git_status(a.vault.root) == []
    assert "before the remote turned read-only" in texts(a)  # a read-only machine still pulls


def test_a_clean_merge_reaches_the_folder_only_once_the_remote_took_it(tmp_path: Path, remote: Path) -> None:
    a = machine(tmp_path, remote, "A")
    b = machine(tmp_path, remote, "B")
    b.remember("Written on B: the ferry leaves at nine.")
    b.sync()
    a.remember("Written on A: the bridge is closed on Sundays.")
    before = a.vault.git.head()
    git(a.vault.root, "config", "remote.origin.receivepack", str(gate(tmp_path, "push", "git-receive-pack")))
    results: list[object] = []
    worker = threading.Thread(target=lambda: results.append(a.sync()))
    worker.start()
    wait_for(tmp_path / "push.started")
    # The merge is built and being pushed; the folder and HEAD have not changed yet.
    assert a.vault.git.head() == before and "ferry" not in texts(a)
    (tmp_path / "push.go").touch()
    worker.join(60)
    assert isinstance(results[0], dict) and results[0]["pulled"] == 1 and results[0]["pushed"] == 2
    head = a.vault.git.head()
    assert head == git(remote, "rev-parse", "HEAD").strip()  # the folder holds what the remote took
    assert git(a.vault.root, "rev-list", "--parents", "-1", head).split()[1] == before
    assert "ferry" in texts(a) and git_status(a.vault.root) == []
    fsck(a.vault.root)


def test_a_remote_busy_past_the_deadline_keeps_the_commits_for_the_next_sync(
    tmp_path: Path, remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rlm_vault.sync as sync_module

    a = machine(tmp_path, remote, "A")
    b = machine(tmp_path, remote, "B")
    b.remember("Written on B while the remote is busy.")
    b.sync()
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'error: cannot lock ref: another push is updating it' >&2\nexit 1\n")
    hook.chmod(0o755)
    monkeypatch.setattr(sync_module, "RACE_DEADLINE", 1.0)
    a.remember("Written on A while the remote is busy.")
    result = a.sync()  # every push loses the race until the deadline: not an error
    assert result["unpushed"] >= 1 and "busy" in result["warnings"][-1]
    assert "Written on B while" in texts(a) and git_status(a.vault.root) == []
    hook.unlink()
    again = a.sync()
    assert "unpushed" not in again and again["pushed"] >= 1
    assert "Written on A while" in git(remote, "log", "-p", "-3")


def test_automatic_sync_pushes_again_soon_when_the_remote_was_busy(
    tmp_path: Path, remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rlm_vault.sync as sync_module

    a = machine(tmp_path, remote, "A")
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'error: cannot lock ref: another push is updating it' >&2\nexit 1\n")
    hook.chmod(0o755)
    monkeypatch.setattr(sync_module, "RACE_DEADLINE", 0.5)
    auto = AutoSync(a.syncer, a.store, delay=0.2, interval=3600).start()  # no periodic sync in this test
    a.remember("Written on A, pushed once the remote is free.")
    deadline = time.monotonic() + 30
    while auto.runs < 2 and time.monotonic() < deadline:  # the start-up sync, then the busy one
        time.sleep(0.05)
    hook.unlink()
    while "once the remote is free" not in git(remote, "log", "-p", "-2") and time.monotonic() < deadline:
        time.sleep(0.05)
    auto.stop()
    assert "once the remote is free" in git(remote, "log", "-p", "-2") and auto.last_error == ""


def test_a_search_after_a_quiet_period_pulls_in_the_background(tmp_path: Path, remote: Path) -> None:
    assert Config.from_env({"RLM_SYNC_INTERVAL": "2.5"}).sync_interval == 2.5
    assert Config.from_env({"RLM_SYNC_INTERVAL": "soon"}).sync_interval == 30.0
    a = machine(tmp_path, remote, "A")
    b = machine(tmp_path, remote, "B")
    auto = AutoSync(a.syncer, a.store, delay=0.2, interval=3600).start()  # no periodic pull in this test
    auto.quiet = 0.0
    deadline = time.monotonic() + 20
    while auto.runs < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    b.remember("The kingfisher nests by the weir.")
    b.sync()
    auto.kick()  # what a search does: returns at once, the pull runs behind it
    while auto.runs < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    auto.stop()
    assert "kingfisher" in texts(a) and auto.runs >= 2 and auto.last_error == ""
