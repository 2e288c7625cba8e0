"""scripts/bench.py --quick runs end to end, prints every row and writes valid JSON (no timing asserts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

ROWS = [
    "chunk_first", "chunk_last", "commit_0", "commit_2k", "remember_first", "remember_last",
    "retention_preview", "archive", "search_catchup", "reindex_2k", "search_2k", "search_filtered",
    "grep_regex", "fuzzy_first", "grep_fuzzy", "recall", "peek", "status", "search_after_write",
    "cold_start", "cold_start_call", "cold_start_full", "cold_start_full_call", "tools_list_tokens", "hook", "chunk_scale", "commit_scale", "reindex",
    "search_10k", "grep_regex_10k", "grep_fuzzy_10k", "search_after_write_10k", "server_rss", "writers_2", "writers_8",
    "rss", "mem_pss", "mem_rss", "d_cold", "d_cold_call", "d_chunk", "d_search", "d_rss",
]  # fmt: skip


@pytest.mark.slow
def test_quick_bench_prints_every_row_and_valid_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "RLM_BENCH_MODEL": "none"}  # no model needed to check the plumbing
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--json", str(out)],
        capture_output=True,
        check=False,
        text=True,
        timeout=900,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text(encoding="utf-8"))
    rows = {row["key"]: row for row in data["rows"]}
    assert [key for key in ROWS if key not in rows] == []
    for row in rows.values():
        assert row["label"] in proc.stdout
        assert row["ok"] in (True, False, None)
    assert "Target" in proc.stdout and "rlm-claude" in proc.stdout
    assert rows["writers_2"]["n"] == 20 and rows["archive"]["n"] == 1
    assert data["meta"]["plan"]["quick"] is True


@pytest.mark.slow
def test_bench_can_run_only_the_search_rows(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "RLM_BENCH_MODEL": "none"}
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench.py"),
            "--quick",
            "--rows",
            "search",
            "--json",
            str(out),
        ],
        capture_output=True,
        check=False,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {row["key"]: row for row in json.loads(out.read_text(encoding="utf-8"))["rows"]}
    assert sorted(rows) == ["search_10k", "search_2k", "search_after_write_10k", "search_after_write_2k"]
    assert rows["search_2k"]["n"] == 10 and rows["search_2k"]["cpu50"] is not None
    assert "(390 chunks + 100 insights)" in rows["search_10k"]["label"]
