"""Limits that keep one call from taking over the server: content size in bytes, result sizes, regex
time, and a tool result for a 2 MiB chunk."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from relkit import deadline, dirty

from rlm_vault.config import Config
from rlm_vault.errors import InvalidInput
from rlm_vault.service import MemoryService, open_service

pytestmark = pytest.mark.reliability

MIB = 1024 * 1024


@pytest.fixture
def service(tmp_path: Path) -> MemoryService:
    config = Config(vault=tmp_path / "vault", project="Lim", embedding_model="none", grep_timeout=0.5)
    return open_service(config)


def test_content_size_is_counted_in_bytes(service: MemoryService) -> None:
    limit = service.config.max_content_bytes
    assert limit == 2 * MIB
    fits = "ab\n" * ((limit - 10) // 3)
    assert service.chunk(fits, project="Lim")["id"]
    for text in ("é" * (limit // 2 + 1), "🧠" * (limit // 4 + 1), "x" * (limit + 1)):
        assert len(text) <= limit + 1
        with pytest.raises(InvalidInput, match=f"limit is {limit} bytes"):
            service.chunk(text, project="Lim")
        with pytest.raises(InvalidInput, match="bytes"):
            service.remember(text)
    assert dirty(service.vault.root) == []


@pytest.mark.parametrize("limit", [0, -1, 10**9, 2**63])
def test_result_limits_are_bounded(service: MemoryService, limit: int) -> None:
    for call in (
        lambda: service.recall("x", limit=limit),
        lambda: service.search("x", limit=limit),
        lambda: service.grep("x", limit=limit),
        lambda: service.list_chunks(limit=limit),
        lambda: service.sessions(limit=limit),
        lambda: service.history("x", limit=limit),
    ):
        with pytest.raises(InvalidInput, match="limit"):
            call()


def test_results_never_exceed_the_limit(service: MemoryService) -> None:
    for i in range(30):
        service.chunk(f"limit chunk {i} shared words\nshared words again", project="Lim")
        service.remember(f"limit insight {i} shared words")
    assert len(service.recall("shared", limit=7)["insights"]) == 7
    assert len(service.search("shared words", limit=4)["results"]) == 4
    assert len(service.grep("shared", limit=5)["matches"]) == 5
    assert len(service.grep("shared wrods", fuzzy=True, limit=3)["matches"]) <= 3
    assert len(service.list_chunks(limit=2)["chunks"]) == 2
    assert len(service.sessions(limit=1)["sessions"]) == 1


def test_a_runaway_regex_stops_at_the_grep_timeout(service: MemoryService) -> None:
    for i in range(20):
        service.chunk(("a" * 30 + "!\n") * 50 + f"note {i}", project="Lim")
    started = time.monotonic()
    with pytest.raises(InvalidInput, match="took longer than 0.5 s"):
        service.grep("(a|aa)+$")  # exponential in the regex module ("(a+)+$" it optimises)
    assert time.monotonic() - started < 2.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_peek_of_a_2_mib_chunk_through_mcp_works_and_ranges_bound_it(service: MemoryService) -> None:
    from mcp import Client

    from rlm_vault.mcp_server import build_server

    line = "0123456789 abcdefghij klmnopqrst uvwxyz ABCDEFGHIJ KLMNOPQRST UVWXYZ 0123456789 padding-\n"
    big = line * ((2 * MIB - 100) // len(line))
    written = service.chunk(big, project="Lim")
    server = build_server(lambda: service)
    async with Client(server, mode="legacy") as client:
        with deadline(30, "peek of a 2 MiB chunk over MCP"):
            started = time.monotonic()
            whole = await client.call_tool("rlm_peek", {"chunk_id": written["id"]})
            took = time.monotonic() - started
            part = await client.call_tool("rlm_peek", {"chunk_id": written["id"], "start": 10, "end": 20})
    assert not whole.is_error and whole.structured_content["content"] == big.rstrip("\n")
    size = sum(len(c.text) for c in whole.content) + len(json.dumps(whole.structured_content))
    assert size < 4 * 2 * MIB + 4096  # the text copy is the body once, not an unbounded rendering
    assert took < 10
    assert part.structured_content["content"].count("\n") == 9 and len(part.content[0].text) < 4096
