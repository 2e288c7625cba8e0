"""The MCP front end: the only module that imports `mcp`.

Each tool parses its arguments, calls one MemoryService method, and returns the structured result
with a short text. `VaultError`s become `ToolError`s here, so the model reads what to send instead.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations

from . import __version__
from .autosync import AutoSync
from .config import Config
from .errors import VaultError
from .formatting import render
from .results import (
    ChunkList,
    Domains,
    Forgotten,
    GrepResult,
    History,
    Peek,
    Recall,
    RetentionPreview,
    RetentionRun,
    Reverted,
    SearchResult,
    Sessions,
    Status,
    Synced,
    Written,
)  # fmt: skip
from .service import MemoryService, open_service
from .sync import remote_configured

__all__ = ["build_server", "serve_stdio"]

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("rlm_vault")

INSTRUCTIONS = """Persistent memory that survives /compact and new sessions, stored as Markdown notes in a git
repository. Save durable decisions, facts and preferences with rlm_remember; save conversation segments
worth keeping with rlm_chunk. Before answering about past work, look with rlm_search (ranked, chunks and
insights), rlm_recall (insights) or rlm_grep (exact text), then read with rlm_peek."""

READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
DELETE = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)


def _reply(kind: str, result: Mapping[str, Any]) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=render(kind, result))], structured_content=dict(result)
    )


def _translating(fn: F) -> F:
    """The one boundary where our errors become tool errors the model can read."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except VaultError as exc:
            raise ToolError(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


def build_server(get_service: Callable[[], MemoryService], sync_tool: bool = False) -> MCPServer[Any]:
    """An MCP server whose tools run against the service `get_service()` returns; `sync_tool` adds
    rlm_sync (offered when the vault has a remote)."""
    server: MCPServer[Any] = MCPServer(
        "rlm-vault", instructions=INSTRUCTIONS, version=__version__, lifespan=_lifespan(get_service)
    )

    def tool(annotations: ToolAnnotations) -> Callable[[F], F]:
        def register(fn: F) -> F:
            server.tool(annotations=annotations)(_translating(fn))
            return fn

        return register

    @tool(WRITE)
    def rlm_remember(
        content: str, category: str = "general", importance: str = "medium", tags: str = "", project: str = ""
    ) -> Annotated[CallToolResult, Written]:
        """Save an insight (a durable decision, fact, preference, finding or todo) as its own note.

        category: decision|fact|preference|finding|todo|general. importance: critical|high|medium|low
        (critical ones are shown at every session start). tags: comma list. project: empty = all projects.
        """
        return _reply("remember", get_service().remember(content, category, importance, tags, project))

    @tool(READ)
    def rlm_recall(
        query: str = "", category: str = "", importance: str = "", project: str = "", limit: int = 10
    ) -> Annotated[CallToolResult, Recall]:
        """List insights whose text or tags contain the query words (accents and case ignored), best first.
        Empty query lists the newest. Filters: category, importance, project."""
        return _reply("recall", get_service().recall(query, category, importance, project, limit))

    @tool(DELETE)
    def rlm_forget(insight_id: str) -> Annotated[CallToolResult, Forgotten]:
        """Delete an insight by id (the vault's git history still keeps it)."""
        return _reply("forget", get_service().forget(insight_id))

    @tool(WRITE)
    def rlm_update(
        insight_id: str, content: str = "", category: str = "", importance: str = "", tags: str = ""
    ) -> Annotated[CallToolResult, Written]:
        """Edit an insight in place; empty arguments keep the current value. tags replaces all tags."""
        return _reply("update", get_service().update(insight_id, content, category, importance, tags))

    @tool(READ)
    def rlm_status() -> Annotated[CallToolResult, Status]:
        """Counts of insights, chunks and archives, the vault path and git HEAD, search state, unreadable files."""
        return _reply("status", get_service().status())

    @tool(WRITE)
    def rlm_chunk(
        content: str,
        summary: str = "",
        tags: str = "",
        project: str = "",
        ticket: str = "",
        domain: str = "",
        chunk_type: str = "session",
    ) -> Annotated[CallToolResult, Written]:
        """Save a conversation segment (context, reasoning, results) as a chunk to read back later.

        chunk_type: session|snapshot|debug. summary: one line (default: first line). project defaults to
        the current project; domain e.g. feature, bugfix (see rlm_domains); ticket e.g. API-12.
        Identical content is not saved twice: the existing id is returned.
        """
        return _reply(
            "chunk", get_service().chunk(content, summary, tags, project, ticket, domain, chunk_type)
        )

    @tool(READ)
    def rlm_peek(chunk_id: str, start: int = 0, end: int = -1) -> Annotated[CallToolResult, Peek]:
        """Read a chunk (or insight) by id: lines start..end-1 of its text, 0-based; end=-1 reads to the end."""
        return _reply("peek", get_service().peek(chunk_id, start, end))

    @tool(READ)
    def rlm_grep(
        pattern: str,
        limit: int = 10,
        project: str = "",
        domain: str = "",
        fuzzy: bool = False,
        fuzzy_threshold: int = 80,
        date_from: str = "",
        date_to: str = "",
        entity: str = "",
        include_archived: bool = False,
    ) -> Annotated[CallToolResult, GrepResult]:
        """Find lines in chunks and insights: a case-insensitive regex, or with fuzzy=true words despite typos
        (score 0-100 >= fuzzy_threshold). Each match gives the id and line (pass it to rlm_peek as start).
        Dates are YYYY-MM-DD; entity matches a file, version, module, ticket or function name."""
        return _reply(
            "grep",
            get_service().grep(
                pattern,
                limit,
                project,
                domain,
                fuzzy,
                fuzzy_threshold,
                date_from,
                date_to,
                entity,
                include_archived,
            ),
        )

    @tool(READ)
    def rlm_search(
        query: str,
        limit: int = 5,
        project: str = "",
        domain: str = "",
        date_from: str = "",
        date_to: str = "",
        entity: str = "",
        include_insights: bool = True,
        include_archived: bool = False,
    ) -> Annotated[CallToolResult, SearchResult]:
        """Search chunks and insights by meaning and keywords, best first; filters apply before ranking.
        Each result has its id and kind (chunk or insight): read it with rlm_peek."""
        return _reply(
            "search",
            get_service().search(
                query, limit, project, domain, date_from, date_to, entity, include_insights, include_archived
            ),
        )

    @tool(READ)
    def rlm_list_chunks(limit: int = 20, project: str = "") -> Annotated[CallToolResult, ChunkList]:
        """List chunks newest first, with summary, tags, project, date and size."""
        return _reply("list_chunks", get_service().list_chunks(limit, project))

    @tool(READ)
    def rlm_sessions(
        project: str = "", domain: str = "", limit: int = 10
    ) -> Annotated[CallToolResult, Sessions]:
        """List work sessions (day x project x domain) with their chunk counts, newest first."""
        return _reply("sessions", get_service().sessions(project, domain, limit))

    @tool(READ)
    def rlm_domains() -> Annotated[CallToolResult, Domains]:
        """List the suggested domains for chunks (from the vault's domains.yaml) and those in use."""
        return _reply("domains", get_service().domains())

    @tool(READ)
    def rlm_retention_preview() -> Annotated[CallToolResult, RetentionPreview]:
        """List chunks a retention run would archive (unused for the archive delay, not immune) and archives
        it could purge. Immune: tags critical/decision/keep/important, 3+ reads, DECISION:/IMPORTANT: text."""
        return _reply("retention_preview", get_service().retention_preview())

    @tool(WRITE)
    def rlm_retention_run(
        archive: bool = True, purge: bool = False
    ) -> Annotated[CallToolResult, RetentionRun]:
        """Archive due chunks to archive/<project>/<id>.md.gz (one commit); purge=true also deletes due archives
        (git history still keeps them). Archived chunks stay readable with rlm_peek and rlm_restore."""
        return _reply("retention_run", get_service().retention_run(archive, purge))

    @tool(WRITE)
    def rlm_restore(chunk_id: str) -> Annotated[CallToolResult, Reverted]:
        """Bring an archived chunk back, byte for byte; it is not archived again before the delay."""
        return _reply("restore", get_service().restore(chunk_id))

    @tool(READ)
    def rlm_history(id: str, limit: int = 20) -> Annotated[CallToolResult, History]:
        """List the commits that changed a memory (insight or chunk), newest first, with dates and messages."""
        return _reply("history", get_service().history(id, limit))

    @tool(WRITE)
    def rlm_revert(id: str, commit: str) -> Annotated[CallToolResult, Reverted]:
        """Restore a memory as it was at a commit listed by rlm_history; recorded as a new commit."""
        return _reply("revert", get_service().revert(id, commit))

    if sync_tool:

        @tool(WRITE)
        def rlm_sync() -> Annotated[CallToolResult, Synced]:
            """Share memory with the vault's git remote: commit hand edits, pull, merge (both sides of a conflict
            are kept), push."""
            return _reply("sync", get_service().sync())

    _compact(server)
    return server


def _compact(server: MCPServer[Any]) -> None:
    """Trim what tools/list sends: pydantic's titles and docstring indentation cost tokens, say nothing."""
    for tool in server._tool_manager.list_tools():
        tool.description = inspect.cleandoc(tool.description)
        tool.parameters = _untitled(tool.parameters)
        if tool.fn_metadata.output_schema is not None:
            tool.fn_metadata.output_schema = _untitled(tool.fn_metadata.output_schema)


def _untitled(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            k: _untitled(v)
            for k, v in schema.items()
            if k != "title" and not (k == "description" and isinstance(v, str) and "properties" in schema)
        }
    if isinstance(schema, list):
        return [_untitled(v) for v in schema]
    return schema


def _lifespan(get_service: Callable[[], MemoryService]) -> Callable[[MCPServer[Any]], Any]:
    @asynccontextmanager
    async def lifespan(_: MCPServer[Any]) -> AsyncIterator[None]:
        # Open (or create) the vault before serving: a client that sees the server up finds the vault there,
        # and a crash's uncommitted writes are committed at start. It costs a few milliseconds.
        _open_logged(get_service)
        yield None

    return lifespan


def _open_logged(get_service: Callable[[], MemoryService]) -> None:
    try:
        get_service()
    except Exception:  # the first tool call will report it to the model
        log.exception("opening the vault failed")


def serve_stdio() -> None:
    """Serve the real vault over stdio (what Claude Code starts)."""
    service: list[MemoryService] = []
    opening = threading.Lock()

    def get_service() -> MemoryService:
        with opening:  # tool calls run in worker threads; open the vault once
            if not service:
                service.append(open_service())
                service[0].prime()
                if service[0].config.auto_sync:
                    AutoSync(service[0], service[0].config.sync_delay).start()
                # Model and caches load in the background once a search needs them: no call waits for them,
                # and a session that only writes never loads them.
                service[0].background = True
            return service[0]

    build_server(get_service, sync_tool=remote_configured(Config.from_env().vault)).run()
