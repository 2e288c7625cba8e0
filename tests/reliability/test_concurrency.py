"""Many writers on one vault: processes, MCP server subprocesses, and threads inside one server.

Each ends with every note present, exactly one commit per write, `git fsck` clean, a clean work tree,
and search caches consistent with the vault.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from relkit import deadline, dirty, fsck_clean, git, new_commits, temp_files, tracked, write_batch

from rlm_vault.config import Config
from rlm_vault.errors import VaultError
from rlm_vault.service import MemoryService, open_service

pytestmark = pytest.mark.reliability

Written = list[tuple[str, str, str]]


def open_vault(vault: Path) -> MemoryService:
    config = Config(vault=vault, project="Conc", embedding_model="none")
    return open_service(config)


def assert_all_there(vault: Path, base: str, written: Written, expected: int) -> None:
    """Every write is a tracked file with its own commit, and the repository is healthy and clean."""
    assert len(written) == expected
    assert len({path for _, _, path in written}) == expected, "two writes got the same path"
    files = tracked(vault)
    for kind, note_id, path in written:
        assert (vault / path).is_file() and path in files, f"{kind} {note_id} lost"
    commits = new_commits(vault, base)
    assert len(commits) == expected, f"{len(commits)} commits for {expected} writes"
    # A chunk's commit also carries its session note (sessions/<session>.md), which links every chunk.
    notes = sorted(p for _, paths in commits for p in paths if not p.startswith("sessions/"))
    assert notes == sorted(p for _, _, p in written)
    linked = "".join(p.read_text() for p in (vault / "sessions").glob("*.md"))
    missing = [i for kind, i, _ in written if kind == "chunk" and f"[[{i}]]" not in linked]
    assert not missing, f"{len(missing)} chunks not linked from a session note, e.g. {missing[:3]}"
    assert all(
        len([p for p in paths if not p.startswith("sessions/")]) == 1
        and subject.split(":")[0] in ("chunk", "remember")
        for subject, paths in commits
    )
    assert fsck_clean(vault) == ""
    assert dirty(vault) == [] and temp_files(vault) == []


def assert_caches_follow(vault: Path, written: Written, marker: str) -> None:
    """A new service (as after a restart) finds the notes, and its caches then match the vault."""
    service = open_vault(vault)
    hits = service.search("marker number chunk insight", limit=50)["results"]
    assert len(hits) == 50 and {h["id"] for h in hits} <= service.fresh().ids()
    assert service.doctor()["caches"] == []
    found = service.grep(marker + r"\b")["matches"]
    assert len(found) == 1 and marker in service.peek(found[0]["id"])["content"]


def test_eight_processes_fifty_writes_each(tmp_path: Path) -> None:
    vault = tmp_path / "vault"
    open_vault(vault)
    base = git(vault, "rev-parse", "HEAD").strip()
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=write_batch, args=(str(vault), w, 50, barrier, results)) for w in range(8)]
    started = time.monotonic()
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=150) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    errors = {w: r for w, r in outcomes.items() if isinstance(r, str)}
    assert not errors, errors
    written = [row for w in sorted(outcomes) for row in outcomes[w]]
    print(f"8 processes x 50 writes: {time.monotonic() - started:.1f} s")
    assert_all_there(vault, base, written, 400)
    assert_caches_follow(vault, written, "marker-w1-i3")


def test_eight_threads_write_while_others_read(tmp_path: Path) -> None:
    """The MCP SDK runs sync tools in worker threads: one service, concurrent writes and reads."""
    vault = tmp_path / "vault"
    service = open_vault(vault)
    service.chunk("seed chunk so readers have something to find", project="Conc")
    base = git(vault, "rev-parse", "HEAD").strip()
    written: Written = []
    failures: list[str] = []
    writing = threading.Event()
    writing.set()

    def writer(w: int) -> None:
        try:
            for i in range(25):
                if i % 2:
                    r = service.remember(f"thread {w} insight {i} marker-t{w}-i{i}", category="finding")
                    written.append(("insight", r["id"], r["path"]))
                else:
                    r = service.chunk(
                        f"thread {w} chunk {i}\nmarker-t{w}-i{i}", summary=f"t{w} {i}", project="Conc"
                    )
                    written.append(("chunk", r["id"], r["path"]))
        except BaseException as exc:  # noqa: BLE001 - reported by the test, whatever it is
            failures.append(f"writer {w}: {type(exc).__name__}: {exc}")

    def reader(r: int) -> None:
        calls = 0
        while writing.is_set():
            try:
                service.search("thread chunk marker", limit=10)
                service.grep(r"marker-t\d-i1\b", limit=20)
                service.grep("thread chunk", fuzzy=True, limit=5)
                service.recall("insight", limit=5)
                ids = [c["id"] for c in service.list_chunks(limit=3)["chunks"]]
                if ids:
                    service.peek(ids[0])
                service.sessions()
                calls += 1
                time.sleep(0.01)  # a model between tool calls; also leaves the writers some CPU
            except VaultError as exc:  # a refusal would be a bug here too, but name it apart
                failures.append(f"reader {r}: VaultError {exc}")
            except BaseException as exc:  # noqa: BLE001 - reported by the test, whatever it is
                failures.append(f"reader {r}: {type(exc).__name__}: {exc}")
        assert calls > 0

    writers = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    readers = [threading.Thread(target=reader, args=(r,)) for r in range(2)]
    with deadline(150, "8 threads x 25 writes"):
        for t in readers + writers:
            t.start()
        for t in writers:
            t.join()
        writing.clear()
        for t in readers:
            t.join()
    assert failures == []
    assert_all_there(vault, base, written, 200)
    service.search("thread", limit=5)
    assert service.doctor()["caches"] == []
    assert_caches_follow(vault, written, "marker-t1-i3")


def test_four_mcp_server_processes_write_at_once(tmp_path: Path) -> None:
    """`python -m rlm_vault serve` four times over stdio, as four Claude Code windows on one vault."""
    import anyio
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    vault = tmp_path / "vault"
    open_vault(vault)
    base = git(vault, "rev-parse", "HEAD").strip()
    env = {**os.environ, "RLM_VAULT_DIR": str(vault), "RLM_PROJECT": "Conc", "RLM_EMBEDDING_MODEL": "none"}
    written: Written = []
    errors: list[str] = []

    async def window(w: int, ready: Any) -> None:
        params = StdioServerParameters(
            command=sys.executable, args=["-m", "rlm_vault", "serve"], env=env, cwd=str(tmp_path)
        )
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            ready[w].set()
            for event in ready:
                await event.wait()
            for i in range(25):
                if i % 2:
                    r = await session.call_tool(
                        "rlm_remember", {"content": f"mcp {w} insight {i} marker-m{w}-i{i}"}
                    )
                    kind = "insight"
                else:
                    r = await session.call_tool(
                        "rlm_chunk", {"content": f"mcp {w} chunk {i}\nmarker-m{w}-i{i}", "project": "Conc"}
                    )
                    kind = "chunk"
                if r.is_error:
                    errors.append(f"window {w} call {i}: {r.content[0].text}")
                else:
                    written.append((kind, r.structured_content["id"], r.structured_content["path"]))

    async def main() -> None:
        ready = [anyio.Event() for _ in range(4)]
        with anyio.fail_after(150):
            async with anyio.create_task_group() as tg:
                for w in range(4):
                    tg.start_soon(window, w, ready)

    anyio.run(main)
    assert errors == []
    assert_all_there(vault, base, written, 100)
    assert_caches_follow(vault, written, "marker-m1-i3")
