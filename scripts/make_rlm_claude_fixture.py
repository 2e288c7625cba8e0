"""Extend tests/data/rlm_claude with what the real rlm-claude writes for the cases an import must survive.

Run it with the interpreter of a separate venv that holds the real server, never this project's:

    python3 -m venv /tmp/rlmclaude && /tmp/rlmclaude/bin/pip install 'mcp-rlm-server==0.11.0' 'mcp<2'
    /tmp/rlmclaude/bin/python scripts/make_rlm_claude_fixture.py tests/data/rlm_claude

It copies the given context folder to a scratch folder, starts `mcp-rlm-server` on it over stdio
(RLM_CONTEXT_DIR), calls its own tools (rlm_remember, rlm_chunk, rlm_peek, rlm_retention_run after
back-dating one index entry, the way a month of disuse would) and copies the result back, without its
lock files, log and embeddings. The damaged variants in tests/data/rlm_claude_damaged are made by hand
from these files (see the NOTICE there).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from mcp import ClientSession, StdioServerParameters  # mcp<2, as the rlm-claude server needs
from mcp.client.stdio import stdio_client

SAME_TEXT = "Prefer small PRs (< 400 lines)."
TWICE = "Run the tests before every push."

INSIGHTS: list[dict[str, str]] = [
    # one text, two sets of metadata: both must survive
    {"content": SAME_TEXT, "category": "preference", "importance": "medium", "tags": "review"},
    {"content": SAME_TEXT, "category": "decision", "importance": "high", "tags": "review,process"},
    # one text remembered twice with the same metadata: two ids for one memory
    {"content": TWICE, "category": "fact", "importance": "medium", "tags": "testing"},
    {"content": TWICE, "category": "fact", "importance": "medium", "tags": "testing"},
    {
        "content": "ユーザーは日本語の回答を好む 🎌",
        "category": "preference",
        "importance": "high",
        "tags": "言語",
    },
    {"content": "Line one of a note\r\nline two, written on Windows\r\n", "category": "fact", "tags": ""},
]

CHUNKS: list[dict[str, str]] = [
    # '&' in the domain: rlm-claude's id is not a safe vault id, so the note gets a new one
    {"content": "Payment webhook retries: GH-456 fixed by idempotency keys.\n", "summary": "Webhook retries",
     "project": "webapp", "ticket": "GH-456", "domain": "r&d", "tags": "payments"},
    {"content": "Réunion d'équipe : on garde Django 5.0.1 pour l'été.", "summary": "Réunion été",
     "project": "Mon Projet Été", "domain": "meeting"},
    # a summary with a '---' line: rlm-claude writes it raw, so its header ends early
    {"content": "Step 1: tag. Step 2: build. Step 3: ship.", "summary": "Release checklist\n---\nproject: fake",
     "project": "webapp", "domain": "deploy"},
    # a two-line summary: kept whole by index.json, split over two header lines in the file
    {"content": "We compared three queue libraries.", "summary": "Queue choice\nsecond line of the summary",
     "project": "webapp"},
    {"content": "Windows notes\r\nsecond line\r\n\r\n", "summary": "CRLF text", "project": "webapp"},
]  # fmt: skip

ARCHIVE = "2026-12-01_webapp_001_GH-456_r&d"  # back-dated then archived by rlm_retention_run


async def drive(context: Path, workdir: Path) -> None:
    params = StdioServerParameters(
        command=str(Path(sys.executable).with_name("mcp-rlm-server")),
        env={**os.environ, "RLM_CONTEXT_DIR": str(context)},
        cwd=str(workdir),
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        for args in INSIGHTS:
            print(await call(session, "rlm_remember", **args))
        for args in CHUNKS:
            print(await call(session, "rlm_chunk", **args))
        ids = [c["id"] for c in json.loads((context / "index.json").read_text())["chunks"]]
        new = [i for i in ids if i.startswith("2026-12-01")]
        print(await call(session, "rlm_peek", chunk_id=new[2]))
        backdate(context / "index.json", ARCHIVE)
        print(await call(session, "rlm_retention_run", archive=True, purge=False))


async def call(session: ClientSession, tool: str, **args: Any) -> str:
    result = await session.call_tool(tool, args)
    return " ".join(getattr(c, "text", "") for c in result.content)


def backdate(index_path: Path, chunk_id: str) -> None:
    index = json.loads(index_path.read_text())
    for entry in index["chunks"]:
        if entry["id"] == chunk_id:
            entry["created_at"] = "2026-09-15T09:30:00.000000"
    index_path.write_text(json.dumps(index, indent=2, ensure_ascii=False))


def main(target: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        context = Path(scratch) / "context"
        shutil.copytree(target, context, ignore=shutil.ignore_patterns("NOTICE"))
        workdir = Path(scratch) / "work"
        workdir.mkdir()
        asyncio.run(drive(context, workdir))
        for path in sorted(context.rglob("*")):
            rel = path.relative_to(context)
            if path.is_file() and path.suffix not in (".lock", ".log", ".npz"):
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target / rel)


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
