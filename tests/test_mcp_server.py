"""The MCP tools through the real protocol: the SDK's in-memory client and a stdio subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import commit_count, git_status
from mcp import Client, MCPError, StdioServerParameters

from rlm_vault.config import Config
from rlm_vault.mcp_server import build_server
from rlm_vault.service import MemoryService, open_service
from rlm_vault.vault import Vault

pytestmark = pytest.mark.anyio

CORE_TOOLS = {
    "rlm_remember", "rlm_recall", "rlm_forget", "rlm_update", "rlm_status", "rlm_chunk", "rlm_peek",
    "rlm_grep", "rlm_search", "rlm_list_chunks", "rlm_sessions", "rlm_domains",
}  # fmt: skip


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def server(service: MemoryService) -> Any:
    return build_server(lambda: service)


async def call(client: Client, name: str, **args: Any) -> Any:
    return await client.call_tool(name, args)


async def test_tools_are_listed_with_hints_and_schemas(server: Any) -> None:
    async with Client(server, mode="legacy") as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert CORE_TOOLS <= set(tools)
    assert tools["rlm_search"].annotations.read_only_hint is True
    assert tools["rlm_forget"].annotations.destructive_hint is True
    assert tools["rlm_remember"].annotations.read_only_hint is False
    for tool in tools.values():
        assert tool.description and tool.output_schema, tool.name
    assert tools["rlm_chunk"].output_schema["properties"].keys() >= {"id", "path"}


async def test_tools_list_fits_the_token_budget(server: Any) -> None:
    async with Client(server, mode="legacy") as client:
        tools = (await client.list_tools()).tools
    payload = json.dumps([t.model_dump(by_alias=True, exclude_none=True) for t in tools])
    assert len(payload) / 4 < 4000  # ~4 characters a token for JSON-ish English


async def test_remember_recall_forget_round_trip(server: Any, service: MemoryService) -> None:
    vault = service.vault.root
    async with Client(server, mode="legacy") as client:
        before = commit_count(vault)
        r = await call(
            client,
            "rlm_remember",
            content="Always deploy LOCAL to VPS",
            category="decision",
            importance="critical",
            tags="deploy,workflow",
        )
        assert not r.is_error
        note_id = r.structured_content["id"]
        assert r.structured_content["path"] == f"insights/{note_id}.md"
        assert (vault / "insights" / f"{note_id}.md").is_file()
        assert commit_count(vault) == before + 1
        assert note_id in r.content[0].text

        r = await call(client, "rlm_recall", query="deploy")
        row = r.structured_content["insights"][0]
        assert (
            row["id"] == note_id and row["category"] == "decision" and row["tags"] == ["deploy", "workflow"]
        )

        r = await call(client, "rlm_forget", insight_id=note_id)
        assert r.structured_content == {
            "id": note_id,
            "removed": True,
            "commit": r.structured_content["commit"],
        }
        r = await call(client, "rlm_recall", query="deploy")
        assert r.structured_content["insights"] == []


async def test_chunk_peek_grep_search_lists(server: Any, service: MemoryService) -> None:
    async with Client(server, mode="legacy") as client:
        r = await call(
            client,
            "rlm_chunk",
            content="intro\nwe chose gRPC-gateway v2.3.1 for quokkas\nend",
            summary="API decisions",
            tags="api",
            domain="feature",
        )
        chunk_id = r.structured_content["id"]
        assert chunk_id.startswith("2026-11-24_TestProj_001") and chunk_id.endswith("_feature")

        r = await call(client, "rlm_peek", chunk_id=chunk_id, start=1, end=2)
        assert r.structured_content["content"] == "we chose gRPC-gateway v2.3.1 for quokkas"
        assert (
            r.structured_content["start"],
            r.structured_content["end"],
            r.structured_content["total_lines"],
        ) == (1, 2, 3)

        r = await call(client, "rlm_grep", pattern=r"grpc-\w+ v2\.\d")
        assert [(m["id"], m["line"]) for m in r.structured_content["matches"]] == [(chunk_id, 1)]

        r = await call(client, "rlm_search", query="quokkas gateway")
        assert r.structured_content["results"][0]["id"] == chunk_id
        assert r.structured_content["results"][0]["kind"] == "chunk"

        r = await call(client, "rlm_list_chunks")
        assert [c["id"] for c in r.structured_content["chunks"]] == [chunk_id]
        r = await call(client, "rlm_sessions")
        assert r.structured_content["sessions"][0]["chunks"] == 1
        r = await call(client, "rlm_domains")
        assert "feature" in r.structured_content["domains"]
        r = await call(client, "rlm_status")
        assert r.structured_content["chunks"] == 1 and r.structured_content["head"]


@pytest.mark.parametrize(
    ("tool", "args", "expected"),
    [
        ("rlm_remember", {"content": "x", "importance": "ultra"}, "critical, high, medium, low"),
        ("rlm_remember", {"content": "x", "category": "banana"}, "decision, fact"),
        ("rlm_remember", {"content": "   "}, "empty"),
        ("rlm_chunk", {"content": "x", "chunk_type": "insight"}, "rlm_remember"),
        ("rlm_chunk", {"content": "x", "chunk_type": "notes"}, "snapshot, session, debug"),
        ("rlm_chunk", {"content": "x", "domain": "x/../../../escaped"}, "no '/'"),
        ("rlm_chunk", {"content": "x", "project": "../up"}, "no '/'"),
        ("rlm_peek", {"chunk_id": "nope"}, "rlm_list_chunks"),
        ("rlm_forget", {"insight_id": "nope"}, "rlm_recall"),
        ("rlm_grep", {"pattern": "(unclosed"}, "regular expression"),
        ("rlm_search", {"query": "x", "limit": 0}, "1 to 100"),
        ("rlm_search", {"query": "x", "date_from": "yesterday"}, "YYYY-MM-DD"),
    ],
)
async def test_bad_input_is_a_tool_error_and_writes_nothing(
    server: Any, service: MemoryService, tool: str, args: dict[str, Any], expected: str
) -> None:
    vault = service.vault.root
    before = commit_count(vault)
    async with Client(server, mode="legacy") as client:
        r = await client.call_tool(tool, args)
    assert r.is_error
    assert expected in r.content[0].text
    assert commit_count(vault) == before and git_status(vault) == []
    assert not list(vault.parent.glob("escaped*"))


async def test_reads_never_commit(server: Any, service: MemoryService) -> None:
    vault = service.vault.root
    async with Client(server, mode="legacy") as client:
        r = await call(client, "rlm_chunk", content="alpha beta gamma")
        chunk_id = r.structured_content["id"]
        before = commit_count(vault)
        for name, args in [
            ("rlm_recall", {"query": "alpha"}),
            ("rlm_search", {"query": "alpha"}),
            ("rlm_peek", {"chunk_id": chunk_id}),
            ("rlm_grep", {"pattern": "beta"}),
            ("rlm_status", {}),
            ("rlm_list_chunks", {}),
            ("rlm_sessions", {}),
            ("rlm_domains", {}),
        ]:
            assert not (await client.call_tool(name, args)).is_error, name
    assert commit_count(vault) == before and git_status(vault) == []


def test_stdio_server_subprocess(tmp_path: Path) -> None:
    """`python -m rlm_vault serve` speaks MCP on stdio, as Claude Code starts it."""
    import anyio
    from mcp import ClientSession
    from mcp.client.stdio import stdio_client

    vault = tmp_path / "stdio-vault"
    Vault.init(vault)
    env = {**os.environ, "RLM_VAULT_DIR": str(vault), "RLM_PROJECT": "Stdio"}
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "rlm_vault", "serve"], env=env, cwd=str(tmp_path)
    )

    async def session() -> tuple[set[str], dict[str, Any], dict[str, Any]]:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            assert commit_count(vault) == 1
            names = {t.name for t in (await s.list_tools()).tools}
            written = await s.call_tool("rlm_chunk", {"content": "stdio chunk about pelicans"})
            found = await s.call_tool("rlm_search", {"query": "pelicans"})
            return names, written.structured_content, found.structured_content

    names, written, found = anyio.run(session)
    assert CORE_TOOLS <= names
    assert written["path"] == f"chunks/Stdio/{written['id']}.md"
    assert (vault / written["path"]).is_file()
    assert found["results"][0]["id"] == written["id"]


def test_python_m_rlm_vault_without_command_serves(tmp_path: Path) -> None:
    """`claude mcp add rlm -- python -m rlm_vault` works: no subcommand means serve."""
    request = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "0"},
        },
    }
    env = {**os.environ, "RLM_VAULT_DIR": str(tmp_path / "v")}
    proc = subprocess.run(
        [sys.executable, "-m", "rlm_vault"],
        input=json.dumps(request) + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    reply = json.loads(proc.stdout.splitlines()[0])
    assert reply["result"]["serverInfo"]["name"] == "rlm-vault"


async def test_enums_and_tag_lists_in_the_schemas(server: Any, service: MemoryService) -> None:
    async with Client(server, mode="legacy") as client:
        tools = {t.name: t.input_schema["properties"] for t in (await client.list_tools()).tools}
        assert tools["rlm_remember"]["category"]["enum"] == [
            "decision", "fact", "preference", "finding", "todo", "general",
        ]  # fmt: skip
        assert tools["rlm_remember"]["importance"]["enum"] == ["critical", "high", "medium", "low"]
        assert tools["rlm_recall"]["category"]["enum"][0] == ""  # a filter may be left empty
        assert tools["rlm_update"]["importance"]["enum"][0] == ""
        assert tools["rlm_chunk"]["chunk_type"]["enum"] == ["snapshot", "session", "debug"]
        for name in ("rlm_remember", "rlm_update", "rlm_chunk"):
            kinds = {o["type"] for o in tools[name]["tags"]["anyOf"]}
            assert kinds == {"string", "array"}, name

        made = await call(client, "rlm_remember", content="tags as a list", tags=["deploy", "ops"])
        note_id = made.structured_content["id"]
        assert service.insight(note_id).tags == ("deploy", "ops")
        await call(client, "rlm_update", insight_id=note_id, tags="one, two")
        assert service.insight(note_id).tags == ("one", "two")
        chunk = await call(client, "rlm_chunk", content="a chunk with list tags", tags=["api", "v2"])
        assert service.note(chunk.structured_content["id"]).tags == ("api", "v2")

        bad = await call(client, "rlm_recall", category="banana")
        assert bad.is_error and "decision, fact, preference, finding, todo, general" in bad.content[0].text


async def test_every_note_is_a_resource_listed_in_pages(service: MemoryService) -> None:
    server = build_server(lambda: service, page_size=3)
    ids = [service.remember(f"insight number {n}")["id"] for n in range(4)]
    ids += [service.chunk(f"chunk body {n}\nsecond line", summary=f"chunk {n}")["id"] for n in range(3)]
    async with Client(server, mode="legacy") as client:
        caps = client.server_capabilities
        assert caps.resources is not None and caps.prompts is not None
        pages, cursor = [], None
        while True:
            page = await client.list_resources(cursor=cursor)
            pages.append(page.resources)
            cursor = page.next_cursor
            if cursor is None:
                break
        assert [len(p) for p in pages] == [3, 3, 1]
        listed = [r for p in pages for r in p]
        assert sorted(r.name for r in listed) == sorted(ids)
        assert len({r.name for r in listed}) == 7  # no note twice across pages
        first = next(r for r in listed if r.name == ids[-1])
        assert str(first.uri) == f"rlm://chunk/{ids[-1]}"
        assert first.title == "chunk 2" and first.mime_type == "text/markdown"

        templates = {str(t.uri_template) for t in (await client.list_resource_templates()).resource_templates}
        assert templates == {"rlm://insight/{id}", "rlm://chunk/{id}"}

        read = await client.read_resource(f"rlm://insight/{ids[0]}")
        text = read.contents[0]
        assert text.mime_type == "text/markdown"
        assert text.text == (service.vault.root / f"insights/{ids[0]}.md").read_text(encoding="utf-8")
        read = await client.read_resource(str(first.uri))
        assert read.contents[0].text.endswith("chunk body 2\nsecond line\n")

        with pytest.raises(MCPError, match="is a chunk"):
            await client.read_resource(f"rlm://insight/{ids[-1]}")
        with pytest.raises(MCPError, match="no chunk or insight"):
            await client.read_resource("rlm://chunk/2026-01-01_Nope_001")
        with pytest.raises(MCPError, match="cursor"):
            await client.list_resources(cursor="not-a-cursor")
    async with Client(server) as client:  # the newer protocol pages the same way
        page = await client.list_resources()
        assert len(page.resources) == 3 and page.next_cursor


async def test_an_archived_chunk_is_read_without_being_restored(service: MemoryService, clock: Any) -> None:
    chunk_id = service.chunk("old notes about llamas")["id"]
    clock.advance(days=400)
    assert service.retention_run()["archived"] == [chunk_id]
    before = commit_count(service.vault.root)
    async with Client(build_server(lambda: service), mode="legacy") as client:
        read = await client.read_resource(f"rlm://chunk/{chunk_id}")
    assert read.contents[0].text.endswith("old notes about llamas\n")
    assert commit_count(service.vault.root) == before


async def test_prompts_for_the_common_moves(server: Any) -> None:
    async with Client(server, mode="legacy") as client:
        prompts = {p.name: p for p in (await client.list_prompts()).prompts}
        assert set(prompts) == {"restore_context", "save_session", "review_learned"}
        for prompt in prompts.values():
            assert prompt.title and prompt.description
            assert all(a.description and not a.required for a in prompt.arguments or [])
        got = await client.get_prompt("restore_context", {"project": "Api", "topic": "retry policy"})
        text = got.messages[0].content.text
        assert 'rlm_list_chunks(limit=5, project="Api")' in text
        assert 'rlm_search(query="retry policy", project="Api")' in text
        text = (await client.get_prompt("save_session", {"summary": "rate limits"})).messages[0].content.text
        assert "rlm_remember" in text and "rlm_chunk" in text and '"rate limits"' in text
        text = (await client.get_prompt("review_learned", {})).messages[0].content.text
        assert "2026-11-24" in text  # the service's clock says what today is


async def test_a_vault_path_that_is_not_a_vault_makes_every_tool_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "typo-vault"
    config = Config(vault=missing, create_vault=False, embedding_model="none")
    async with Client(build_server(lambda: open_service(config)), mode="legacy") as client:
        for name, args in [
            ("rlm_status", {}),
            ("rlm_remember", {"content": "x"}),
            ("rlm_search", {"query": "x"}),
        ]:
            r = await call(client, name, **args)
            assert r.is_error, name
            assert f"no vault at {missing}: create one with `rlm-vault init {missing}`" in r.content[0].text
    assert not missing.exists()
