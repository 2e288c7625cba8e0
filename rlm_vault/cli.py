"""The `rlm-vault` command: serve MCP, set up a vault, and use memory from the shell.

Commands print readable text, or JSON with `--json`. Errors print one line and exit 1. Heavy
modules (mcp, search caches) are imported only by the commands that need them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import VaultError

__all__ = ["main"]

Handler = Callable[[argparse.Namespace], Any]


def _service(args: argparse.Namespace) -> Any:
    from .config import Config
    from .service import open_service

    return open_service(Config.from_env())


def _out(args: argparse.Namespace, kind: str, result: Any) -> None:
    if getattr(args, "json", False):
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        from .formatting import render

        print(render(kind, result))


def cmd_serve(args: argparse.Namespace) -> None:
    from .config import Config
    from .stdio import serve

    serve(Config.from_env())


def cmd_init(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from .config import Config
    from .service import init_vault, open_service
    from .sync import clone_or_create

    config = Config.from_env()
    if args.path:
        config = replace(config, vault=Path(args.path).expanduser().absolute())
    cloned = clone_or_create(config.vault, args.remote) if args.remote else ""
    how = init_vault(config, force=args.force)
    svc = open_service(replace(config, create_vault=False))
    result: dict[str, Any] = {
        "vault": str(svc.vault.root),
        "head": svc.vault.git.head(),
        "how": "cloned" if cloned == "cloned" else how,
    }
    if args.remote:
        svc.set_remote(args.remote)
        result.update(remote=args.remote, sync=svc.sync())
        result["head"] = svc.vault.git.head()
    _out(args, "init", result)


def cmd_remote(args: argparse.Namespace) -> None:
    svc = _service(args)
    if args.action == "set":
        _out(args, "remote", svc.set_remote(args.url or ""))
    else:
        _out(args, "remote", {"remote": svc.remote() or "(none)"})


def cmd_sync(args: argparse.Namespace) -> None:
    _out(args, "sync", _service(args).sync())


def cmd_history(args: argparse.Namespace) -> None:
    _out(args, "history", _service(args).history(args.id, args.limit))


def cmd_revert(args: argparse.Namespace) -> None:
    _out(args, "revert", _service(args).revert(args.id, args.commit))


def cmd_retention(args: argparse.Namespace) -> None:
    svc = _service(args)
    if args.run or args.purge:
        _out(args, "retention_run", svc.retention_run(archive=args.archive, purge=args.purge))
    else:
        _out(args, "retention_preview", svc.retention_preview())


def cmd_restore(args: argparse.Namespace) -> None:
    _out(args, "restore", _service(args).restore(args.chunk_id))


def progress_bar(label: str) -> Callable[[int, int], None] | None:
    """A one-line progress bar on a terminal's stderr; nothing when output is piped."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        width = 30
        filled = width * done // max(total, 1)
        end = "\n" if done >= total else ""
        print(
            f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}",
            end=end,
            file=sys.stderr,
            flush=True,
        )

    return show


def cmd_reindex(args: argparse.Namespace) -> None:
    result = _service(args).reindex(progress_bar("indexing"), wait_model=not args.no_model)
    _out(args, "reindex", result)


def cmd_doctor(args: argparse.Namespace) -> None:
    result = _service(args).doctor()
    _out(args, "doctor", result)
    if not result["ok"]:
        raise SystemExit(1)


def cmd_status(args: argparse.Namespace) -> None:
    _out(args, "status", _service(args).status())


def _text(value: str) -> str:
    """A content argument: '-' reads it from stdin."""
    return sys.stdin.read() if value == "-" else value


def cmd_remember(args: argparse.Namespace) -> None:
    svc = _service(args)
    result = svc.remember(
        _text(args.content), args.category, args.importance, args.tags, args.project, args.source
    )
    _out(args, "remember", result)


def cmd_recall(args: argparse.Namespace) -> None:
    svc = _service(args)
    _out(args, "recall", svc.recall(args.query, args.category, args.importance, args.project, args.limit))


def cmd_forget(args: argparse.Namespace) -> None:
    _out(args, "forget", _service(args).forget(args.insight_id))


def cmd_update(args: argparse.Namespace) -> None:
    svc = _service(args)
    content = _text(args.content) if args.content else ""
    _out(args, "update", svc.update(args.insight_id, content, args.category, args.importance, args.tags))


def cmd_chunk(args: argparse.Namespace) -> None:
    result = _service(args).chunk(
        _text(args.content), args.summary, args.tags, args.project, args.ticket, args.domain, args.chunk_type
    )
    _out(args, "chunk", result)


def cmd_peek(args: argparse.Namespace) -> None:
    _out(args, "peek", _service(args).peek(args.chunk_id, args.start, args.end))


def cmd_grep(args: argparse.Namespace) -> None:
    result = _service(args).grep(
        args.pattern,
        args.limit,
        args.project,
        args.domain,
        args.fuzzy,
        args.fuzzy_threshold,
        args.date_from,
        args.date_to,
        args.entity,
        args.include_archived,
    )
    _out(args, "grep", result)


def cmd_search(args: argparse.Namespace) -> None:
    svc = _service(args)
    svc.wait_for_model(timeout=60)  # a person at a shell can wait a moment for ranking by meaning
    result = svc.search(
        args.query,
        args.limit,
        args.project,
        args.domain,
        args.date_from,
        args.date_to,
        args.entity,
        args.include_insights,
        args.include_archived,
    )
    _out(args, "search", result)


def cmd_list_chunks(args: argparse.Namespace) -> None:
    _out(args, "list_chunks", _service(args).list_chunks(args.limit, args.project))


def cmd_sessions(args: argparse.Namespace) -> None:
    _out(args, "sessions", _service(args).sessions(args.project, args.domain, args.limit))


def cmd_domains(args: argparse.Namespace) -> None:
    _out(args, "domains", _service(args).domains())


def _steps(args: argparse.Namespace) -> Callable[[Any], None] | None:
    """Print install/uninstall steps as they happen, unless the result is wanted as JSON."""
    return None if args.json else (lambda step: print(step.message, flush=True))


def cmd_install(args: argparse.Namespace) -> None:
    from .install import install

    report = install(args.scope, args.dry_run, not args.no_claude_md, on_step=_steps(args))
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))


def cmd_uninstall(args: argparse.Namespace) -> None:
    from .install import uninstall

    report = uninstall(args.scope, args.dry_run, args.all, on_step=_steps(args))
    if args.json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))


def cmd_import(args: argparse.Namespace) -> None:
    from . import migrate

    svc = _service(args)
    if args.source == "rlm-claude":
        report = migrate.import_rlm_claude(svc, Path(args.dir).expanduser() if args.dir else None)
    else:
        report = migrate.import_transcripts(
            svc, Path(args.projects_dir).expanduser() if args.projects_dir else None
        )
    print(json.dumps(report.to_json(), ensure_ascii=False, indent=2) if args.json else report.text())
    if not report.ok:
        raise SystemExit(1)  # something was damaged: a script must not take the move as complete


def cmd_hook(args: argparse.Namespace) -> None:
    from .hooks import main as run_hook

    run_hook(args.event)  # fail-open: logs to <vault>/.rlm/hooks.log and always exits 0


Command = Callable[..., argparse.ArgumentParser]

CATEGORY_HELP = "decision, fact, preference, finding, todo or general"
IMPORTANCE_HELP = "critical (shown at every session start), high, medium or low"


def command_of(tool: str) -> str:
    """The CLI command that does what the MCP tool `tool` does (rlm_list_chunks -> list-chunks)."""
    name = tool.removeprefix("rlm_")
    if name == "retention_run":
        return "retention --run"
    if name == "retention_preview":
        return "retention"
    return name.replace("_", "-")


_TOOL_NAME = re.compile(r"\brlm_(?!vault\b)([a-z]+(?:_[a-z]+)*)(\([^)]*\))?")


def cli_words(message: str) -> str:
    """A service message as a shell user reads it: tools named by their commands."""
    return _TOOL_NAME.sub(lambda m: f"rlm-vault {command_of(m.group(1))}", message)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlm-vault",
        description="Persistent memory for Claude Code, kept as a git repository of Markdown notes. "
        "Without a command (and stdin not a terminal): serve MCP on stdio.",
    )
    parser.add_argument("--version", action="version", version=f"rlm-vault {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, handler: Handler, help: str, json_flag: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print the result as JSON (the MCP tool's)")
        return p

    _setup_commands(command)
    _insight_commands(command)
    _chunk_commands(command)
    _search_commands(command)
    _lifecycle_commands(command)
    return parser


def _limit(p: argparse.ArgumentParser, default: int, what: str) -> None:
    p.add_argument("--limit", type=int, default=default, help=f"at most this many {what} (default {default})")


def _project(p: argparse.ArgumentParser, help: str = "only this project (default: all)") -> None:
    p.add_argument("--project", default="", help=help)


def _domain(p: argparse.ArgumentParser) -> None:
    p.add_argument("--domain", default="", help="only this domain, e.g. feature or bugfix (default: all)")


def _dates_and_entity(p: argparse.ArgumentParser) -> None:
    p.add_argument("--date-from", default="", help="only notes created on or after this day (YYYY-MM-DD)")
    p.add_argument("--date-to", default="", help="only notes created on or before this day (YYYY-MM-DD)")
    p.add_argument(
        "--entity", default="", help="only notes naming this file, version, module, ticket or function"
    )
    p.add_argument("--include-archived", action="store_true", help="also look in archived chunks")


def _setup_commands(command: Command) -> None:
    command("serve", cmd_serve, "serve the MCP tools over stdio (what Claude Code runs)", json_flag=False)
    p = command(
        "init",
        cmd_init,
        "create a vault (a git repository) in an empty or new folder, or open an existing one",
    )
    p.add_argument("path", nargs="?", help="where (default: RLM_VAULT_DIR or ~/.claude/rlm/vault)")
    p.add_argument(
        "--force",
        action="store_true",
        help="make a vault in a folder that holds other files (left uncommitted)",
    )
    p.add_argument(
        "--remote", default="", help="git remote to sync with: cloned when it already holds a vault"
    )
    p = command("remote", cmd_remote, "show or set the git remote the vault syncs with")
    p.add_argument("action", choices=["show", "set"], nargs="?", default="show", help="show (default) or set")
    p.add_argument("url", nargs="?", help="with 'set': a git URL or a path to a repository")
    command("sync", cmd_sync, "commit hand edits, pull, merge (keeping both sides of a conflict), push")
    command("status", cmd_status, "counts, vault path, git HEAD, search state and unreadable files")
    p = command("reindex", cmd_reindex, "rebuild the search caches (.rlm/) from the notes alone")
    p.add_argument("--no-model", action="store_true", help="do not wait for the embedding model to load")
    command("doctor", cmd_doctor, "check notes, caches, conflicts and git health (exit 1 on a problem)")
    p = command(
        "install", cmd_install, "register the MCP server, hooks and skills with Claude Code (idempotent)"
    )
    p.add_argument(
        "--scope",
        choices=["user", "project"],
        default="user",
        help="user: ~/.claude.json and ~/.claude/ (default); project: .mcp.json and .claude/ here",
    )
    p.add_argument("--dry-run", action="store_true", help="print what would change and change nothing")
    p.add_argument("--no-claude-md", action="store_true", help="do not add the rlm-vault block to CLAUDE.md")
    p = command("uninstall", cmd_uninstall, "remove what install added; the vault is kept unless --all")
    p.add_argument("--scope", choices=["user", "project"], default="user", help="user (default) or project")
    p.add_argument("--dry-run", action="store_true", help="print what would change and change nothing")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--keep-data", action="store_true", help="keep the vault (the default)")
    data.add_argument("--all", action="store_true", help="also delete the vault folder")
    p = command(
        "import", cmd_import, "import memories from rlm-claude or past Claude Code transcripts (one commit)"
    )
    p.add_argument("source", choices=["rlm-claude", "transcripts"], help="rlm-claude or transcripts")
    p.add_argument("dir", nargs="?", help="rlm-claude context folder (default: ~/.claude/rlm/context)")
    p.add_argument(
        "--projects-dir", help="transcripts: Claude Code projects folder (default: ~/.claude/projects)"
    )
    p = command(
        "hook",
        cmd_hook,
        "run a Claude Code hook, reading its JSON on stdin (what the installed hooks run; always exits 0)",
        json_flag=False,
    )
    p.add_argument("event", nargs="?", default="", help="pre-compact, session-start or post-tool-use")


def _insight_commands(command: Command) -> None:
    p = command("remember", cmd_remember, "save an insight (a decision, fact, preference...) as a note")
    p.add_argument("content", help="the insight's text; '-' reads it from stdin")
    p.add_argument("--category", default="general", help=f"{CATEGORY_HELP} (default general)")
    p.add_argument("--importance", default="medium", help=f"{IMPORTANCE_HELP} (default medium)")
    p.add_argument("--tags", default="", help="comma-separated tags")
    _project(p, "the project it belongs to (default: all projects)")
    p.add_argument("--source", default="", help="id of the chunk it came from (linked in the note)")
    p = command("recall", cmd_recall, "list insights matching words, best first (no words: the newest)")
    p.add_argument("query", nargs="?", default="", help="words to look for (accents and case ignored)")
    p.add_argument("--category", default="", help=f"only this category: {CATEGORY_HELP}")
    p.add_argument("--importance", default="", help=f"only this importance: {IMPORTANCE_HELP}")
    _project(p)
    _limit(p, 10, "insights")
    p = command("forget", cmd_forget, "delete an insight (git history keeps it)")
    p.add_argument("insight_id", help="the insight's id, as recall shows it")
    p = command("update", cmd_update, "edit an insight in place; options left out keep their value")
    p.add_argument("insight_id", help="the insight's id, as recall shows it")
    p.add_argument("--content", default="", help="new text; '-' reads it from stdin")
    p.add_argument("--category", default="", help=f"new category: {CATEGORY_HELP}")
    p.add_argument("--importance", default="", help=f"new importance: {IMPORTANCE_HELP}")
    p.add_argument("--tags", default="", help="new comma-separated tags (replace all tags)")


def _chunk_commands(command: Command) -> None:
    p = command("chunk", cmd_chunk, "save a conversation segment (context, reasoning, results) as a chunk")
    p.add_argument("content", help="the chunk's text; '-' reads it from stdin")
    p.add_argument("--summary", default="", help="one line (default: the first line of the text)")
    p.add_argument("--tags", default="", help="comma-separated tags")
    _project(p, "project (default: RLM_PROJECT, else the git top-level or folder name)")
    p.add_argument("--ticket", default="", help="a ticket it belongs to, e.g. API-12")
    p.add_argument("--domain", default="", help="e.g. feature or bugfix (see `rlm-vault domains`)")
    p.add_argument("--chunk-type", default="session", help="session (default), snapshot or debug")
    p = command("peek", cmd_peek, "print a chunk or insight, or some of its lines")
    p.add_argument("chunk_id", help="a chunk or insight id, as list-chunks, search or recall show it")
    p.add_argument("--start", type=int, default=0, help="first line, 0-based; negative counts from the end")
    p.add_argument("--end", type=int, default=-1, help="line after the last one; -1 = to the end (default)")
    p = command("list-chunks", cmd_list_chunks, "list chunks newest first")
    _limit(p, 20, "chunks")
    _project(p)
    p = command("sessions", cmd_sessions, "list work sessions (day x project x domain), newest first")
    _project(p)
    _domain(p)
    _limit(p, 10, "sessions")
    command("domains", cmd_domains, "list the suggested domains (domains.yaml) and those in use")


def _search_commands(command: Command) -> None:
    p = command("search", cmd_search, "search chunks and insights by meaning and keywords, best first")
    p.add_argument("query", help="what to find, in a few words")
    _limit(p, 5, "results")
    _project(p)
    _domain(p)
    _dates_and_entity(p)
    p.add_argument(
        "--include-insights",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="rank insights with chunks (default); --no-include-insights: chunks only",
    )
    p = command("grep", cmd_grep, "find lines in chunks and insights: a regex, or words despite typos")
    p.add_argument("pattern", help="a case-insensitive regular expression (with --fuzzy: words)")
    _limit(p, 10, "matching lines")
    _project(p)
    _domain(p)
    p.add_argument("--fuzzy", action="store_true", help="match words despite typos instead of a regex")
    p.add_argument(
        "--fuzzy-threshold", type=int, default=80, help="with --fuzzy: lowest score kept, 0-100 (default 80)"
    )
    _dates_and_entity(p)


def _lifecycle_commands(command: Command) -> None:
    p = command("history", cmd_history, "list the commits that changed a memory, newest first")
    p.add_argument("id", help="an insight or chunk id")
    _limit(p, 20, "commits")
    p = command("revert", cmd_revert, "restore a memory as it was at a commit (a new commit)")
    p.add_argument("id", help="an insight or chunk id")
    p.add_argument("commit", help="a commit from history: full or short hash, or a ref such as HEAD~1")
    p = command("retention", cmd_retention, "preview (default) or run the archiving of old, unused chunks")
    p.add_argument("--run", action="store_true", help="archive the chunks due now")
    p.add_argument(
        "--archive",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --run: archive due chunks (default); --no-archive with --purge only purges",
    )
    p.add_argument("--purge", action="store_true", help="also delete archives past the purge delay")
    p = command("restore", cmd_restore, "bring an archived chunk back")
    p.add_argument("chunk_id", help="an archived chunk's id (retention and status show them)")


NO_COMMAND_HINT = (
    "rlm-vault: no command given; Claude Code starts it to serve MCP on stdio "
    "(run `rlm-vault --help` for commands, `rlm-vault status` to look at the vault)"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `rlm-vault` and `python -m rlm_vault`: 0 done, 1 refused (one line why),
    2 a usage error, 3 a bug."""
    args = _parser().parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        # A person who typed `rlm-vault` would wait in front of a silent MCP server: say what it is.
        if sys.stdin.isatty():
            print(NO_COMMAND_HINT, file=sys.stderr)
            return 2
        handler = cmd_serve
    try:
        handler(args)
    except VaultError as exc:
        if os.environ.get("RLM_VAULT_RAISE_ERRORS"):
            raise
        print(f"rlm-vault: {cli_words(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last-resort handler: a bug, reported in one line
        if os.environ.get("RLM_VAULT_RAISE_ERRORS"):
            raise
        where = _log_traceback()
        print(
            f"rlm-vault: unexpected error ({type(exc).__name__}: {exc}); traceback in {where}",
            file=sys.stderr,
        )
        return 3
    return 0


def error_log() -> Path:
    """Where unexpected errors are logged: `$XDG_STATE_HOME/rlm-vault/errors.log` (~/.local/state)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "rlm-vault" / "errors.log"


def _log_traceback() -> Path:
    import tempfile
    import traceback
    from datetime import UTC, datetime

    entry = (
        f"--- {datetime.now(UTC).isoformat()} rlm-vault {' '.join(sys.argv[1:])}\n{traceback.format_exc()}"
    )
    for path in (error_log(), Path(tempfile.gettempdir()) / "rlm-vault-errors.log"):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as log:
                log.write(entry)
            return path
        except OSError:
            continue
    return Path("(no writable log folder)")
