"""Retention, restore, history, revert and external edits, on a real vault with real git."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest
from helpers import FakeClock, commit_count, git, git_log, git_status

from rlm_vault.errors import InvalidInput, InvalidNote, NotFound
from rlm_vault.service import MemoryService, open_service


def backdate(path: Path, created: str) -> None:
    """Edit `created:` by hand, the way a person would to age a note."""
    text = path.read_text(encoding="utf-8")
    path.write_text(re.sub(r"(?m)^created:.*$", f"created: '{created}'", text, count=1), encoding="utf-8")


@pytest.fixture
def chunks(service: MemoryService) -> list[str]:
    ids = []
    for n, (tags, text) in enumerate(
        [
            ("", "plain notes one"),
            ("", "plain notes two"),
            ("decision", "kept by tag"),
            ("", "DECISION: kept by marker"),
            ("keep", "kept by tag keep"),
        ]
    ):
        ids.append(service.chunk(f"{text}\nline two of {n}", summary=f"chunk {n}", tags=tags)["id"])
    return ids


def test_preview_lists_old_unused_non_immune_chunks(
    service: MemoryService, clock: FakeClock, chunks: list[str]
) -> None:
    clock.advance(days=31)
    preview = service.retention_preview()
    assert (
        preview["archive"] == chunks[:2]
    )  # tags decision/keep and a DECISION: marker make the others immune
    assert preview["purge"] == []


def test_three_reads_make_a_chunk_immune_and_a_read_resets_its_age(
    service: MemoryService, clock: FakeClock, chunks: list[str]
) -> None:
    for _ in range(3):
        service.peek(chunks[0])
    clock.advance(days=20)
    service.peek(chunks[1])
    clock.advance(days=20)  # chunk 1 was read 20 days ago: not due yet
    assert service.retention_preview()["archive"] == []


def test_hand_edited_created_date_counts(service: MemoryService, chunks: list[str]) -> None:
    path = service.vault.root / service.fresh().note(chunks[0]).path
    backdate(path, "2026-01-01T00:00:00Z")
    assert service.retention_preview()["archive"] == [chunks[0]]


def test_archive_run_is_one_commit_of_exact_gzip(
    service: MemoryService, clock: FakeClock, chunks: list[str]
) -> None:
    root = service.vault.root
    paths = {cid: root / service.fresh().note(cid).path for cid in chunks[:2]}
    original = {cid: p.read_bytes() for cid, p in paths.items()}
    clock.advance(days=40)
    before = commit_count(root)
    result = service.retention_run()
    assert result["archived"] == chunks[:2] and result["purged"] == []
    assert commit_count(root) == before + 1
    assert git_log(root)[0].startswith("archive: 2 chunks")
    for cid, path in paths.items():
        gz = root / "archive" / "TestProj" / f"{cid}.md.gz"
        assert gzip.decompress(gz.read_bytes()) == original[cid]
        assert not path.exists()
    assert git_status(root) == []
    assert service.status()["archived"] == 2


def test_restore_is_byte_identical_and_not_archived_again(
    service: MemoryService, clock: FakeClock, chunks: list[str]
) -> None:
    root = service.vault.root
    path = root / service.fresh().note(chunks[0]).path
    original = path.read_bytes()
    clock.advance(days=40)
    service.retention_run()
    restored = service.restore(chunks[0])
    assert (root / restored["path"]).read_bytes() == original
    assert git_log(root)[0].startswith(f"restore: {chunks[0]}")
    assert chunks[0] not in service.retention_preview()["archive"]
    assert chunks[0] not in service.retention_run()["archived"]


def test_archived_chunks_stay_findable_and_peek_restores(
    service: MemoryService, clock: FakeClock, chunks: list[str]
) -> None:
    clock.advance(days=40)
    service.retention_run()
    assert service.grep("plain notes one")["matches"] == []
    found = service.grep("plain notes one", include_archived=True)["matches"]
    assert [m["id"] for m in found] == [chunks[0]]
    assert chunks[0] in [r["id"] for r in service.search("plain notes one", include_archived=True)["results"]]
    peek = service.peek(chunks[0])
    assert peek["content"].startswith("plain notes one")
    assert service.fresh().note(chunks[0]) is not None


def test_purge_only_when_asked_and_after_the_delay(
    service: MemoryService, clock: FakeClock, chunks: list[str]
) -> None:
    root = service.vault.root
    clock.advance(days=40)
    service.retention_run()
    assert service.retention_preview()["purge"] == []
    clock.advance(days=181)
    assert sorted(service.retention_preview()["purge"]) == sorted(chunks[:2])
    assert service.retention_run()["purged"] == []  # purge=False by default
    result = service.retention_run(purge=True)
    assert sorted(result["purged"]) == sorted(chunks[:2])
    assert not list((root / "archive").rglob("*.md.gz"))
    assert git_log(root)[0].startswith("purge: 2 archived chunks")
    # git history keeps what was purged
    assert f"archive/TestProj/{chunks[0]}.md.gz" in git(root, "show", "--name-only", "--format=", "HEAD~1")


def test_gzip_bomb_in_archive_is_refused(service: MemoryService, chunks: list[str]) -> None:
    bomb = service.vault.root / "archive" / "TestProj" / "2026-11-24_TestProj_099.md.gz"
    bomb.parent.mkdir(parents=True, exist_ok=True)
    bomb.write_bytes(gzip.compress(b"\0" * (service.config.max_content_bytes * 3)))
    with pytest.raises(InvalidNote, match="expands to more than"):
        service.restore("2026-11-24_TestProj_099")
    assert bomb.exists()


def test_history_and_revert_of_an_insight(service: MemoryService, clock: FakeClock) -> None:
    root = service.vault.root
    note = service.remember("The staging port is 8080.", category="fact")
    clock.advance(minutes=5)
    service.update(note["id"], content="The staging port is 9090.")
    commits = service.history(note["id"])["commits"]
    assert [c["message"].split(":")[0] for c in commits] == ["update", "remember"]
    reverted = service.revert(note["id"], commits[-1]["commit"][:12])
    text = (root / reverted["path"]).read_text(encoding="utf-8")
    assert "8080" in text and "9090" not in text
    assert git_log(root)[0] == f"revert: {note['id']} to {commits[-1]['commit'][:10]}"
    assert len(service.history(note["id"])["commits"]) == 3


def test_revert_brings_back_a_forgotten_insight(service: MemoryService) -> None:
    note = service.remember("Remember the milk.")
    service.forget(note["id"])
    commits = service.history(note["id"])["commits"]
    with pytest.raises(NotFound, match="did not exist"):
        service.revert(note["id"], commits[0]["commit"])
    service.revert(note["id"], commits[1]["commit"])
    assert service.recall("milk")["insights"][0]["id"] == note["id"]


def test_revert_accepts_refs_and_short_hashes(service: MemoryService, clock: FakeClock) -> None:
    note = service.remember("The staging port is 8080.")
    clock.advance(minutes=5)
    service.update(note["id"], content="The staging port is 9090.")
    first = service.revert(note["id"], "HEAD~1")
    assert "8080" in service.insight(note["id"]).content
    assert first["from"] == service.history(note["id"])["commits"][-1]["commit"]
    newest = service.history(note["id"])["commits"][1]["commit"]  # the update, before the revert
    service.revert(note["id"], newest[:7])
    assert "9090" in service.insight(note["id"]).content


@pytest.mark.parametrize(
    "commit", ["", "zzzz", "HEAD; rm -rf /", "0" * 40, "--all", "-q", "HEAD~1..HEAD", "HEAD:insights"]
)
def test_revert_refuses_bad_commits(service: MemoryService, commit: str) -> None:
    note = service.remember("Something to keep.")
    before = commit_count(service.vault.root)
    with pytest.raises(InvalidInput):
        service.revert(note["id"], commit)
    assert commit_count(service.vault.root) == before


def test_history_of_unknown_id(service: MemoryService) -> None:
    with pytest.raises(NotFound):
        service.history("2020-01-01-nothing")
    with pytest.raises(InvalidInput):
        service.history("../etc/passwd")


def test_external_edit_is_committed_apart_before_the_next_write(service: MemoryService) -> None:
    root = service.vault.root
    note = service.remember("Original text about herons.")
    path = root / note["path"]
    service.recall("herons")  # the service has seen the file
    path.write_text(path.read_text(encoding="utf-8").replace("herons", "egrets"), encoding="utf-8")
    assert service.recall("egrets")["insights"][0]["id"] == note["id"]
    later = service.remember("A later memory.")
    subjects = git_log(root)
    assert subjects[0].startswith(f"remember: {later['id']}")
    assert subjects[1] == f"external: {note['path']}"
    assert git(root, "show", "--name-only", "--format=", "HEAD").split() == [later["path"]]
    assert git_status(root) == []


def test_external_edits_made_while_stopped_are_committed_at_next_write(
    service: MemoryService, config
) -> None:

    root = service.vault.root
    note = service.remember("Text about cranes.")
    (root / note["path"]).write_text((root / note["path"]).read_text().replace("cranes", "storks"))
    (root / "insights" / "hand-made.md").write_text("---\ncategory: fact\n---\nA note a person wrote.\n")
    fresh = open_service(config)
    fresh.remember("After a restart.")
    assert git_log(root)[1] == "external: 2 files"
    assert git_status(root) == []


def test_broken_hand_edit_is_left_alone_and_reported(service: MemoryService) -> None:
    root = service.vault.root
    broken = root / "insights" / "half-written.md"
    service.recall()
    broken.write_text("---\ncategory: [unclosed\n---\nbody\n")
    service.remember("Unrelated write.")
    assert broken.read_text() == "---\ncategory: [unclosed\n---\nbody\n"
    assert git_status(root) == ["?? insights/half-written.md"]
    problems = service.status()["problems"]
    assert problems[0]["path"] == "insights/half-written.md" and "YAML" in problems[0]["reason"]


def test_chunks_too_new_to_be_due_are_left_unread_and_none_due_is_missed(
    service: MemoryService, clock: FakeClock
) -> None:
    from datetime import timedelta

    from rlm_vault.retention import Policy

    limit = clock() - timedelta(days=service.config.archive_after_days)
    day, next_day = limit.date().isoformat(), (limit + timedelta(days=1)).date().isoformat()
    created = [
        (limit - timedelta(hours=1)).isoformat(),  # due
        (limit + timedelta(hours=1)).isoformat(),  # not yet
        f"{day}T23:30:00-05:00",  # the next day in UTC
        f"{next_day}T01:00:00+14:00",  # the day before in UTC
        f"{next_day}T12:00:00+00:00",
        "20200101",  # an ISO date without dashes: due
        "2020-W01-1",  # a week date: due
        "sometime",  # not a time: never due by age
        (limit + timedelta(days=2)).isoformat(),  # newer than any due chunk can be
        clock().isoformat(),
    ]
    made = [service.chunk(f"note {n}", summary=f"n{n}")["id"] for n in range(len(created))]
    for chunk_id, when in zip(made, created, strict=True):
        backdate(service.vault.root / service.fresh().note(chunk_id).path, when)
    everything = service.fresh().chunks()
    expected = Policy(service.config.archive_after_days).to_archive(everything, {}, clock())
    assert 3 <= len(expected) < len(made)
    assert service.retention_preview()["archive"] == [c.id for c in expected]
    candidates = service.fresh().chunks_created_by(
        Policy(service.config.archive_after_days).last_created_day(clock())
    )
    assert len(candidates) == len(everything) - 2  # the two newer ones are not built
