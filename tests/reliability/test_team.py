"""A team on one remote: several vault clones, each in its own process, writing and syncing at once.

Each machine is a real process (child.py team) with its own clone of one bare remote. Every sync that
loses the push race must fetch, merge and push again by itself: no failed sync reaches the user, no note
is lost, and every vault holds every note after at most two sync rounds once the writes stop. Also two
real `rlm-vault serve` processes with RLM_SYNC=auto: a note remembered on one is found by rlm_search on
the other, with no restart.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from relkit import CHILD, fsck_clean, git, tracked

from rlm_vault.config import Config
from rlm_vault.service import MemoryService, open_service
from rlm_vault.sync import clone_or_create

pytestmark = pytest.mark.reliability

MACHINES = 4
WRITES = 12
EVERY = 3


def bare(tmp_path: Path) -> Path:
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    return remote


def join(root: Path, remote: Path) -> MemoryService:
    """A machine that joins the team the way `rlm-vault init --remote` does."""
    config = Config(vault=root, project="Team", embedding_model="none")
    clone_or_create(root, str(remote))
    service = open_service(config)
    service.set_remote(str(remote))
    service.sync()
    return service


def notes(vault: Path) -> set[str]:
    return {p for p in tracked(vault) if p.startswith("insights/")}


def run_team(services: list[MemoryService], *shared: str) -> tuple[set[str], list[str], list[str]]:
    """Every machine writes and syncs at once; (notes written, failed syncs, syncs that gave up racing)."""
    env = {**os.environ, "RLM_PROJECT": "Team", "RLM_EMBEDDING_MODEL": "none"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(CHILD), "team", str(WRITES), str(EVERY), *shared],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**env, "RLM_VAULT_DIR": str(s.vault.root)},
        )
        for s in services
    ]
    written: set[str] = set()
    failures: list[str] = []
    deferred: list[str] = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        lines = [ln.split() for ln in out.splitlines()]
        written |= {path for kind, _, path in lines if kind == "insight"}
        failures += [err for kind, _, _ in lines if kind == "syncfailed"]
        deferred += [kind for kind, _, _ in lines if kind == "syncbusy"]  # gave up racing: not wanted either
        assert sum(kind.startswith("sync") for kind, _, _ in lines) == WRITES // EVERY
    return written, failures, deferred


def converge(services: list[MemoryService], written: set[str]) -> None:
    """Sync rounds (each machine once, in turn) until every vault holds every note: at most two."""
    rounds = 0
    while any(not written <= notes(s.vault.root) for s in services):
        rounds += 1
        assert rounds <= 2, "a vault still lacks notes after two sync rounds"
        for s in services:
            s.sync()


def test_machines_syncing_at_once_converge_without_a_failed_sync(tmp_path: Path) -> None:
    remote = bare(tmp_path)
    services = [join(tmp_path / f"m{n}", remote) for n in range(MACHINES)]
    written, failures, deferred = run_team(services)
    assert failures == [] and deferred == []
    assert len(written) == MACHINES * WRITES
    converge(services, written)
    for s in services:
        assert not [p for p in tracked(s.vault.root) if ".conflict-" in p]
        assert fsck_clean(s.vault.root) == ""
    assert written <= {p for p in git(remote, "ls-tree", "-r", "--name-only", "HEAD").split()}


def test_one_note_edited_by_every_racing_machine_keeps_every_version(tmp_path: Path) -> None:
    remote = bare(tmp_path)
    first = join(tmp_path / "m0", remote)
    shared = first.remember("shared note as first written", category="fact")
    first.sync()
    services = [first, *(join(tmp_path / f"m{n}", remote) for n in range(1, MACHINES))]
    written, failures, deferred = run_team(services, shared["id"])
    assert failures == [] and deferred == []
    converge(services, written)
    for s in services:
        s.sync()  # the conflict files the last merges made reach every vault
    for s in services:
        root = s.vault.root
        texts = "\n".join((root / p).read_text(encoding="utf-8") for p in notes(root))
        for other in services:
            assert f"shared note as {other.vault.root.name} wrote it" in texts
        assert "<<<<<<<" not in texts and not git(root, "status", "--porcelain")
        assert fsck_clean(root) == ""


def test_a_note_from_one_running_server_is_found_on_another(tmp_path: Path) -> None:
    """Two `rlm-vault serve` processes with RLM_SYNC=auto, each on its own clone, no restart."""
    import anyio
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    remote = bare(tmp_path)
    roots = [tmp_path / "east", tmp_path / "west"]
    for root in roots:
        join(root, remote)
    found: dict[str, Any] = {}

    def params(root: Path) -> StdioServerParameters:
        env = {
            **os.environ,
            "RLM_VAULT_DIR": str(root),
            "RLM_PROJECT": "Team",
            "RLM_EMBEDDING_MODEL": "none",
            "RLM_SYNC": "auto",
            "RLM_SYNC_INTERVAL": "2",
        }
        return StdioServerParameters(command=sys.executable, args=["-m", "rlm_vault", "serve"], env=env)

    async def main() -> None:
        with anyio.fail_after(120):
            async with (
                stdio_client(params(roots[0])) as (r1, w1),
                ClientSession(r1, w1) as east,
                stdio_client(params(roots[1])) as (r2, w2),
                ClientSession(r2, w2) as west,
            ):
                await east.initialize()
                await west.initialize()
                wrote = await east.call_tool(
                    "rlm_remember", {"content": "The quokka migration is scheduled for Thursday"}
                )
                assert not wrote.is_error
                start = time.monotonic()
                while True:
                    hit = await west.call_tool("rlm_search", {"query": "quokka migration"})
                    rows = hit.structured_content["results"] if hit.structured_content else []
                    if any(r["id"] == wrote.structured_content["id"] for r in rows):
                        found["after"] = time.monotonic() - start
                        return
                    await anyio.sleep(0.5)

    anyio.run(main)
    assert found["after"] < 90
