"""The MCP front end: the only module that imports `mcp`.

Each tool parses its arguments, calls one MemoryService method, and returns the structured result
with a short text. `VaultError`s become `ToolError`s here, so the model reads what to send instead.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from mcp.types import Tool as MCPTool

from . import __version__
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
)
from .service import MemoryService, open_service
from .sync import remote_configured

Opened = MemoryService | VaultError  # what the lifespan yields: the service, or why it could not open
Ctx = Context[Opened, Any]

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


class RlmServer(MCPServer[Opened]):
    """The SDK's server, with a tools/list trimmed of what costs tokens and says nothing."""

    async def list_tools(self) -> list[MCPTool]:
        # pydantic's titles cost tokens and say nothing (descriptions are cleaned at registration).
        return [
            t.model_copy(
                update={
                    "input_schema": _untitled(t.input_schema),
                    "output_schema": _untitled(t.output_schema) if t.output_schema else None,
                }
            )
            for t in await super().list_tools()
        ]


def build_server(make_service: Callable[[], MemoryService], sync_tool: bool = False) -> RlmServer:
    """An MCP server whose lifespan opens the service `make_service()` returns and yields it to the tools;
    `sync_tool` adds rlm_sync (offered when the vault has a remote)."""
    server = RlmServer(
        "rlm-vault", instructions=INSTRUCTIONS, version=__version__, lifespan=_lifespan(make_service)
    )

    def tool(annotations: ToolAnnotations) -> Callable[[F], F]:
        def register(fn: F) -> F:
            description = inspect.cleandoc(fn.__doc__ or "")
            server.tool(annotations=annotations, description=description)(_translating(fn))
            return fn

        return register

    @tool(WRITE)
    def rlm_remember(
        ctx: Ctx,
        content: str,
        category: str = "general",
        importance: str = "medium",
        tags: str = "",
        project: str = "",
        source: str = "",
    ) -> Annotated[CallToolResult, Written]:
        """Save an insight (a durable decision, fact, preference, finding or todo) as its own note.

        category: decision|fact|preference|finding|todo|general. importance: critical|high|medium|low
        (critical ones are shown at every session start). tags: comma list. project: empty = all projects.
        source: id of the chunk it came from (linked in the note).
        """
        svc = _service(ctx)
        return _reply("remember", svc.remember(content, category, importance, tags, project, source))

    @tool(READ)
    def rlm_recall(
        ctx: Ctx,
        query: str = "",
        category: str = "",
        importance: str = "",
        project: str = "",
        limit: int = 10,
    ) -> Annotated[CallToolResult, Recall]:
        """List insights whose text or tags contain the query words (accents and case ignored), best first.
        Empty query lists the newest. Filters: category, importance, project."""
        return _reply("recall", _service(ctx).recall(query, category, importance, project, limit))

    @tool(DELETE)
    def rlm_forget(ctx: Ctx, insight_id: str) -> Annotated[CallToolResult, Forgotten]:
        """Delete an insight by id (the vault's git history still keeps it)."""
        return _reply("forget", _service(ctx).forget(insight_id))

    @tool(WRITE)
    def rlm_update(
        ctx: Ctx,
        insight_id: str,
        content: str = "",
        category: str = "",
        importance: str = "",
        tags: str = "",
    ) -> Annotated[CallToolResult, Written]:
        """Edit an insight in place; empty arguments keep the current value. tags replaces all tags."""
        return _reply("update", _service(ctx).update(insight_id, content, category, importance, tags))

    @tool(READ)
    def rlm_status(ctx: Ctx) -> Annotated[CallToolResult, Status]:
        """Counts of insights, chunks and archives, the vault path and git HEAD, search state, unreadable files."""
        return _reply("status", _service(ctx).status())

    @tool(WRITE)
    def rlm_chunk(
        ctx: Ctx,
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
            "chunk", _service(ctx).chunk(content, summary, tags, project, ticket, domain, chunk_type)
        )

    @tool(READ)
    def rlm_peek(ctx: Ctx, chunk_id: str, start: int = 0, end: int = -1) -> Annotated[CallToolResult, Peek]:
        """Read a chunk (or insight) by id: lines start..end-1 of its text, 0-based; end=-1 reads to the end."""
        return _reply("peek", _service(ctx).peek(chunk_id, start, end))

    @tool(READ)
    def rlm_grep(
        ctx: Ctx,
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
            _service(ctx).grep(
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
        ctx: Ctx,
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
            _service(ctx).search(
                query, limit, project, domain, date_from, date_to, entity, include_insights, include_archived
            ),
        )

    @tool(READ)
    def rlm_list_chunks(ctx: Ctx, limit: int = 20, project: str = "") -> Annotated[CallToolResult, ChunkList]:
        """List chunks newest first, with summary, tags, project, date and size."""
        return _reply("list_chunks", _service(ctx).list_chunks(limit, project))

    @tool(READ)
    def rlm_sessions(
        ctx: Ctx, project: str = "", domain: str = "", limit: int = 10
    ) -> Annotated[CallToolResult, Sessions]:
        """List work sessions (day x project x domain) with their chunk counts, newest first."""
        return _reply("sessions", _service(ctx).sessions(project, domain, limit))

    @tool(READ)
    def rlm_domains(ctx: Ctx) -> Annotated[CallToolResult, Domains]:
        """List the suggested domains for chunks (from the vault's domains.yaml) and those in use."""
        return _reply("domains", _service(ctx).domains())

    @tool(READ)
    def rlm_retention_preview(ctx: Ctx) -> Annotated[CallToolResult, RetentionPreview]:
        """List chunks a retention run would archive (unused for the archive delay, not immune) and archives
        it could purge. Immune: tags critical/decision/keep/important, 3+ reads, DECISION:/IMPORTANT: text."""
        return _reply("retention_preview", _service(ctx).retention_preview())

    @tool(WRITE)
    def rlm_retention_run(
        ctx: Ctx, archive: bool = True, purge: bool = False
    ) -> Annotated[CallToolResult, RetentionRun]:
        """Archive due chunks to archive/<project>/<id>.md.gz (one commit); purge=true also deletes due archives
        (git history still keeps them). Archived chunks stay readable with rlm_peek and rlm_restore."""
        return _reply("retention_run", _service(ctx).retention_run(archive, purge))

    @tool(WRITE)
    def rlm_restore(ctx: Ctx, chunk_id: str) -> Annotated[CallToolResult, Reverted]:
        """Bring an archived chunk back, byte for byte; it is not archived again before the delay."""
        return _reply("restore", _service(ctx).restore(chunk_id))

    @tool(READ)
    def rlm_history(ctx: Ctx, id: str, limit: int = 20) -> Annotated[CallToolResult, History]:
        """List the commits that changed a memory (insight or chunk), newest first, with dates and messages."""
        return _reply("history", _service(ctx).history(id, limit))

    @tool(WRITE)
    def rlm_revert(ctx: Ctx, id: str, commit: str) -> Annotated[CallToolResult, Reverted]:
        """Restore a memory as it was at a commit listed by rlm_history; recorded as a new commit."""
        return _reply("revert", _service(ctx).revert(id, commit))

    if sync_tool:

        @tool(WRITE)
        def rlm_sync(ctx: Ctx) -> Annotated[CallToolResult, Synced]:
            """Share memory with the vault's git remote: commit hand edits, pull, merge (both sides of a conflict
            are kept), push."""
            return _reply("sync", _service(ctx).sync())

    return server


def _service(ctx: Ctx) -> MemoryService:
    """The service the lifespan opened; if it could not be opened, the reason, as a tool error."""
    opened = ctx.request_context.lifespan_context
    if isinstance(opened, VaultError):
        raise ToolError(str(opened))
    return opened


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


def _lifespan(make_service: Callable[[], MemoryService]) -> Callable[[MCPServer[Opened]], Any]:
    @asynccontextmanager
    async def lifespan(_: MCPServer[Opened]) -> AsyncIterator[Opened]:
        # The vault opens before serving: a client that sees the server up finds it there, and a crash's
        # uncommitted writes are committed at start. A vault that cannot be opened is no crash: every tool
        # call then says why.
        try:
            service = make_service()
        except VaultError as exc:
            log.warning("opening the vault failed: %s", exc)
            yield exc
            return
        service.start()
        try:
            yield service
        finally:
            service.close()

    return lifespan


def serve_stdio() -> None:
    """Serve the real vault over stdio (what Claude Code starts)."""
    config = Config.from_env()
    server = build_server(
        lambda: open_service(config, serving=True), sync_tool=remote_configured(config.vault)
    )
    server.run()
