"""The service's shape under stress: threads reading while the background indexer follows a person's
edits, bugs that are not swallowed, and the CLI's last-resort handler."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from rlm_vault import markdown
from rlm_vault.cli import main
from rlm_vault.config import Config
from rlm_vault.errors import VaultError
from rlm_vault.service import MemoryService, open_service


def hand_written(vault: Path, name: str, text: str) -> None:
    meta = {
        "id": name,
        "type": "insight",
        "category": "fact",
        "importance": "low",
        "tags": [],
        "project": None,
    }
    path = vault / "insights" / f"{name}.md"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(markdown.render(meta, text), encoding="utf-8")
    tmp.replace(path)  # the way editors save: a new file renamed over the old


def test_background_indexer_follows_external_edits_while_tools_read(config: Config) -> None:
    service = open_service(config, serving=True)
    service.start()
    service.remember("First memory, written by a tool.")
    service.search("memory")  # starts the background indexer
    stop = threading.Event()
    failures: list[BaseException] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                service.status()
                service.recall("edit")
                service.search("edit number")
                service.list_chunks()
                service.grep("edit", fuzzy=True)
            except BaseException as exc:  # noqa: BLE001 - collected for the assert below
                failures.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for n in range(60):
            hand_written(config.vault, f"hand-{n}", f"Hand edit number {n}.")
            if n % 10 == 0:
                service.remember(f"Tool write {n} between the edits.")
            time.sleep(0.005)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert failures == []
    found = {r["id"] for r in service.recall("hand edit number", limit=100)["insights"]}
    assert {f"hand-{n}" for n in range(60)} <= found
    deadline = time.monotonic() + 30
    while service.searcher.cache_problems() and time.monotonic() < deadline:
        service.search("hand edit")
        time.sleep(0.1)
    assert service.searcher.cache_problems() == []
    service.remember("A last write commits every hand edit first.")
    assert service.vault.git.run("status", "--porcelain", "--", "insights").strip() == ""
    service.close()


def test_a_bug_in_the_index_is_raised_not_repaired(
    service: MemoryService, monkeypatch: pytest.MonkeyPatch
) -> None:
    service.remember("Quartz is a mineral.")
    assert service.search("quartz")["results"]
    index_files = sorted(p.name for p in (service.vault.cache / "index").iterdir())

    def bug(*args: object, **kwargs: object) -> object:
        raise TypeError("a bug in our own code")

    from rlm_vault.index import TextIndex

    monkeypatch.setattr(TextIndex, "_search", bug)
    with pytest.raises(TypeError, match="our own code"):
        service.search("quartz")
    assert sorted(p.name for p in (service.vault.cache / "index").iterdir()) == index_files
    assert service.searcher.engine().repairs == []


def test_cli_reports_an_unexpected_error_in_one_line_with_a_log(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("RLM_VAULT_RAISE_ERRORS")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert main(["init"]) == 0

    def broken(self: MemoryService) -> None:
        raise ZeroDivisionError("division by zero in status")

    monkeypatch.setattr(MemoryService, "status", broken)
    capsys.readouterr()
    assert main(["status"]) == 3
    err = capsys.readouterr().err.strip()
    log = tmp_path / "state" / "rlm-vault" / "errors.log"
    assert err.count("\n") == 0 and "ZeroDivisionError" in err and str(log) in err
    assert "Traceback" in log.read_text() and "division by zero in status" in log.read_text()


def test_a_refusal_is_exit_1_not_the_last_resort(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RLM_VAULT_RAISE_ERRORS")
    assert main(["init"]) == 0
    capsys.readouterr()
    assert main(["remember", " "]) == 1
    assert capsys.readouterr().err.startswith("rlm-vault: content is empty")


def test_parts_hold_their_own_state(service: MemoryService) -> None:
    """The front ends' calls are answered by the part that owns them, and parts share one store."""
    assert service.remember.__self__.store is service.store  # type: ignore[attr-defined]
    assert service.search.__self__ is service.searcher  # type: ignore[attr-defined]
    assert service.searcher.store is service.lifecycle.store is service.syncer.store is service.store
    assert isinstance(VaultError("x"), Exception)


def test_the_home_guard_raises_when_a_test_would_reach_the_real_vault_or_caches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rlm_vault import config as config_module

    monkeypatch.setenv("HOME", "/root")
    monkeypatch.delenv("XDG_CACHE_HOME")
    with pytest.raises(AssertionError, match="default vault"):
        config_module.default_vault_dir()
    with pytest.raises(AssertionError, match="cache folder"):
        config_module.cache_home()
