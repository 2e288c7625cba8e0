"""The `rlm-vault` command: serve MCP, set up a vault, and use memory from the shell.

Commands print readable text, or JSON with `--json`. Errors print one line and exit 1. Heavy
modules (mcp, search caches) are imported only by the commands that need them.
"""

from __future__ import annotations

import argparse
import json
import os
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
    from .mcp_server import serve_stdio

    serve_stdio()


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
        _out(args, "retention_run", svc.retention_run(archive=True, purge=args.purge))
    else:
        _out(args, "retention_preview", svc.retention_preview())


def cmd_restore(args: argparse.Namespace) -> None:
    _out(args, "restore", _service(args).restore(args.id))


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


def cmd_remember(args: argparse.Namespace) -> None:
    content = sys.stdin.read() if args.content == "-" else args.content
    result = _service(args).remember(content, args.category, args.importance, args.tags, args.project)
    _out(args, "remember", result)


def cmd_recall(args: argparse.Namespace) -> None:
    svc = _service(args)
    _out(args, "recall", svc.recall(args.query, args.category, args.importance, args.project, args.limit))


def cmd_search(args: argparse.Namespace) -> None:
    svc = _service(args)
    svc.wait_for_model(timeout=60)  # a person at a shell can wait a moment for ranking by meaning
    _out(args, "search", svc.search(args.query, args.limit, args.project, args.domain))


def cmd_peek(args: argparse.Namespace) -> None:
    _out(args, "peek", _service(args).peek(args.id, args.start, args.end))


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


def cmd_hook(args: argparse.Namespace) -> None:
    from .hooks import main as run_hook

    run_hook(args.event)  # fail-open: logs to <vault>/.rlm/hooks.log and always exits 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlm-vault",
        description="Persistent memory for Claude Code, kept as "
        "a git repository of Markdown notes. With no command: serve MCP on stdio.",
    )
    parser.add_argument("--version", action="version", version=f"rlm-vault {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, handler: Handler, help: str, json_flag: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print the result as JSON")
        return p

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
    p.add_argument("action", choices=["show", "set"], nargs="?", default="show")
    p.add_argument("url", nargs="?", help="with 'set': a git URL or a path to a repository")
    command("sync", cmd_sync, "commit hand edits, pull, merge (keeping both sides of a conflict), push")
    p = command("history", cmd_history, "list the commits that changed a memory")
    p.add_argument("id")
    p.add_argument("--limit", type=int, default=20)
    p = command("revert", cmd_revert, "restore a memory as it was at a commit (a new commit)")
    p.add_argument("id")
    p.add_argument("commit")
    p = command("retention", cmd_retention, "preview (default) or run the archiving of old, unused chunks")
    p.add_argument("--run", action="store_true", help="archive the chunks due now")
    p.add_argument("--purge", action="store_true", help="also delete archives past the purge delay")
    p = command("restore", cmd_restore, "bring an archived chunk back")
    p.add_argument("id")
    command("status", cmd_status, "counts, vault path, git HEAD, search state and unreadable files")
    p = command("reindex", cmd_reindex, "rebuild the search caches (.rlm/) from the notes alone")
    p.add_argument("--no-model", action="store_true", help="do not wait for the embedding model to load")
    command("doctor", cmd_doctor, "check notes, caches, conflicts and git health (exit 1 on a problem)")
    p = command("remember", cmd_remember, "save an insight ('-' reads it from stdin)")
    p.add_argument("content")
    p.add_argument("--category", default="general", help="decision, fact, preference, finding, todo, general")
    p.add_argument("--importance", default="medium", help="critical, high, medium, low")
    p.add_argument("--tags", default="", help="comma-separated tags")
    p.add_argument("--project", default="", help="project name (default: all projects)")
    p = command("recall", cmd_recall, "list insights matching words")
    p.add_argument("query", nargs="?", default="")
    p.add_argument("--category", default="")
    p.add_argument("--importance", default="")
    p.add_argument("--project", default="")
    p.add_argument("--limit", type=int, default=10)
    p = command("search", cmd_search, "search chunks and insights, best first")
    p.add_argument("query")
    p.add_argument("--limit", type=int, default=5)
    p.add_argument("--project", default="")
    p.add_argument("--domain", default="")
    p = command("peek", cmd_peek, "print a chunk or insight, or some of its lines")
    p.add_argument("id")
    p.add_argument("--start", type=int, default=0, help="first line, 0-based")
    p.add_argument("--end", type=int, default=-1, help="line after the last one; -1 = to the end")
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
    p.add_argument("--scope", choices=["user", "project"], default="user")
    p.add_argument("--dry-run", action="store_true", help="print what would change and change nothing")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--keep-data", action="store_true", help="keep the vault (the default)")
    data.add_argument("--all", action="store_true", help="also delete the vault folder")
    p = command(
        "import", cmd_import, "import memories from rlm-claude or past Claude Code transcripts (one commit)"
    )
    p.add_argument("source", choices=["rlm-claude", "transcripts"])
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `rlm-vault` and `python -m rlm_vault`: 0 done, 1 refused (one line why), 3 a bug."""
    args = _parser().parse_args(argv)
    handler: Handler = getattr(args, "handler", cmd_serve)
    try:
        handler(args)
    except VaultError as exc:
        if os.environ.get("RLM_VAULT_RAISE_ERRORS"):
            raise
        print(f"rlm-vault: {exc}", file=sys.stderr)
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
