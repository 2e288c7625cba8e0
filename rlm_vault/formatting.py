"""Short readable texts for structured results, shared by the MCP tools and the CLI."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["render"]


def _written(verb: str, r: Mapping[str, Any]) -> str:
    if r.get("duplicate"):
        return f"Already saved as {r['id']} ({r['path']}); nothing written."
    if r.get("changed") is False:
        return f"{r['id']} already says that; nothing changed."
    return f"{verb} {r['id']} ({r['path']})."


def _recall(r: Mapping[str, Any]) -> str:
    rows = r["insights"]
    if not rows:
        return "No insight matches."
    lines = [f"{len(rows)} insight(s):"]
    for i in rows:
        tags = f" [{', '.join(i['tags'])}]" if i["tags"] else ""
        proj = f" @{i['project']}" if i.get("project") else ""
        lines.append(f"- {i['id']} ({i['category']}/{i['importance']}){tags}{proj}: {i['content']}")
    return "\n".join(lines)


def _status(r: Mapping[str, Any]) -> str:
    sem = r["semantic"]
    lines = [
        f"Vault {r['vault']} at {(r['head'] or 'no commit')[:12]}",
        f"{r['insights']} insights, {r['chunks']} chunks, {r['archived']} archived",
        f"Semantic search: {'on' if sem['enabled'] else 'off'} ({sem['model']}) {sem['reason']}".rstrip(),
    ]
    for p in r["problems"]:
        lines.append(f"Problem: {p['path']}: {p['reason']}")
    return "\n".join(lines + _left_out(r))


def _left_out(r: Mapping[str, Any]) -> list[str]:
    """Lines for what sync does not commit: refused edits (a secret in them) and files that are not notes."""
    lines = [f"Not committed: {p['path']}: {p['reason']}" for p in r.get("refused", [])]
    if r.get("untracked"):
        shown = ", ".join(r["untracked"][:10]) + (" ..." if len(r["untracked"]) > 10 else "")
        lines.append(f"Not synced (not notes): {shown}")
    return lines


def _was(r: Mapping[str, Any]) -> str:
    return f" (was {r['old_id']})" if r.get("old_id") else ""


def _peek(r: Mapping[str, Any]) -> str:
    return f"{r['id']}{_was(r)} lines {r['start']}-{r['end']} of {r['total_lines']}:\n{r['content']}"


def _grep(r: Mapping[str, Any]) -> str:
    rows = r["matches"]
    if not rows:
        return "No line matches."
    return "\n".join(
        f"{m['id']}:{m['line']}: {m['text']}" + (f" ({m['score']:g})" if m["score"] != 1.0 else "")
        for m in rows
    )


def _search(r: Mapping[str, Any]) -> str:
    rows = r["results"]
    if not rows:
        return "Nothing found."
    return "\n".join(
        f"{n}. [{h['kind']}] {h['id']}{_was(h)} ({h['score']:.3f}) {h['summary']}"
        for n, h in enumerate(rows, 1)
    )


def _chunks(r: Mapping[str, Any]) -> str:
    rows = r["chunks"]
    if not rows:
        return "No chunks."
    return "\n".join(f"- {c['id']} ({c['created'][:16]}, ~{c['tokens']} tokens) {c['summary']}" for c in rows)


def _sessions(r: Mapping[str, Any]) -> str:
    rows = r["sessions"]
    if not rows:
        return "No sessions."
    return "\n".join(f"- {s['id']}: {s['chunks']} chunk(s) since {s['started'][:16]}" for s in rows)


def _doctor(r: Mapping[str, Any]) -> str:
    lines = [f"Notes: {'all readable' if not r['notes'] else ''}".rstrip()] + [f"  - {p}" for p in r["notes"]]
    # Caches behind the vault are not a fault (the next search catches up), so they do not fail doctor.
    lag = "behind the vault, caught up at the next search or by `rlm-vault reindex`:"
    lines += [f"Caches: {'in step with the vault' if not r['caches'] else lag}"]
    lines += [f"  - {p}" for p in r["caches"]]
    lines += [f"Semantic search: {r['semantic']['reason']}", f"Git: {r['git']}"]
    lines += [f"Conflict copy to review: {c}" for c in r["conflicts"]]
    lines += _left_out(r)
    lines += [f"Warning: {w}" for w in r.get("warnings", [])]
    if not r["ok"]:
        lines.append("Problems found.")
    else:
        lines.append("Works, with warnings." if r.get("warnings") else "All good.")
    return "\n".join(lines)


_RENDER: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "remember": lambda r: _written("Remembered", r),
    "update": lambda r: _written("Updated", r),
    "chunk": lambda r: _written("Saved chunk", r),
    "forget": lambda r: f"Forgot {r['id']} (git history keeps it).",
    "recall": _recall,
    "status": _status,
    "peek": _peek,
    "grep": _grep,
    "search": _search,
    "list_chunks": _chunks,
    "sessions": _sessions,
    "domains": lambda r: "Domains: " + ", ".join(r["domains"]),
    "retention_preview": lambda r: (
        f"To archive: {', '.join(r['archive']) or 'nothing'}\nTo purge: {', '.join(r['purge']) or 'nothing'}"
    ),
    "retention_run": lambda r: (
        f"Archived {len(r['archived'])}, purged {len(r['purged'])} (git history keeps purged archives)."
    ),
    "restore": lambda r: _written("Restored", r),
    "history": lambda r: (
        (f"{r['old_id']} is now {r['id']}\n" if r.get("old_id") else "")
        + "\n".join(
            f"{c['commit'][:10]} {c['date'][:16]} {c['message']} ({c.get('author', '')})"
            for c in r["commits"]
        )
    ),
    "revert": lambda r: f"Reverted {r['id']} to {r.get('from', '')[:10]} ({r['path']}).",
    "sync": lambda r: (
        f"Synced with {r['remote']}: pulled {r['pulled']}, pushed {r['pushed']} commit(s)"
        + (f"; conflicts kept as {', '.join(r['conflicts'])}" if r["conflicts"] else "")
        + "."
        + "".join(f"\nWarning: {w}" for w in r.get("warnings", []))
        + "".join(f"\n{line}" for line in _left_out(r))
    ),
    "remote": lambda r: f"Remote set to {r['remote']}.",
    "reindex": lambda r: f"Indexed {r['indexed']} notes. Semantic search: {r['semantic']['reason']}",
    "doctor": _doctor,
    "init": lambda r: (
        f"Vault ready at {r['vault']} ({(r['head'] or '')[:12]})."
        + (f" Syncing with {r['remote']}." if r.get("remote") else "")
    ),
}


def render(kind: str, result: Mapping[str, Any]) -> str:
    """The readable text for a result of the operation `kind`."""
    fn = _RENDER.get(kind)
    return fn(result) if fn else str(dict(result))
