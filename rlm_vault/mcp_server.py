"""The MCP front end: the only module that imports `mcp`.

Each tool parses its arguments, calls one MemoryService method, and returns the structured result
with a short text. `VaultError`s become `ToolError`s here, so the model reads what to send instead.
Every note is also a resource (`rlm://insight/{id}`, `rlm://chunk/{id}`; resources/list pages through
them), and prompts spell out the common moves with the tools.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import date
from typing import IO, Annotated, Any, TypeVar, cast
from urllib.parse import quote

import anyio
import anyio.to_thread
from mcp import MCPError
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.lowlevel import NotificationOptions
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.server.stdio import stdio_server
from mcp.types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    CallToolResult,
    ListResourcesResult,
    Resource,
    TextContent,
    ToolAnnotations,
)
from mcp.types import Tool as MCPTool
from pydantic import Field

from . import __version__
from .config import Config
from .errors import NotFound, VaultError
from .formatting import render
from .models import CATEGORIES, CHUNK_TYPES, IMPORTANCES
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

__all__ = ["RESOURCE_PAGE", "build_server", "serve_lines"]

RESOURCE_PAGE = 200  # notes per resources/list page

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("rlm_vault")

INSTRUCTIONS = """Persistent memory that survives /compact and new sessions, stored as Markdown notes in a git
repository. Save durable decisions, facts and preferences with rlm_remember; save conversation segments
worth keeping with rlm_chunk. Before answering about past work, look with rlm_search (ranked, chunks and
insights), rlm_recall (insights) or rlm_grep (exact text), then read with rlm_peek."""

READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
DELETE = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)


def _one_of(values: Sequence[str], description: str = "") -> Any:
    """A string the schema offers as an enum; the service still checks it (case-insensitive), so a
    wrong value is answered with the accepted ones."""
    return Field(json_schema_extra={"enum": list(values)}, description=description or None)


Category = Annotated[str, _one_of(CATEGORIES)]
Importance = Annotated[str, _one_of(IMPORTANCES, "critical ones are shown at every session start")]
CategoryFilter = Annotated[str, _one_of(("", *CATEGORIES))]
ImportanceFilter = Annotated[str, _one_of(("", *IMPORTANCES))]
ChunkType = Annotated[str, _one_of(CHUNK_TYPES)]
Tags = str | list[str]  # a list, or one comma-separated string


def _tag_text(tags: str | list[str]) -> str:
    """The service's comma form of tags sent as a list or as a comma string."""
    return tags if isinstance(tags, str) else ",".join(str(t) for t in tags)


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
        # pydantic's titles cost tokens and say nothing (descriptions are cleaned at registration), and
        # "anyOf" of a type and null says in many tokens what a list of two types says in a few, and a
        # "$defs" entry used once costs its name twice.
        return [
            t.model_copy(
                update={
                    "input_schema": _compact(_inlined(t.input_schema)),
                    "output_schema": _compact(_inlined(t.output_schema)) if t.output_schema else None,
                }
            )
            for t in await super().list_tools()
        ]

    async def run_lines(self, read_line: Callable[[], str], write_line: Callable[[str], None]) -> None:
        """The SDK's stdio transport over two line functions instead of the process's own fds."""
        lowlevel = self._lowlevel_server
        # The lists may change under a client that read them early (see stdio.py): say so when they do.
        options = lowlevel.create_initialization_options(
            NotificationOptions(tools_changed=True, prompts_changed=True, resources_changed=True)
        )
        lines_in = anyio.wrap_file(cast(IO[str], _LineReader(read_line)))
        lines_out = anyio.wrap_file(cast(IO[str], _LineWriter(write_line)))
        async with stdio_server(lines_in, lines_out) as (read_stream, write_stream):
            await lowlevel.run(read_stream, write_stream, options)


class _LineReader:
    def __init__(self, read_line: Callable[[], str]) -> None:
        self.readline = read_line


class _LineWriter:
    def __init__(self, write_line: Callable[[str], None]) -> None:
        self.write = write_line

    def flush(self) -> None:
        pass


def build_server(
    make_service: Callable[[], MemoryService], sync_tool: bool = False, page_size: int = RESOURCE_PAGE
) -> RlmServer:
    """An MCP server whose lifespan opens the service `make_service()` returns and yields it to the tools;
    `sync_tool` adds rlm_sync (offered when the vault has a remote); resources/list gives `page_size`
    notes a page."""
    server = RlmServer(
        "rlm-vault",
        instructions=INSTRUCTIONS,
        version=__version__,
        lifespan=_lifespan(make_service),
        middleware=[NoteListing(page_size)],
    )
    _add_resources(server)
    _add_prompts(server)

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
        category: Category = "general",
        importance: Importance = "medium",
        tags: Tags = "",
        project: str = "",
        source: str = "",
    ) -> Annotated[CallToolResult, Written]:
        """Save an insight (a durable decision, fact, preference, finding or todo) as its own note.
        project: empty = all projects. source: id of the chunk it came from (linked in the note)."""
        svc = _service(ctx)
        return _reply(
            "remember", svc.remember(content, category, importance, _tag_text(tags), project, source)
        )

    @tool(READ)
    def rlm_recall(
        ctx: Ctx,
        query: str = "",
        category: CategoryFilter = "",
        importance: ImportanceFilter = "",
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
        category: CategoryFilter = "",
        importance: ImportanceFilter = "",
        tags: Tags = "",
    ) -> Annotated[CallToolResult, Written]:
        """Edit an insight in place; empty arguments keep the current value. tags replaces all tags."""
        return _reply(
            "update", _service(ctx).update(insight_id, content, category, importance, _tag_text(tags))
        )

    @tool(READ)
    def rlm_status(ctx: Ctx) -> Annotated[CallToolResult, Status]:
        """Counts of insights, chunks and archives, the vault path and git HEAD, search state, unreadable files."""
        return _reply("status", _service(ctx).status())

    @tool(WRITE)
    def rlm_chunk(
        ctx: Ctx,
        content: str,
        summary: str = "",
        tags: Tags = "",
        project: str = "",
        ticket: str = "",
        domain: str = "",
        chunk_type: ChunkType = "session",
    ) -> Annotated[CallToolResult, Written]:
        """Save a conversation segment (context, reasoning, results) as a chunk to read back later.
        summary: one line (default: first line). project defaults to the current project; domain e.g.
        feature, bugfix (see rlm_domains); ticket e.g. API-12. Identical content is saved once."""
        svc = _service(ctx)
        return _reply(
            "chunk", svc.chunk(content, summary, _tag_text(tags), project, ticket, domain, chunk_type)
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


class NoteListing:
    """Answers resources/list with the vault's notes, a page at a time.

    The SDK lists only resources registered one by one, without cursors; registering thousands of notes
    (and keeping them in step with the vault) would cost more than reading a page when asked.
    """

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "resources/list":
            return await call_next(ctx)
        await call_next(ctx)  # the SDK's own checks (initialised, valid params) still run first
        cursor = str((ctx.params or {}).get("cursor") or "")
        opened = ctx.lifespan_context
        if isinstance(opened, VaultError):
            raise MCPError(INTERNAL_ERROR, str(opened))
        try:
            page = await anyio.to_thread.run_sync(opened.notes_page, cursor, self.page_size)
        except VaultError as exc:
            raise MCPError(INVALID_PARAMS, str(exc)) from exc
        return ListResourcesResult(
            resources=[_resource(n["kind"], n["id"], n["title"]) for n in page["notes"]],
            next_cursor=page["next_cursor"],
        )


def _resource(kind: str, note_id: str, title: str) -> Resource:
    return Resource(
        uri=f"rlm://{kind}/{quote(note_id, safe='')}", name=note_id, title=title, mime_type="text/markdown"
    )


def _add_resources(server: RlmServer) -> None:
    @server.resource(
        "rlm://insight/{id}",
        name="insight",
        title="Insight",
        description="An insight note by id: Markdown with its front matter.",
        mime_type="text/markdown",
    )
    def insight(id: str, ctx: Ctx) -> str:
        return _note_text(ctx, id, "insight")

    @server.resource(
        "rlm://chunk/{id}",
        name="chunk",
        title="Chunk",
        description="A chunk (saved conversation segment) by id, archived ones too: Markdown with front "
        "matter.",
        mime_type="text/markdown",
    )
    def chunk(id: str, ctx: Ctx) -> str:
        return _note_text(ctx, id, "chunk")


def _note_text(ctx: Ctx, note_id: str, kind: str) -> str:
    opened = ctx.request_context.lifespan_context
    if isinstance(opened, VaultError):
        raise ResourceError(str(opened))
    try:
        return opened.read_note(note_id, kind)["text"]
    except NotFound as exc:
        raise ResourceNotFoundError(str(exc)) from exc
    except VaultError as exc:
        raise ResourceError(str(exc)) from exc


def _today(ctx: Ctx) -> str:
    opened = ctx.request_context.lifespan_context
    return opened.now()[:10] if isinstance(opened, MemoryService) else date.today().isoformat()


def _in(project: str) -> str:
    return f', project="{project}"' if project else ""


ProjectArg = Annotated[str, Field(description="project name; empty: the current one or all")]


def _add_prompts(server: RlmServer) -> None:
    @server.prompt(title="Restore context after a compact")
    def restore_context(
        ctx: Ctx,
        project: ProjectArg = "",
        topic: Annotated[str, Field(description="what we were working on, if known")] = "",
    ) -> str:
        """Rebuild the working context from memory after /compact or at the start of a session."""
        search = (
            f'3. rlm_search(query="{topic}"{_in(project)}) and read the best hits with rlm_peek.\n'
            if topic
            else ""
        )
        return (
            "The conversation was just compacted, or this session is new: rebuild the working context "
            "from memory before going on.\n"
            f"1. rlm_list_chunks(limit=5{_in(project)}) for the latest saved segments; read the newest one "
            "or two with rlm_peek (a snapshot holds the state at the last compact).\n"
            '2. rlm_recall(importance="critical") and rlm_recall(query=<the subject>) for the decisions '
            "and preferences that apply.\n"
            f"{search}"
            "Then say in a few lines what we were doing, what was decided and the next step. Do not redo "
            "work the notes show as done; if they disagree with what you see, say so and ask."
        )

    @server.prompt(title="Save this session")
    def save_session(
        ctx: Ctx,
        summary: Annotated[str, Field(description="one line for the chunk; empty: write one")] = "",
        project: ProjectArg = "",
        domain: Annotated[str, Field(description="e.g. feature, bugfix (see rlm_domains)")] = "",
    ) -> str:
        """Save what this session decided and learned, so the next one starts from it."""
        where = "".join(f', {k}="{v}"' for k, v in (("project", project), ("domain", domain)) if v)
        line = f'"{summary}"' if summary else "one line you write"
        return (
            "Save this session to memory before it is lost.\n"
            "1. For each durable decision, fact, preference, finding or todo, call rlm_remember (one "
            "insight a call, with its category and importance; critical only for what every session must "
            "see). Look with rlm_recall first: change an existing insight with rlm_update rather than "
            "saving it twice.\n"
            f"2. Call rlm_chunk once with the part worth reading later (context, what was tried, what "
            f"worked, what is left, file names and commands), summary {line}{where}, and a few tags.\n"
            "3. Never include secrets (keys, tokens, passwords): the vault keeps a git history.\n"
            "End with the ids you saved."
        )

    @server.prompt(title="Review what was learned")
    def review_learned(
        ctx: Ctx,
        day: Annotated[str, Field(description="YYYY-MM-DD; empty: today")] = "",
        project: ProjectArg = "",
    ) -> str:
        """Review the chunks and insights of one day: summarise them, and tidy duplicates or stale ones."""
        day = day.strip() or _today(ctx)
        return (
            f"Review what was learned on {day}.\n"
            f"1. rlm_sessions({_in(project).lstrip(', ')}) and rlm_list_chunks(limit=50{_in(project)}): "
            f"read the chunks created on {day} with rlm_peek.\n"
            f"2. rlm_recall(limit=50{_in(project)}): the insights created on {day}.\n"
            "3. Summarise in a short list: decisions, facts, open todos.\n"
            "4. Point out duplicates, contradictions and stale insights; propose rlm_update or rlm_forget "
            "and ask before forgetting anything. Save what is missing with rlm_remember."
        )


def _service(ctx: Ctx) -> MemoryService:
    """The service the lifespan opened; if it could not be opened, the reason, as a tool error."""
    opened = ctx.request_context.lifespan_context
    if isinstance(opened, VaultError):
        raise ToolError(str(opened))
    return opened


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with each `#/$defs/...` reference replaced by its definition (ours are not recursive)."""
    defs = schema.get("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, list):
            return [resolve(v) for v in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and ref[8:] in defs:
            return resolve(defs[ref[8:]])
        return {k: resolve(v) for k, v in node.items() if k != "$defs"}

    inlined: dict[str, Any] = resolve(schema)
    return inlined


def _compact(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_compact(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {
        k: _compact(v)
        for k, v in schema.items()
        if k != "title" and not (k == "description" and isinstance(v, str) and "properties" in schema)
    }
    options = out.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options and len(options) == 2:
        other = next(o for o in options if o != {"type": "null"})
        if isinstance(other, dict) and set(other) == {"type"} and isinstance(other["type"], str):
            del out["anyOf"]
            out["type"] = [other["type"], "null"]
    return out


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


def serve_lines(config: Config, read_line: Callable[[], str], write_line: Callable[[str], None]) -> None:
    """Serve the real vault over the lines `read_line` gives ("" at the end) and `write_line` takes: the
    stdio front door's pipes (stdio.py), which has already answered what it could of the opening."""
    server = build_server(
        lambda: open_service(config, serving=True), sync_tool=remote_configured(config.vault)
    )
    anyio.run(server.run_lines, read_line, write_line)
