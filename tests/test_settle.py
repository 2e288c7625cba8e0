"""A serving process commits a person's edits once they settle: one commit per burst, no tool write needed."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import git, git_log, git_status

from rlm_vault.config import Config
from rlm_vault.service import MemoryService, open_service


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def external_commits(root: Path) -> list[str]:
    return [s for s in git_log(root) if s.startswith("external:")]


@pytest.fixture
def serving(config: Config) -> Iterator[MemoryService]:
    svc = open_service(replace(config, settle_delay=1.5), serving=True)
    svc.start()
    yield svc
    svc.close()


def test_a_burst_of_saves_becomes_one_commit_without_a_tool_write(serving: MemoryService) -> None:
    root = serving.vault.root
    note = root / "insights" / "autosaved.md"
    for n in range(20):  # an editor autosaving while a person types
        note.write_text(f"---\ncategory: fact\n---\nPelicans, draft {n}\n")
        time.sleep(0.01)
    assert wait_for(lambda: bool(external_commits(root)))
    time.sleep(2 * serving.settler.interval if serving.settler else 0)
    assert external_commits(root) == ["external: insights/autosaved.md"]
    assert git(root, "show", "HEAD:insights/autosaved.md").endswith("Pelicans, draft 19\n")
    assert git_status(root) == []


def test_a_half_written_note_waits_until_it_parses(serving: MemoryService) -> None:
    root = serving.vault.root
    note = root / "insights" / "half.md"
    note.write_text("---\ncategory: [fact\n")  # the front matter is not finished
    time.sleep(3 * 1.5)
    assert external_commits(root) == []
    note.write_text("---\ncategory: fact\n---\nfinished\n")
    assert wait_for(lambda: external_commits(root) == ["external: insights/half.md"])


def test_editor_folders_are_left_alone_by_the_settler(serving: MemoryService) -> None:
    root = serving.vault.root
    (root / ".obsidian").mkdir()
    (root / ".obsidian" / "app.json").write_text("{}")
    (root / "Untitled.md").write_text("stray")
    (root / "insights" / "real.md").write_text("A real note, no front matter.\n")
    assert wait_for(lambda: external_commits(root) == ["external: insights/real.md"])
    assert {".obsidian/app.json", "Untitled.md"} & set(git(root, "ls-files").split()) == set()


def test_only_a_serving_process_settles(config: Config) -> None:
    assert open_service(config).settler is None
    assert open_service(replace(config, settle_delay=0), serving=True).settler is None
    assert Config.from_env({"RLM_SETTLE_SECONDS": "2.5"}).settle_delay == 2.5
    assert Config.from_env({}).settle_delay == 5.0
